"""DeLong (Sun & Xu fast algorithm) and Obuchowski's clustered variant."""

from __future__ import annotations

import numpy as np
import pytest

from chexbench.core.auroc import resampled_auroc_auprc
from chexbench.reports.bootstrap import draw_patient_resamples
from chexbench.reports.delong import auroc_influence, delong, influence_variance, paired_delong_test


def _naive_delong(y: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    """O(m·n) DeLong 1988 from the kernel ψ(x, y) = [x > y] + ½[x = y]."""
    x, z = s[y == 1], s[y == 0]
    psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    return psi.mean(), v10.var(ddof=1) / len(x) + v01.var(ddof=1) / len(z)


def test_fast_delong_equals_naive_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(10, 200))
        y = (rng.random(n) < 0.4).astype(float)
        y[:2] = [0, 1]
        s = np.round(rng.normal(y, 1), 1)
        auc, var = _naive_delong(y, s)
        res = delong(y, s)
        assert res.auroc[0] == pytest.approx(auc, abs=1e-12)
        assert res.covariance[0, 0] == pytest.approx(var, rel=1e-10)


def test_clustered_with_singleton_clusters_equals_delong():
    rng = np.random.default_rng(1)
    y = (rng.random(300) < 0.3).astype(float)
    scores = np.vstack([rng.normal(y, 1), rng.normal(y, 1.3)])
    plain = delong(y, scores)
    clustered = delong(y, scores, cluster=np.arange(300))
    np.testing.assert_allclose(clustered.covariance, plain.covariance, rtol=1e-10, atol=1e-15)


def test_delong_variance_matches_bootstrap_one_image_per_patient():
    rng = np.random.default_rng(2)
    n = 6000
    y = (rng.random(n) < 0.3).astype(float)
    s = rng.normal(1.0 * y, 1)
    patients = np.array([f"p{i}" for i in range(n)])
    res = draw_patient_resamples(patients, 2000, seed=0)
    boot, _ = resampled_auroc_auprc(y, s, res.index_of(patients), res.weights)
    ratio = delong(y, s).covariance[0, 0] / np.var(boot, ddof=1)
    assert 0.9 <= ratio <= 1.1, ratio


def test_delong_too_narrow_with_several_images_per_patient_clustered_is_not():
    """Patients hold 5 images sharing their disease status and a random effect."""
    rng = np.random.default_rng(3)
    n_pat, per = 800, 5
    cluster = np.repeat(np.arange(n_pat), per)
    y = (rng.random(n_pat) < 0.3).astype(float)[cluster]
    s = 1.0 * y + rng.normal(0, 1, n_pat)[cluster] + rng.normal(0, 0.6, len(cluster))
    patients = np.array([f"p{i}" for i in cluster])
    res = draw_patient_resamples(patients, 2000, seed=0)
    boot_var = np.var(resampled_auroc_auprc(y, s, res.index_of(patients), res.weights)[0], ddof=1)
    naive = delong(y, s).covariance[0, 0]
    clustered = delong(y, s, cluster=cluster).covariance[0, 0]
    assert naive < 0.5 * boot_var  # independent-image DeLong badly under-states the variance
    assert 0.85 <= clustered / boot_var <= 1.15


def test_paired_test_of_identical_scores_and_of_a_clear_difference():
    rng = np.random.default_rng(4)
    y = (rng.random(500) < 0.4).astype(float)
    good, bad = rng.normal(1.5 * y, 1), rng.normal(0.2 * y, 1)
    same = paired_delong_test(y, good, good)
    assert same.delta == 0 and same.p_value == 1.0
    diff = paired_delong_test(y, good, bad)
    assert diff.delta > 0 and diff.p_value < 1e-6 and diff.ci_low > 0


def test_influence_form_matches_delong_and_clustered():
    rng = np.random.default_rng(5)
    n_pat, per = 300, 3
    cluster = np.repeat(np.arange(n_pat), per)
    y = (rng.random(n_pat * per) < 0.4).astype(float)
    s = np.round(rng.normal(y, 1) + rng.normal(0, 1, n_pat)[cluster], 1)
    auc, psi = auroc_influence(y, s)
    m, n = int(y.sum()), int((1 - y).sum())
    assert auc == pytest.approx(delong(y, s).auroc[0], abs=1e-12)
    # Σψ² drops DeLong's m/(m−1), n/(n−1) factors: equal to within them
    assert influence_variance(psi) == pytest.approx(delong(y, s).covariance[0, 0], rel=1.5 / min(m, n))
    assert influence_variance(psi, cluster) == pytest.approx(
        delong(y, s, cluster).covariance[0, 0], rel=3.0 / min(m, n)
    )
