"""Paired bootstrap deltas, p-values, Holm/BH and the seed-combining interval."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

from chexbench.reports.compare import adjust_p_values, bootstrap_p_value, paired_delta
from chexbench.reports.seeds import combine_seeds


def test_p_value_inverts_the_percentile_interval():
    rng = np.random.default_rng(0)
    for shift in np.linspace(-0.05, 0.05, 21):
        reps_b = rng.normal(0.8, 0.02, 2000)
        reps_a = reps_b + rng.normal(shift, 0.02, 2000)
        d = paired_delta(float(np.mean(reps_a)), float(np.mean(reps_b)), reps_a, reps_b)
        excludes_zero = d.ci_low > 0 or d.ci_high < 0
        assert excludes_zero == (d.p_value < 0.05) or abs(d.p_value - 0.05) < 2e-3


def test_p_value_bounds_and_symmetry():
    d = np.random.default_rng(1).normal(0, 1, 999)
    assert bootstrap_p_value(d) == pytest.approx(bootstrap_p_value(-d))
    assert bootstrap_p_value(np.full(999, 0.3)) == pytest.approx(2 / 1000)  # never 0
    assert bootstrap_p_value(np.zeros(999)) == 1.0


def test_degenerate_resamples_are_counted_not_used():
    a = np.array([0.8, np.nan, 0.7, 0.9])
    b = np.array([0.6, 0.6, np.nan, 0.7])
    d = paired_delta(0.8, 0.6, a, b)
    assert d.n_used == 2 and d.n_degenerate == 2


def test_adjustments_equal_statsmodels_and_skip_nan():
    p = np.array([0.01, np.nan, 0.04, 0.03, 0.5])
    holm = adjust_p_values(p, "holm")
    bh = adjust_p_values(p, "bh")
    ok = ~np.isnan(p)
    np.testing.assert_allclose(holm[ok], multipletests(p[ok], method="holm")[1])
    np.testing.assert_allclose(bh[ok], multipletests(p[ok], method="fdr_bh")[1])
    assert np.isnan(holm[1]) and np.isnan(bh[1])


def test_one_seed_interval_is_the_patient_interval():
    rng = np.random.default_rng(2)
    reps = rng.normal(0.8, 0.01, 1000)
    s = combine_seeds([0.8], [reps], rng)
    np.testing.assert_array_equal(s.replicates, reps)
    assert np.isnan(s.sd) and s.n_seeds == 1


def test_seed_interval_widens_with_seed_spread():
    """Same test-sample noise, seeds 0.02 apart vs identical: the combined interval is wider."""
    rng = np.random.default_rng(3)
    noise = rng.normal(0, 0.01, 4000)
    tight = combine_seeds([0.8] * 5, [0.8 + noise] * 5, np.random.default_rng(0))
    offsets = np.array([-0.04, -0.02, 0.0, 0.02, 0.04])
    spread = combine_seeds(list(0.8 + offsets), [0.8 + o + noise for o in offsets], np.random.default_rng(0))
    assert spread.sd == pytest.approx(np.std(offsets, ddof=1))
    width_tight = tight.ci_high - tight.ci_low
    width_spread = spread.ci_high - spread.ci_low
    # the hierarchical bootstrap's variance: test-sample var + seed var · (S−1)/S / S
    expected_sd = np.sqrt(0.01**2 + np.var(offsets) / 5)
    assert width_tight == pytest.approx(2 * 1.96 * 0.01, rel=0.1)
    assert width_spread == pytest.approx(2 * 1.96 * expected_sd, rel=0.1)
