"""Calibration gets intervals: ECE per patient resample equals ECE of the resampled rows, and the
report prints the macro ECE with its patient-level bootstrap interval."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from chexbench.reports.bootstrap import draw_patient_resamples
from chexbench.reports.calibration import ece_replicates, expected_calibration_error

sys.path.insert(0, str(Path(__file__).parent))
from synthetic_store import write_synthetic_results  # noqa: E402


def test_ece_replicates_equal_the_resampled_ece():
    rng = np.random.default_rng(3)
    n_pat = 25
    pid = np.repeat([f"p{i:02d}" for i in range(n_pat)], 3)
    p = rng.random(len(pid))
    y = (rng.random(len(pid)) < p).astype(float)
    res = draw_patient_resamples(pid, 40, seed=1)
    reps = ece_replicates(y, p, res.index_of(pid), res.weights)
    assert ece_replicates(y, p, res.index_of(pid), np.ones((1, n_pat)))[0] == expected_calibration_error(y, p)
    cluster = res.index_of(pid)
    for b in range(0, 40, 7):  # the resample as rows repeated by their patient's count
        rows = np.repeat(np.arange(len(y)), res.weights[b, cluster].astype(int))
        assert abs(reps[b] - expected_calibration_error(y[rows], p[rows])) < 1e-12


def test_report_prints_the_ece_interval(tmp_path):
    from chexbench.reports.report import write_report

    root = write_synthetic_results(tmp_path / "r", seeds=(0, 1), n_patients=20, images_per_patient=2)
    text = write_report(root, n_boot=200, figures=False).read_text()
    assert "macro ECE [95% CI]" in text
    lb = pd.read_parquet(root / "leaderboard.parquet")
    assert lb["macro_ece_ci_low"].notna().all()
    assert (
        (lb["macro_ece_ci_low"] <= lb["macro_ece"] + 0.05)
        & (lb["macro_ece"] - 0.05 <= lb["macro_ece_ci_high"])
    ).all()
    assert (lb["macro_ece_ci_high"] > lb["macro_ece_ci_low"]).all()
