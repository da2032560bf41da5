"""The statistics on synthetic inputs with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from selfsup.analysis.stats import holm, mean_ci, paired_t


def test_mean_ci_matches_the_textbook_values():
    ci = mean_ci([1.0, 2.0, 3.0])
    # mean 2, sd 1, t(0.975, 2) = 4.3027: half-width 4.3027 / sqrt(3) = 2.4841
    assert ci["mean"] == 2.0 and ci["std"] == pytest.approx(1.0)
    assert ci["ci_low"] == pytest.approx(2 - 2.48414, abs=1e-4)
    assert ci["ci_high"] == pytest.approx(2 + 2.48414, abs=1e-4)
    assert mean_ci([0.5])["ci_low"] is None


@pytest.mark.parametrize("n", [3, 5])
def test_ci_covers_the_true_mean_at_the_stated_rate(n):
    rng = np.random.default_rng(0)
    trials = 4000
    covered = 0
    for _ in range(trials):
        ci = mean_ci(rng.normal(0.6, 0.02, n), 0.95)
        covered += ci["ci_low"] <= 0.6 <= ci["ci_high"]
    # binomial sd at 4000 trials is 0.0034: 0.95 +- 0.012 is a 3.5-sigma band
    assert abs(covered / trials - 0.95) < 0.012


def test_paired_t_flags_a_real_difference_and_not_a_null_one():
    rng = np.random.default_rng(1)
    trials = 2000
    false_alarms = hits = 0
    for _ in range(trials):
        seed_effect = rng.normal(0, 0.03, 3)  # shared by both inits of a seed: pairing removes it
        scratch = 0.60 + seed_effect + rng.normal(0, 0.005, 3)
        null = 0.60 + seed_effect + rng.normal(0, 0.005, 3)
        better = 0.63 + seed_effect + rng.normal(0, 0.005, 3)
        false_alarms += paired_t(null, scratch)["p"] < 0.05
        hits += paired_t(better, scratch)["p"] < 0.05
    assert abs(false_alarms / trials - 0.05) < 0.015  # the test's size is what it says
    assert hits / trials > 0.9                        # a 3-point gain with small pair noise is found


def test_paired_t_known_values():
    out = paired_t([0.62, 0.64, 0.66], [0.60, 0.61, 0.62])
    # differences 0.02, 0.03, 0.04: mean 0.03, sd 0.01, t = 0.03 / (0.01 / sqrt 3) = 5.196, df 2, p = 0.0351
    assert out["mean"] == pytest.approx(0.03)
    assert out["t"] == pytest.approx(5.196, abs=1e-3)
    assert out["p"] == pytest.approx(0.0351, abs=1e-3)
    assert out["ci_low"] > 0
    assert paired_t([1.0, 1.0], [1.0, 1.0])["p"] == 1.0
    with pytest.raises(ValueError):
        paired_t([1.0, 2.0], [1.0])


def test_holm():
    # sorted p: 0.01 (x3 = 0.03), 0.02 (x2 = 0.04), 0.04 (x1, then max with 0.04) -> in input order
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    # an endpoint that could not be tested counts in the family, with p = 1: m stays the declared size
    assert holm([0.5, None, 0.01]) == pytest.approx([1.0, 1.0, 0.03])
    assert holm([0.0007, 0.0017, 0.59, None, None]) == pytest.approx([0.0035, 0.0068, 1.0, 1.0, 1.0])
    assert holm([0.9, 0.3]) == pytest.approx([0.9, 0.6])  # capped at 1, never below an earlier one
