"""Tiny synthetic datasets the tests build themselves: CIFAR-style archives and image folders.

Each class has its own colour and stripe direction plus noise, so a few training steps can learn them.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def images(labels: np.ndarray, seed: int, size: int = 32) -> np.ndarray:
    """uint8 N x 3 x size x size images whose look depends on the label."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    yy, xx = np.mgrid[0:size, 0:size]
    out = np.empty((n, 3, size, size), dtype=np.float64)
    for i, c in enumerate(labels):
        angle = np.pi * c / 10
        stripes = np.sin((np.cos(angle) * xx + np.sin(angle) * yy) * 0.8)
        colour = np.array([(c * 37) % 256, (c * 91) % 256, (c * 53) % 256]) / 255.0
        out[i] = colour[:, None, None] * 0.6 + 0.25 * stripes[None] + 0.15
    out += rng.normal(0, 0.08, out.shape)
    return (np.clip(out, 0, 1) * 255).astype(np.uint8)


def _add(tf: tarfile.TarFile, name: str, blob: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(blob)
    tf.addfile(info, io.BytesIO(blob))


def cifar_archive(path: Path, n_train: int = 200, n_test: int = 100, batches: int = 2, seed: int = 0) -> str:
    """Write a cifar-10-python.tar.gz look-alike; return its md5."""
    rng = np.random.default_rng(seed)
    train_y = np.arange(n_train) % 10
    rng.shuffle(train_y)
    test_y = np.arange(n_test) % 10
    train_x, test_x = images(train_y, seed), images(test_y, seed + 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tf:
        _add(tf, "cifar-10-batches-py/batches.meta", pickle.dumps({"label_names": CLASSES}, protocol=2))
        for b, part in enumerate(np.array_split(np.arange(n_train), batches), start=1):
            batch = {"data": train_x[part].reshape(len(part), -1), "labels": train_y[part].tolist()}
            _add(tf, f"cifar-10-batches-py/data_batch_{b}", pickle.dumps(batch, protocol=2))
        _add(tf, "cifar-10-batches-py/test_batch",
             pickle.dumps({"data": test_x.reshape(n_test, -1), "labels": test_y.tolist()}, protocol=2))
    return hashlib.md5(path.read_bytes()).hexdigest()


def image_folder(root: Path, per_class: int = 4, classes: int = 3, size: int = 32, seed: int = 0) -> Path:
    """train/<class>/*.png and test/<class>/*.png under root."""
    for split, offset in (("train", 0), ("test", 1)):
        labels = np.repeat(np.arange(classes), per_class)
        imgs = images(labels, seed + offset, size)
        for i, (img, c) in enumerate(zip(imgs, labels)):
            d = root / split / CLASSES[c]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img.transpose(1, 2, 0)).save(d / f"{i:04d}.png")
    return root
