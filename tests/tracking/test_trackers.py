"""Experiment tracking end to end: a tiny grid logs one series per cell and pretraining run, with one
point per epoch, that TensorBoard's and MLflow's own readers read back; logging off writes no event
file; logging changes no number and no cell id."""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from chexbench.cli import app
from chexbench.core.errors import ConfigError
from chexbench.spec.parse import parse_grid
from chexbench.tracking import build_tracker, parse_log

EPOCHS, PRETRAIN_EPOCHS = 2, 3

GRID = f"""name = "tracked"
[axes]
strategy = ["scratch", "simclr"]
backbone = ["resnet_tiny"]
dataset = ["phantom-chexpert"]
protocol = ["finetune", "linear"]
seed = [0]
[settings]
image_size = 32
epochs = {EPOCHS}
batch_size = 16
max_train_images = 48
max_eval_images = 48
pretrain_source = "phantom-chexpert"
[dataset.phantom-chexpert]
patients = 120
size = 64
[strategy.simclr]
pretrain_epochs = {PRETRAIN_EPOCHS}
pretrain_warmup_epochs = 1.0
pretrain_batch_size = 16
proj_dim = 16
proj_hidden_dim = 32
max_pretrain_images = 48
probe_images = 32
"""


def _run(tmp: Path, name: str, *log: str) -> Path:
    grid = tmp / "tracked.toml"
    grid.write_text(GRID)
    results = tmp / name
    res = CliRunner().invoke(
        app, ["run", "--grid", str(grid), "--results", str(results), "--device", "cpu", *log]
    )
    assert res.exit_code == 0, res.output
    return results


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same tiny grid run twice, each in its own cache (so both pretrain): logged, and not."""
    tmp = tmp_path_factory.mktemp("tracking")
    old = {k: os.environ.get(k) for k in ("CHEXBENCH_CACHE", "MLFLOW_TRACKING_URI")}
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        os.environ["CHEXBENCH_CACHE"] = str(tmp / "cache-logged")
        logged = _run(tmp, "logged", "--log", "tensorboard,mlflow")
        os.environ["CHEXBENCH_CACHE"] = str(tmp / "cache-silent")
        silent = _run(tmp, "silent", "--log", "none")
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return logged, silent


def _records(results: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p) for p in sorted((results / "records").glob("*.parquet"))]).set_index(
        "cell_id"
    )


def _pretrain_run_ids(results: Path) -> list[str]:
    recs = _records(results)
    return sorted({json.loads(i).get("pretrain_run") for i in recs["init_json"]} - {None})


@pytest.mark.slow  # one tiny grid run twice: ~15 s of CPU (module fixture)
def test_tensorboard_event_files_hold_one_series_per_cell_and_pretraining_run(runs):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logged, _ = runs
    recs = _records(logged)
    assert len(recs) == 4 and set(recs["status"]) == {"ok"}
    cells = sorted(p.name for p in (logged / "tensorboard" / "cells").iterdir())
    assert cells == sorted(recs.index)
    for cell_id in cells:
        acc = EventAccumulator(str(logged / "tensorboard" / "cells" / cell_id))
        acc.Reload()
        loss = acc.Scalars("train/loss")
        assert [e.step for e in loss] == list(range(EPOCHS))
        history = json.loads(recs.loc[cell_id, "history_json"])
        assert [e.value for e in loss] == pytest.approx([h["train_loss"] for h in history], rel=1e-6)
        assert [e.value for e in acc.Scalars("val/macro_auroc")] == pytest.approx(
            [h["val_macro_auroc"] for h in history], rel=1e-6
        )
        if recs.loc[cell_id, "protocol"] == "finetune":  # live: learning rate and throughput every epoch
            assert (
                len(acc.Scalars("train/lr")) == EPOCHS
                and len(acc.Scalars("train/images_per_second")) == EPOCHS
            )
    (run_id,) = _pretrain_run_ids(logged)
    assert sorted(p.name for p in (logged / "tensorboard" / "pretrain").iterdir()) == [run_id]
    acc = EventAccumulator(str(logged / "tensorboard" / "pretrain" / run_id))
    acc.Reload()
    for tag in ("pretrain/loss", "pretrain/lr", "pretrain/images_per_second"):
        assert [e.step for e in acc.Scalars(tag)] == list(range(PRETRAIN_EPOCHS)), tag
    assert len(acc.Scalars("pretrain/probe_auroc")) == PRETRAIN_EPOCHS  # probe_every = 1


@pytest.mark.slow
def test_mlflow_file_store_holds_one_run_per_cell_and_pretraining_run(runs):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    logged, _ = runs
    os.environ.setdefault(
        "MLFLOW_ALLOW_FILE_STORE", "true"
    )  # recent MLflow keeps the file store behind this switch
    client = MlflowClient(tracking_uri=(logged / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name("chexbench")
    found = client.search_runs([experiment.experiment_id], max_results=100)
    names = sorted(r.info.run_name for r in found)
    recs = _records(logged)
    assert names == sorted(
        [f"cells/{c}" for c in recs.index] + [f"pretrain/{r}" for r in _pretrain_run_ids(logged)]
    )
    for r in found:
        assert r.info.status == "FINISHED"
        if r.data.tags["kind"] == "cell":
            steps = [m.step for m in client.get_metric_history(r.info.run_id, "train/loss")]
            assert sorted(steps) == list(range(EPOCHS))
        else:
            steps = [m.step for m in client.get_metric_history(r.info.run_id, "pretrain/loss")]
            assert sorted(steps) == list(range(PRETRAIN_EPOCHS))


@pytest.mark.slow
def test_logging_off_writes_no_event_file_and_changes_no_number_or_cell_id(runs):
    logged, silent = runs
    assert (
        not list(silent.rglob("*tfevents*"))
        and not (silent / "mlruns").exists()
        and not (silent / "tensorboard").exists()
    )
    assert list(logged.rglob("*tfevents*"))
    a, b = _records(logged), _records(silent)
    assert sorted(a.index) == sorted(b.index)
    b = b.loc[a.index]
    for col in (
        "macro_auroc",
        "macro_auprc",
        "val_macro_auroc",
        "selected_epoch",
        "metrics_json",
        "history_json",
        "config_json",
    ):
        assert a[col].tolist() == b[col].tolist(), col
    final = [json.loads(i).get("extra", {}).get("pretrain_final_loss") for i in a["init_json"]]
    assert [
        json.loads(i).get("extra", {}).get("pretrain_final_loss") for i in b["init_json"]
    ] == final  # pretrained again, alike
    assert any(f is not None for f in final)
    assert not (logged / "live").exists() or not list(
        (logged / "live").glob("*.json")
    )  # the live file goes with its worker


def test_the_grid_s_log_key_is_no_part_of_any_cell_id():
    raw = {
        "name": "g",
        "axes": {
            "strategy": ["scratch"],
            "backbone": ["resnet_tiny"],
            "dataset": ["phantom-chexpert"],
            "protocol": ["finetune"],
            "seed": [0, 1],
        },
        "settings": {"epochs": 2},
    }
    plain = parse_grid(raw, "g.toml")
    logged = parse_grid({**raw, "settings": {"epochs": 2, "log": "tensorboard,mlflow"}}, "g.toml")
    assert logged.log == "tensorboard,mlflow" and plain.log is None
    assert [c.cell.cell_id for c in logged.cells()] == [c.cell.cell_id for c in plain.cells()]
    with pytest.raises(ConfigError, match="log must be a string"):
        parse_grid({**raw, "settings": {"log": 3}}, "g.toml")


def test_log_specs_parse_and_bad_names_are_one_clear_error():
    assert parse_log("tensorboard, mlflow") == ["tensorboard", "mlflow"]
    assert parse_log("none") == [] and parse_log("") == [] and parse_log(None) is None
    assert parse_log(["wandb"]) == ["wandb"]
    with pytest.raises(ConfigError, match="unknown tracker 'tensorbord'.*tensorboard, mlflow, wandb, none"):
        parse_log("tensorbord")


def test_a_missing_default_tracker_warns_once_and_a_requested_one_refuses(tmp_path, monkeypatch):
    import chexbench.tracking as tracking

    monkeypatch.setattr(tracking, "missing_package", lambda name: f"the '{name}' package is not installed")
    warnings: list[str] = []
    tracker = build_tracker(None, tmp_path, warnings.append)
    assert len(warnings) == 1 and "tensorboard logging is off" in warnings[0]
    with tracker.run("cells/x", "cell", {}) as log:
        log.log_scalars(0, {"train/loss": 1.0})
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ConfigError, match="--log mlflow: the 'mlflow' package is not installed"):
        build_tracker(["mlflow"], tmp_path, warnings.append)


def test_wandb_runs_offline_unless_the_user_says_online(tmp_path, monkeypatch):
    calls: list[tuple[str, object]] = []

    class FakeRun:
        def log(self, scalars, step):
            calls.append(("log", (step, scalars)))

        def finish(self, exit_code=0):
            calls.append(("finish", exit_code))

    fake = types.SimpleNamespace(init=lambda **kw: calls.append(("init", kw)) or FakeRun())
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    from chexbench.tracking.wandb_log import WandbTracker

    with WandbTracker(tmp_path).run("cells/abc", "cell", {"epochs": 2}) as log:
        log.log_scalars(0, {"train/loss": 0.5})
    init = calls[0][1]
    assert (
        init["mode"] == "offline" and init["name"] == "cells/abc" and init["dir"] == str(tmp_path / "wandb")
    )
    assert calls[1:] == [("log", (0, {"train/loss": 0.5})), ("finish", 0)]
    monkeypatch.setenv("WANDB_MODE", "online")
    with WandbTracker(tmp_path).run("cells/abc", "cell", {}):
        pass
    assert calls[3][1]["mode"] == "online"
