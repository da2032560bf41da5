"""The statistics of the study: t confidence intervals over seeds, the paired t test, Holm's correction.

With a handful of seeds a rank test (Wilcoxon) cannot reach significance at all (3 pairs: the smallest
two-sided p is 0.25), so pretrained vs scratch is a paired t test: the per-seed differences (same seed =
same head init, batch order and augmentation for both inits) are assumed roughly normal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> dict[str, float | int | None]:
    """Mean, sample standard deviation and the two-sided t confidence interval of the mean.
    With one value the spread and interval are unknown (None)."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n == 0:
        raise ValueError("mean_ci needs at least one value")
    mean = float(x.mean())
    if n == 1:
        return {"n": 1, "mean": mean, "std": None, "ci_low": None, "ci_high": None}
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half}


def paired_t(treated: Sequence[float], control: Sequence[float], confidence: float = 0.95) -> dict:
    """Paired t test of treated - control (two-sided) with the t interval of the mean difference.
    Identical differences give p = 0 for a non-zero difference and p = 1 for none."""
    a, b = np.asarray(treated, dtype=float), np.asarray(control, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError("paired_t needs two sequences of the same length")
    diff = a - b
    out = mean_ci(diff, confidence)
    n = len(diff)
    if n < 2:
        out.update({"t": None, "df": None, "p": None})
        return out
    std = out["std"]
    if std == 0:
        t, p = (math.inf if out["mean"] != 0 else 0.0), (0.0 if out["mean"] != 0 else 1.0)
    else:
        t = out["mean"] / (std / math.sqrt(n))
        p = float(2 * stats.t.sf(abs(t), n - 1))
    out.update({"t": float(t), "df": n - 1, "p": p})
    return out


def holm(pvalues: Sequence[float | None]) -> list[float]:
    """Holm-Bonferroni adjusted p-values over the whole declared family: an endpoint that could not be tested
    (None: not run, one seed, no spread) still counts, with p = 1, so the family's size is what was declared."""
    ps = [1.0 if p is None else p for p in pvalues]
    m = len(ps)
    adjusted = [1.0] * m
    running = 0.0
    for rank, (p, i) in enumerate(sorted((p, i) for i, p in enumerate(ps))):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def tost(differences: Sequence[float], margin: float, alpha: float = 0.05) -> dict:
    """Two one-sided t tests of equivalence: is the mean paired difference inside (-margin, +margin)? p is the
    larger of the two one-sided p-values; `equivalent` when p < alpha (the same as the 1 - 2 alpha interval
    lying inside the margin). With one value, or identical values, no test (p None)."""
    d = np.asarray(differences, dtype=float)
    n = len(d)
    if n < 2 or d.std(ddof=1) == 0:
        return {"margin": margin, "p": None, "equivalent": None}
    se = d.std(ddof=1) / math.sqrt(n)
    p_low = float(stats.t.sf((d.mean() + margin) / se, n - 1))   # H0: mean <= -margin
    p_high = float(stats.t.cdf((d.mean() - margin) / se, n - 1))  # H0: mean >= +margin
    p = max(p_low, p_high)
    return {"margin": margin, "p": p, "equivalent": p < alpha}


def power_paired(n: int, sd: float, effect: float, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t test over `n` seeds to detect a true mean difference `effect`, when the
    per-seed differences have standard deviation `sd` (noncentral t)."""
    if n < 2:
        return 0.0
    df, nc = n - 1, effect / (sd / math.sqrt(n))
    crit = stats.t.ppf(1 - alpha / 2, df)
    return float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))


def power_equivalence(n: int, sd: float, margin: float, alpha: float = 0.05) -> float:
    """Power of the two one-sided tests to declare equivalence within `margin` over `n` seeds when the true
    difference is 0 and the per-seed differences have standard deviation `sd`: both one-sided tests must reject,
    P(|mean| < margin - t(1 - alpha) * se), from the noncentral t of each side (exact for the pair is a bivariate
    integral; this is the usual lower bound, 1 - both misses)."""
    if n < 2:
        return 0.0
    df, nc = n - 1, margin / (sd / math.sqrt(n))
    crit = stats.t.ppf(1 - alpha, df)
    miss = stats.nct.cdf(crit, df, nc)  # one side fails to reject (by symmetry the same for both sides)
    return float(max(0.0, 1 - 2 * miss))


def seeds_needed(sd: float, margin: float, alpha: float = 0.05, power: float = 0.8, half_width: float | None = None,
                 least: int = 5, most: int = 100) -> int | None:
    """The fewest seeds (at least `least`) whose paired gains, with standard deviation `sd`, give the equivalence
    test `power` to show no gain within `margin` when there is none and, where `half_width` is given, an expected
    95 % interval no wider than it each side; None past `most`."""
    if sd == 0:
        return max(least, 2)
    for n in range(max(least, 2), most + 1):
        half = float(stats.t.ppf(1 - alpha / 2, n - 1)) * sd / math.sqrt(n)
        if power_equivalence(n, sd, margin, alpha) >= power and (half_width is None or half <= half_width):
            return n
    return None
