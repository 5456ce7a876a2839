"""write_report / `chexbench report` on a synthetic result store."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from chexbench.bench.store import ResultStore
from chexbench.cli import app
from chexbench.reports.report import write_report


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    from synthetic_store import write_synthetic_results

    root = write_synthetic_results(tmp_path_factory.mktemp("rep") / "results", fractions=(0.1, 1.0))
    write_report(root, n_boot=200, seed=0, figures=False)  # figures: test_report_golden
    return root


def test_report_sections_and_files(report_dir):
    text = (report_dir / "report.md").read_text()
    for heading in (
        "## Summary",
        "## Leaderboards",
        "### chexpert · finetune",
        "## Paired comparisons vs `scratch`",
        "## Per-label AUROC",
        "## AUPRC, calibration and operating point",
        "## Skipped cells",
        "## Failed cells",
        "## Appendix: provenance",
    ):
        assert heading in text, heading
    assert "no ImageNet weights file" in text  # skipped reason
    assert "loss became NaN at epoch 2 step 17" in text  # failure reason
    assert "n/a (no positive test image)" in text  # undefined label, no fake number
    for name in ("leaderboard.parquet", "leaderboard.csv", "per_label.parquet", "per_label.csv"):
        assert (report_dir / name).stat().st_size > 0, name
    assert not list(report_dir.rglob("*.tmp"))


def test_leaderboard_numbers_match_sklearn(report_dir):
    lb = pd.read_parquet(report_dir / "leaderboard.parquet")
    assert len(lb) == 2 * 3 * 2  # backbones × strategies × fractions
    store = ResultStore(report_dir)
    row = lb[
        (lb["strategy"] == "simclr") & (lb["backbone"] == "resnet50") & (lb["label_fraction"] == 1.0)
    ].iloc[0]
    labels = json.loads(row["labels"])
    assert labels == ["atelectasis", "cardiomegaly", "edema"]  # pneumothorax undefined on test
    per_seed = []
    for cell_id in row["cell_ids"].split(","):
        p = store.predictions(cell_id)
        p = p[(p["split"] == "test") & p["y_true"].notna()]
        per_seed.append(
            np.mean(
                [
                    roc_auc_score(g["y_true"], g["y_score"])
                    for _, g in p[p["label"].isin(labels)].groupby("label")
                ]
            )
        )
    assert row["macro_auroc"] == pytest.approx(np.mean(per_seed), abs=1e-12)
    assert row["macro_auroc_sd"] == pytest.approx(np.std(per_seed, ddof=1), abs=1e-12)
    assert row["macro_auroc_ci_low"] < row["macro_auroc"] < row["macro_auroc_ci_high"]
    assert row["n_seeds"] == 2
    base = lb[
        (lb["strategy"] == "scratch") & (lb["backbone"] == "resnet50") & (lb["label_fraction"] == 1.0)
    ].iloc[0]
    assert row["delta"] == pytest.approx(row["macro_auroc"] - base["macro_auroc"], abs=1e-12)
    assert row["delta_ci_low"] <= row["delta"] <= row["delta_ci_high"]
    assert (lb["p_holm"].dropna() >= lb["p_value"].dropna()).all()


def test_report_cli_prints_path(tmp_path):
    from synthetic_store import write_synthetic_results

    root = write_synthetic_results(tmp_path / "r", seeds=(0,), n_patients=8)
    result = CliRunner().invoke(app, ["report", "--results", str(root), "--bootstrap", "100", "--no-figures"])
    assert result.exit_code == 0, result.output
    assert str(root / "report.md") in result.output
    assert (root / "report.md").exists()
    bad = CliRunner().invoke(app, ["report", "--results", str(root), "--bootstrap", "10"])
    assert bad.exit_code == 2 and "--bootstrap" in bad.output


def test_report_cli_missing_dir_one_line(tmp_path):
    result = CliRunner().invoke(app, ["report", "--results", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "results directory not found" in result.output


def test_malformed_predictions_are_left_out_of_the_report_and_quarantined_by_the_run(tmp_path, capsys):
    from synthetic_store import write_synthetic_results

    root = write_synthetic_results(tmp_path / "r", seeds=(0,), n_patients=8)
    store = ResultStore(root)
    victim = store.cell_ids()[0]
    bad = store.predictions(victim).drop(columns=["y_score"])
    bad.to_parquet(store.predictions_path(victim))
    write_report(root, n_boot=100)
    err = capsys.readouterr().err
    assert "lacks columns ['y_score']" in err and "left in place" in err  # reported, with the file
    assert (
        store.predictions_path(victim).exists() and not (root / "quarantine").exists()
    )  # the report moves nothing
    assert (root / "report.md").exists()
    assert store.quarantine_damaged(victim).state == "pending"  # what the next run does first
    assert (root / "quarantine" / "predictions" / f"{victim}.parquet").exists()
    assert victim not in ResultStore(root).cell_ids()  # pending: the run recomputes it


def test_per_label_table_deltas_and_undefined(report_dir):
    pl = pd.read_parquet(report_dir / "per_label.parquet")
    key = ["dataset", "protocol", "label_fraction", "backbone", "label"]
    base = pl[pl["strategy"] == "scratch"].set_index(key)["auroc"]
    other = pl[pl["strategy"] == "simclr"].set_index(key)
    defined = other["auroc"].notna()
    np.testing.assert_allclose(
        other.loc[defined, "delta"], other.loc[defined, "auroc"] - base.loc[other.index[defined]], atol=1e-12
    )
    undefined = pl[pl["label"] == "pneumothorax"]
    assert (
        undefined["auroc"].isna().all() and (undefined["undefined_reason"] == "no positive test image").all()
    )
    assert (pl["p_bh"].dropna() >= pl["p_value"].dropna()).all()


def test_fmt_delta_never_prints_a_negative_zero_and_says_when_there_is_no_interval():
    from chexbench.reports.markdown import fmt_delta, fmt_signed

    assert fmt_delta(-0.0004, -0.0009, -0.0001) == "+0.000 [-0.001, +0.000]"
    assert fmt_delta(-0.0, -0.0004, 0.0004) == "+0.000 [+0.000, +0.000]"
    assert fmt_delta(-0.0006, -0.0012, 0.0) == "-0.001 [-0.001, +0.000]"  # a real negative keeps its sign
    assert fmt_delta(0.012, float("nan"), float("nan")) == "+0.012 [n/a]"  # too few resamples (compare.py)
    assert fmt_delta(float("nan"), 0.0, 0.0) == "n/a"
    assert (
        fmt_signed(-0.0001) == "+0.000" and fmt_signed(-0.0005001) == "-0.001"
    )  # the DeLong bounds use it too
