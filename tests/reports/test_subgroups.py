"""Subgroup analysis (`reports/subgroups.py`, `chexbench score|compare --by`) on synthetic prediction
files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from chexbench.cli import app
from chexbench.core.errors import DataError
from chexbench.reports.bootstrap import draw_patient_resamples
from chexbench.reports.intervals import mover_interval_and_p
from chexbench.reports.subgroups import (
    INDEPENDENT,
    PATIENT_BOOTSTRAP,
    age_band,
    analyse_subgroups,
    compare_files_by,
    score_file_by,
)

LABELS = ["cardiomegaly", "edema"]


def _predictions(
    seed: int,
    n_patients: int = 240,
    worse: tuple[str, str] | None = None,
    both_views: bool = False,
    separation: float = 2.0,
    prevalence: float = 0.3,
) -> pd.DataFrame:
    """Patients with a sex, an age and one or two images (AP and/or PA); a score = separation · y + a patient
    effect + image noise. In the subgroup ``worse`` (column, value) the separation is 0.3 instead."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        sex = "F" if rng.random() < 0.5 else "M"
        age = float(rng.uniform(20, 95))
        effect = rng.normal(0, 1.0)
        truth = {label: float(rng.random() < prevalence) for label in LABELS}
        views = ["AP", "PA"] if both_views else ["AP" if rng.random() < 0.5 else "PA"]
        for i, view in enumerate(views):
            attrs = {"sex": sex, "age": age, "view": view}
            sep = 0.3 if worse is not None and attrs[worse[0]] == worse[1] else separation
            for label, y in truth.items():
                rows.append(
                    {
                        "image_id": f"img{p}_{i}",
                        "patient_id": f"pat{p}",
                        "label": label,
                        "y_true": y,
                        "y_score": sep * y + effect + rng.normal(0, 0.7),
                        **attrs,
                    }
                )
    return pd.DataFrame(rows)


def _analyse(df: pd.DataFrame, by: str, n_boot: int = 400):
    return analyse_subgroups(df, by, draw_patient_resamples(df["patient_id"], n_boot, 0), LABELS)


def test_a_worse_subgroup_shows_a_significant_gap_in_its_variable_and_none_in_another():
    df = _predictions(seed=7, worse=("sex", "F"))
    by_sex, by_view = _analyse(df, "sex"), _analyse(df, "view")
    for label in LABELS:
        gap = by_sex.gaps.set_index("label").loc[label]
        assert (gap["higher"], gap["lower"]) == ("M", "F")
        assert gap["p_holm"] < 0.05 and gap["gap_ci_low"] > 0
        assert gap["test"] == INDEPENDENT and gap["shared_patients"] == 0  # one sex per patient
        other = by_view.gaps.set_index("label").loc[label]
        assert other["p_holm"] >= 0.05  # not significant after Holm over the variable's pairs
    # per-subgroup AUROC is the subgroup's own Mann–Whitney AUROC, inside its interval
    for g in ("F", "M"):
        part = df[(df["sex"] == g) & (df["label"] == "edema")]
        row = by_sex.table[(by_sex.table["subgroup"] == g) & (by_sex.table["label"] == "edema")].iloc[0]
        assert row["auroc"] == pytest.approx(roc_auc_score(part["y_true"], part["y_score"]), abs=1e-12)
        assert row["auroc_ci_low"] < row["auroc"] < row["auroc_ci_high"]
        assert row["n_pos_patients"] == part.loc[part["y_true"] == 1, "patient_id"].nunique()
        assert row["n_patients"] == part["patient_id"].nunique()


