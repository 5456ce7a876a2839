"""ECE, reliability bins, and the validation-chosen operating point."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from chexbench.reports.calibration import (
    cell_calibration,
    expected_calibration_error,
    reliability,
    sensitivity_specificity,
    youden_threshold,
)


def _ece_loop(y, p, n_bins=15):
    total = 0.0
    for i in range(n_bins):
        lo, hi = i / n_bins, (i + 1) / n_bins
        m = (p > lo) & (p <= hi) if i else (p >= lo) & (p <= hi)
        if m.any():
            total += m.mean() * abs(y[m].mean() - p[m].mean())
    return total


def test_ece_equals_a_plain_loop_and_is_zero_when_calibrated():
    rng = np.random.default_rng(0)
    p = rng.random(5000)
    y = (rng.random(5000) < p).astype(float)
    assert expected_calibration_error(y, p) == pytest.approx(_ece_loop(y, p), abs=1e-12)
    assert expected_calibration_error(y, p) < 0.03  # calibrated by construction
    assert expected_calibration_error(y, np.clip(p + 0.3, 0, 1)) > 0.2  # over-confident positive
    rel = reliability(y, p)
    assert rel.count.sum() == 5000 and len(rel.edges) == 16


def test_ece_rejects_non_probabilities():
    with pytest.raises(ValueError, match="probabilities"):
        expected_calibration_error(np.array([0, 1]), np.array([-2.0, 3.0]))


def test_youden_threshold_is_the_brute_force_optimum():
    rng = np.random.default_rng(1)
    y = (rng.random(400) < 0.3).astype(float)
    s = np.round(rng.normal(y, 1), 2)
    t = youden_threshold(y, s)

    def j(th):
        sens, spec = sensitivity_specificity(y, s, th)
        return sens + spec - 1

    best = max(j(th) for th in np.unique(s))
    assert j(t) == pytest.approx(best, abs=1e-12)
    assert np.isnan(youden_threshold(np.zeros(5), np.arange(5.0)))


def test_operating_point_chosen_on_valid_applied_to_test():
    valid = pd.DataFrame(
        {
            "image_id": ["v1", "v2", "v3", "v4"],
            "patient_id": ["a", "b", "c", "d"],
            "label": "edema",
            "y_true": [0, 0, 1, 1],
            "y_score": [0.1, 0.2, 0.6, 0.9],
            "split": "valid",
        }
    )
    test = pd.DataFrame(
        {
            "image_id": ["t1", "t2", "t3", "t4"],
            "patient_id": ["e", "f", "g", "h"],
            "label": "edema",
            "y_true": [0, 1, 1, 0],
            "y_score": [0.5, 0.7, 0.65, 0.61],
            "split": "test",
        }
    )
    cal = cell_calibration(pd.concat([valid, test]), ["edema"]).iloc[0]
    assert cal["threshold"] == 0.6  # the best threshold on valid, not on test
    assert cal["sensitivity"] == 1.0 and cal["specificity"] == 0.5  # 0.61 ≥ 0.6 is a false positive on test


def test_no_operating_point_when_valid_lacks_a_class():
    df = pd.DataFrame(
        {
            "image_id": ["v1", "t1", "t2"],
            "patient_id": ["a", "b", "c"],
            "label": "edema",
            "y_true": [1, 0, 1],
            "y_score": [0.4, 0.3, 0.8],
            "split": ["valid", "test", "test"],
        }
    )
    cal = cell_calibration(df, ["edema"]).iloc[0]
    assert np.isnan(cal["threshold"]) and np.isnan(cal["sensitivity"])
    assert "validation lacks a class" in cal["note"]
