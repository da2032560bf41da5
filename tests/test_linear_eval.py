"""The linear probe's features: the pooled vector, or the last pool widened to a grid (probe.grid)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from selfsup.linear_eval import frozen_features, linear_probe
from selfsup.training.models import build_extractor, last_adaptive_pool
from selfsup.core.params import UserError


def features(extractor: nn.Module, images: torch.Tensor, grid: int) -> np.ndarray:
    feats, = frozen_features(extractor, [images], images, 8, lambda x: x.float() / 255, torch.device("cpu"),
                             grid=grid)
    return feats


@pytest.mark.parametrize("arch, pool", [("nets.fast_cnn:build", nn.functional.adaptive_max_pool2d),
                                        ("resnet18", nn.functional.adaptive_avg_pool2d)])
def test_grid_features_are_the_last_map_pooled_by_the_nets_own_pool(arch, pool):
    torch.manual_seed(0)
    extractor, dim = build_extractor(arch, "cifar")
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    one, four = features(extractor, images, 1), features(extractor, images, 2)
    assert one.shape == (6, dim) and four.shape == (6, 4 * dim)
    # the 2 x 2 cells pooled once more give the pooled vector (max of maxes, mean of equal-sized means)
    cells = torch.from_numpy(four).view(6, dim, 2, 2)
    np.testing.assert_allclose(pool(cells, 1).flatten(1).numpy(), one, rtol=1e-4, atol=1e-5)
    # the probe works on a copy: the extractor itself is untouched (no hook left on it)
    assert not last_adaptive_pool(extractor)._forward_pre_hooks
    np.testing.assert_allclose(features(extractor, images, 1), one, rtol=1e-6)


def test_grid_reads_the_pooled_map_whatever_layers_follow_the_pool():
    torch.manual_seed(0)
    extractor, dim = build_extractor("mobilenet_v3_small", "cifar")  # pool -> Linear(576, 1024) -> features
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    assert features(extractor, images, 1).shape == (4, dim)
    assert features(extractor, images, 2).shape == (4, 576 * 4)


def test_grid_needs_an_adaptive_pool():
    flat = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten())
    with pytest.raises(UserError, match="param 'probe.grid' is 2 .* set probe.grid=1"):
        features(flat, torch.zeros(2, 3, 8, 8, dtype=torch.uint8), 2)


def test_probe_keeps_the_C_best_on_validation_and_scores_it_on_test():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    x = rng.normal(size=(300, 5)) + 2.0 * np.eye(3, 5)[y]
    split = [(x[:150], y[:150]), (x[150:225], y[150:225]), (x[225:], y[225:])]
    result = linear_probe(*split, cs=[1e-6, 1.0], n_classes=3, max_iter=300)
    assert result["C"] == 1.0  # a vanishing C predicts one class: worse on validation
    assert result["test"]["f1_macro"] > 0.7


def test_knn_votes_by_cosine_neighbours_weighted_by_temperature():
    from selfsup.linear_eval import knn_eval, knn_logits
    bank = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    labels = np.array([0, 0, 1, 1])
    queries = np.array([[2.0, 0.1], [0.05, 3.0]])  # scale does not matter: cosine
    logits = knn_logits(bank, labels, queries, n_classes=3, k=2, temperature=0.1)
    assert logits.argmax(1).tolist() == [0, 1]
    assert torch.allclose(logits.exp().sum(1), torch.ones(2, dtype=torch.float64))  # shares of the votes
    assert logits[0, 2] < -20  # a class without neighbours gets (almost) nothing
    # k = all four, near-zero temperature: the nearest neighbour decides; high temperature: a plain vote
    sharp = knn_logits(bank, labels, np.array([[1.0, 0.95]]), 2, k=4, temperature=0.001).exp()
    flat = knn_logits(bank, labels, np.array([[1.0, 0.95]]), 2, k=4, temperature=1000.0).exp()
    assert sharp[0, 0] > 0.99 and abs(flat[0, 0] - 0.5) < 0.01
    result = knn_eval((bank, labels), (queries, np.array([0, 1])), (queries, np.array([1, 0])), 2, k=10,
                      temperature=0.1)
    assert result["k"] == 4 and result["val"]["accuracy"] == 1.0 and result["test"]["accuracy"] == 0.0
