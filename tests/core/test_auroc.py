"""AUROC / AUPRC against scikit-learn, with heavy ties and under bootstrap weights."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, roc_auc_score

from chexbench.core.auroc import SortedLabel, auroc, average_precision, resampled_auroc_auprc


def _heavy_ties(rng: np.random.Generator, n: int):
    y = (rng.random(n) < rng.uniform(0.05, 0.95)).astype(float)
    y[:2] = [0, 1]
    s = rng.integers(0, rng.integers(2, 12), n).astype(float) / 7  # few distinct values
    return y, s


def test_auroc_and_ap_equal_sklearn_with_heavy_ties():
    rng = np.random.default_rng(0)
    for _ in range(200):
        y, s = _heavy_ties(rng, int(rng.integers(2, 400)))
        assert abs(auroc(y, s) - roc_auc_score(y, s)) <= 1e-12
        assert abs(average_precision(y, s) - average_precision_score(y, s)) <= 1e-12


def test_resampled_equals_sklearn_with_sample_weights():
    rng = np.random.default_rng(1)
    checked = 0
    for _ in range(12):
        n = int(rng.integers(5, 300))
        y, s = _heavy_ties(rng, n)
        n_pat = int(rng.integers(2, n + 1))
        cluster = rng.integers(0, n_pat, n)
        weights = rng.multinomial(n_pat, np.full(n_pat, 1 / n_pat), size=16).astype(float)
        a, p = resampled_auroc_auprc(y, s, cluster, weights)
        for b in range(16):
            w = weights[b, cluster]
            if w[y == 1].sum() == 0 or w[y == 0].sum() == 0:
                assert np.isnan(a[b]) and np.isnan(p[b])  # degenerate resample: no fake number
                continue
            assert abs(a[b] - roc_auc_score(y, s, sample_weight=w)) <= 1e-12
            assert abs(p[b] - average_precision_score(y, s, sample_weight=w)) <= 1e-12
            checked += 1
    assert checked > 120


def test_one_class_is_nan_not_a_number():
    assert np.isnan(auroc(np.zeros(5), np.arange(5.0)))
    assert np.isnan(average_precision(np.ones(5), np.arange(5.0)))


def test_chunking_gives_same_result(monkeypatch):
    import chexbench.core.auroc as mod

    rng = np.random.default_rng(2)
    y, s = _heavy_ties(rng, 500)
    cluster = rng.integers(0, 100, 500)
    w = rng.multinomial(100, np.full(100, 0.01), size=64).astype(float)
    full = SortedLabel(y, s, cluster, 100).evaluate(w)
    monkeypatch.setattr(mod, "_CHUNK_CELLS", 50)
    chunked = SortedLabel(y, s, cluster, 100).evaluate(w)
    np.testing.assert_array_equal(full[0], chunked[0])
    np.testing.assert_array_equal(full[1], chunked[1])


def test_nan_input_rejected():
    with pytest.raises(ValueError, match="NaN"):
        auroc(np.array([0, 1, np.nan]), np.array([0.1, 0.2, 0.3]))


@settings(max_examples=60, deadline=None)
@given(
    data=st.lists(st.tuples(st.booleans(), st.integers(-5, 5)), min_size=2, max_size=60),
    scale=st.floats(0.1, 10),
    shift=st.floats(-3, 3),
)
def test_monotone_transform_leaves_auroc_unchanged(data, scale, shift):
    y = np.array([d[0] for d in data], dtype=float)
    s = np.array([d[1] for d in data], dtype=float)
    transformed = np.exp(scale * s / 5) + shift  # strictly increasing: same ties, same order
    a, b = auroc(y, s), auroc(y, transformed)
    if np.isnan(a):
        assert np.isnan(b)
    else:
        assert a == pytest.approx(b, abs=1e-12)
        assert a == pytest.approx(roc_auc_score(y, s), abs=1e-12)
