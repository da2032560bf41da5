"""Getting images in: fetch and verify an archive, read CIFAR batches or an image folder, store uint8 arrays.

A dataset on disk is a directory with `train_images.npy` / `test_images.npy` (uint8, N x 3 x H x W),
`train_labels.npy` / `test_labels.npy` (int64) and `meta.json` (class names, per-channel mean and std).
Archives are read member by member in memory, so nothing from a user-supplied archive is ever extracted
to disk; members that would escape a target directory, links and devices are refused all the same.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import re
import tarfile
import urllib.parse
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError
from torchvision.datasets.utils import download_url

from stages.common import UserError, save_json, save_npy

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass
class Dataset:
    train_images: np.ndarray  # uint8, N x 3 x H x W
    train_labels: np.ndarray  # int64, N
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: list[str]


# ---------------------------------------------------------------- fetching


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def local_path(url: str) -> Path | None:
    """The local file a `file://` URL or a plain path names; None for a remote URL."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        return Path(urllib.parse.unquote(parsed.netloc + parsed.path))
    if parsed.scheme in ("", ) or re.fullmatch(r"[A-Za-z]", parsed.scheme or ""):
        return Path(url)
    return None


def fetch(url: str, md5: str | None, cache_dir: Path) -> Path:
    """Return a verified local copy of `url` (param data.url), downloading into `cache_dir` when remote."""
    path = local_path(url)
    if path is None:
        filename = Path(urllib.parse.urlparse(url).path).name or "download"
        path = cache_dir / filename
        if not (path.exists() and md5 and md5sum(path) == md5):
            try:
                download_url(url, str(cache_dir), filename)
            except Exception as e:  # network errors come in many types
                raise UserError(f"could not download data.url={url} ({e}); behind a firewall, "
                                f"set data.url to a local copy (file:// URL or path)") from e
    if not path.is_file():
        raise UserError(f"data.url points to {path}, which does not exist: fix data.url")
    if md5:
        actual = md5sum(path)
        if actual != md5.lower():
            raise UserError(f"md5 of {path} is {actual}, expected data.md5={md5}: the file is corrupt "
                            f"or not the one data.md5 describes (fix data.md5 or re-download)")
    return path


# ---------------------------------------------------------------- archives


def _check_member_name(name: str, archive: Path) -> None:
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or re.match(r"^[A-Za-z]:", name):
        raise UserError(f"archive {archive} has a member that escapes its directory: {name!r}; refusing it")


def read_archive(path: Path) -> dict[str, bytes]:
    """All regular files of a .tar(.gz/.bz2/.xz) or .zip archive, by member name; unsafe members are refused."""
    files: dict[str, bytes] = {}
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    _check_member_name(info.filename, path)
                    if info.is_dir():
                        continue
                    if (info.external_attr >> 16) & 0o170000 == 0o120000:
                        raise UserError(f"archive {path} has a symbolic link {info.filename!r}; refusing it")
                    files[info.filename] = zf.read(info)
            return files
        with tarfile.open(path) as tf:
            for member in tf:
                _check_member_name(member.name, path)
                if member.isdir():
                    continue
                if not member.isfile():
                    raise UserError(f"archive {path} has a link or device member {member.name!r}; refusing it")
                f = tf.extractfile(member)
                assert f is not None
                files[member.name] = f.read()
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as e:
        raise UserError(f"{path} is not a readable archive ({e}): it may be truncated; download it again") from e
    return files


