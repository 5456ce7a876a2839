"""`chexbench score`, `chexbench compare` and `chexbench bench stats` through Typer's CliRunner."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from chexbench.cli import app
from chexbench.perf.stats import run_stats_benchmark
from chexbench.reports.score import compare_files, score_file


def _predictions(seed: int, strength: float, n_patients: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(100)  # same truth for every model
    rows = []
    for p in range(n_patients):
        for i in range(2):
            for label in ("edema", "effusion"):
                rows.append((f"img{p}_{i}", f"pat{p}", label, float(rng.random() < 0.4)))
    df = pd.DataFrame(rows, columns=["image_id", "patient_id", "label", "y_true"])
    noise = np.random.default_rng(seed).normal(0, 1, len(df))
    df["y_score"] = 1 / (1 + np.exp(-(strength * df["y_true"] + noise)))
    df.loc[::17, "y_true"] = np.nan  # masked rows
    return df


@pytest.fixture
def files(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.parquet"
    _predictions(1, 2.0).to_csv(a, index=False)
    _predictions(2, 0.3).to_parquet(b)
    return a, b


def test_score_matches_sklearn_and_writes(files, tmp_path):
    a, _ = files
    out = tmp_path / "scores.csv"
    result = CliRunner().invoke(app, ["score", str(a), "--bootstrap", "200", "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    df = pd.read_csv(a).dropna(subset=["y_true"])
    for label in ("edema", "effusion"):
        g = df[df["label"] == label]
        row = table[table["label"] == label].iloc[0]
        assert row["auroc"] == pytest.approx(roc_auc_score(g["y_true"], g["y_score"]), abs=1e-12)
        assert row["auroc_ci_low"] < row["auroc"] < row["auroc_ci_high"]
    macro = table[table["label"] == "macro"].iloc[0]
    assert macro["auroc"] == pytest.approx(table[table["label"] != "macro"]["auroc"].mean())


def test_compare_finds_the_better_model(files):
    a, b = files
    df = compare_files(a, b, n_boot=300)
    macro = df[df["label"] == "macro"].iloc[0]
    assert macro["delta"] > 0.2 and macro["delta_ci_low"] > 0 and macro["p_value"] < 0.05
    per_label = df[df["label"] != "macro"]
    assert (per_label["p_holm"] >= per_label["p_value"]).all()
    assert per_label["delong_p"].notna().all() and per_label["clustered_delong_p"].notna().all()
    result = CliRunner().invoke(app, ["compare", str(a), str(b), "--bootstrap", "200"])
    assert result.exit_code == 0, result.output
    assert "macro" in result.output


def test_bad_inputs_one_line_errors(files, tmp_path):
    a, b = files
    runner = CliRunner()
    missing = runner.invoke(app, ["score", str(tmp_path / "none.csv")])
    assert missing.exit_code == 2 and "prediction file not found" in missing.output
    bad = tmp_path / "bad.csv"
    pd.read_csv(a).drop(columns=["patient_id"]).to_csv(bad, index=False)
    r = runner.invoke(app, ["score", str(bad)])
    assert r.exit_code == 2 and "patient_id" in r.output and "Traceback" not in r.output
    other = tmp_path / "other.csv"
    flipped = pd.read_csv(a)
    flipped.loc[1, "y_true"] = 1 - flipped.loc[1, "y_true"]  # row 0 is masked
    flipped.to_csv(other, index=False)
    r = runner.invoke(app, ["compare", str(a), str(other)])
    assert r.exit_code == 2 and "y_true differs" in r.output
    r = runner.invoke(app, ["score", str(a), "--out", str(tmp_path / "x.txt")])
    assert r.exit_code == 2 and not (tmp_path / "x.txt").exists()


def test_score_file_handles_single_class_label(tmp_path):
    df = _predictions(1, 1.0)
    df.loc[df["label"] == "effusion", "y_true"] = 0.0
    path = tmp_path / "p.csv"
    df.to_csv(path, index=False)
    table = score_file(path, n_boot=100)
    eff = table[table["label"] == "effusion"].iloc[0]
    assert np.isnan(eff["auroc"]) and eff["note"] == "no positive test image"
    assert "1 defined" in table[table["label"] == "macro"].iloc[0]["note"]


def test_bench_stats_small_agrees_with_sklearn(tmp_path):
    b = run_stats_benchmark(n_boot=30, n_labels=2, n_images=600, n_patients=200, sklearn_resamples=10)
    assert b.max_abs_diff <= 1e-12
    assert b.sklearn_resamples == 10
    perf = tmp_path / "PERFORMANCE.md"
    r = CliRunner().invoke(
        app,
        [
            "bench",
            "stats",
            "--resamples",
            "20",
            "--labels",
            "1",
            "--images",
            "300",
            "--patients",
            "100",
            "--sklearn-resamples",
            "3",
            "--out",
            str(perf),
        ],
    )
    assert r.exit_code == 0, r.output
    text = perf.read_text()
    assert "## bench stats: patient-level bootstrap vs scikit-learn" in text and "Speed-up" in text


def test_a_label_with_fewer_than_ten_positive_patients_is_flagged_in_score_and_compare(tmp_path):
    """7 positive patients for `rare`, 30 for `common`: only `rare` (and the macro that holds it) is flagged,
    in the table written, the printed output of score and in compare's."""
    rng = np.random.default_rng(4)
    rows = []
    for p in range(60):
        for i in range(2):
            rows.append((f"i{p}_{i}", f"p{p}", "rare", float(p < 7)))
            rows.append((f"i{p}_{i}", f"p{p}", "common", float(p % 2 == 0)))
    df = pd.DataFrame(rows, columns=["image_id", "patient_id", "label", "y_true"])
    df["y_score"] = df["y_true"] + rng.normal(0, 1, len(df))
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    df.to_csv(a, index=False)
    df.assign(y_score=df["y_true"] * 0.5 + rng.normal(0, 1, len(df))).to_csv(b, index=False)
    table = score_file(a, n_boot=200).set_index("label")
    assert table.loc["rare", "n_pos_patients"] == 7 and table.loc["common", "n_pos_patients"] == 30
    assert table.loc["rare", "flag"].startswith("⚠ 7 positive patient(s) (< 10)")
    assert table.loc["common", "flag"] == ""
    assert "rare" in table.loc["macro", "flag"]
    result = CliRunner().invoke(app, ["score", str(a), "--bootstrap", "200"])
    assert result.exit_code == 0, result.output
    assert (
        "⚠ 7 positive patient(s)" in result.output and "fewer than 10 positive test patients" in result.output
    )
    result = CliRunner().invoke(app, ["compare", str(a), str(b), "--bootstrap", "200"])
    assert result.exit_code == 0, result.output
    assert "rare: ⚠ 7 positive patient(s)" in result.output and "common: ⚠" not in result.output
