"""``chexbench run --gpus 2 --device cpu`` (torchrun, gloo): a tiny grid — a data-parallel
fine-tuning cell and a MoCo-pretrained linear cell — is written exactly once, by rank 0, and
the data-parallel fine-tuning equals the single-process run of the same cell."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from chexbench.bench.runner import run_grid
from chexbench.bench.store import ResultStore
from chexbench.core.context import RunContext
from chexbench.spec.parse import load_grid

pytestmark = pytest.mark.slow

GRID_TOML = """
name = "tiny-ddp"
[axes]
strategy = ["scratch", "mocov2"]
backbone = ["vit_tiny", "resnet_tiny"]
dataset = ["phantom-chexpert"]
protocol = ["finetune", "linear"]
[settings]
image_size = 32
epochs = 2
batch_size = 16
max_train_images = 48
max_eval_images = 48
pretrain_source = "phantom-chexpert"
optimizer = "sgd"  # no Adam normalization: float-level differences stay float-level
lr = 0.01
[dataset.phantom-chexpert]
patients = 120
size = 64
[strategy.mocov2]
pretrain_epochs = 1
pretrain_batch_size = 16
max_pretrain_images = 48
probe_every = 0
proj_hidden_dim = 64
# the two cells of the test, run by ONE torchrun launch (each launch starts three interpreters that
# import torch): scratch/vit_tiny/finetune (data-parallel) and mocov2/resnet_tiny/linear (pretrained
# across the ranks)
[[exclude]]
match = { strategy = "scratch", backbone = "resnet_tiny" }
[[exclude]]
match = { strategy = "scratch", protocol = "linear" }
[[exclude]]
match = { strategy = "mocov2", backbone = "vit_tiny" }
[[exclude]]
match = { strategy = "mocov2", protocol = "finetune" }
"""


def test_torchrun_grid_writes_each_record_once_and_matches_one_process(tmp_path, cache):
    grid_file = tmp_path / "tiny-ddp.toml"
    grid_file.write_text(GRID_TOML)
    results = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "chexbench",
        "run",
        "--gpus",
        "2",
        "--device",
        "cpu",
        "--grid",
        str(grid_file),
        "--results",
        str(results),
    ]
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "× 2 ranks" in out
    assert out.count(" ok ") == 2  # one line per cell: only rank 0 reports

    grid = load_grid(str(grid_file))
    wanted = [p.cell for p in grid.cells() if p.status == "run"]
    assert sorted((c.strategy, c.backbone, c.protocol) for c in wanted) == [
        ("mocov2", "resnet_tiny", "linear"),
        ("scratch", "vit_tiny", "finetune"),
    ]
    store = ResultStore(results)
    recs = store.records()
    assert sorted(recs["cell_id"]) == sorted(c.cell_id for c in wanted) and set(recs["status"]) == {"ok"}
    assert not list(results.rglob("*.tmp"))
    # the MoCo cell's pretraining run is finished and its lock released (the cache is the session's, shared
    # with
    # other tests running at the same time: only this test's run is looked at)
    (moco_run,) = [
        json.loads(i)["pretrain_run"] for i in recs["init_json"] if json.loads(i).get("pretrain_run")
    ]
    assert (cache / "pretrain" / moco_run / "done").exists() and not list(
        (cache / "pretrain" / moco_run).rglob("*.lck")
    )

    # the same fine-tuning cell in one process: same global batches and augmentations → same model
    ft = next(c for c in wanted if c.protocol == "finetune")
    single = tmp_path / "single"
    torch.set_num_threads(1)
    run_grid(
        grid,
        single,
        RunContext(torch.device("cpu"), single, cache),
        only={"strategy": ["scratch"], "backbone": ["vit_tiny"], "protocol": ["finetune"]},
    )
    a = store.predictions(ft.cell_id).sort_values(["split", "image_id", "label"])
    b = ResultStore(single).predictions(ft.cell_id).sort_values(["split", "image_id", "label"])
    assert list(a["image_id"]) == list(b["image_id"])
    np.testing.assert_allclose(a["y_score"].to_numpy(), b["y_score"].to_numpy(), atol=2e-3)
    hist_ddp = store.records([ft.cell_id])["history_json"].iloc[0]
    hist_one = ResultStore(single).records([ft.cell_id])["history_json"].iloc[0]
    np.testing.assert_allclose(
        [h["train_loss"] for h in json.loads(hist_ddp)],
        [h["train_loss"] for h in json.loads(hist_one)],
        rtol=1e-3,
    )
