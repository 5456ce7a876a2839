"""`chexbench compare` on mismatched, inconsistent and several prediction files (Typer's CliRunner)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from statsmodels.stats.multitest import multipletests
from test_score_cli import _predictions
from typer.testing import CliRunner

from chexbench.cli import app
from chexbench.reports.score import compare_predictions


def _invoke(*args: str):
    return CliRunner(env={"COLUMNS": "220"}).invoke(app, ["compare", *args])


@pytest.fixture
def three(tmp_path):
    paths = []
    for name, seed, strength in (("a.csv", 1, 2.0), ("b.csv", 2, 0.3), ("c.csv", 3, 1.0)):
        p = tmp_path / name
        _predictions(seed, strength).to_csv(p, index=False)
        paths.append(p)
    return paths


def test_different_test_rows_are_refused_naming_the_counts(three, tmp_path):
    a, b, _ = three
    fewer = tmp_path / "fewer.csv"
    df = pd.read_csv(b)
    df[~df["image_id"].isin(["img0_0", "img1_0", "img2_1"])].to_csv(fewer, index=False)
    r = _invoke(str(a), str(fewer), "--bootstrap", "100")
    assert r.exit_code == 2
    assert "240 in a.csv, 234 in fewer.csv; 234 shared" in r.output and "--on-shared" in r.output
    assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output


def test_on_shared_says_what_each_side_lost_and_scores_the_overlap(three, tmp_path):
    a, b, _ = three
    fewer = tmp_path / "fewer.csv"
    df = pd.read_csv(b)
    df[~df["image_id"].isin(["img0_0", "img1_0", "img2_1"])].to_csv(fewer, index=False)
    out = tmp_path / "cmp.csv"
    r = _invoke(str(a), str(fewer), "--on-shared", "--bootstrap", "100", "--out", str(out))
    assert r.exit_code == 0, r.output
    assert "a.csv lost 6 of its 240 rows" in r.output and "fewer.csv lost 0 of its 234 rows" in r.output
    table = pd.read_csv(out)
    shared = pd.read_csv(a)
    shared = shared[~shared["image_id"].isin(["img0_0", "img1_0", "img2_1"])].dropna(subset=["y_true"])
    edema = shared[shared["label"] == "edema"]
    row = table[table["label"] == "edema"].iloc[0]
    assert row["auroc_a"] == pytest.approx(roc_auc_score(edema["y_true"], edema["y_score"]), abs=1e-12)
    assert row["auroc_a_ci_low"] < row["auroc_a"] < row["auroc_a_ci_high"]


def test_an_image_under_two_patient_ids_is_an_error(three, tmp_path):
    a, b, _ = three
    within = tmp_path / "within.csv"
    df = pd.read_csv(a)
    df.loc[(df["image_id"] == "img3_1") & (df["label"] == "effusion"), "patient_id"] = "pat99"
    df.to_csv(within, index=False)
    r = _invoke(str(within), str(b), "--bootstrap", "100")
    assert r.exit_code == 2 and "img3_1" in r.output and "two patient ids" in r.output
    r = CliRunner().invoke(
        app, ["score", str(within), "--bootstrap", "100"]
    )  # within one file, nothing to compare with
    assert r.exit_code == 2 and "within.csv: image 'img3_1' appears under two patient ids" in r.output
    across = tmp_path / "across.csv"
    df = pd.read_csv(b)
    df.loc[df["image_id"] == "img5_0", "patient_id"] = "pat77"
    df.to_csv(across, index=False)
    r = _invoke(str(a), str(across), "--bootstrap", "100")
    assert r.exit_code == 2 and "img5_0" in r.output and "pat77" in r.output


def test_a_blank_patient_id_is_one_line_naming_the_file_column_and_rows(three, tmp_path):
    # blank in a CSV, null in a Parquet file: every such image would otherwise be one patient "nan"
    a, b, _ = three
    blank = tmp_path / "blank.csv"
    df = pd.read_csv(a)
    df.loc[:9, "patient_id"] = ""
    df.to_csv(blank, index=False)
    nulls = tmp_path / "nulls.parquet"
    df = pd.read_csv(b)
    df["image_id"] = df["image_id"].astype(object)
    df.loc[[3, 7, 11], "image_id"] = None
    df.to_parquet(nulls)
    for cmd in (["score", str(blank)], ["compare", str(blank), str(b)], ["compare", str(a), str(blank)]):
        r = CliRunner(env={"COLUMNS": "220"}).invoke(app, [*cmd, "--bootstrap", "100"])
        assert r.exit_code == 2 and "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1, (
            r.output
        )
        assert f"{blank}: column 'patient_id' is empty (null or blank) in 10 of 240 row(s)" in " ".join(
            r.output.split()
        )
    r = CliRunner(env={"COLUMNS": "220"}).invoke(app, ["score", str(nulls), "--bootstrap", "100"])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    assert f"{nulls}: column 'image_id' is empty (null or blank) in 3 of 240 row(s)" in " ".join(
        r.output.split()
    )


def test_masked_in_one_file_and_known_in_the_other_is_not_paired(three, tmp_path):
    a, b, _ = three
    other = tmp_path / "ones.csv"
    df = pd.read_csv(b)
    masked = df["y_true"].isna()
    df.loc[masked, "y_true"] = 1.0  # U-Ones where the other file masks (U-Ignore)
    df.to_csv(other, index=False)
    r = _invoke(str(a), str(other), "--bootstrap", "100")
    assert r.exit_code == 2 and "y_true differs" in r.output


def test_output_shows_each_auroc_with_its_interval_auprc_delta_and_macro_delong(three, tmp_path):
    a, b, _ = three
    out = tmp_path / "cmp.parquet"
    r = _invoke(str(a), str(b), "--bootstrap", "200", "--out", str(out))
    assert r.exit_code == 0, r.output
    t = pd.read_parquet(out)
    macro = t[t["label"] == "macro"].iloc[0]
    for col in (
        "auroc_a_ci_low",
        "auroc_b_ci_high",
        "auprc_delta",
        "auprc_delta_ci_low",
        "delong_p",
        "clustered_delong_p",
    ):
        assert np.isfinite(macro[col]), col
    assert macro["delong_ci_low"] < macro["delta"] < macro["delong_ci_high"]
    assert macro["delta"] == pytest.approx(t[t["label"] != "macro"]["delta"].mean(), abs=1e-12)
    assert "AUROC A [95% CI]" in r.output and "ΔAUPRC" in r.output
    # the macro DeLong cross-check agrees with the patient bootstrap here (2 images per patient, weak
    # clustering)
    m = compare_predictions([a, b], n_boot=1000).table.query("label == 'macro'").iloc[0]
    width = m["delta_ci_high"] - m["delta_ci_low"]
    assert (m["clustered_delong_ci_high"] - m["clustered_delong_ci_low"]) / width == pytest.approx(
        1.0, abs=0.25
    )


def test_three_files_all_pairs_or_each_vs_baseline_with_the_family_stated(three):
    a, b, c = three
    everything = compare_predictions([a, b, c], n_boot=200)
    assert everything.pairs == [("a.csv", "b.csv"), ("a.csv", "c.csv"), ("b.csv", "c.csv")]
    macro = everything.table[everything.table["label"] == "macro"]
    np.testing.assert_allclose(macro["p_holm"], multipletests(macro["p_value"], method="holm")[1])
    vs = compare_predictions([a, c], baseline=b, n_boot=200)
    assert vs.pairs == [("a.csv", "b.csv"), ("c.csv", "b.csv")]
    # the same pair on the same rows gives the same numbers whatever else is compared
    ab_all = everything.table[
        (everything.table["model_a"] == "a.csv") & (everything.table["model_b"] == "b.csv")
    ]
    ab_vs = vs.table[(vs.table["model_a"] == "a.csv") & (vs.table["model_b"] == "b.csv")]
    np.testing.assert_array_equal(ab_all["delta_ci_low"].to_numpy(), ab_vs["delta_ci_low"].to_numpy())
    r = _invoke(str(a), str(c), "--baseline", str(b), "--bootstrap", "100")
    assert r.exit_code == 0, r.output
    assert (
        "each of the 2 model(s) vs the baseline b.csv" in r.output
        and "Holm over the 2 macro comparison(s)" in r.output
    )
    r = _invoke(str(a), str(b), str(c), "--bootstrap", "100")
    assert r.exit_code == 0 and "all 3 pair(s) of the 3 models" in r.output
    r = _invoke(str(a), "--bootstrap", "100")
    assert r.exit_code == 2 and "at least two" in r.output
