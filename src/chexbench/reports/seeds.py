"""Aggregating fine-tuning seeds: mean ± sd, and an interval for test-sample *and* seed variation.

The seeds of one configuration are evaluated on the same test set with the same patient
resamples. The configuration's target is its mean AUROC over the distribution of fine-tuning
seeds (on the population the test patients come from). With S seeds θ_s:

    θ̄ = mean_s θ_s,   Var(θ̄) ≈ V_test + s²/S

V_test: the variance, over the shared patient resamples, of the seed mean in each resample (the
test-sample variation of θ̄, seeds' shared test patients included), times the label's small-sample
factor k/(k − 1) as for one seed; s²: the sample variance of the
θ_s (between-seed variation; it also holds the part of the test noise the seeds do not share, so
the sum is slightly conservative). The interval is the test-sample interval of θ̄ — the form chosen for one
seed (per-label AUROC: hm-score on the seed mean; macro: MOVER over its labels' test-sample intervals;
AUPRC and ECE: logit-t-adj, logit(θ̄) ± q_test √V_test / (θ̄ (1 − θ̄))) — with each side widened in quadrature
on the logit scale by the between-seed half-width t_{S−1} s/√S / (θ̄ (1 − θ̄)) (``intervals.widen_logit``;
for a logit-Wald test part exactly the random-effects half-width √(q_test² V_test + t_{S−1}² s²/S)). The
between-seed part is estimated from S values, so with few seeds and a seed spread larger than the test-sample
spread its t quantile on S − 1 df keeps the interval honest (S = 2: t₁ = 12.7). A single pooled t on
Welch–Satterthwaite df covered only 0.89 with 2 seeds (a chance-small s² makes df large). The former
two-level bootstrap (``hierarchical_bootstrap``: resample seeds within each patient resample)
under-states the seed part by (S − 1)/S and uses a normal quantile: it covered 0.74 with 2 seeds.
Coverage by simulation, also on clustered test sets with seed variance: ``chexbench bench coverage``
(docs/STATISTICS.md).

A paired Δ between configurations A and B on the same test set: MOVER on the two arms' seed-pooled
intervals, r = Cov_test(Ā, B̄) / √((V_A + s²_A/S_A)(V_B + s²_B/S_B)) from the shared resamples (seeds of two
configurations are independent); p is the level at which that interval touches 0
(``intervals.mover_interval_and_p``), so interval and p agree exactly.

With one seed the interval is the per-label (or macro) interval, seed variation not estimated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from chexbench.reports import intervals
from chexbench.reports.bootstrap import CI_LEVEL, LabelScores, percentile_ci
from chexbench.reports.compare import MIN_FINITE, PairedDelta, paired_mover_delta


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
    #: level → the test-sample interval of the seed mean (per-label AUROC: hm-score; macro: MOVER over its
    #: labels;
    #: None: logit-t-adj on the replicates); :meth:`interval` widens it by the between-seed part
    test_interval: Callable[[float], tuple[float, float]] | None = field(
        default=None, compare=False, repr=False
    )

    @property
    def test_var(self) -> float:
        return intervals.replicate_sd(self.replicates) ** 2 * self.factor_test

    @property
    def parts(self) -> list[tuple[float, float]]:
        """(variance, df) components of the mean: test-sample (its label's df), between-seed (S − 1)."""
        return [(self.test_var, self.df_test), (self.seed_var, float(max(self.n_seeds - 1, 1)))]

    @property
    def estimable(self) -> bool:
        return bool(np.isfinite(self.mean)) and int(np.isfinite(self.replicates).sum()) >= MIN_FINITE

    def test_part(self, level: float = CI_LEVEL) -> tuple[float, float]:
        """The test-sample interval of the seed mean at ``level`` (``test_interval``, default logit-t-adj on
        the
        seed mean's replicates: logit(mean) ± q_test √V_test / (mean (1 − mean)))."""
        if self.test_interval is not None:
            return self.test_interval(level)
        return intervals.logit_wald(self.mean, np.sqrt(self.test_var), self.df_test, level, self.k)

    def interval(self, level: float = CI_LEVEL) -> tuple[float, float]:
        """The seed-pooled interval at ``level``: the test-sample interval of the mean, each side widened in
        quadrature on the logit scale by t_{S−1} s/√S (``intervals.widen_logit``); NaN when not estimable."""
        if not self.estimable:
            return float("nan"), float("nan")
        lo, hi = self.test_part(level)
        seed = intervals.halfwidth([(self.seed_var, float(max(self.n_seeds - 1, 1)))], level)
        return intervals.widen_logit(self.mean, lo, hi, seed)


def combine_seeds(
    points: list[float] | np.ndarray,
    replicates: list[np.ndarray] | np.ndarray,
    df_test: float = float("inf"),
    level: float = CI_LEVEL,
    k: int | None = None,
    factor_test: float = 1.0,
    test_interval: Callable[[float], tuple[float, float]] | None = None,
) -> SeedSummary:
    """Seed-level summary from per-seed point values (S,) and shared-resample replicates (S, B); the interval
    is ``test_interval`` (default: logit-t-adj on the seed mean's replicates) widened by the between-seed
    part.
    """
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
    summary = SeedSummary(
        mean,
        sd,
        n_seeds,
        float("nan"),
        float("nan"),
        combined,
        int(np.isnan(combined).sum()),
        float(seed_var),
        float(df_test),
        k,
        float(factor_test),
        test_interval,
    )
    lo, hi = summary.interval(level)
    return replace(summary, ci_low=lo, ci_high=hi)


def with_label_interval(summary: SeedSummary, first: LabelScores, level: float = CI_LEVEL) -> SeedSummary:
    """A per-label AUROC summary with the chosen per-label interval (hm-score, ``intervals.py``) as its
    test-sample part: the hm-score interval of the seed mean (the first seed's image counts, design effect
    and bootstrap variance of the mean), each side widened on the logit scale by the between-seed part in
    quadrature: logit low = logit mean − √((logit mean − logit low_hm)² + (q_{S−1} s/√S / (mean (1 −
    mean)))²),
    likewise high. One seed: the hm-score interval."""
    se = intervals.replicate_sd(summary.replicates) * np.sqrt(first.factor)

    def hm(lev: float) -> tuple[float, float]:
        return intervals.hm_score_interval(
            summary.mean, first.n_pos, first.n_neg, first.design_effect, se, first.k, lev
        )

    out = replace(summary, test_interval=hm)
    lo, hi = out.interval(level)
    return replace(out, ci_low=lo, ci_high=hi)


def with_macro_interval(
    summary: SeedSummary, labels: list[SeedSummary], level: float = CI_LEVEL
) -> SeedSummary:
    """A macro summary whose test-sample part is the chosen macro interval
    (``intervals.macro_mover_interval``)
    over its labels' seed-pooled test-sample intervals and their seed-mean replicates; the between-seed part
    is the macro's own (the spread of the seeds' macro values, so seeds that move every label together count).
    """
    if not labels:
        return summary
    points, arms, reps = (
        [s.mean for s in labels],
        [s.test_part for s in labels],
        [s.replicates for s in labels],
    )

    def macro(lev: float) -> tuple[float, float]:
        return intervals.macro_mover_interval(points, arms, reps, lev)

    out = replace(summary, test_interval=macro)
    lo, hi = out.interval(level)
    return replace(out, ci_low=lo, ci_high=hi)


def paired_seed_delta(a: SeedSummary, b: SeedSummary, level: float = CI_LEVEL) -> PairedDelta:
    """Δ = mean_A − mean_B over seeds on shared patient resamples: MOVER on the two arms' seed-pooled
    intervals
    (``compare.paired_mover_delta``), their correlation the shared-resample covariance over each arm's total
    variance (replicate variance + between-seed variance: seeds of two configurations are independent)."""
    return paired_mover_delta(
        a.mean, b.mean, a.interval, b.interval, a.replicates, b.replicates, a.seed_var, b.seed_var, level
    )


def hierarchical_bootstrap(
    points: np.ndarray, replicates: np.ndarray, rng: np.random.Generator, level: float = CI_LEVEL
) -> tuple[float, float]:
    """The former interval (for the coverage comparison only): in resample b draw S seeds with
    replacement and average their resample-b values; percentile interval."""
    reps = np.atleast_2d(np.asarray(replicates, dtype=float))
    n_seeds, n_boot = reps.shape
    if n_seeds == 1:
        return percentile_ci(reps[0], level)
    pick = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    return percentile_ci(reps[pick, np.arange(n_boot)[:, None]].mean(axis=1), level)
