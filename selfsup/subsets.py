"""Stratified, nested label splits.

Each class's training indices are shuffled once with the seed. The first `val_fraction` of every class is
the validation set (independent of `fraction`); the rest, in the same shuffled order, is the labelled pool,
and a label fraction takes its first round(fraction * n) images per class. So 10 % is inside 50 % inside
100 %, every class keeps its share, and identical seeds give identical splits.
"""

from __future__ import annotations

import numpy as np


def class_orders(labels: np.ndarray, seed: int) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {int(c): rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)}


def split_indices(labels: np.ndarray, seed: int, val_fraction: float, fraction: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Return (validation, labelled) index arrays into `labels`, each sorted."""
    val, labelled = [], []
    for order in class_orders(labels, seed).values():
        n_val = int(round(val_fraction * len(order)))
        pool = order[n_val:]
        val.append(order[:n_val])
        labelled.append(pool[: max(1, int(round(fraction * len(pool))))])
    return np.sort(np.concatenate(val)), np.sort(np.concatenate(labelled))


def validation_indices(labels: np.ndarray, seed: int, val_fraction: float) -> np.ndarray:
    """The seed's validation set alone, sorted: the same as `split_indices`'s at every fraction. The pretrain stage
    draws it here rather than reading the split stage's file, so no label fraction can reach a pretraining."""
    return split_indices(labels, seed, val_fraction, 1.0)[0]


def class_counts(labels: np.ndarray, indices: np.ndarray, classes: list[str]) -> dict[str, int]:
    counts = np.bincount(labels[indices], minlength=len(classes))
    return {name: int(n) for name, n in zip(classes, counts)}


def capped_per_class(labels: np.ndarray, caps: dict[int, int]) -> np.ndarray:
    """Positions into `labels` (in order) keeping at most caps[c] of each class c, the first ones: a model choice
    made on these uses no more labels of a class than the run trains on. `labels` are a split's validation labels,
    whose order is already the seed's shuffle within each class, sorted by index."""
    keep = [np.flatnonzero(labels == c)[:caps.get(int(c), 0)] for c in np.unique(labels)]
    return np.sort(np.concatenate(keep))
