"""Linear probes of a feature extractor: logistic regression on frozen features of labelled images, and
the k-nearest-neighbour classifier on the same features that the SSL libraries print as their monitor.

The pretext accuracy says little about transfer (a network can solve the pretext through a shortcut and
learn nothing useful), so pretraining logs a cheap probe every epoch, on validation images only, and the
`linear_probe` stage runs the standard evaluation: fit on the labelled fraction, choose the regularisation
on validation, score on test.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from selfsup.training.engine import channels_last, chunks, classification_metrics, predict, recalibrate_bn
from selfsup.training.models import PoolInput, last_adaptive_pool
from selfsup.core.params import UserError

# The per-epoch monitor of pretraining: fixed, not params, so that changing the `probe` params (the
# linear_probe stage's) never re-runs pretraining; it tracks a trend, the linear_probe stage scores transfer.
MONITOR_C = 0.1
MONITOR_MAX_ITER = 300
# The kNN evaluation's neighbours and temperature: solo-learn's defaults (lightly's are 200 and 0.1); fixed, not
# params, as the SSL libraries fix them: nothing is chosen, so nothing is tuned
KNN_K = 20
KNN_TEMPERATURE = 0.07


def linear_probe_accuracy(features: np.ndarray, labels: np.ndarray, seed: int) -> float:
    """Fit on a stratified half of (features, labels), return the accuracy on the other half (the monitor)."""
    stratify = labels if np.bincount(labels).min() >= 2 else None
    x_fit, x_eval, y_fit, y_eval = train_test_split(features, labels, test_size=0.5, random_state=seed,
                                                    stratify=stratify)
    return float(_fit(x_fit, y_fit, MONITOR_C, MONITOR_MAX_ITER).score(x_eval, y_eval))


def frozen_features(extractor: nn.Module, images: Sequence[torch.Tensor], calibration: torch.Tensor,
                    batch_size: int, transform: Callable[[torch.Tensor], torch.Tensor],
                    device: torch.device, grid: int = 1) -> list[np.ndarray]:
    """Features of each uint8 image tensor in `images` from a copy of `extractor` whose BatchNorm statistics
    are re-estimated on `calibration` images first (labels unused): a pretext extractor's statistics
    describe its pretext inputs, a random one's describe nothing. With `grid` > 1 the features are the map
    the extractor's last adaptive pool receives, pooled to grid x grid by the same kind of pool (max or
    average), so they say where as well as what: C * grid**2 of them, whatever layers follow that pool.
    Everything here runs in fp32 whatever the training precision (a forward pass only, so cheap): the
    probe's figures do not depend on the `precision` knob, and a bf16 BatchNorm re-estimate, once seen to
    give NaN features on a CPU, cannot."""
    model = copy.deepcopy(extractor).to(device)
    if grid > 1:
        pool = last_adaptive_pool(model)
        if pool is None:
            raise UserError(f"param 'probe.grid' is {grid} but the extractor has no adaptive pooling layer to "
                            f"widen: set probe.grid=1")
        model = GridFeatures(model, pool, grid)
    if channels_last(device, "fp32"):
        model = model.to(memory_format=torch.channels_last)
    recalibrate_bn(model, chunks(calibration, batch_size, transform), device, "fp32")
    return [predict(model, chunks(x, batch_size, transform), device, precision="fp32").numpy() for x in images]


class GridFeatures(nn.Module):
    """`extractor` read at `pool` (one of its adaptive pools): the map that pool receives, pooled to
    grid x grid by a pool of the same kind and flattened; the layers after `pool` run but are not read."""

    def __init__(self, extractor: nn.Module, pool: nn.Module, grid: int):
        super().__init__()
        self.extractor = extractor
        self.reduce = type(pool)(grid)
        self._pool_input = PoolInput(pool)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.reduce(self._pool_input.read(lambda: self.extractor(images))).flatten(1)


def _fit(x: np.ndarray, y: np.ndarray, c: float, max_iter: int):
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, C=c))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x, y)
    return clf


def _logits(clf, x: np.ndarray, n_classes: int) -> torch.Tensor:
    """Log-probabilities for all classes, also for classes the fit never saw."""
    out = np.full((len(x), n_classes), -1e9, dtype=np.float64)
    out[:, clf.classes_] = clf.predict_log_proba(x)
    return torch.from_numpy(out)


def linear_probe(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
                 test: tuple[np.ndarray, np.ndarray], cs: Sequence[float], n_classes: int, max_iter: int) -> dict:
    """Fit one probe per inverse regularisation strength in `cs` on `train`, keep the one with the best
    validation macro-F1, and return its C and its validation and test metrics."""
    best: dict = {}
    for c in cs:
        clf = _fit(*train, c, max_iter)
        val_metrics = classification_metrics(_logits(clf, val[0], n_classes), val[1])
        if not best or val_metrics["f1_macro"] > best["val"]["f1_macro"]:
            best = {"C": float(c), "val": val_metrics, "clf": clf}
    best["test"] = classification_metrics(_logits(best.pop("clf"), test[0], n_classes), test[1])
    return best


def knn_logits(train_feats: np.ndarray, train_labels: np.ndarray, feats: np.ndarray, n_classes: int,
               k: int = KNN_K, temperature: float = KNN_TEMPERATURE, chunk: int = 1024) -> torch.Tensor:
    """Weighted k-nearest-neighbour votes (Wu et al. 2018, as lightly and solo-learn compute them): features
    L2-normalised, the k most cosine-similar labelled examples each vote for their class with weight
    exp(similarity / temperature); the log of each class's share of the votes, one row per example of
    `feats`. No training and no choice: k and the temperature are fixed (`KNN_K`, `KNN_TEMPERATURE`)."""
    bank = torch.nn.functional.normalize(torch.as_tensor(train_feats, dtype=torch.float32), dim=1)
    labels = torch.as_tensor(train_labels, dtype=torch.long)
    k = min(k, len(bank))
    out = []
    for i in range(0, len(feats), chunk):
        x = torch.nn.functional.normalize(torch.as_tensor(feats[i:i + chunk], dtype=torch.float32), dim=1)
        similarity, index = (x @ bank.T).topk(k, dim=1)
        weights = ((similarity - similarity[:, :1]) / temperature).exp()  # shifted by the top one: no overflow
        votes = torch.zeros(len(x), n_classes).scatter_add_(1, labels[index], weights)
        out.append((votes / votes.sum(1, keepdim=True)).clamp_min(1e-12).log())
    return torch.cat(out).double()


def knn_eval(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
             test: tuple[np.ndarray, np.ndarray], n_classes: int, k: int = KNN_K,
             temperature: float = KNN_TEMPERATURE) -> dict:
    """The kNN classifier of `train` (the labelled fraction's features) scored on validation and test."""
    return {"k": int(min(k, len(train[0]))), "temperature": float(temperature),
            **{name: classification_metrics(knn_logits(*train, x, n_classes, k, temperature), y)
               for name, (x, y) in (("val", val), ("test", test))}}
