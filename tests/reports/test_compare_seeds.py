"""Paired bootstrap deltas, p-values, Holm/BH and the seed-combining interval."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

from chexbench.reports.compare import adjust_p_values, bootstrap_p_value, paired_delta
from chexbench.reports.seeds import combine_seeds


def _agrees(d, alpha: float) -> bool:
    excludes_zero = d.ci_low > 0 or d.ci_high < 0
    return excludes_zero == (d.p_value < alpha)


def test_p_value_inverts_the_percentile_interval():
    rng = np.random.default_rng(0)
    for shift in np.linspace(-0.05, 0.05, 21):
        reps_b = rng.normal(0.8, 0.02, 2000)
        reps_a = reps_b + rng.normal(shift, 0.02, 2000)
        d = paired_delta(float(np.mean(reps_a)), float(np.mean(reps_b)), reps_a, reps_b)
        assert _agrees(d, 0.05)  # exactly, not within a tolerance


@pytest.mark.parametrize("level, alpha", [(0.95, 0.05), (0.9, 0.1), (0.99, 0.01)])
def test_p_value_and_interval_agree_exactly_at_every_count_of_nonpositive_resamples(level, alpha):
    # the reviewer's boundary cases (50 of 2000, 10 of 400, 2 of 100 resamples ≤ 0 gave an interval
    # excluding 0 with p 0.051) and every count around each boundary, small n, ties at 0, NaN replicates
    rng = np.random.default_rng(7)
    for n in (1, 2, 5, 19, 20, 38, 39, 40, 41, 79, 80, 100, 199, 200, 201, 400, 999, 1000, 2000):
        near = {c + j for c in (0, n // 20, n // 40, n // 200) for j in range(-3, 4)}  # the boundaries of the levels
        for n_le0 in sorted(c for c in near | {n // 2, n} if 0 <= c <= n):
            for tie in (False, True):
                neg = np.zeros(n_le0) if tie else -rng.uniform(0.001, 0.01, n_le0)
                d = np.r_[neg, rng.uniform(0.001, 0.03, n - n_le0)]
                for sign in (1, -1):
                    reps = sign * rng.permutation(d)
                    nan = np.full(rng.integers(0, 4), np.nan)
                    r = paired_delta(0.01 * sign, 0.0, np.r_[reps, nan], np.zeros(len(reps) + len(nan)), level=level)
                    assert r.n_used == n
                    assert _agrees(r, alpha), (n, n_le0, tie, sign, r)
    for _ in range(3000):  # random replicate sets, discrete values so that ties (at 0 too) are common
        n = int(rng.integers(1, 300))
        reps = rng.integers(-3, 40, n) / 1000.0 * rng.choice([1, -1])
        reps[rng.random(n) < 0.05] = np.nan
        r = paired_delta(0.01, 0.0, reps, np.zeros(n), level=level)
        if r.n_used:
            assert _agrees(r, alpha), (n, r)


def test_too_few_resamples_for_an_interval_give_none_and_no_significance():
    r = paired_delta(0.02, 0.0, np.full(39, 0.02), np.zeros(39))
    assert np.isnan(r.ci_low) and np.isnan(r.ci_high) and r.p_value == pytest.approx(2 / 40)
    r = paired_delta(0.02, 0.0, np.full(40, 0.02), np.zeros(40))
    assert r.ci_low == r.ci_high == pytest.approx(0.02) and r.p_value == pytest.approx(2 / 41) and r.p_value < 0.05


def test_p_values_reach_holm_and_bh_unchanged():
    rng = np.random.default_rng(3)
    deltas = [paired_delta(0.0, 0.0, rng.normal(mu, 0.01, 500), np.zeros(500)) for mu in (0.0, 0.005, 0.02, 0.03)]
    p = np.array([d.p_value for d in deltas])
    assert p.min() == pytest.approx(2 / 501)  # never 0: the Holm correction still multiplies it
    np.testing.assert_allclose(adjust_p_values(p, "holm"), multipletests(p, method="holm")[1])


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
