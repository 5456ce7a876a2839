"""Aggregating fine-tuning seeds: mean ± sd, and an interval for test-sample *and* seed variation.

The seeds of one configuration are evaluated on the same test set with the same patient
resamples. The configuration's target is its mean AUROC over the distribution of fine-tuning
seeds (on the population the test patients come from). With S seeds θ_s:

    θ̄ = mean_s θ_s,   Var(θ̄) ≈ V_test + s²/S

V_test: the variance, over the shared patient resamples, of the seed mean in each resample (the
test-sample variation of θ̄, seeds' shared test patients included), times the label's small-sample
factor k/(k − 1) as for one seed; s²: the sample variance of the
θ_s (between-seed variation; it also holds the part of the test noise the seeds do not share, so
the sum is slightly conservative). The interval is the random-effects t interval on the logit scale
(the per-label method of ``intervals.py``) whose half-width scales each component by its own
t quantile, √(q_test² V_test + t_{S−1}² s²/S) (q_test on the label's df): the between-seed part is
estimated from S values, so with few seeds and a seed spread larger than the test-sample spread its
t quantile on S − 1 df keeps the interval honest (S = 2: t₁ = 12.7). A single pooled t on
Welch–Satterthwaite df covered only 0.89 with 2 seeds (a chance-small s² makes df large). The former
two-level bootstrap (``hierarchical_bootstrap``: resample seeds within each patient resample)
under-states the seed part by (S − 1)/S and uses a normal quantile: it covered 0.74 with 2 seeds.
Coverage of both by simulation: ``chexbench bench coverage`` (docs/STATISTICS.md).

A paired Δ between configurations A and B on the same test set: components V_test(Ā − B̄) (shared
resamples), s²_A/S_A (S_A − 1 df), s²_B/S_B (S_B − 1 df); p is the level at which that half-width
equals |Δ| (``intervals.interval_and_p``), so interval and p agree exactly.

With one seed the interval is the per-label (or macro) interval, seed variation not estimated.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.special import expit, logit

from chexbench.reports import intervals
from chexbench.reports.bootstrap import CI_LEVEL, LabelScores, percentile_ci
from chexbench.reports.compare import MIN_FINITE, PairedDelta


@dataclass(frozen=True)
class SeedSummary:
    """A configuration over its seeds: point mean, sd across seeds, random-effects interval."""

    mean: float
    sd: float  # NaN with fewer than 2 seeds
    n_seeds: int
    ci_low: float
    ci_high: float
    replicates: np.ndarray  # (B,) the seed mean in each shared patient resample, NaN in degenerate resamples
    n_degenerate: int  # resamples without a value (a label lost a class)
    seed_var: float = 0.0  # s² / S: between-seed variance of the mean (0 with one seed)
    df_test: float = float("inf")  # degrees of freedom of the test-sample variance (its label's)
    k: int | None = None  # smallest class patient count (for a mean of exactly 0 or 1)
    factor_test: float = 1.0  # small-sample factor k/(k − 1) of the test-sample variance (intervals.py)

    @property
    def test_var(self) -> float:
        return intervals.replicate_sd(self.replicates) ** 2 * self.factor_test

    @property
    def parts(self) -> list[tuple[float, float]]:
        """(variance, df) components of the mean: test-sample (its label's df), between-seed (S − 1)."""
        return [(self.test_var, self.df_test), (self.seed_var, float(max(self.n_seeds - 1, 1)))]


def combine_seeds(
    points: list[float] | np.ndarray,
    replicates: list[np.ndarray] | np.ndarray,
    df_test: float = float("inf"),
    level: float = CI_LEVEL,
    k: int | None = None,
    factor_test: float = 1.0,
) -> SeedSummary:
    """Seed-level summary from per-seed point values (S,) and shared-resample replicates (S, B)."""
    pts = np.asarray(points, dtype=float)
    reps = np.atleast_2d(np.asarray(replicates, dtype=float))
    n_seeds, n_boot = reps.shape
    combined = reps.mean(axis=0)  # NaN where any seed lost a class
    finite = bool(np.isfinite(pts).all())
    mean = float(np.mean(pts)) if finite else float("nan")
    sd = float(np.std(pts, ddof=1)) if n_seeds > 1 and finite else float("nan")
    seed_var = sd**2 / n_seeds if n_seeds > 1 and finite else 0.0
    if not finite:
        combined = np.full(n_boot, np.nan)
    summary = SeedSummary(mean, sd, n_seeds, float("nan"), float("nan"), combined, int(np.isnan(combined).sum()),
                          float(seed_var), float(df_test), k, float(factor_test))
    if np.isfinite(mean) and int(np.isfinite(combined).sum()) >= MIN_FINITE:
        lo, hi = intervals.logit_interval(mean, intervals.halfwidth(summary.parts, level), level, k)
        summary = SeedSummary(mean, sd, n_seeds, lo, hi, combined, summary.n_degenerate, float(seed_var), float(df_test), k,
                              float(factor_test))
    return summary


def with_label_interval(summary: SeedSummary, first: LabelScores, level: float = CI_LEVEL) -> SeedSummary:
    """A per-label AUROC summary with the chosen per-label interval (hm-score, ``intervals.py``) as its
    test-sample part: the hm-score interval of the seed mean (the first seed's image counts, design effect
    and bootstrap variance of the mean), each side widened on the logit scale by the between-seed part in
    quadrature: logit low = logit mean − √((logit mean − logit low_hm)² + (q_{S−1} s/√S / (mean (1 − mean)))²),
    likewise high. One seed: the hm-score interval."""
    if not (np.isfinite(summary.mean) and np.isfinite(summary.ci_low)):
        return summary
    se = intervals.replicate_sd(summary.replicates) * np.sqrt(first.factor)
    lo_hm, hi_hm = intervals.hm_score_interval(summary.mean, first.n_pos, first.n_neg, first.design_effect, se,
                                               first.k, level)
    seed = intervals.halfwidth([(summary.seed_var, float(max(summary.n_seeds - 1, 1)))], level)
    if seed == 0 or not 0 < summary.mean < 1:
        return replace(summary, ci_low=lo_hm, ci_high=hi_hm)
    with np.errstate(divide="ignore"):
        c, l_hm, h_hm = (float(logit(x)) for x in (summary.mean, lo_hm, hi_hm))
    h_seed = seed / (summary.mean * (1 - summary.mean))  # on the logit scale, as combine_seeds
    lo, hi = expit(c - np.hypot(c - l_hm, h_seed)), expit(c + np.hypot(h_hm - c, h_seed))
    return replace(summary, ci_low=float(lo), ci_high=float(hi))


def paired_seed_delta(a: SeedSummary, b: SeedSummary, level: float = CI_LEVEL) -> PairedDelta:
    """Δ = mean_A − mean_B over seeds on shared patient resamples (module docstring)."""
    d = np.asarray(a.replicates, dtype=float) - np.asarray(b.replicates, dtype=float)
    finite = d[np.isfinite(d)]
    delta = float(a.mean - b.mean)
    nan = float("nan")
    if not np.isfinite(delta) or len(finite) < MIN_FINITE:
        return PairedDelta(delta if np.isfinite(delta) and len(finite) else nan, nan, nan, nan, len(finite), len(d) - len(finite))
    test_var = intervals.replicate_sd(finite) ** 2 * max(a.factor_test, b.factor_test)
    parts = [(test_var, min(a.df_test, b.df_test)), *a.parts[1:], *b.parts[1:]]
    lo, hi, p = intervals.interval_and_p(delta, parts, level)
    return PairedDelta(delta, max(lo, -1.0), min(hi, 1.0), p, len(finite), len(d) - len(finite))  # a Δ is in [−1, 1]


def hierarchical_bootstrap(points: np.ndarray, replicates: np.ndarray, rng: np.random.Generator,
                           level: float = CI_LEVEL) -> tuple[float, float]:
    """The former interval (for the coverage comparison only): in resample b draw S seeds with
    replacement and average their resample-b values; percentile interval."""
    reps = np.atleast_2d(np.asarray(replicates, dtype=float))
    n_seeds, n_boot = reps.shape
    if n_seeds == 1:
        return percentile_ci(reps[0], level)
    pick = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    return percentile_ci(reps[pick, np.arange(n_boot)[:, None]].mean(axis=1), level)
