"""External validation (``settings.evaluate_on``): the setting, the label lists, cross-dataset
leakage at plan time, and one tiny grid end to end (predict, resume, report's matrix; the
matrix's intervals and Δ on controlled data: tests/reports/test_external_report.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from chexbench.bench import runner
from chexbench.bench.external import external_targets, label_sets, pending_targets
from chexbench.bench.preflight import PreflightError, external_leakage, preflight
from chexbench.bench.runner import predict_external, run_grid
from chexbench.bench.store import ResultStore
from chexbench.core.context import RunContext
from chexbench.core.errors import ConfigError, DataError
from chexbench.datasets.phantom.generate import write_site
from chexbench.reports.report import write_report
from chexbench.spec.parse import load_grid, parse_grid
from chexbench.spec.registry import DATASETS

PHANTOM = {"patients": 60, "size": 32}


def _grid(**settings) -> dict:
    return {
        "name": "ext",
        "axes": {
            "strategy": ["scratch"],
            "backbone": ["resnet_tiny"],
            "dataset": ["phantom-chexpert", "phantom-nih"],
            "protocol": ["finetune"],
            "seed": [0],
        },
        "settings": {
            "image_size": 32,
            "epochs": 1,
            "warmup_epochs": 0.5,
            "batch_size": 32,
            "max_train_images": 96,
            **settings,
        },
        "dataset": {
            "phantom-chexpert": dict(PHANTOM),
            "phantom-nih": dict(PHANTOM),
            "phantom-indiana": dict(PHANTOM),
        },
        "protocol": {"finetune": {"localize": False}},
    }


def test_evaluate_on_does_not_change_cell_ids_and_lists_each_other_dataset_with_its_twin() -> None:
    plain = parse_grid(_grid(), "ext.toml").cells()
    planned = parse_grid(_grid(evaluate_on=["phantom-nih", "phantom-indiana"]), "ext.toml").cells()
    assert [p.cell.cell_id for p in planned] == [p.cell.cell_id for p in plain]
    assert [p.cell.configuration_hash for p in planned] == [p.cell.configuration_hash for p in plain]
    on_chexpert, on_nih = planned
    assert list(on_chexpert.external) == ["phantom-nih", "phantom-indiana"]
    assert list(on_nih.external) == [
        "phantom-indiana"
    ]  # its own dataset is its internal test, not an external one
    assert (
        on_chexpert.external["phantom-nih"].cell_id == on_nih.cell.cell_id
    )  # the twin is the grid's cell on the target
    assert "evaluate_on" not in on_chexpert.cell.canonical_json()
    assert not any(p.external for p in load_grid("smoke").cells())


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["nhi"], "unknown dataset 'nhi'; did you mean 'nih'"),
        (["nih", "nih"], "lists a dataset twice"),
    ],
)
def test_a_bad_evaluate_on_is_one_line_naming_the_key(value, message) -> None:
    with pytest.raises(ConfigError, match=message) as e:
        parse_grid(_grid(evaluate_on=value), "ext.toml")
    assert "evaluate_on" in str(e.value) and "\n" not in str(e.value)


def test_evaluate_on_cannot_be_swept_as_an_axis() -> None:
    raw = _grid()
    raw["axes"]["settings.evaluate_on"] = [["phantom-nih"], ["phantom-indiana"]]
    with pytest.raises(ConfigError, match="evaluate_on is not part of a cell"):
        parse_grid(raw, "ext.toml")


def test_label_sets_keep_the_shared_harmonized_labels_and_list_what_is_dropped() -> None:
    chexpert, nih = DATASETS.get("phantom-chexpert"), DATASETS.get("phantom-nih")
    sets = label_sets(
        list(chexpert.labels), list(chexpert.eval_labels), list(nih.labels), list(nih.eval_labels)
    )
    assert sets.shared == [lab for lab in chexpert.labels if lab in nih.labels]
    assert "support_devices" in sets.dropped and "lung_opacity" in sets.dropped  # NIH has neither
    assert "infiltration" in sets.not_predicted and "infiltration" not in sets.shared
    assert sets.macro == ["cardiomegaly", "edema", "consolidation", "atelectasis", "pleural_effusion"]
    assert set(sets.shared) | set(sets.dropped) == set(chexpert.labels)


def test_a_target_sharing_patients_with_the_source_is_refused_at_plan_time(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CHEXBENCH_CACHE", str(tmp_path / "cache"))
    copy = tmp_path / "copy"  # the phantom-nih generation the cells train on, read again under the name "nih"
    copy.mkdir()
    write_site(copy, "nih", 40, 32, 0, workers=1)
    raw = _grid(evaluate_on=["nih"])
    raw["axes"]["dataset"] = ["phantom-nih"]
    raw["dataset"] = {"phantom-nih": {"root": str(copy)}, "nih": {"root": str(copy)}}
    with pytest.raises(PreflightError) as e:
        preflight(parse_grid(raw, "ext.toml").cells())
    assert "evaluate_on 'nih'" in str(e.value) and "are patients of 'phantom-nih'" in str(e.value)
    assert "\n" not in str(e.value)
    raw["settings"]["allow_leakage"] = True  # the override is honoured (and recorded by the run)
    planned = parse_grid(raw, "ext.toml").cells()
    preflight(planned)
    (leak,) = external_leakage(
        planned
    )  # what plan prints: every test patient of the copy is one of the source's
    assert (leak.source, leak.target) == ("phantom-nih", "nih")
    assert leak.shared_with_source == leak.target_test_patients > 0


def test_a_target_that_cannot_be_read_is_one_problem_naming_evaluate_on(cache) -> None:
    raw = _grid(evaluate_on=["chexpert"])  # no [dataset.chexpert] root
    raw["axes"]["dataset"] = ["phantom-chexpert"]
    with pytest.raises(PreflightError) as e:
        preflight(parse_grid(raw, "ext.toml").cells())
    message = str(e.value)
    assert (
        message.startswith("1 problem") and "evaluate_on 'chexpert'" in message and "needs a root" in message
    )
    assert "\n" not in message


def test_phantom_layouts_of_one_seed_share_no_patient_so_plan_accepts_them(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CHEXBENCH_CACHE", str(tmp_path / "cache"))
    raw = _grid(evaluate_on=["phantom-nih", "phantom-indiana"])
    raw["dataset"] = {
        name: {"patients": 24, "size": 32, "seed": 0}
        for name in ("phantom-chexpert", "phantom-nih", "phantom-indiana")
    }
    planned = parse_grid(raw, "ext.toml").cells()
    preflight(planned)  # no LeakageError: each site's cohort is its own random stream
    leaks = external_leakage(planned)
    assert {(x.source, x.target) for x in leaks} == {
        ("phantom-chexpert", "phantom-nih"),
        ("phantom-chexpert", "phantom-indiana"),
        ("phantom-nih", "phantom-indiana"),
    }
    assert all(
        x.target_test_patients > 0 and x.shared_with_source == x.shared_with_pretraining == 0 for x in leaks
    )


def _ctx(results, cache) -> RunContext:
    return RunContext(torch.device("cpu"), results, cache)


@pytest.mark.slow  # ~10 s on one core: three 60-patient phantoms generated, two cells of one epoch at 32 px
def test_external_predictions_are_stored_resumed_without_retraining_and_reported(
    tmp_path, cache, monkeypatch
) -> None:
    results = tmp_path / "results"
    grid = parse_grid(_grid(evaluate_on=["phantom-nih", "phantom-indiana"]), "ext.toml")

    def indiana_fails(model, normalize, cell, labels, eval_labels, target, *args):
        if target.name == "phantom-indiana":
            raise DataError("phantom-indiana: unreadable (test)")
        return predict_external(model, normalize, cell, labels, eval_labels, target, *args)

    with (
        monkeypatch.context() as m
    ):  # one target failing costs the cell nothing: it is noted and redone on the rerun
        m.setattr(runner, "predict_external", indiana_fails)
        summary = run_grid(grid, results, _ctx(results, cache))
    assert summary.count("ok") == 2
    store = ResultStore(results)
    planned = {p.cell.dataset: p for p in grid.cells()}
    source = planned["phantom-chexpert"].cell
    reason = next(o.reason for o in summary.outcomes if o.cell.cell_id == source.cell_id)
    assert (
        "external predictions: phantom-nih (" in reason
        and "external predictions on phantom-indiana failed" in reason
    )
    assert store.external_record(source.cell_id, "phantom-indiana") is None
    ext_path = store.external_path(source.cell_id, "phantom-nih")
    rec = store.external_record(source.cell_id, "phantom-nih")
    assert rec["internal_cell_id"] == planned["phantom-nih"].cell.cell_id
    assert rec["cell_write_id"] == store.cell_write_id(source.cell_id)
    assert rec["dropped_labels"] and set(rec["shared_labels"]).isdisjoint(rec["dropped_labels"])
    assert (
        rec["target_config"]["dataset_options"] == {**PHANTOM, "dependencies": "published"}
        and rec["target_data"]["test_image_ids_sha256"]
    )
    first = store.external_predictions(source.cell_id, "phantom-nih")
    assert set(first["label"]) == set(rec["shared_labels"]) and set(first["split"]) == {"test"}
    internal = store.predictions(planned["phantom-nih"].cell.cell_id)
    internal = internal[internal["split"] == "test"]
    assert set(first["image_id"]) == set(internal["image_id"])  # the target's own test images

    # a killed run left one file out; a new target appears: both are made from the saved model, nothing
    # retrains
    records = {p: p.stat().st_mtime_ns for p in (results / "records").iterdir()}
    ext_path.unlink()
    grown = parse_grid(_grid(evaluate_on=["phantom-nih", "phantom-indiana", "phantom-chexpert"]), "ext.toml")
    again = run_grid(grown, results, _ctx(results, cache))
    assert again.count("done-before") == 2 and again.count("ok") == 0
    assert {p: p.stat().st_mtime_ns for p in (results / "records").iterdir()} == records
    assert "saved model" in " ".join(o.reason for o in again.outcomes)
    assert store.external_record(source.cell_id, "phantom-indiana")["origin"] == "saved model"
    redone = store.external_predictions(source.cell_id, "phantom-nih")
    pd.testing.assert_frame_equal(redone, first, check_exact=False, atol=1e-6)
    assert (
        store.external_record(planned["phantom-nih"].cell.cell_id, "phantom-chexpert")["origin"]
        == "saved model"
    )
    for p in grown.cells():
        assert pending_targets(store, p.cell.cell_id, external_targets(p.cell, p.external)) == []

    report = write_report(results, n_boot=100, figures=False, html=False).read_text()
    section = report[report.index("## External validation") :]
    assert "### Matrix: macro AUROC, source × target" in section
    matrix_row = next(
        ln for ln in section.splitlines() if ln.startswith("| scratch") and "| phantom-chexpert |" in ln
    )
    assert "(internal" in matrix_row and matrix_row.count("|") == 6  # source, model, and the three datasets
    assert ", ".join(rec["shared_labels"]) in section and ", ".join(rec["dropped_labels"]) in section
    table = pd.read_csv(results / "external.csv")
    pair = table[
        (table["cell_id"] == source.cell_id)
        & (table["target"] == "phantom-nih")
        & (table["label"] != "macro")
    ]
    paired = pair[np.isfinite(pair["delta"])]
    assert len(paired) >= 1  # the Δ vs the target's internal cell is paired image by image
    np.testing.assert_allclose(paired["delta"], paired["auroc"] - paired["internal_auroc"], atol=1e-12)
    assert (paired["internal_cell_id"] == planned["phantom-nih"].cell.cell_id).all()
