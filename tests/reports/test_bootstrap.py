"""Patient-level resamples: reproducible, shared, degenerate resamples counted; coverage simulation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from chexbench.core.auroc import resampled_auroc_auprc
from chexbench.core.errors import DataError
from chexbench.reports.bootstrap import (
    check_prediction_frame,
    draw_patient_resamples,
    patient_set_key,
    percentile_ci,
    score_predictions,
)


def test_resamples_reproducible_and_patient_level():
    ids = np.array(["p3", "p1", "p2", "p1", "p4"])  # p1 holds two images
    a = draw_patient_resamples(ids, 300, seed=5)
    b = draw_patient_resamples(ids[::-1], 300, seed=5)  # order of images does not matter
    np.testing.assert_array_equal(a.weights, b.weights)
    assert list(a.patient_ids) == ["p1", "p2", "p3", "p4"]
    assert (a.weights.sum(axis=1) == 4).all()  # each resample draws 4 patients
    assert not np.array_equal(a.weights, draw_patient_resamples(ids, 300, seed=6).weights)
    assert patient_set_key(ids) == patient_set_key(["p4", "p2", "p1", "p3"])
    with pytest.raises(DataError, match="p9"):
        a.index_of(np.array(["p9"]))


def test_degenerate_resamples_counted():
    """Two positive patients: resamples that miss both (≈ (1 − 2/n)^n ≈ 13%) have no AUROC."""
    n = 30
    df = pd.DataFrame(
        {
            "image_id": [f"i{k}" for k in range(n)],
            "patient_id": [f"p{k}" for k in range(n)],
            "label": "edema",
            "y_true": [1.0, 1.0] + [0.0] * (n - 2),
            "y_score": np.linspace(1, 0, n),
        }
    )
    res = draw_patient_resamples(df["patient_id"], 2000, seed=0)
    s = score_predictions(df, res).labels["edema"]
    assert s.auroc == 1.0 and not s.interval_note
    expected = 2000 * (1 - 2 / n) ** n
    assert abs(s.n_degenerate - expected) < 4 * np.sqrt(expected)
    lo, hi = percentile_ci(s.auroc_boot)
    assert lo == hi == 1.0  # the interval uses the defined resamples only


def test_one_positive_patient_has_no_interval():
    """One positive patient: every defined resample holds that patient, so the interval would be
    [1.000, 1.000] from one patient: not estimable (the point stays), every resample degenerate."""
    n = 30
    df = pd.DataFrame(
        {
            "image_id": [f"i{k}" for k in range(n)],
            "patient_id": ["p0", "p0"] + [f"p{k}" for k in range(2, n)],
            "label": "edema",
            "y_true": [1.0, 1.0] + [0.0] * (n - 2),
            "y_score": np.linspace(1, 0, n),
        }
    )
    s = score_predictions(df, draw_patient_resamples(df["patient_id"], 500, seed=0)).labels["edema"]
    assert s.auroc == 1.0 and s.n_degenerate == 500 and "1 patient(s) with a positive" in s.interval_note
    assert np.isnan(percentile_ci(s.auroc_boot)).all()


def test_undefined_label_has_reason_and_no_number():
    df = pd.DataFrame(
        {
            "image_id": ["a", "b", "c"],
            "patient_id": ["p", "q", "r"],
            "label": "edema",
            "y_true": [0.0, 0.0, np.nan],
            "y_score": [0.2, 0.4, 0.9],
        }
    )
    s = score_predictions(df, draw_patient_resamples(df["patient_id"], 100), ["edema", "nodule"])
    assert not s.labels["edema"].defined and s.labels["edema"].reason == "no positive test image"
    assert s.labels["edema"].n_neg == 2  # the masked row was dropped
    assert s.labels["nodule"].reason.startswith("no test image")


def _simulated_test_set(
    rng: np.random.Generator, n_patients: int, per_patient: int, mu: float, sd_patient: float, sd_image: float
):
    """Disease is a patient property; scores share a patient effect (correlated images)."""
    disease = (rng.random(n_patients) < 0.3).astype(float)
    cluster = np.repeat(np.arange(n_patients), per_patient)
    y = disease[cluster]
    s = mu * y + rng.normal(0, sd_patient, n_patients)[cluster] + rng.normal(0, sd_image, len(cluster))
    return cluster, y, s


@pytest.mark.slow
def test_coverage_patient_level_nominal_image_level_under_covers():
    """1000 simulated test sets, 150 patients × 4 images; true AUROC Φ(μ / √(2(σ_p² + σ_i²))).

    The image-level bootstrap treats correlated images as independent and under-covers;
    the patient-level percentile interval is nominal (93–97%)."""
    mu, sd_p, sd_i = 1.2, 1.0, 0.7
    truth = norm.cdf(mu / np.sqrt(2 * (sd_p**2 + sd_i**2)))
    rng = np.random.default_rng(2024)
    n_sets, n_boot, n_patients, per_patient = 1000, 1000, 150, 4
    patient_ids = np.repeat([f"p{i:03d}" for i in range(n_patients)], per_patient)
    image_ids = np.array([f"i{i:04d}" for i in range(n_patients * per_patient)])
    hit_patient = hit_image = 0
    for t in range(n_sets):
        cluster, y, s = _simulated_test_set(rng, n_patients, per_patient, mu, sd_p, sd_i)
        by_patient = draw_patient_resamples(patient_ids, n_boot, seed=t)
        lo, hi = percentile_ci(
            resampled_auroc_auprc(y, s, by_patient.index_of(patient_ids), by_patient.weights)[0]
        )
        hit_patient += lo <= truth <= hi
        by_image = draw_patient_resamples(image_ids, 300, seed=t)  # images as if independent
        lo, hi = percentile_ci(resampled_auroc_auprc(y, s, by_image.index_of(image_ids), by_image.weights)[0])
        hit_image += lo <= truth <= hi
    coverage_patient, coverage_image = hit_patient / n_sets, hit_image / n_sets
    print(f"coverage: patient-level {coverage_patient:.3f}, image-level {coverage_image:.3f}")
    assert 0.93 <= coverage_patient <= 0.97, coverage_patient
    assert coverage_image < 0.88, coverage_image


@pytest.mark.parametrize("column", ["patient_id", "image_id"])
@pytest.mark.parametrize("blank", [None, np.nan, "", "  "])
def test_a_blank_patient_or_image_id_is_refused_naming_the_column_and_the_count(column, blank):
    # "nan" (what astype(str) makes of a null) would otherwise become one fake patient holding every such
    # image
    df = pd.DataFrame(
        {
            "image_id": [f"i{k}" for k in range(6)],
            "patient_id": [f"p{k}" for k in range(6)],
            "label": "a",
            "y_true": [0.0, 1.0] * 3,
            "y_score": np.linspace(0, 1, 6),
        }
    )
    check_prediction_frame(df, "preds.csv")
    df[column] = df[column].astype(object)
    df.loc[[1, 4], column] = blank
    with pytest.raises(
        DataError, match=rf"^preds\.csv: column '{column}' is empty \(null or blank\) in 2 of 6 row\(s\)"
    ):
        check_prediction_frame(df, "preds.csv")
