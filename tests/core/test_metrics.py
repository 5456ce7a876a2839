"""The stored per-label metrics (core.metrics, computed by core.auroc) against scikit-learn, an
independent implementation: masked entries left out, ties, labels with one class undefined."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from chexbench.core.metrics import macro_auroc, per_label_metrics


@pytest.mark.parametrize("seed", range(6))
def test_per_label_auroc_and_auprc_equal_scikit_learn_with_masks_and_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(8, 300))
    y = (rng.random((n, 3)) < 0.3).astype(float)
    y[rng.random((n, 3)) < 0.15] = np.nan
    scores = rng.random((n, 3)).astype(np.float32)
    if seed % 2:
        scores = np.round(scores * 10) / 10  # many ties
    got = per_label_metrics(y, scores, ["a", "b", "c"])
    for j, label in enumerate("abc"):
        keep = ~np.isnan(y[:, j])
        t, s = y[keep, j], scores[keep, j]
        assert got[label]["n_pos"] == int((t == 1).sum()) and got[label]["n_neg"] == int((t == 0).sum())
        if got[label]["defined"]:
            assert got[label]["auroc"] == pytest.approx(roc_auc_score(t, s), abs=1e-12)
            assert got[label]["auprc"] == pytest.approx(average_precision_score(t, s), abs=1e-12)


def test_a_label_with_one_class_is_undefined_and_left_out_of_the_macro_mean():
    y = np.array([[1, 0], [0, 0], [1, 0], [0, np.nan]], dtype=float)
    s = np.array([[0.9, 0.1], [0.2, 0.3], [0.8, 0.2], [0.1, 0.4]])
    got = per_label_metrics(y, s, ["a", "b"])
    assert got["a"]["defined"] and got["a"]["auroc"] == 1.0
    assert not got["b"]["defined"] and math.isnan(got["b"]["auroc"]) and math.isnan(got["b"]["auprc"])
    assert macro_auroc(y, s, ["a", "b"], ["a", "b"]) == 1.0
    assert math.isnan(macro_auroc(y, s, ["a", "b"], ["b"]))
