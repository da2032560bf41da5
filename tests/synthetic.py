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

from selfsup.config import Hardware, Params, defaults

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


def cifar100_archive(path: Path, n_train: int = 200, n_test: int = 100, seed: int = 0) -> str:
    """Write a cifar-100-python.tar.gz look-alike (train, test, meta; 100 fine labels); return its md5."""
    train_y = np.arange(n_train) % 100
    test_y = np.arange(n_test) % 100
    train_x, test_x = images(train_y % 10, seed), images(test_y % 10, seed + 1)
    names = [f"fine_{i:02d}" for i in range(100)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tf:
        _add(tf, "cifar-100-python/meta", pickle.dumps({"fine_label_names": names,
                                                        "coarse_label_names": [f"c{i}" for i in range(20)]}, protocol=2))
        for split, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
            batch = {"data": x.reshape(len(x), -1), "fine_labels": y.tolist(), "coarse_labels": (y // 5).tolist()}
            _add(tf, f"cifar-100-python/{split}", pickle.dumps(batch, protocol=2))
    return hashlib.md5(path.read_bytes()).hexdigest()


def stl10_binary(x: np.ndarray) -> bytes:
    """uint8 N x 3 x 96 x 96 -> STL-10's column-major binary layout."""
    return np.ascontiguousarray(x.transpose(0, 1, 3, 2)).tobytes()


def stl10_archive(path: Path, n_train: int = 20, n_test: int = 10, n_unlabeled: int = 30, seed: int = 0) -> str:
    """Write a stl10_binary.tar.gz look-alike (labels 1..10 as in the original); return its md5."""
    train_y = np.arange(n_train) % 10
    test_y = np.arange(n_test) % 10
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tf:
        _add(tf, "stl10_binary/class_names.txt", "\n".join(CLASSES).encode() + b"\n")
        for split, y, s in (("train", train_y, seed), ("test", test_y, seed + 1)):
            _add(tf, f"stl10_binary/{split}_X.bin", stl10_binary(images(y, s, 96)))
            _add(tf, f"stl10_binary/{split}_y.bin", (y + 1).astype(np.uint8).tobytes())
        _add(tf, "stl10_binary/unlabeled_X.bin", stl10_binary(images(np.arange(n_unlabeled) % 10, seed + 2, 96)))
    return hashlib.md5(path.read_bytes()).hexdigest()


# hardware.yaml of the tests' workspaces: the declared defaults on the CPU, in fp32 (so a test's outcome never
# depends on whether this CPU has bf16 instructions; tests/test_engine.py tests the precision choice), without
# compile: auto's measuring (about 20 s of compiling per network; tests/test_engine.py tests it)
HARDWARE = defaults(Hardware) | {"device": "cpu", "compile": False, "precision": "fp32"}


def declared_params() -> dict:
    """The declared defaults with every pretext task's section: what the tests' workspaces start from, not the
    committed params.yaml (that is the study's profile and data, which the tests neither have nor need)."""
    return defaults(Params, tasks=True)


def read_params(ws: Path) -> dict:
    """A workspace's params.yaml with its hardware.yaml knobs at the top level, as the stages read them."""
    import yaml

    return yaml.safe_load((ws / "params.yaml").read_text()) | yaml.safe_load((ws / "hardware.yaml").read_text())


def write_params(ws: Path, params: dict) -> None:
    """`read_params`'s mapping written back: the hardware knobs to hardware.yaml, the rest to params.yaml."""
    import yaml

    (ws / "hardware.yaml").write_text(yaml.safe_dump({k: v for k, v in params.items() if k in HARDWARE}))
    (ws / "params.yaml").write_text(yaml.safe_dump({k: v for k, v in params.items() if k not in HARDWARE}))


def stage_workspace(tmp: Path, pretext: dict, finetune: dict) -> Path:
    """A directory to run stage scripts in directly (`python -m stages.X`): a copy of stages/, selfsup/ and nets/, a
    CPU params.yaml with these pretext/finetune overrides, and a tiny dataset already downloaded and split."""
    import os
    import shutil
    import subprocess
    import sys

    import yaml

    root = Path(__file__).resolve().parents[1]
    archive = tmp / "tiny.tar.gz"
    cifar_archive(archive, n_train=300, n_test=100)
    ws = tmp / "ws"
    for package in ("stages", "selfsup", "nets"):
        shutil.copytree(root / package, ws / package, ignore=shutil.ignore_patterns("__pycache__"))
    params = declared_params()
    params["model"].update(arch="nets.fast_cnn:half", stem="cifar", code="nets")  # the cpu profile's network: cheap
    (ws / "hardware.yaml").write_text(yaml.safe_dump(HARDWARE | {"data_location": str(archive)}))
    params["pretext"].update({"batch_size": 64, "probe_size": 40, "eval_batch_size": 64, **pretext})
    params["finetune"].update({"batch_size": 32, "eval_batch_size": 64, **finetune})
    (ws / "params.yaml").write_text(yaml.safe_dump(params))
    for args in (["stages.download"], ["stages.split", "--seed", "0"]):
        subprocess.run([sys.executable, "-m", *args], cwd=ws, env={**os.environ, "PYTHONPATH": str(ws)},
                       check=True, capture_output=True)
    return ws
