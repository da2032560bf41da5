"""Stage `split`: a fixed stratified validation set, and a nested stratified labelled subset of the rest."""

from __future__ import annotations

from pathlib import Path

from stages.common import load_params, param, run_stage, save_json, save_npy
from stages.data import load_dataset
from stages.splits import class_counts, split_indices

OUT = Path("data/splits")
COUNTS = Path("metrics/split.json")


def main() -> None:
    params = load_params()
    seed = param(params, "seed")
    fraction = param(params, "fraction")
    val_fraction = param(params, "split.val_fraction")
    dataset, _ = load_dataset(Path("data/dataset"))
    labels = dataset.train_labels
    validation, labelled = split_indices(labels, seed, val_fraction, fraction)
    save_npy(validation, OUT / "validation.npy")
    save_npy(labelled, OUT / "labelled.npy")
    save_json({
        "fraction": fraction,
        "validation_size": int(len(validation)),
        "labelled_size": int(len(labelled)),
        "pool_size": int(len(labels) - len(validation)),
        "validation_per_class": class_counts(labels, validation, dataset.classes),
        "labelled_per_class": class_counts(labels, labelled, dataset.classes),
    }, COUNTS)
    print(f"split: {len(validation)} validation, {len(labelled)} labelled ({fraction:.0%} of the pool)")


if __name__ == "__main__":
    run_stage(main, outputs=[OUT, COUNTS])
