"""The dataset format on disk, which every stage reads: uint8 image arrays, int64 labels and a meta.json.

A dataset is a directory with `train_images.npy` / `test_images.npy` (uint8, N x 3 x H x W),
`train_labels.npy` / `test_labels.npy` (int64), optionally `unlabeled_images.npy` (images without labels,
for pretraining only) and `meta.json` (class names, per-channel mean and std). Only the download stage writes
one (from the readers of `selfsup.sources`); importing this module loads neither torch nor the readers, so
editing a reader re-runs no stage but `download`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from selfsup.core.files import save_json, save_npy
from selfsup.core.paths import missing


@dataclass
class Dataset:
    train_images: np.ndarray  # uint8, N x 3 x H x W
    train_labels: np.ndarray  # int64, N
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: list[str]
    unlabeled_images: np.ndarray | None = None  # uint8, M x 3 x H x W, for pretraining only


def channel_stats(images: np.ndarray, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of uint8 images in [0, 1] units, a chunk at a time."""
    total = np.zeros(images.shape[1])
    squares = np.zeros(images.shape[1])
    for i in range(0, len(images), chunk):
        x = images[i:i + chunk].astype(np.float64) / 255.0
        total += x.sum(axis=(0, 2, 3))
        squares += (x * x).sum(axis=(0, 2, 3))
    count = len(images) * images.shape[2] * images.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean ** 2, 0))
    return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]


def save_dataset(ds: Dataset, out: Path, source: str, digest: str = "") -> None:
    """Write `ds` with its meta.json: what it is (the source's name and content digest), never where it was
    read from, so a mirror writes the same bytes as the public location."""
    mean, std = channel_stats(ds.train_images)
    meta = {
        "classes": ds.classes,
        "source": source,
        "digest": digest,
        "image_size": int(ds.train_images.shape[-1]),
        "mean": mean,
        "std": std,
        "train_size": int(len(ds.train_labels)),
        "test_size": int(len(ds.test_labels)),
        "unlabeled_size": 0 if ds.unlabeled_images is None else int(len(ds.unlabeled_images)),
    }
    out.mkdir(parents=True, exist_ok=True)
    for name in ("train_images", "train_labels", "test_images", "test_labels"):
        save_npy(np.ascontiguousarray(getattr(ds, name)), out / f"{name}.npy")
    unlabeled = out / "unlabeled_images.npy"
    if ds.unlabeled_images is not None and not (isinstance(ds.unlabeled_images, np.memmap)
                                                and Path(ds.unlabeled_images.filename).resolve() == unlabeled.resolve()):
        save_npy(np.ascontiguousarray(ds.unlabeled_images), unlabeled)
    elif ds.unlabeled_images is None:
        unlabeled.unlink(missing_ok=True)  # left by an earlier source (a run outside DVC): never pretrain on it
    save_json(meta, out / "meta.json")


def load_dataset(directory: Path) -> tuple[Dataset, dict]:
    """The arrays of a stored dataset; the unlabeled images, if any, memory-mapped (they can be large)."""
    meta_path = directory / "meta.json"
    if not meta_path.exists():
        raise missing(meta_path, "download")  # a dataset directory, wherever it is, is download's
    meta = json.loads(meta_path.read_text())
    # images memory-mapped: a stage reads the rows it uses (or streams them), never the whole set twice
    arrays = {n: np.load(directory / f"{n}.npy", mmap_mode="r" if n.endswith("images") else None, allow_pickle=False)
              for n in ("train_images", "train_labels", "test_images", "test_labels")}
    unlabeled = directory / "unlabeled_images.npy"
    extra = np.load(unlabeled, mmap_mode="r", allow_pickle=False) if unlabeled.exists() else None
    return Dataset(**arrays, classes=meta["classes"], unlabeled_images=extra), meta
