"""Stage `split@{seed}`: one replicate's stratified validation set and nested stratified labelled subset.

Run once per seed in `seeds` (`--seed`): each seed draws its own validation set and its own labelled subset
of the rest, nested across fractions within the seed (10 % inside 50 % inside 100 %), so the replicates vary
which images are labelled. Writes data/splits/seed{seed}/ (validation.npy, labelled.npy, counts.json).
"""

from __future__ import annotations

import argparse

from selfsup.core import paths
from selfsup.core.dataset import load_dataset
from selfsup.core.files import save_json, save_npy
from selfsup.core.params import load_params, param
from selfsup.stage import run_stage
from selfsup.subsets import class_counts, split_indices


def main(seed: int) -> None:
    params = load_params()
    fraction = param(params, "fraction")
    val_fraction = param(params, "split.val_fraction")
    dataset, _ = load_dataset(paths.DATASET)
    labels = dataset.train_labels
    validation, labelled = split_indices(labels, seed, val_fraction, fraction)
    save_npy(validation, paths.validation(seed))
    save_npy(labelled, paths.labelled(seed))
    save_json({
        "seed": seed,
        "fraction": fraction,
        "validation_size": int(len(validation)),
        "labelled_size": int(len(labelled)),
        "pool_size": int(len(labels) - len(validation)),
        "validation_per_class": class_counts(labels, validation, dataset.classes),
        "labelled_per_class": class_counts(labels, labelled, dataset.classes),
    }, paths.split_counts(seed))
    print(f"split seed {seed}: {len(validation)} validation, {len(labelled)} labelled ({fraction:.0%} of the pool)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, required=True, help="one of the `seeds` param (dvc.yaml passes each)")
    args = parser.parse_args()
    run_stage(lambda: main(args.seed), outputs=[paths.splits(args.seed)])