# ---------------------------------------------------------------- CIFAR batches


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and NumPy arrays only: a crafted batch file cannot run code."""

    ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a data batch")
        return super().find_class(module, name)


def load_batch(blob: bytes, name: str) -> dict:
    try:
        obj = _ArrayUnpickler(io.BytesIO(blob), encoding="latin1").load()
    except Exception as e:
        raise UserError(f"CIFAR batch {name} could not be read safely ({e}): the archive is corrupt, "
                        f"not CIFAR, or crafted") from e
    if not isinstance(obj, dict):
        raise UserError(f"CIFAR batch {name} holds {type(obj).__name__}, expected a dict")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _batch_arrays(batch: dict, name: str) -> tuple[np.ndarray, np.ndarray]:
    data, labels = batch.get("data"), batch.get("labels", batch.get("fine_labels"))
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072 or labels is None:
        raise UserError(f"CIFAR batch {name} lacks a N x 3072 'data' array and 'labels': not a CIFAR batch")
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(data):
        raise UserError(f"CIFAR batch {name} has {len(data)} images but {len(labels)} labels")
    return data.astype(np.uint8).reshape(-1, 3, 32, 32), labels


def read_cifar10(files: dict[str, bytes], archive: Path) -> Dataset:
    """Any number of `data_batch_N` members (mirrors and subsets exist), one `test_batch`, `batches.meta`."""
    by_base = {PurePosixPath(n).name: n for n in files}
    train_names = sorted((b for b in by_base if re.fullmatch(r"data_batch_\d+", b)),
                         key=lambda b: int(b.rsplit("_", 1)[1]))
    if not train_names or "test_batch" not in by_base:
        raise UserError(f"{archive} is not a CIFAR-10 python archive (no data_batch_N / test_batch members)")
    train = [_batch_arrays(load_batch(files[by_base[b]], b), b) for b in train_names]
    test_x, test_y = _batch_arrays(load_batch(files[by_base["test_batch"]], "test_batch"), "test_batch")
    classes = [f"class_{i}" for i in range(10)]
    if "batches.meta" in by_base:
        meta = load_batch(files[by_base["batches.meta"]], "batches.meta")
        classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta.get("label_names", classes)]
    train_x = np.concatenate([x for x, _ in train])
    train_y = np.concatenate([y for _, y in train])
    _check_labels(np.concatenate([train_y, test_y]), len(classes), archive)
    return Dataset(train_x, train_y, test_x, test_y, classes)


def _check_labels(labels: np.ndarray, n_classes: int, source: Path) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise UserError(f"{source} has labels outside 0..{n_classes - 1}: not a matching dataset")


# ---------------------------------------------------------------- image folders


def _decode_image(blob: bytes, name: str, size: int) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(blob)) as img:
            img = img.convert("RGB")  # grayscale, palette and RGBA images become RGB
            if img.size != (size, size):
                img = img.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
    except (UnidentifiedImageError, OSError) as e:
        raise UserError(f"{name} is not a readable image ({e}): remove it or replace it") from e


def read_image_folder(files: dict[str, bytes], source: Path, size: int) -> Dataset:
    """`train/<class>/*` and `test/<class>/*` (optionally under one top directory); classes sorted by name."""
    splits: dict[str, dict[str, list[str]]] = {"train": {}, "test": {}}
    for name in sorted(files):
        parts = PurePosixPath(name).parts
        for i, part in enumerate(parts[:-2]):
            if part in splits and len(parts) - i == 3:
                if PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES:
                    splits[part].setdefault(parts[i + 1], []).append(name)
                break
    classes = sorted(splits["train"])
    if not classes:
        raise UserError(f"{source} has no train/<class>/ image folders: expected train/<class>/*.png and "
                        f"test/<class>/*.png")
    unknown = set(splits["test"]) - set(classes)
    if unknown:
        raise UserError(f"{source}: test classes {sorted(unknown)} have no train/ folder")

    def arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
        images, labels = [], []
        for label, cls in enumerate(classes):
            names = splits[split].get(cls, [])
            if split == "train" and not names:
                raise UserError(f"{source}: class folder train/{cls}/ has no images")
            images += [_decode_image(files[n], n, size) for n in names]
            labels += [label] * len(names)
        if not images:
            raise UserError(f"{source} has no images under {split}/")
        return np.stack(images), np.asarray(labels, dtype=np.int64)

    train_x, train_y = arrays("train")
    test_x, test_y = arrays("test")
    return Dataset(train_x, train_y, test_x, test_y, classes)


def folder_files(path: Path) -> dict[str, bytes]:
    """The files of an image-folder dataset given as a directory or an archive (param data.path)."""
    if path.is_dir():
        return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
    if path.is_file():
        return read_archive(path)
    raise UserError(f"data.path={path} does not exist: point it at a directory or a .zip/.tar.gz archive")


# ---------------------------------------------------------------- storage


def save_dataset(ds: Dataset, out: Path, source: str) -> None:
    x = ds.train_images.astype(np.float64) / 255.0
    meta = {
        "classes": ds.classes,
        "source": source,
        "image_size": int(ds.train_images.shape[-1]),
        "mean": [round(float(v), 6) for v in x.mean(axis=(0, 2, 3))],
        "std": [round(float(v), 6) for v in x.std(axis=(0, 2, 3))],
        "train_size": int(len(ds.train_labels)),
        "test_size": int(len(ds.test_labels)),
    }
    out.mkdir(parents=True, exist_ok=True)
    for name in ("train_images", "train_labels", "test_images", "test_labels"):
        save_npy(np.ascontiguousarray(getattr(ds, name)), out / f"{name}.npy")
    save_json(meta, out / "meta.json")


def load_dataset(directory: Path) -> tuple[Dataset, dict]:
    meta_path = directory / "meta.json"
    if not meta_path.exists():
        raise UserError(f"{meta_path} not found: run `dvc repro download` first")
    meta = json.loads(meta_path.read_text())
    arrays = {n: np.load(directory / f"{n}.npy", allow_pickle=False)
              for n in ("train_images", "train_labels", "test_images", "test_labels")}
    return Dataset(**arrays, classes=meta["classes"]), meta
