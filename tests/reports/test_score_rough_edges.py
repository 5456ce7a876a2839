"""`score` / `compare` as a new user meets them: one-patient files, degenerate resamples, and the
report's own evaluation labels (a cell's predictions file reproduces the report's macro)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import synthetic_store
from typer.testing import CliRunner

from chexbench.cli import app
from chexbench.reports.aggregate import load_results
from chexbench.reports.leaderboard import build_tables
from chexbench.reports.score import compare_predictions, score_file

EVAL = ["atelectasis", "edema"]  # a subset of the file's labels, as CheXpert's 5 of 13


def _file(
    tmp_path, name: str, n_patients: int, seed: int, one_patient: bool = False, prevalence: float = 0.4
):
    rng = np.random.default_rng(7)  # the same truth for every model
    rows = []
    for p in range(n_patients):
        for i in range(2):
            for label in ("edema", "effusion"):
                rows.append(
                    (
                        f"img{p}_{i}",
                        "P0" if one_patient else f"pat{p}",
                        label,
                        float(rng.random() < prevalence),
                    )
                )
    df = pd.DataFrame(rows, columns=["image_id", "patient_id", "label", "y_true"])
    noise = np.random.default_rng(seed).normal(0, 1, len(df))
    df["y_score"] = 1 / (1 + np.exp(-(1.5 * df["y_true"] + noise)))
    path = tmp_path / name
    df.to_csv(path, index=False)
    return path


def test_one_patient_gives_no_interval_and_no_significance(tmp_path):
    a = _file(tmp_path, "a.csv", 60, 1, one_patient=True)
    b = _file(tmp_path, "b.csv", 60, 2, one_patient=True)
    table = score_file(a, n_boot=200)
    assert table["auroc"].notna().all()  # the point estimate stays
    assert table["auroc_ci_low"].isna().all() and table["auroc_ci_high"].isna().all()  # was [0.860, 0.860]
    assert table["note"].str.contains("not estimable").all()
    c = compare_predictions([a, b], n_boot=200).table
    for col in ("p_value", "p_holm", "delong_p", "clustered_delong_p", "delta_ci_low"):
        assert c[col].isna().all(), col  # was p = 0.010, significant after Holm
    assert c["delta"].notna().all()
    runner = CliRunner()
    r = runner.invoke(app, ["compare", str(a), str(b), "--bootstrap", "200"])
    assert r.exit_code == 0, r.output
    assert "not estimable" in r.output and "<0.001" not in r.output
    assert "[not estimable]" in r.output  # in the Δ cell itself (Rich markup must not eat it)
    r = runner.invoke(app, ["score", str(a), "--bootstrap", "200"])
    assert r.exit_code == 0 and "[not estimable]" in r.output


def test_one_positive_patient_is_not_estimable_but_others_are(tmp_path):
    df = pd.read_csv(_file(tmp_path, "a.csv", 40, 1))
    e = df["label"] == "edema"
    df.loc[e, "y_true"] = 0.0
    df.loc[e & (df["patient_id"] == "pat3"), "y_true"] = 1.0  # both images of one patient
    path = tmp_path / "one_pos.csv"
    df.to_csv(path, index=False)
    t = score_file(path, n_boot=200).set_index("label")
    assert (
        np.isnan(t.loc["edema", "auroc_ci_low"]) and "1 patient(s) with a positive" in t.loc["edema", "note"]
    )
    assert np.isfinite(t.loc["effusion", "auroc_ci_low"])
    assert np.isnan(t.loc["macro", "auroc_ci_low"]) and "edema" in t.loc["macro", "note"]


def test_degenerate_share_is_warned(tmp_path):
    def rare(name: str, seed: int):
        df = pd.read_csv(_file(tmp_path, name, 30, seed))
        e = df["label"] == "edema"
        df.loc[e, "y_true"] = (
            df.loc[e, "patient_id"].isin(["pat1", "pat2"]).astype(float)
        )  # two positive patients
        df.to_csv(tmp_path / name, index=False)  # a resample loses both in (28/30)^30 = 13% of draws
        return tmp_path / name

    path = rare("rare.csv", 1)
    t = score_file(path, n_boot=200)
    macro = t[t["label"] == "macro"].iloc[0]
    assert macro["n_degenerate"] / 200 > 0.05
    r = CliRunner().invoke(app, ["score", str(path), "--bootstrap", "200"])
    assert r.exit_code == 0, r.output
    assert "warning" in r.output and f"{int(macro['n_degenerate'])} of 200 resamples" in r.output
    b = rare("rare_b.csv", 2)
    r = CliRunner().invoke(app, ["compare", str(path), str(b), "--bootstrap", "200"])
    assert r.exit_code == 0, r.output
    assert "resamples" in r.output and "warning" in r.output


@pytest.fixture
def results(tmp_path, monkeypatch):
    record = synthetic_store._record

    def with_eval_labels(*args, **kwargs):
        return {**record(*args, **kwargs), "eval_labels_json": json.dumps(EVAL)}

    monkeypatch.setattr(synthetic_store, "_record", with_eval_labels)
    return synthetic_store.write_synthetic_results(tmp_path / "res", seeds=(0,))


def test_score_of_a_cell_reproduces_the_report(results, tmp_path):
    loaded = load_results(results, n_boot=300, seed=0)
    board = build_tables(loaded).leaderboard
    for cell_ids, row in zip(board["cell_ids"], board.itertuples(), strict=True):
        path = results / "predictions" / f"{cell_ids}.parquet"
        t = score_file(path, n_boot=300, seed=0)
        assert list(t["label"]) == [*EVAL, "macro"]
        macro = t[t["label"] == "macro"].iloc[0]
        assert macro["auroc"] == row.macro_auroc
        assert (macro["auroc_ci_low"], macro["auroc_ci_high"]) == (
            row.macro_auroc_ci_low,
            row.macro_auroc_ci_high,
        )
    # the labels travel with the file (its footer), and --labels chooses others
    first = results / "predictions" / f"{board['cell_ids'].iloc[0]}.parquet"
    copy = tmp_path / "copied.parquet"
    shutil.copy(first, copy)
    assert list(score_file(copy, n_boot=300)["label"]) == [*EVAL, "macro"]
    assert len(score_file(copy, n_boot=300, labels="all")) == len(synthetic_store.LABELS) + 1
    assert list(score_file(copy, n_boot=300, labels="edema")["label"]) == ["edema", "macro"]
    r = CliRunner().invoke(app, ["score", str(first), "--bootstrap", "300"])
    assert r.exit_code == 0 and "evaluation labels" in r.output
    r = CliRunner().invoke(app, ["score", str(first), "--labels", "nodule"])
    assert r.exit_code == 2 and "nodule" in r.output


def test_compare_uses_the_recorded_labels(results):
    ids = sorted(p.name for p in (results / "predictions").glob("*.parquet"))[:2]
    c = compare_predictions([results / "predictions" / i for i in ids], n_boot=200)
    assert set(c.table["label"]) == {*EVAL, "macro"}
