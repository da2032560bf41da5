"""Where the stages read and write: the file layout dvc.yaml declares, in one place.

Every replicate is one seed of `seeds`: its own split (validation set and nested labelled subset), its
own pretraining, its own linear probes and its own two fine-tunes.
"""

from __future__ import annotations

from pathlib import Path

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


def split_files(seed: int) -> list[Path]:
    """The split stage's outputs, declared file by file in dvc.yaml: the pretraining depends on the validation
    file alone, and DVC can only restore a dep inside a directory output if it can read that directory's
    listing from the cache (a fresh clone's committed dvc.lock names listings its cache does not hold)."""
    return [validation(seed), labelled(seed), split_counts(seed)]


def pretrained(seed: int) -> Path:
    return Path(f"models/pretrained/seed{seed}.pt")


def pretrain_log(seed: int) -> Path:
    return Path(f"metrics/pretrain/seed{seed}")


def probe_result(seed: int) -> Path:
    return Path(f"metrics/linear_probe/seed{seed}.json")


def finetuned(init: str, seed: int) -> Path:
    return Path(f"models/finetune/{init}/seed{seed}.pt")


def finetune_log(init: str, seed: int) -> Path:
    return Path(f"metrics/finetune/{init}/seed{seed}")
