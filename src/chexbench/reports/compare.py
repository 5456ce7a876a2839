"""Paired comparisons on shared resamples, and multiple-comparison corrections.

Two configurations evaluated on the same test set are compared on the *same* patient
resamples: Δ_b = A_b − B_b, over the n finite Δ_b (resamples where either arm lost a class are
counted and left out). The two-sided p-value (Davison & Hinkley 1997 §4.4; the +1 keeps a finite
number of resamples from claiming p = 0, which a Holm correction would not penalise):

    p = min(1, 2 · min(#{Δ_b ≤ 0} + 1, #{Δ_b ≥ 0} + 1) / (n + 1))

The interval is the percentile interval that this p inverts exactly, the order statistics
[Δ_(k), Δ_(n+1−k)] with k = ⌈(n + 1)·α/2⌉ − 1 (α = 1 − level; :func:`order_statistic_ci`): it
excludes 0 exactly when p < α (#{Δ_b ≤ 0} < k ⟺ Δ_(k) > 0). With fewer than 40 finite
resamples (95%) k is 0: no interval (NaN) and p ≥ 0.05.

Corrections use statsmodels: Holm (1979) controls the family-wise error, Benjamini &
Hochberg (1995) the false-discovery rate; the caller states which comparisons form the family.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from statsmodels.stats.multitest import multipletests

from chexbench.reports.bootstrap import CI_LEVEL, order_statistic_ci


@dataclass(frozen=True)
class PairedDelta:
    """A − B with its bootstrap interval and two-sided p-value."""

    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    n_used: int  # resamples where both A and B are defined
    n_degenerate: int


def paired_delta(point_a: float, point_b: float, reps_a: np.ndarray, reps_b: np.ndarray, level: float = CI_LEVEL) -> PairedDelta:
    """Δ = A − B from point values and same-resample replicates (B,), (B,)."""
    d = np.asarray(reps_a, dtype=float) - np.asarray(reps_b, dtype=float)
    finite = d[np.isfinite(d)]
    delta = float(point_a - point_b)
    if not np.isfinite(delta) or len(finite) == 0:
        return PairedDelta(float("nan"), float("nan"), float("nan"), float("nan"), len(finite), len(d) - len(finite))
    lo, hi = order_statistic_ci(finite, level)
    return PairedDelta(delta, lo, hi, bootstrap_p_value(finite), len(finite), len(d) - len(finite))


def bootstrap_p_value(delta_replicates: np.ndarray) -> float:
    """Two-sided p-value for Δ = 0 (module docstring); non-finite replicates are left out."""
    d = np.asarray(delta_replicates, dtype=float)
    d = d[np.isfinite(d)]
    n = len(d)
    below = (np.sum(d <= 0) + 1) / (n + 1)
    above = (np.sum(d >= 0) + 1) / (n + 1)
    return float(min(1.0, 2 * min(below, above)))


def adjust_p_values(p_values: list[float] | np.ndarray, method: str) -> np.ndarray:
    """Holm (``"holm"``) or Benjamini–Hochberg (``"bh"``) adjusted p-values; NaN entries stay NaN
    and are not counted in the family."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(len(p), np.nan)
    ok = np.isfinite(p)
    if ok.any():
        sm_method = {"holm": "holm", "bh": "fdr_bh"}[method]
        out[ok] = multipletests(p[ok], method=sm_method)[1]
    return out
