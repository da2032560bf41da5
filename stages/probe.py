"""A cheap linear probe of a feature extractor: logistic regression on frozen features of labelled images.

The pretext accuracy says little about transfer (a network can solve the pretext through a shortcut and
learn nothing useful), so pretraining logs this probe every epoch, on validation images only.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def linear_probe_accuracy(features: np.ndarray, labels: np.ndarray, seed: int) -> float:
    """Fit on a stratified half of (features, labels), return the accuracy on the other half."""
    stratify = labels if np.bincount(labels).min() >= 2 else None
    x_fit, x_eval, y_fit, y_eval = train_test_split(features, labels, test_size=0.5, random_state=seed,
                                                    stratify=stratify)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300, C=0.1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x_fit, y_fit)
    return float(clf.score(x_eval, y_eval))
