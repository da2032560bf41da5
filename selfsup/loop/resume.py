"""Resumable training: a long stage saves a checkpoint after every epoch and continues from it when re-run.

A checkpoint is one file, `.resume/<name>.pt` (outside every DVC output, which DVC deletes before it re-runs
a stage; ignored by git and DVC), replaced whole after every epoch. It holds the stage's dvclive directory
as it was after that epoch, the model, optimiser and scheduler states, every random number generator (as
tensors, so it loads with `weights_only=True`), the epoch and whatever the stage adds, and a fingerprint
of the stage's params, its input files and its code (the source of every module the stage has imported
from the repository, `nets/` included). When the stage starts, a checkpoint with the same fingerprint is
resumed; one with another fingerprint (params, inputs or code changed) or one that does not load is
reported, removed and ignored. After the stage succeeds the checkpoint is removed. Resuming replays the rest of the
run exactly: the same batches, the same updates; on a CPU the final metrics equal an uninterrupted run's.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from selfsup.core.files import save_torch

RESUME_DIR = Path(".resume")
HASHED_BYTES = 1 << 24  # files up to 16 MiB are hashed whole; larger ones by size, mtime and their ends


def _file_digest(path: Path, digest: Any) -> None:
    stat = path.stat()
    digest.update(f"{path.as_posix()}:{stat.st_size}".encode())
    with open(path, "rb") as f:
        if stat.st_size <= HASHED_BYTES:
            digest.update(f.read())
        else:  # a large array: its size, modification time, first and last MiB
            digest.update(str(stat.st_mtime_ns).encode())
            digest.update(f.read(1 << 20))
            f.seek(-(1 << 20), 2)
            digest.update(f.read())


def loaded_code(root: Path | None = None) -> list[Path]:
    """Source files of every module this process has imported from under `root` (default: the working
    directory, the repository a stage runs in): the code the stage runs."""
    root = (root or Path.cwd()).resolve()
    files = set()
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and path.endswith(".py"):
            resolved = Path(path).resolve()
            # not an environment that happens to live in the repository
            if resolved.is_relative_to(root) and resolved.is_file() and not {
                    ".venv", "site-packages", "dist-packages"} & set(resolved.relative_to(root).parts):
                files.add(resolved)
    return sorted(files)


def fingerprint(params: Any, inputs: list[Path | str], code: list[Path] | None = None) -> str:
    """A digest of `params` (any JSON-able value), of the input files (directories walked, bytecode caches
    skipped) and of the code (default: `loaded_code()`)."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode())
    for path in loaded_code() if code is None else code:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    for item in map(Path, inputs):
        files = (sorted(p for p in item.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
                 if item.is_dir() else [item])
        for path in files:
            if path.exists():
                _file_digest(path, digest)
    return digest.hexdigest()


def rng_state(generator: torch.Generator | None) -> dict[str, torch.Tensor]:
    """Every RNG a run draws from, as tensors."""
    version, internal, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": torch.tensor([version, *internal, -1 if gauss is None else 0], dtype=torch.int64),
        "python_gauss": torch.tensor(0.0 if gauss is None else gauss, dtype=torch.float64),
        "numpy": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "numpy_rest": torch.tensor([pos, has_gauss], dtype=torch.int64),
        "numpy_gauss": torch.tensor(cached, dtype=torch.float64),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def set_rng_state(state: dict[str, torch.Tensor], generator: torch.Generator | None) -> None:
    python = state["python"].tolist()
    gauss = None if python[-1] == -1 else float(state["python_gauss"])
    random.setstate((python[0], tuple(python[1:-1]), gauss))
    pos, has_gauss = state["numpy_rest"].tolist()
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), pos, has_gauss,
                         float(state["numpy_gauss"])))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"])


class Resume:
    """The resume checkpoint of one stage run (`name`, e.g. `finetune-scratch-seed0`)."""

    def __init__(self, name: str, fingerprint: str, live_dir: Path | None = None, root: Path = RESUME_DIR):
        self.path = root / f"{name}.pt"
        self.fingerprint = fingerprint
        self.live_dir = live_dir

    def load(self) -> dict | None:
        """The saved state if it belongs to this run (and its dvclive directory put back); else None, and
        a stale or unreadable checkpoint is removed."""
        if not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:  # a half-written or foreign file: start over
            print(f"resume: ignoring {self.path} ({str(e).splitlines()[0][:100]}); starting over", file=sys.stderr)
            self.clear()
            return None
        if not isinstance(state, dict) or state.get("fingerprint") != self.fingerprint:
            print(f"resume: {self.path} belongs to other params, inputs or code; removed, starting over",
                  file=sys.stderr)
            self.clear()
            return None
        if self.live_dir is not None:
            shutil.rmtree(self.live_dir, ignore_errors=True)
            for name, blob in state.pop("live_files", {}).items():
                (self.live_dir / name).parent.mkdir(parents=True, exist_ok=True)
                (self.live_dir / name).write_bytes(blob.numpy().tobytes())
        print(f"resume: continuing after epoch {state['epoch']} from {self.path}", file=sys.stderr)
        return state

    def save(self, state: dict) -> None:
        """Save after an epoch (rank 0 only), the dvclive directory included, in one atomic replace."""
        live = {}
        if self.live_dir is not None and self.live_dir.is_dir():
            live = {p.relative_to(self.live_dir).as_posix(): torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8)
                    for p in sorted(self.live_dir.rglob("*")) if p.is_file()}
        save_torch({**state, "live_files": live, "fingerprint": self.fingerprint}, self.path)

    def restore(self, trainer: Any, generator: torch.Generator | None) -> dict | None:
        """`load`, and put the trainer (model, optimiser, schedule) and every RNG back where the saved epoch
        left them; the rest of the state (epoch, what the stage added) is returned."""
        state = self.load()
        if state is not None:
            trainer.load_state_dict(state.pop("trainer"))
            set_rng_state(state.pop("rng"), generator)
        return state

    def save_epoch(self, epoch: int, trainer: Any, generator: torch.Generator | None, **extra: Any) -> None:
        """`save` the end of `epoch`: the trainer, every RNG, and `extra` (the stage's own state)."""
        self.save({"epoch": epoch, "trainer": trainer.state_dict(), "rng": rng_state(generator), **extra})

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)  # under torchrun every rank may get here
