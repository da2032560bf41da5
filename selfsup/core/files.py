"""Writing outputs whole or not at all: every file a stage writes goes through a temporary file and one rename."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


@contextmanager
def atomic_path(path: Path | str):
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        if os.path.isfile(tmp):  # mkstemp makes 0600 files; give the usual permissions
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_json(obj: Any, path: Path | str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_npy(array: np.ndarray, path: Path | str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array)


def save_torch(obj: Any, path: Path | str) -> None:
    """torch.save through a file object: saved to a path, the archive's inner folder would take the temporary
    file's random name, so the same weights would give other bytes each time (and another SHA-1 and DVC hash)."""
    with atomic_path(path) as tmp:
        import torch  # here: the download and split stages need no torch

        with open(tmp, "wb") as f:
            torch.save(obj, f)


def remove_outputs(outputs: Iterable[Path | str]) -> None:
    for out in map(Path, outputs):
        if out.is_dir():
            shutil.rmtree(out)
        elif out.exists():
            out.unlink()
