"""The report's external-validation matrix from a synthetic results folder (no training): macro and
per-label AUROC with patient-level intervals, the shared-label lists, Δ vs the target's internal cell
paired on the same images, and external files of an earlier run of a cell left out."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from chexbench.bench.store import ResultStore
from chexbench.reports.aggregate import load_results
from chexbench.reports.bootstrap import draw_patient_resamples, macro_ci, score_predictions
from chexbench.reports.external import external_results
from chexbench.reports.report import write_report

sys.path.insert(0, str(Path(__file__).parent))
from synthetic_store import _record  # noqa: E402

SHARED = ["atelectasis", "cardiomegaly", "edema"]


def _truth(prefix: str, n_patients: int, labels: list[str], seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for split in ("valid", "test"):
        for p in range(n_patients):
            for i in range(2):
                for label in labels:
                    rows.append(
                        (
                            f"{prefix}{split[0]}{p:03d}_{i}",
                            f"{prefix}{split[0]}p{p:03d}",
                            label,
                            float(rng.random() < 0.35),
                            split,
                        )
                    )
    return pd.DataFrame(rows, columns=["image_id", "patient_id", "label", "y_true", "split"])


def _scores(truth: pd.DataFrame, strength: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    logit = strength * truth["y_true"].to_numpy() + rng.normal(0, 1, len(truth))
    return truth.assign(y_score=1 / (1 + np.exp(-logit)))


def _write_cell(
    store: ResultStore, cell_id: str, dataset: str, preds: pd.DataFrame, labels: list[str], seed: int = 0
) -> str:
    rec = _record(cell_id, "scratch", "resnet_tiny", dataset, "finetune", 1.0, seed)
    rec["eval_labels_json"] = json.dumps(labels)
    return store.write(rec, preds)


def _external(
    store: ResultStore,
    cell_id: str,
    target: str,
    preds: pd.DataFrame,
    write_id: str,
    internal: str,
    source: str = "phantom-chexpert",
    seed: int = 0,
) -> None:
    record = {
        "format": 1,
        "cell_id": cell_id,
        "cell_write_id": write_id,
        "source_dataset": source,
        "strategy": "scratch",
        "backbone": "resnet_tiny",
        "protocol": "finetune",
        "label_fraction": 1.0,
        "seed": seed,
        "target": target,
        "target_key": "k" * 64,
        "target_config": {"dataset": target},
        "target_data": {},
        "internal_cell_id": internal,
        "shared_labels": SHARED,
        "dropped_labels": ["support_devices"],
        "not_predicted_labels": ["nodule"],
        "macro_labels": SHARED,
        "metrics": {},
        "macro_auroc": float("nan"),
        "leakage": {},
        "origin": "cell",
        "created_at": "2026-01-01T00:00:00+00:00",
    }
    store.write_external(record, preds)


def _folder(tmp_path):
    store = ResultStore(tmp_path)
    source_truth = _truth("c", 40, [*SHARED, "support_devices"], 1)
    source_write = _write_cell(
        store, "src000000000", "phantom-chexpert", _scores(source_truth, 2.0, 2), [*SHARED, "support_devices"]
    )
    target_truth = _truth("n", 40, [*SHARED, "nodule"], 3)
    _write_cell(store, "tgt000000000", "phantom-nih", _scores(target_truth, 2.5, 4), [*SHARED, "nodule"])
    external = _scores(
        target_truth[(target_truth["split"] == "test") & target_truth["label"].isin(SHARED)], 1.0, 5
    )
    _external(store, "src000000000", "phantom-nih", external, source_write, "tgt000000000")
    return store, external, target_truth


def test_matrix_has_intervals_shared_labels_and_a_paired_delta(tmp_path) -> None:
    store, external, _ = _folder(tmp_path)
    report = write_report(tmp_path, n_boot=300, figures=False, html=False).read_text()
    section = report[report.index("## External validation") :]
    row = next(
        ln for ln in section.splitlines() if ln.startswith("| scratch") and "| phantom-chexpert |" in ln
    )
    assert re.search(
        r"\| \d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\] \|", row
    )  # → phantom-nih: macro AUROC with its interval
    assert ", ".join(SHARED) in section and "support_devices" in section

    table = pd.read_csv(tmp_path / "external.csv")
    macro = table[table["label"] == "macro"].iloc[0]
    # the interval is the report's own macro interval on the target's test patients (called, not re-derived)
    results = load_results(tmp_path, n_boot=300, seed=0)
    mine = score_predictions(external, draw_patient_resamples(external["patient_id"], 300, 0), SHARED)
    lo, hi = macro_ci(mine, SHARED)
    assert (
        np.isclose(macro["auroc_ci_low"], lo)
        and np.isclose(macro["auroc_ci_high"], hi)
        and lo < macro["auroc"] < hi
    )
    # Δ vs the target's internal cell: same images, same resamples; the weaker external model is lower
    assert macro["internal_cell_id"] == "tgt000000000"
    assert np.isclose(macro["delta"], macro["auroc"] - macro["internal_auroc"]) and macro["delta_ci_high"] < 0
    per = table[table["label"] != "macro"]
    assert sorted(per["label"]) == sorted(SHARED) and per["delta_ci_low"].notna().all()
    assert external_results(results).left_out == []


def test_delta_is_withheld_when_the_internal_cell_scored_other_images(tmp_path) -> None:
    store, external, _ = _folder(tmp_path)
    other = _truth("x", 40, [*SHARED, "nodule"], 9)  # another test set on the target (e.g. another eval cap)
    store.remove("tgt000000000")
    _write_cell(store, "tgt000000000", "phantom-nih", _scores(other, 2.5, 4), [*SHARED, "nodule"])
    rows = external_results(load_results(tmp_path, n_boot=200, seed=0)).rows
    macro = rows[rows["label"] == "macro"].iloc[0]
    assert np.isnan(macro["delta"]) and "not paired" in macro["delta_note"]
    assert np.isfinite(macro["auroc_ci_low"])


def test_an_external_file_of_an_earlier_run_of_its_cell_is_left_out_and_listed(tmp_path) -> None:
    store, external, _ = _folder(tmp_path)
    _external(store, "src000000000", "phantom-indiana", external, "an-earlier-write", "")
    ext = external_results(load_results(tmp_path, n_boot=200, seed=0))
    assert set(ext.rows["target"]) == {"phantom-nih"}
    assert (
        len(ext.left_out) == 1 and "phantom-indiana" in ext.left_out[0] and "earlier run" in ext.left_out[0]
    )


def test_rows_are_grouped_by_source_dataset_whatever_the_cell_ids(tmp_path) -> None:
    store, _, target_truth = _folder(tmp_path)
    # a phantom-nih cell (seed 1) whose id sorts before the phantom-chexpert one, validated on
    # phantom-chexpert
    source_truth = _truth("c", 40, [*SHARED, "support_devices"], 1)
    write = _write_cell(
        store, "aaa000000000", "phantom-nih", _scores(target_truth, 2.0, 6), [*SHARED, "nodule"], seed=1
    )
    on_chexpert = source_truth[(source_truth["split"] == "test") & source_truth["label"].isin(SHARED)]
    _external(
        store,
        "aaa000000000",
        "phantom-chexpert",
        _scores(on_chexpert, 1.0, 7),
        write,
        "",
        source="phantom-nih",
        seed=1,
    )
    rows = external_results(load_results(tmp_path, n_boot=200, seed=0)).rows
    assert list(rows.drop_duplicates("cell_id")["source"]) == ["phantom-chexpert", "phantom-nih"]
    assert list(rows[rows["cell_id"] == "aaa000000000"]["label"]) == [
        "macro",
        *SHARED,
    ]  # each pair: macro, then its labels


def test_a_damaged_external_file_is_listed_not_silently_dropped(tmp_path) -> None:
    store, _, _ = _folder(tmp_path)
    path = store.external_path("src000000000", "phantom-nih")
    path.write_bytes(
        path.read_bytes()[:200]
    )  # a truncated copy (e.g. a disk that filled up outside chexbench)
    ext = external_results(load_results(tmp_path, n_boot=200, seed=0))
    assert ext.rows.empty
    assert len(ext.left_out) == 1 and "phantom-nih" in ext.left_out[0] and "unreadable" in ext.left_out[0]
    report = write_report(tmp_path, n_boot=200, figures=False, html=False).read_text()
    assert "unreadable" in report[report.index("## External validation") :]


def test_the_matrix_diagonal_has_an_interval_when_one_label_has_a_single_positive_patient() -> None:
    # one label with a single positive patient has no patient-level interval: the diagonal uses the matrix's
    # rule
    # (the label left out and named), as off the diagonal, instead of printing the whole macro as "[n/a]"
    from types import SimpleNamespace

    from chexbench.reports.external import _internal_macro

    rng = np.random.default_rng(3)
    rows = []
    for p in range(120):
        for label in ("a", "b", "rare"):
            y = float(rng.random() < 0.3) if label != "rare" else float(p == 0)
            rows.append(
                {
                    "image_id": f"i{p}",
                    "patient_id": f"p{p}",
                    "label": label,
                    "y_true": y,
                    "y_score": y + rng.normal(0, 0.8),
                }
            )
    preds = pd.DataFrame(rows)
    scores = score_predictions(preds, draw_patient_resamples(preds["patient_id"], n_boot=300, seed=0))
    assert (
        scores.labels["rare"].defined and scores.labels["rare"].interval_note
    )  # the case: an AUROC, no interval
    assert np.isnan(
        macro_ci(scores, ["a", "b", "rare"])[0]
    )  # the leaderboard's macro over every defined label
    text = _internal_macro(SimpleNamespace(scores={"c1": scores}), "c1")
    assert "n/a" not in text and "without rare: no interval" in text and "(internal" in text
    lo, hi = macro_ci(scores, ["a", "b"])
    assert f"{lo:.3f}" in text and f"{hi:.3f}" in text
