"""A tiny grid end to end on phantom images: run, resume, kill-and-rerun, failures recorded."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from chexbench.bench.runner import run_grid
from chexbench.bench.store import ResultStore
from chexbench.cli import app
from chexbench.core.context import RunContext
from chexbench.datasets.celldata import resolve_prepared
from chexbench.spec.parse import parse_grid

GRID = {
    "name": "tiny",
    "axes": {
        "strategy": ["scratch", "imagenet"],
        "backbone": ["resnet_tiny", "vit_tiny"],
        "dataset": ["phantom-chexpert"],
        "protocol": ["finetune"],
        "seed": [0],
    },
    "settings": {
        "image_size": 32,
        "epochs": 2,
        "batch_size": 32,
        "lr": 1e-3,
        "max_train_images": 160,
        "max_eval_images": 80,
    },
    "dataset": {"phantom-chexpert": {"patients": 120, "size": 64}},
}


def _ctx(results, cache) -> RunContext:
    return RunContext(torch.device("cpu"), results, cache)


def test_tiny_grid_runs_resumes_and_records(tmp_path, cache):
    grid = parse_grid(GRID, "tiny.toml")
    results = tmp_path / "results"
    summary = run_grid(grid, results, _ctx(results, cache))
    assert summary.count("ok") == 2 and summary.count("skipped") == 2 and summary.count("failed") == 0

    store = ResultStore(results)
    recs = store.records()
    assert len(recs) == 2 and set(recs["status"]) == {"ok"}
    for _, r in recs.iterrows():
        assert 0.0 <= r["macro_auroc"] <= 1.0 or math.isnan(r["macro_auroc"])
        preds = store.predictions(r["cell_id"])
        assert set(preds["split"]) == {"valid", "test"}
        assert preds["y_score"].between(0, 1).all()
        assert r["device_name"].startswith("cpu") and r["torch_version"] == torch.__version__
        _check_subgroup_columns(preds)
    skipped = pd.read_parquet(results / "skipped.parquet")
    assert (
        set(skipped["strategy"]) == {"imagenet"}
        and skipped["reason"].str.contains("no ImageNet weights").all()
    )

    # rerun: nothing trains, nothing is rewritten
    mtimes = {p: p.stat().st_mtime_ns for p in (results / "records").iterdir()}
    again = run_grid(grid, results, _ctx(results, cache))
    assert again.count("done-before") == 2 and again.count("ok") == 0
    assert {p: p.stat().st_mtime_ns for p in (results / "records").iterdir()} == mtimes

    # a killed run: the interrupted cell left no record; rerunning completes only what is missing
    victim = recs["cell_id"].iloc[0]
    store.remove(victim)
    third = run_grid(grid, results, _ctx(results, cache))
    assert third.count("ok") == 1 and third.count("done-before") == 1
    assert [o.cell.cell_id for o in third.outcomes if o.status == "ok"] == [victim]
    assert sorted(store.cell_ids()) == sorted(recs["cell_id"])


def _check_subgroup_columns(preds: pd.DataFrame) -> None:
    """Every prediction row carries its image's sex, age and view, exactly as the dataset's index has them."""
    _, _, cache = resolve_prepared(
        "phantom-chexpert", GRID["dataset"]["phantom-chexpert"], GRID["settings"]["image_size"]
    )
    index = cache.index.set_index("image_id")
    assert {"sex", "age", "view"} <= set(preds.columns)
    expected = index.loc[preds["image_id"], ["sex", "age", "view"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(
        preds[["sex", "age", "view"]].reset_index(drop=True), expected, check_dtype=False
    )
    assert preds["view"].nunique() >= 2 and preds["sex"].nunique() >= 2


def test_interrupt_mid_grid_then_resume(tmp_path, cache):
    grid = parse_grid(GRID, "tiny.toml")
    results = tmp_path / "results"
    calls = []

    def interrupt_second(i, cell):
        calls.append(cell.cell_id)
        if len(calls) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_grid(grid, results, _ctx(results, cache), on_cell_start=interrupt_second)
    assert len(ResultStore(results).cell_ids()) == 1
    resumed = run_grid(grid, results, _ctx(results, cache))
    assert resumed.count("ok") == 1 and resumed.count("done-before") == 1
    assert len(ResultStore(results).cell_ids()) == 2


def test_diverging_cell_is_failed_and_grid_goes_on(tmp_path, cache, monkeypatch):
    from chexbench.core import training

    grid = parse_grid(GRID, "tiny.toml")
    results = tmp_path / "results"
    real = training.masked_bce
    n = {"calls": 0}

    def nan_for_vit(logits, targets):
        loss = real(logits, targets)
        n["calls"] += 1
        return loss * float("nan") if logits.shape[0] and _current["backbone"] == "vit_tiny" else loss

    _current = {"backbone": ""}
    monkeypatch.setattr(training, "masked_bce", nan_for_vit)
    summary = run_grid(
        grid, results, _ctx(results, cache), on_cell_start=lambda i, c: _current.update(backbone=c.backbone)
    )
    assert summary.count("failed") == 1 and summary.count("ok") == 1
    recs = ResultStore(results).records()
    failed = recs[recs["status"] == "failed"].iloc[0]
    assert failed["backbone"] == "vit_tiny" and "DivergedError: loss became nan" in failed["failure_reason"]
    # the failed cell is retried on the next run (failed is not finished)
    monkeypatch.setattr(training, "masked_bce", real)
    retry = run_grid(grid, results, _ctx(results, cache))
    assert retry.count("ok") == 1 and retry.count("done-before") == 1
    assert set(ResultStore(results).records()["status"]) == {"ok"}


def test_cli_rerun_says_nothing_to_train(tmp_path, cache):
    grid_file = tmp_path / "tiny.toml"
    grid_file.write_text(
        '[axes]\nstrategy=["scratch"]\nbackbone=["resnet_tiny"]\ndataset=["phantom-chexpert"]\nprotocol=["finetune"]\n'
        "[settings]\nimage_size=32\nepochs=1\nwarmup_epochs=0.5\nmax_train_images=96\nmax_eval_images=64\n"
        "[dataset.phantom-chexpert]\npatients=120\nsize=64\n"
    )
    runner = CliRunner()
    results = tmp_path / "r"
    first = runner.invoke(
        app, ["run", "--grid", str(grid_file), "--results", str(results), "--device", "cpu"]
    )
    assert first.exit_code == 0, first.output
    assert "1 ok" in first.output
    second = runner.invoke(
        app, ["run", "--grid", str(grid_file), "--results", str(results), "--device", "cpu"]
    )
    assert second.exit_code == 0 and "nothing to train" in second.output
    status = runner.invoke(app, ["status", "--results", str(results), "--grid", str(grid_file)])
    assert status.exit_code == 0 and "tiny" in status.output
