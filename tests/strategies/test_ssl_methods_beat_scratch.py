"""The scientific check of the new methods, at the CPU budget of the smoke grid's tables: DINO and MAE
pretrained on unlabeled phantoms beat a random-init encoder in a linear probe at 10 % labels, and
record their collapse monitors; DINO without centring is marked collapsed.

Setup of ``test_ssl_beats_scratch`` (vit_tiny, 64 px, phantom-chexpert with 1500 patients, linear
probe at label fraction 0.1, seed 0 — the seed the smoke tables were chosen on; the held-out seeds
are in docs/SELF_SUPERVISED.md); the options are the smoke grid's ``[strategy.dino]`` /
``[strategy.mae]`` tables, read from the grid, so the check follows them.
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from test_ssl_beats_scratch import STRATEGY_OPTIONS, probe_auroc

from chexbench.config import CellConfig, Settings, load_grid
from chexbench.core.context import RunContext
from chexbench.registry import BACKBONES, STRATEGIES


def smoke_options(strategy: str) -> dict:
    grid = load_grid("smoke")
    return {**grid.sections["strategy"][strategy], **grid.recipes.get(strategy, {}).get("vit", {}), "probe_every": 0}


@pytest.mark.slow
def test_dino_and_mae_at_the_smoke_budget_beat_scratch_and_no_centring_is_marked_collapsed(tmp_path, one_thread, monkeypatch) -> None:
    ctx = RunContext(torch.device("cpu"), tmp_path / "results", tmp_path / "cache")
    for name in ("dino", "mae"):
        monkeypatch.setitem(STRATEGY_OPTIONS, name, smoke_options(name))
    scores = {s: probe_auroc(s, 0, ctx) for s in ("scratch", "dino", "mae")}
    assert scores["dino"] > scores["scratch"], scores
    assert scores["mae"] > scores["scratch"], scores
    logs = pd.concat([pd.read_parquet(f) for f in (ctx.results_dir / "pretrain").glob("*.parquet")])
    for name in ("dino", "mae"):
        monitored = logs[(logs["strategy"] == name) & logs["embed_std_ratio"].notna()]
        assert len(monitored) == smoke_options(name)["pretrain_epochs"], name  # one row of monitors per epoch
    assert logs.loc[logs["strategy"] == "dino", "teacher_entropy"].notna().any()

    monkeypatch.setitem(STRATEGY_OPTIONS, "dino", {**smoke_options("dino"), "centering": False, "pretrain_epochs": 2})
    cell = CellConfig("dino", "vit_tiny", "phantom-chexpert", "linear", 0.1, 0,
                      settings=Settings(image_size=64, pretrain_source="phantom-chexpert", pretrain_seed=0),
                      strategy_options=STRATEGY_OPTIONS["dino"], dataset_options={"patients": 1500})
    rec = STRATEGIES.get("dino").init_backbone(BACKBONES.get("vit_tiny").build(64), cell, ctx)
    assert rec.extra["pretrain_collapsed_at_epoch"] is not None
