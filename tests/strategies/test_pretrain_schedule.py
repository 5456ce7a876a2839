"""A pretraining run records the schedule it ran, and refuses one that does not fit (never clamps)."""

from __future__ import annotations

import json

import pytest
from ssl_fixtures import tiny_cell

from chexbench.core.errors import ConfigError
from chexbench.spec.registry import BACKBONES, STRATEGIES


def test_the_pretraining_record_states_the_effective_schedule(fake_source, ctx):
    cell = tiny_cell("simclr", pretrain_epochs=2, pretrain_warmup_epochs=1.0, probe_every=0)
    rec = STRATEGIES.get("simclr").init_backbone(BACKBONES.get("resnet_tiny").build(32), cell, ctx)
    # 48 images at batch 16: 3 steps per epoch, 6 in all, the first 3 warm up
    want = {
        "warmup_steps": 3,
        "warmup_epochs": 1.0,
        "total_steps": 6,
        "steps_per_epoch": 3,
        "decay": "cosine to 0",
        "decay_steps": 3,
    }
    assert rec.extra["pretrain_schedule"] == want
    assert json.loads((ctx.pretrain_dir / rec.pretrain_run / "meta.json").read_text())["schedule"] == want


def test_a_pretraining_warmup_longer_than_the_run_is_refused_when_it_runs(fake_source, ctx):
    # SimCLR's ResNet recipe warms up 10 epochs; the old loop clamped it to the 2-epoch run
    cell = tiny_cell("simclr", pretrain_epochs=2, pretrain_warmup_epochs=10.0, probe_every=0)
    with pytest.raises(ConfigError, match=r"pretrain_warmup_epochs = 10 does not fit pretrain_epochs = 2"):
        STRATEGIES.get("simclr").init_backbone(BACKBONES.get("resnet_tiny").build(32), cell, ctx)
    assert not list(ctx.pretrain_dir.glob("*/done"))
