"""Paired comparisons on shared resamples, and multiple-comparison corrections.

Two configurations evaluated on the same test set are compared on the *same* patient
resamples: Δ_b = A_b − B_b, over the n finite Δ_b (resamples where either arm lost a class are
counted and left out). The interval is the one chosen by simulation (``intervals.py``, docs/STATISTICS.md) for
every Δ chexbench prints — per label and macro, AUROC and AUPRC, one seed or seed-pooled:
:func:`paired_mover_delta`, MOVER (Zou & Donner 2008) on the two arms' own intervals with r the correlation of
the arms' estimates from their shared-resample replicates. The two-sided p-value is the level at which that
interval touches 0, so the interval excludes 0 exactly when p < α (one comparison decides both). With fewer
than ``MIN_FINITE`` finite resamples there is no interval and no p. :func:`paired_delta` (the Wald-t form
Δ ± t_{k−1} · sd(Δ_b) · √(k/(k − 1)), used until the macro simulation) remains as a simulation candidate.

(Before the interval was chosen by coverage, Δ used the percentile interval that a +1-smoothed
bootstrap p inverted exactly; with ~9 positive patients and AUROC near 0.96 it covered less than
95 %, see the coverage table.)

Corrections use statsmodels: Holm (1979) controls the family-wise error, Benjamini &
Hochberg (1995) the false-discovery rate; the caller states which comparisons form the family.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from statsmodels.stats.multitest import multipletests

from chexbench.reports import intervals
from chexbench.reports.bootstrap import (
    CI_LEVEL,
    CellScores,
    LabelScores,
    macro_ci,
    macro_point,
    macro_replicates,
)

#: fewer finite paired resamples than this give no interval and no p-value
MIN_FINITE = 40


@dataclass(frozen=True)
class PairedDelta:
    """A − B with its bootstrap interval and two-sided p-value."""

    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    n_used: int  # resamples where both A and B are defined
    n_degenerate: int


def paired_delta(
    point_a: float,
    point_b: float,
    reps_a: np.ndarray,
    reps_b: np.ndarray,
    level: float = CI_LEVEL,
    df: float = float("inf"),
    factor: float = 1.0,
) -> PairedDelta:
    """The former Wald-t Δ (simulation candidate ``wald-t-adj``; nothing printed uses it): Δ = A − B from
    point
    values and same-resample replicates (B,), (B,): se(Δ*) × √factor (the label's small-sample factor k/(k −
    1)),
    t on ``df`` degrees of freedom."""
    d = np.asarray(reps_a, dtype=float) - np.asarray(reps_b, dtype=float)
    finite = d[np.isfinite(d)]
    delta = float(point_a - point_b)
    nan = float("nan")
    if not np.isfinite(delta) or len(finite) == 0:
        return PairedDelta(nan, nan, nan, nan, len(finite), len(d) - len(finite))
    if len(finite) < MIN_FINITE:
        return PairedDelta(delta, nan, nan, nan, len(finite), len(d) - len(finite))
    lo, hi, p = intervals.t_interval_and_p(delta, intervals.replicate_sd(finite) * np.sqrt(factor), df, level)
    return PairedDelta(
        delta, max(lo, -1.0), min(hi, 1.0), p, len(finite), len(d) - len(finite)
    )  # a Δ of AUROCs is in [−1, 1]


def paired_mover_delta(
    point_a: float,
    point_b: float,
    arm_a: Callable[[float], tuple[float, float]],
    arm_b: Callable[[float], tuple[float, float]],
    reps_a: np.ndarray,
    reps_b: np.ndarray,
    extra_var_a: float = 0.0,
    extra_var_b: float = 0.0,
    level: float = CI_LEVEL,
) -> PairedDelta:
    """The chosen paired Δ = A − B (every AUROC Δ chexbench prints: per label, macro, seed-pooled): MOVER
    (``intervals.mover``) on the two arms' own intervals (``arm_*``: level → (low, high); per label hm-score,
    macro its MOVER over labels, seed-pooled widened by the seed part) with r the correlation of the arms'
    estimates: the covariance of their shared-resample replicates (B,) over √((var_A + extra_A)(var_B +
    extra_B)),
    ``extra`` a variance the replicates do not hold (between-seed, independent between configurations; 0 for
    one seed: r is the replicates' correlation). p inverts the same interval over the level
    (``intervals.mover_interval_and_p``), so p < 1 − level exactly when the interval excludes 0."""
    ra, rb = np.asarray(reps_a, dtype=float), np.asarray(reps_b, dtype=float)
    ok = np.isfinite(ra) & np.isfinite(rb)
    n_used, n_deg = int(ok.sum()), int(len(ok) - ok.sum())
    delta = float(point_a - point_b)
    nan = float("nan")
    if not np.isfinite(delta) or n_used == 0:
        return PairedDelta(nan, nan, nan, nan, n_used, n_deg)
    if n_used < MIN_FINITE:
        return PairedDelta(delta, nan, nan, nan, n_used, n_deg)
    cov = np.cov(ra[ok], rb[ok])
    total = (cov[0, 0] + max(extra_var_a, 0.0)) * (cov[1, 1] + max(extra_var_b, 0.0))
    r = float(cov[0, 1] / np.sqrt(total)) if total > 0 else 0.0
    lo, hi, p = intervals.mover_interval_and_p(point_a, point_b, arm_a, arm_b, r, level)
    return PairedDelta(delta, max(lo, -1.0), min(hi, 1.0), p, n_used, n_deg)  # a Δ of AUROCs is in [−1, 1]


def paired_label_delta(la: LabelScores, lb: LabelScores, level: float = CI_LEVEL) -> PairedDelta:
    """Per-label AUROC Δ = A − B on the same patients: :func:`paired_mover_delta` on the two arms' chosen
    (hm-score) intervals."""
    return paired_mover_delta(
        la.auroc, lb.auroc, la.auroc_ci, lb.auroc_ci, la.auroc_boot, lb.auroc_boot, level=level
    )


def paired_macro_delta(
    sa: CellScores, sb: CellScores, labels: list[str], metric: str = "auroc", level: float = CI_LEVEL
) -> PairedDelta:
    """Macro Δ = A − B of two cells on the same patients: :func:`paired_mover_delta` on the two macro
    intervals
    (``bootstrap.macro_ci``) and the correlation of the macro replicates."""
    return paired_mover_delta(
        macro_point(sa, labels, metric),
        macro_point(sb, labels, metric),
        lambda lev: macro_ci(sa, labels, metric, lev),
        lambda lev: macro_ci(sb, labels, metric, lev),
        macro_replicates(sa, labels, metric),
        macro_replicates(sb, labels, metric),
        level=level,
    )


def adjust_p_values(p_values: list[float] | np.ndarray, method: str) -> np.ndarray:
    """Holm (``"holm"``) or Benjamini–Hochberg (``"bh"``) adjusted p-values; NaN entries stay NaN
    and are not counted in the family."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(len(p), np.nan)
    ok = np.isfinite(p)
    if ok.any():
        sm_method = {"holm": "holm", "bh": "fdr_bh"}[method]
        # statsmodels' Holm branch calls gc.collect() each time: in a report's process (pandas,
        # matplotlib, every cell's predictions) that is a full collection per call, 0.15 s, 70 calls in
        # the smoke grid's report. Objects made before the call are frozen (left out of collections)
        # for its duration; its own garbage is still collected. Where the host process has frozen
        # objects itself (gc.freeze after its imports), they stay frozen: unfreeze would release them all.
        own_freeze = gc.get_freeze_count() == 0
        if own_freeze:
            gc.freeze()
        try:
            out[ok] = multipletests(p[ok], method=sm_method)[1]
        finally:
            if own_freeze:
                gc.unfreeze()
    return out