def test_subgroups_sharing_patients_use_the_patient_bootstrap_and_its_correlation():
    """Every patient has an AP and a PA image: the two view subgroups share every patient, and the patient
    effect makes their AUROCs correlated. The gap test must resample patients for both (narrower than the
    independent test on the same two intervals) and still find the gap built into AP."""
    df = _predictions(seed=3, n_patients=200, both_views=True, worse=("view", "AP"))
    a = _analyse(df, "view")
    for label in LABELS:
        gap = a.gaps.set_index("label").loc[label]
        assert gap["test"] == PATIENT_BOOTSTRAP and gap["shared_patients"] == 200
        assert (gap["higher"], gap["lower"]) == ("PA", "AP") and gap["p_holm"] < 0.05
        hi, lo = a.scores["PA"][label], a.scores["AP"][label]
        ind_lo, ind_hi, _ = mover_interval_and_p(hi.auroc, lo.auroc, hi.auroc_ci, lo.auroc_ci, 0.0)
        assert gap["gap_ci_high"] - gap["gap_ci_low"] < 0.9 * (ind_hi - ind_lo)
    # no gap built in: the paired test does not find one either
    null = _analyse(_predictions(seed=4, n_patients=200, both_views=True), "view")
    assert (null.gaps["test"] == PATIENT_BOOTSTRAP).all() and (null.gaps["p_holm"] >= 0.05).all()


def test_a_subgroup_with_fewer_than_10_positive_patients_is_flagged():
    df = _predictions(seed=5, n_patients=300)
    old = df["patient_id"].isin(df.loc[df["age"] >= 80, "patient_id"].unique()[:25])
    df = df[~(df["age"] >= 80) | old]  # keep 25 patients aged 80 or more: a handful of positives
    a = _analyse(df, "age")
    assert a.subgroups == ["<40", "40–59", "60–79", "≥80"]
    rows = a.table.set_index(["subgroup", "label"])
    for label in LABELS:
        few = rows.loc[("≥80", label)]
        assert few["n_pos_patients"] < 10 and few["flag"].startswith("⚠")
        assert rows.loc[("60–79", label), "n_pos_patients"] >= 10 and rows.loc[("60–79", label), "flag"] == ""
        gap = a.gaps.set_index("label").loc[label]
        assert ("≥80" in (gap["higher"], gap["lower"])) == ("≥80" in gap["flag"])
        assert gap["n_pairs"] == 6  # every pair of the 4 bands, Holm over all of them
    result = CliRunner().invoke(
        app, ["score", _write(df, "few.csv"), "--by", "age", "--bootstrap", "200"], env={"COLUMNS": "250"}
    )
    assert result.exit_code == 0, result.output
    assert "⚠" in result.output and "fewer than 10 positive patients" in result.output


_TMP: list = []


def _write(df: pd.DataFrame, name: str) -> str:
    path = _TMP[0] / name
    df.to_csv(path, index=False)
    return str(path)


@pytest.fixture(autouse=True)
def _tmp(tmp_path):
    _TMP[:] = [tmp_path]
    yield


def test_a_file_without_the_column_is_one_clear_error_naming_file_and_column(tmp_path):
    df = _predictions(seed=1, n_patients=40).drop(columns=["view"])
    path = _write(df, "old.csv")
    with pytest.raises(DataError, match=r"old\.csv: no column 'view' for --by view"):
        score_file_by(path, "view", n_boot=200)
    for args in (
        ["score", path, "--by", "view"],
        ["compare", path, _write(_predictions(2, 40), "new.csv"), "--by", "view"],
    ):
        result = CliRunner().invoke(app, args, env={"COLUMNS": "250"})
        assert result.exit_code != 0
        lines = [x for x in result.output.splitlines() if x.strip()]
        assert len(lines) == 1 and "old.csv" in lines[0] and "'view'" in lines[0], result.output
        assert "Traceback" not in result.output
    result = CliRunner().invoke(app, ["score", path, "--by", "height"])
    assert result.exit_code != 0 and "sex, age, view, site" in result.output


