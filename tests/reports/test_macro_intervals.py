"""The macro and Δ interval forms (intervals.mover_sum / macro_mover_interval / widen_logit,
compare.paired_mover_delta,
seeds.with_macro_interval) against hand computations, and the places that print them."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, logit
from scipy.stats import t as student_t

from chexbench.reports import intervals
from chexbench.reports.bootstrap import draw_patient_resamples, macro_ci, macro_replicates, score_predictions
from chexbench.reports.compare import paired_macro_delta, paired_mover_delta
from chexbench.reports.seeds import combine_seeds, paired_seed_delta, with_label_interval, with_macro_interval


def test_mover_sum_of_a_mean_is_the_hand_formula():
    lo, hi = intervals.mover_sum(
        [0.5, 0.5], [0.8, 0.9], [0.7, 0.85], [0.86, 0.93], np.array([[1, 0.3], [0.3, 1]])
    )
    assert lo == pytest.approx(0.85 - math.sqrt(0.05**2 + 0.025**2 + 2 * 0.3 * 0.05 * 0.025))
    assert hi == pytest.approx(0.85 + math.sqrt(0.03**2 + 0.015**2 + 2 * 0.3 * 0.03 * 0.015))
    # independent: root of the sum of squares; perfectly correlated: the sum of the distances
    assert intervals.mover_sum([0.5, 0.5], [0.8, 0.9], [0.7, 0.85], [0.86, 0.93], np.eye(2))[
        0
    ] == pytest.approx(0.85 - math.hypot(0.05, 0.025))
    assert intervals.mover_sum([0.5, 0.5], [0.8, 0.9], [0.7, 0.85], [0.86, 0.93], np.ones((2, 2)))[
        0
    ] == pytest.approx(0.775)


def test_mover_sum_of_a_difference_is_the_two_arm_mover():
    """Weights (1, −1): the lower bound takes A's lower and B's upper distance, the cross term with −r."""
    lo, hi = intervals.mover_sum(
        [1, -1], [0.9, 0.85], [0.8, 0.78], [0.95, 0.9], np.array([[1, 0.6], [0.6, 1]])
    )
    assert lo == pytest.approx(0.05 - math.sqrt(0.1**2 + 0.05**2 - 2 * 0.6 * 0.1 * 0.05))
    assert hi == pytest.approx(0.05 + math.sqrt(0.05**2 + 0.07**2 - 2 * 0.6 * 0.05 * 0.07))
    assert intervals.mover(0.05, (0.9, 0.8, 0.95), (0.85, 0.78, 0.9), 0.6) == pytest.approx((lo, hi))


def test_widen_logit_adds_the_seed_part_in_quadrature_on_the_logit_scale():
    lo, hi = intervals.widen_logit(0.8, 0.7, 0.87, 0.03)
    h = 0.03 / (0.8 * 0.2)
    assert lo == pytest.approx(expit(logit(0.8) - math.hypot(logit(0.8) - logit(0.7), h)))
    assert hi == pytest.approx(expit(logit(0.8) + math.hypot(logit(0.87) - logit(0.8), h)))
    assert intervals.widen_logit(0.8, 0.7, 0.87, 0.0) == (0.7, 0.87)


def _two_labels(rng: np.random.Generator, shift: float = 0.0) -> pd.DataFrame:
    n_pat, per = 120, 2
    cluster = np.repeat(np.arange(n_pat), per)
    frames = []
    patient = rng.normal(0, 1, n_pat)
    for label, prev, mu in (("effusion", 0.3, 1.2), ("hernia", 0.06, 2.5)):
        disease = rng.random(n_pat) < prev
        disease[:3] = True
        y = disease[cluster].astype(float)
        s = (mu + shift) * y + patient[cluster] + rng.normal(0, 0.7, len(y))
        frames.append(
            pd.DataFrame(
                {
                    "image_id": [f"i{i}" for i in range(len(y))],
                    "patient_id": [f"p{c:03d}" for c in cluster],
                    "label": label,
                    "y_true": y,
                    "y_score": s,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def test_macro_ci_is_mover_over_the_labels_score_intervals_with_their_bootstrap_correlation():
    df = _two_labels(np.random.default_rng(0))
    cell = score_predictions(df, draw_patient_resamples(df["patient_id"], 400, 0))
    e, h = cell.labels["effusion"], cell.labels["hernia"]
    (le, ue), (lh, uh) = e.auroc_ci(), h.auroc_ci()
    ok = np.isfinite(e.auroc_boot) & np.isfinite(h.auroc_boot)
    r = np.corrcoef(e.auroc_boot[ok], h.auroc_boot[ok])[0, 1]
    centre = (e.auroc + h.auroc) / 2
    want_lo = centre - 0.5 * math.sqrt(
        (e.auroc - le) ** 2 + (h.auroc - lh) ** 2 + 2 * r * (e.auroc - le) * (h.auroc - lh)
    )
    want_hi = centre + 0.5 * math.sqrt(
        (ue - e.auroc) ** 2 + (uh - h.auroc) ** 2 + 2 * r * (ue - e.auroc) * (uh - h.auroc)
    )
    assert macro_ci(cell, ["effusion", "hernia"]) == pytest.approx((want_lo, want_hi))
    # AUPRC: the same MOVER over the labels' logit-t-adj intervals
    (pe_lo, _), (ph_lo, _) = e.auprc_ci(), h.auprc_ci()
    ok = np.isfinite(e.auprc_boot) & np.isfinite(h.auprc_boot)
    rp = np.corrcoef(e.auprc_boot[ok], h.auprc_boot[ok])[0, 1]
    d1, d2 = e.auprc - pe_lo, h.auprc - ph_lo
    assert macro_ci(cell, ["effusion", "hernia"], "auprc")[0] == pytest.approx(
        (e.auprc + h.auprc) / 2 - 0.5 * math.sqrt(d1**2 + d2**2 + 2 * rp * d1 * d2)
    )


def test_macro_delta_is_mover_on_the_two_macro_intervals_and_its_p_agrees():
    rng = np.random.default_rng(1)
    df_a = _two_labels(rng)
    df_b = df_a.assign(y_score=df_a["y_score"] + rng.normal(0, 0.8, len(df_a)))
    res = draw_patient_resamples(df_a["patient_id"], 400, 0)
    sa, sb = score_predictions(df_a, res), score_predictions(df_b, res)
    labels = ["effusion", "hernia"]
    d = paired_macro_delta(sa, sb, labels)
    ma, mb = macro_replicates(sa, labels), macro_replicates(sb, labels)
    r = np.corrcoef(ma, mb)[0, 1]
    pa, pb = np.mean([sa.labels[k].auroc for k in labels]), np.mean([sb.labels[k].auroc for k in labels])
    la, ua = macro_ci(sa, labels)
    lb, ub = macro_ci(sb, labels)
    assert d.delta == pytest.approx(pa - pb)
    assert d.ci_low == pytest.approx(
        pa - pb - math.sqrt((pa - la) ** 2 + (ub - pb) ** 2 - 2 * r * (pa - la) * (ub - pb))
    )
    assert d.ci_high == pytest.approx(
        pa - pb + math.sqrt((ua - pa) ** 2 + (pb - lb) ** 2 - 2 * r * (ua - pa) * (pb - lb))
    )
    assert (d.ci_low > 0 or d.ci_high < 0) == (d.p_value < 0.05)


def test_seed_delta_is_mover_on_the_seed_pooled_arms_with_the_seed_variance_outside_the_correlation():
    rng = np.random.default_rng(4)
    noise = rng.normal(0, 0.005, 2000)
    a = combine_seeds([0.83, 0.85], [0.83 + noise, 0.85 + noise], df_test=50)
    b = combine_seeds([0.80, 0.80, 0.80], [0.80 + noise * 0.9] * 3, df_test=50)
    d = paired_seed_delta(a, b)
    va, vb, cov = (
        np.var(0.84 + noise, ddof=1),
        np.var(0.8 + 0.9 * noise, ddof=1),
        np.cov(noise, 0.9 * noise)[0, 1],
    )
    r = cov / math.sqrt(
        (va + 0.02**2 / 2 / 2) * vb
    )  # arm A's seed variance s²/S = (0.02² / 2) / 2; B has none
    (la, ua), (lb, ub) = a.interval(), b.interval()
    assert d.ci_low == pytest.approx(
        0.04 - math.sqrt((0.84 - la) ** 2 + (ub - 0.8) ** 2 - 2 * r * (0.84 - la) * (ub - 0.8))
    )
    assert d.ci_high == pytest.approx(
        0.04 + math.sqrt((ua - 0.84) ** 2 + (0.8 - lb) ** 2 - 2 * r * (ua - 0.84) * (0.8 - lb))
    )
    # arm A's seed part: t on 1 df × s/√S, on the logit scale around its mean, in quadrature with its test
    # part
    h = student_t.ppf(0.975, 1) * math.sqrt(0.02**2 / 2 / 2) / (0.84 * 0.16)
    lt, _ = a.test_part()
    assert la == pytest.approx(expit(logit(0.84) - math.hypot(logit(0.84) - logit(lt), h)))
    assert (d.ci_low > 0) == (d.p_value < 0.05)
    # one seed per arm: the single-cell Δ (the replicates' own correlation)
    one_a, one_b = combine_seeds([0.83], [0.83 + noise]), combine_seeds([0.8], [0.8 + 0.9 * noise])
    same = paired_mover_delta(0.83, 0.8, one_a.interval, one_b.interval, 0.83 + noise, 0.8 + 0.9 * noise)
    assert paired_seed_delta(one_a, one_b) == same


def test_seed_pooled_macro_uses_the_macro_interval_widened_by_the_macros_own_seed_spread():
    df = _two_labels(np.random.default_rng(5))
    res = draw_patient_resamples(df["patient_id"], 400, 0)
    cells = [
        score_predictions(df.assign(y_score=df["y_score"] + 0.3 * s * df["y_true"]), res) for s in range(3)
    ]
    labels = ["effusion", "hernia"]
    per_label = []
    for k in labels:
        first = cells[0].labels[k]
        s = combine_seeds(
            [c.labels[k].auroc for c in cells],
            [c.labels[k].auroc_boot for c in cells],
            df_test=first.df,
            k=first.k,
            factor_test=first.factor,
        )
        per_label.append(with_label_interval(s, first))
    macro_points = [np.mean([c.labels[k].auroc for k in labels]) for c in cells]
    macro = with_macro_interval(
        combine_seeds(macro_points, [macro_replicates(c, labels) for c in cells]), per_label
    )
    test_lo, test_hi = intervals.macro_mover_interval(
        [s.mean for s in per_label], [s.test_part for s in per_label], [s.replicates for s in per_label]
    )
    seed_half = student_t.ppf(0.975, 2) * np.std(macro_points, ddof=1) / math.sqrt(3)
    assert (macro.ci_low, macro.ci_high) == pytest.approx(
        intervals.widen_logit(macro.mean, test_lo, test_hi, seed_half)
    )
    assert macro.ci_low < test_lo and macro.ci_high > test_hi


@pytest.mark.slow
def test_macro_and_macro_delta_cover_when_one_rare_high_auroc_label_dominates():
    """Two labels on 300 patients × 2 images, the second at 4 % prevalence and AUROC 0.96 (≈ 12 positive
    patients):
    the chosen macro AUROC interval and macro Δ (MOVER on hm-score) against the truth, 80 simulated test sets
    of
    200 resamples (docs/STATISTICS.md has the full grid; Monte-Carlo sd of a coverage near 0.97 at 80 trials:
        0.02).
    """
    from chexbench.perf.coverage import LABEL_AUPRC, MacroSetting, macro_coverage

    cov = macro_coverage((MacroSetting(300, 2, ((0.3, 0.8), (0.04, 0.96))),), n_trials=80, n_boot=200, seed=5)
    got = cov.set_index(["target", "method"])["coverage"]
    print(cov.to_string())
    assert got["macro auroc", "macro-mover-hm"] >= 0.9
    assert got["macro delta", "mover-macro-hm"] >= 0.9
    assert got["rare delta", "mover-hm-score"] >= 0.9
    assert got["macro auprc", "macro-mover-logit-t-adj"] >= 0.88
    assert (
        got[LABEL_AUPRC, "logit-t-adj"] >= 0.88
    )  # each label's own AUPRC interval, the worse of the two labels


@pytest.mark.slow
def test_seed_pooled_label_interval_covers_on_clustered_test_sets_with_seed_variance():
    """The report's seed-pooled per-label AUROC (hm-score of the seed mean widened by t_{S−1} s/√S) and its Δ,
    on clustered test sets with seed sd larger than test sd (2 seeds) and smaller (3 seeds): 80 configurations
    each.
    """
    from chexbench.perf.coverage import SeedLabelSetting, seed_label_coverage

    grid = (SeedLabelSetting(400, 1, 0.05, 0.96, 2, 0.04), SeedLabelSetting(150, 4, 0.1, 0.85, 3, 0.01))
    cov = seed_label_coverage(grid, n_trials=80, n_boot=200, seed=5)
    print(cov.to_string())
    first = cov[cov["n_seeds"] == 2].iloc[0]
    assert first["sd_seed"] > first["sd_test"]  # the setting is the one it claims
    chosen = cov[cov["method"].isin(["hm-score + seed", "mover-seed-hm"])]
    assert len(chosen) == 4 and (chosen["coverage"] >= 0.9).all(), chosen


@pytest.mark.slow
def test_seed_pooled_macro_interval_and_delta_cover_with_seed_variance_above_the_test_variance():
    """The report's seed-pooled macro AUROC (MOVER over the labels' seed-pooled intervals, widened by the
    macro's
    seed spread) and its Δ, 3 labels (one rare, AUROC 0.96), 2 seeds, per-label seed sd 0.03 > the macro's
    test sd:
    80 configurations."""
    from chexbench.perf.coverage import SeedMacroSetting, seed_macro_coverage

    st = SeedMacroSetting(300, 2, ((0.3, 0.8), (0.15, 0.85), (0.05, 0.96)), 2, 0.03)
    cov = seed_macro_coverage((st,), n_trials=80, n_boot=200, seed=5)
    print(cov.to_string())
    assert (cov["sd_seed"] > cov["sd_test"]).all()
    got = cov.set_index(["target", "method"])["coverage"]
    assert got["macro auroc", "mover-hm + seed"] >= 0.9 and got["macro delta", "mover-seed-macro-hm"] >= 0.9
