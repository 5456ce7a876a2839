"""One tiny grid puts three published-layout checkpoints beside scratch: each loads strictly,
its record lists what was dropped, the transferred tensors equal the checkpoint's, and the
leaderboard shows each checkpoint under its own name."""

from __future__ import annotations

import json

import pandas as pd
import torch
from checkpoint_fixtures import expected_transfer, lightning_checkpoint, moco_checkpoint, rgb_resnet_tiny
from safetensors.torch import save_file
from typer.testing import CliRunner

from chexbench.bench.store import ResultStore
from chexbench.cli import app


def test_three_checkpoints_on_one_leaderboard(tmp_path, cache):
    expected = {
        "moco-cxr": expected_transfer(moco_checkpoint(tmp_path / "moco.pth.tar", seed=1)),
        "lab-lightning": expected_transfer(lightning_checkpoint(tmp_path / "lab.ckpt", "backbone", seed=2)),
    }
    rgb = rgb_resnet_tiny(seed=3)
    save_file(rgb.state_dict(), tmp_path / "timm.safetensors")
    expected["timm-st"] = expected_transfer(rgb.state_dict())
    grid = tmp_path / "ckpt.toml"
    grid.write_text(f"""
[axes]
strategy = ["scratch", "checkpoint"]
backbone = ["resnet_tiny"]
dataset = ["phantom-chexpert"]
protocol = ["linear"]
[settings]
image_size = 32
max_train_images = 96
max_eval_images = 64
[dataset.phantom-chexpert]
patients = 120
size = 64
[protocol.linear]
save_model = true
localize = false
[[strategy.checkpoint]]
name = "moco-cxr"
path = "{tmp_path / "moco.pth.tar"}"
format = "moco"
[[strategy.checkpoint]]
name = "lab-lightning"
path = "{tmp_path / "lab.ckpt"}"
format = "lightning"
[[strategy.checkpoint]]
name = "timm-st"
path = "{tmp_path / "timm.safetensors"}"
""")
    results = tmp_path / "results"
    runner = CliRunner()
    out = runner.invoke(app, ["run", "--grid", str(grid), "--results", str(results), "--device", "cpu"])
    assert out.exit_code == 0, out.output
    recs = ResultStore(results).records().set_index("strategy")
    assert set(recs.index) == {"scratch", *expected} and set(recs["status"]) == {"ok"}, recs[
        ["status", "failure_reason"]
    ]
    for name, tensors in expected.items():
        init = json.loads(recs.loc[name, "init_json"])
        assert init["reinitialized_keys"] == [] and init["loaded_keys"] == len(tensors)
        assert init["dropped_keys"] == init["extra"]["dropped_keys"]
        assert init["extra"]["dropped_keys"] and init["extra"]["checkpoint_name"] == name
        payload = torch.load(results / "models" / f"{recs.loc[name, 'cell_id']}.pt", weights_only=True)
        backbone = {
            k[len("backbone.model.") :]: v
            for k, v in payload["state_dict"].items()
            if k.startswith("backbone.model.")
        }
        assert set(backbone) == set(tensors)
        assert (
            payload["normalize"] == init["extra"]["normalize"] == [0.449, 0.226]
        )  # ImageNet statistics, gray
        for k, v in tensors.items():  # frozen under the linear probe: what was loaded is what was saved
            assert torch.equal(backbone[k], v), (name, k)
    moco = json.loads(recs.loc["moco-cxr", "init_json"])["extra"]["dropped_keys"]
    assert "module.queue" in moco and any(k.startswith("module.encoder_k.") for k in moco)

    report = runner.invoke(app, ["report", "--results", str(results)])
    assert report.exit_code == 0, report.output
    board = pd.read_parquet(results / "leaderboard.parquet")
    assert {"moco-cxr", "lab-lightning", "timm-st", "scratch"} <= set(board["strategy"])