def test_age_bands_are_half_open_and_unknowns_belong_to_no_subgroup():
    bands = age_band(pd.Series([39.99, 40.0, 59.5, 60.0, 79.99, 80.0, 101.0, np.nan, -3.0]))
    assert bands.tolist()[:7] == ["<40", "40–59", "40–59", "60–79", "60–79", "≥80", "≥80"]
    assert bands.iloc[7:].isna().all()
    df = _predictions(seed=2, n_patients=60)
    df.loc[df["patient_id"].isin(["pat0", "pat1"]), "sex"] = "U"
    a = _analyse(df, "sex")
    assert a.subgroups == ["F", "M"] and a.n_without == df.loc[df["sex"] == "U", "image_id"].nunique() > 0


def test_compare_by_gives_each_subgroups_paired_delta_and_each_models_gaps(tmp_path):
    good = _predictions(seed=11, worse=None)
    bad = good.copy()
    rng = np.random.default_rng(0)
    female = bad["sex"] == "F"
    bad.loc[female, "y_score"] = rng.normal(0, 1, int(female.sum()))  # model B is blind on women only
    a, b = _write(good, "a.csv"), _write(bad, "b.csv")
    c = compare_files_by([a, b], "sex", n_boot=300)
    t = c.table.set_index(["subgroup", "label"])
    for label in LABELS:
        assert t.loc[("F", label), "p_holm"] < 0.05 and t.loc[("F", label), "delta"] > 0.2
        assert t.loc[("M", label), "delta"] == pytest.approx(0.0, abs=1e-12)
    assert (c.analyses["b.csv"].gaps["p_holm"] < 0.05).all() and (
        c.analyses["a.csv"].gaps["p_holm"] >= 0.05
    ).all()
    out = tmp_path / "by_sex.csv"
    result = CliRunner().invoke(
        app, ["compare", a, b, "--by", "sex", "--bootstrap", "200", "--out", str(out)], env={"COLUMNS": "250"}
    )
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(out)) == 2 * len(LABELS) and len(
        pd.read_csv(tmp_path / "by_sex_gaps.csv")
    ) == 2 * len(LABELS)


def test_the_report_gains_a_subgroup_section_and_artefacts_only_for_variables_with_two_subgroups(tmp_path):
    from tests.reports.synthetic_store import _record

    from chexbench.bench.store import ResultStore
    from chexbench.reports.report import write_report

    store = ResultStore(tmp_path)
    truth = _predictions(seed=21, n_patients=200, worse=None)
    for i, (strategy, worse) in enumerate((("scratch", None), ("simclr", ("sex", "F")))):
        preds = _predictions(seed=21, n_patients=200, worse=worse).assign(split="test", site="one site")
        assert preds[["image_id", "label", "y_true"]].equals(truth[["image_id", "label", "y_true"]])
        record = _record(
            f"c{1 - i:011d}", strategy, "resnet50", "chexpert", "finetune", 1.0, 0
        )  # ids against the order
        record["eval_labels_json"] = '["cardiomegaly", "edema"]'
        store.write(record, preds)
    stored = store.predictions("c00000000001")
    assert {"sex", "age", "view", "site"} <= set(stored.columns)  # the store keeps the subgroup columns
    text = write_report(tmp_path, n_boot=300, figures=False, html=False).read_text()
    section = text.split("## Subgroups", 1)[1].split("\n## ", 1)[0]
    assert "**sex**" in section and "**view**" in section and "**age**" in section
    assert "**site**" not in section  # one site: not a comparison
    gaps = pd.read_csv(tmp_path / "subgroup_gaps.csv")
    sub = pd.read_parquet(tmp_path / "subgroups.parquet")
    assert set(gaps["variable"]) == {"sex", "age", "view"} and len(sub) == 2 * len(LABELS) * (2 + 4 + 2)
    simclr = gaps[(gaps["strategy"] == "simclr") & (gaps["variable"] == "sex")]
    assert (simclr["p_holm"] < 0.05).all() and (simclr["lower"] == "F").all()
    assert (gaps[(gaps["strategy"] == "simclr") & (gaps["variable"] == "view")]["p_holm"] >= 0.05).all()
    assert "M − F +0." in section
    assert section.index("### `scratch`") < section.index(
        "### `simclr`"
    )  # the leaderboards' order, not the cell ids
