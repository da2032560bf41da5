"""Where the stages read and write: the file layout dvc.yaml declares, in one place.

Every replicate is one seed of `seeds`: its own split (validation set and nested labelled subset), its
own pretraining, its own linear probes and its own two fine-tunes.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from selfsup.core.params import UserError

DATASET = Path("data/dataset")
INITS = ("scratch", "pretrained")  # the finetune stages of dvc.yaml


def splits(seed: int) -> Path:
    return Path(f"data/splits/seed{seed}")


def validation(seed: int) -> Path:
    return splits(seed) / "validation.npy"


def labelled(seed: int) -> Path:
    return splits(seed) / "labelled.npy"


def split_counts(seed: int) -> Path:
    return splits(seed) / "counts.json"


def pretrained(seed: int) -> Path:
    return Path(f"models/pretrained/seed{seed}.pt")


RUNS = Path("metrics/runs")  # every run's own log (DVC-cached): pretrain/, finetune/<init>/, linear_probe/


def pretrain_log(seed: int) -> Path:
    return Path(f"metrics/runs/pretrain/seed{seed}")


def probe_result(seed: int) -> Path:
    return Path(f"metrics/runs/linear_probe/seed{seed}.json")


def finetuned(init: str, seed: int) -> Path:
    return Path(f"models/finetune/{init}/seed{seed}.pt")


def finetune_log(init: str, seed: int) -> Path:
    return Path(f"metrics/runs/finetune/{init}/seed{seed}")


# what each stage reads, by the stage of dvc.yaml that writes it (a stage run on its own names the missing one)
PRODUCERS = [(r"data/dataset(?:/.*)?", "download"), (r"data/splits/seed(\d+)(?:/.*)?", "split@{}"),
             (r"models/pretrained/seed(\d+)\.pt", "pretrain@{}"),
             (r"metrics/runs/pretrain/seed(\d+)(?:/.*)?", "pretrain@{}"),
             (r"(?:models|metrics/runs)/finetune/(scratch|pretrained)/seed(\d+)(?:\.pt|/.*)?", "finetune_{}@{}"),
             (r"metrics/runs/linear_probe/seed(\d+)\.json", "linear_probe@{}")]


def producer(path: Path) -> str:
    """The dvc.yaml stage that writes `path` (`split@3`), or 'its stage' for a path no stage writes."""
    for pattern, stage in PRODUCERS:
        if m := re.fullmatch(pattern, Path(path).as_posix()):
            return stage.format(*m.groups())
    return "its stage"


def missing(path: Path, stage: str | None = None) -> UserError:
    """The one-line error for an input that is not there: the file, and the stage that makes it (`stage`, else
    the one of dvc.yaml that writes `path`)."""
    stage = stage or producer(path)
    if stage == "its stage":  # a path outside the layout (a tool's --dataset, say)
        return UserError(f"{path} not found: run the stage that makes it first (`dvc repro`)")
    return UserError(f"{path} not found: it is made by stage {stage}; run `dvc repro {stage.split(' ')[0]}` first")


def load_indices(path: Path) -> np.ndarray:
    """A split's index array (validation.npy, labelled.npy), or a one-line error naming the stage that makes it."""
    if not Path(path).exists():
        raise missing(path)
    return np.load(path)
