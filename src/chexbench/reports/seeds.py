"""Aggregating fine-tuning seeds: mean ± sd, and an interval for test-sample *and* seed variation.

The seeds of one configuration are evaluated on the same test set with the same patient
resamples. The interval is a two-level (hierarchical) bootstrap (Davison & Hinkley 1997
§3.8; Saravanan et al. 2020): in resample ``b`` draw ``S`` seeds with replacement and
average their resample-``b`` values. Its spread therefore contains the test-sample
variance of the seed mean plus the between-seed variance / S. With one seed it reduces to
the patient-level interval (seed variation unknown, and the report says so). Resampling
S seeds slightly under-states the seed part, by the factor (S − 1) / S.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from chexbench.reports.bootstrap import CI_LEVEL, percentile_ci


@dataclass(frozen=True)
class SeedSummary:
    """A configuration over its seeds: point mean, sd across seeds, combined interval."""

    mean: float
    sd: float  # NaN with fewer than 2 seeds
    n_seeds: int
    ci_low: float
    ci_high: float
    replicates: np.ndarray  # (B,), NaN in degenerate resamples
    n_degenerate: int  # resamples without a value (a label lost a class)


def combine_seeds(
    points: list[float] | np.ndarray,
    replicates: list[np.ndarray] | np.ndarray,
    rng: np.random.Generator,
    level: float = CI_LEVEL,
) -> SeedSummary:
    """Seed-level summary from per-seed point values (S,) and replicates (S, B)."""
    pts = np.asarray(points, dtype=float)
    reps = np.atleast_2d(np.asarray(replicates, dtype=float))
    n_seeds, n_boot = reps.shape
    if n_seeds == 1:
        combined = reps[0].copy()
    else:
        pick = rng.integers(0, n_seeds, size=(n_boot, n_seeds))  # seeds drawn per resample
        combined = reps[pick, np.arange(n_boot)[:, None]].mean(axis=1)
    mean = float(np.mean(pts)) if np.isfinite(pts).all() else float("nan")
    sd = float(np.std(pts, ddof=1)) if n_seeds > 1 and np.isfinite(pts).all() else float("nan")
    if not np.isfinite(mean):
        combined = np.full(n_boot, np.nan)
    lo, hi = percentile_ci(combined, level)
    return SeedSummary(mean, sd, n_seeds, lo, hi, combined, int(np.isnan(combined).sum()))
