"""The shared pretraining cache: keyed reuse, resume after a kill, strict transfer, history file."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest
import torch
from ssl_fixtures import tiny_cell

from chexbench.backbones.base import load_checkpoint
from chexbench.core.context import NullProgress, RunContext
from chexbench.core.errors import WeightsError
from chexbench.spec.registry import BACKBONES, STRATEGIES
from chexbench.strategies.pretrain import HISTORY_COLUMNS, MONITOR_COLUMNS, run_id_of


class KillAfterEpochs(NullProgress):
    """Raises like a Ctrl-C after the n-th end-of-epoch message (the checkpoint is written before it)."""

    def __init__(self, epochs: int):
        self.left = epochs

    def message(self, text: str) -> None:
        if text.startswith("pretrain"):
            self.left -= 1
            if self.left == 0:
                raise KeyboardInterrupt("killed")


def _init(strategy: str, cell, ctx, backbone: str = "resnet_tiny"):
    bb = BACKBONES.get(backbone).build(cell.settings.image_size)
    return bb, STRATEGIES.get(strategy).init_backbone(bb, cell, ctx)


def test_run_id_depends_on_pretraining_fields_only() -> None:
    s = STRATEGIES.get("mocov2")
    cell = tiny_cell("mocov2")
    same = dataclasses.replace(
        cell,
        protocol="finetune",
        label_fraction=0.1,
        seed=3,
        settings=dataclasses.replace(cell.settings, lr=0.5),
    )
    assert run_id_of(s.pretrain_key(cell)) == run_id_of(s.pretrain_key(same))
    for other in (
        dataclasses.replace(cell, settings=dataclasses.replace(cell.settings, pretrain_seed=1)),
        dataclasses.replace(cell, settings=dataclasses.replace(cell.settings, image_size=64)),
        dataclasses.replace(
            cell, settings=dataclasses.replace(cell.settings, pretrain_source="phantom-chexpert")
        ),
        dataclasses.replace(cell, backbone="vit_tiny"),
        dataclasses.replace(cell, strategy_options={**cell.strategy_options, "momentum": 0.99}),
    ):
        assert run_id_of(s.pretrain_key(cell)) != run_id_of(s.pretrain_key(other))
    assert run_id_of(s.pretrain_key(cell)) != run_id_of(
        STRATEGIES.get("simclr").pretrain_key(tiny_cell("simclr"))
    )


@pytest.mark.parametrize("strategy", ["simclr", "mocov2"])
def test_pretrain_once_transfer_exactly_and_reuse(strategy: str, fake_source, ctx: RunContext) -> None:
    cell = (
        tiny_cell(strategy, pretrain_epochs=1, queue_size=1000)
        if strategy == "mocov2"
        else tiny_cell(strategy, pretrain_epochs=1)
    )
    bb = BACKBONES.get("resnet_tiny").build(32)
    torch.manual_seed(123)
    rec = STRATEGIES.get(strategy).init_backbone(bb, cell, ctx)
    after = torch.rand(3)
    torch.manual_seed(123)
    assert torch.equal(after, torch.rand(3))  # pretraining left the global RNG as it found it

    run_dir = ctx.pretrain_dir / rec.pretrain_run
    assert rec.source == f"pretrain:{rec.pretrain_run}" and (run_dir / "done").exists()
    encoder = torch.load(run_dir / "encoder.pt", weights_only=True)
    state = bb.model.state_dict()
    assert set(encoder) == set(state) and rec.loaded_keys == len(state) and rec.reinitialized_keys == []
    for k, v in encoder.items():  # the downstream backbone holds the pretrained (query) encoder's tensors
        assert torch.equal(state[k], v), k
    meta = json.loads((run_dir / "meta.json").read_text())
    assert rec.extra["pretrain_steps"] == meta["steps"] == 48 // 16
    if strategy == "mocov2":
        assert any(
            n.startswith("queue size 1000 capped at 32 (pretraining-set size 48 − batch 16)")
            for n in rec.notes
        )
    # a second cell of another target/protocol/seed reuses the run: no new pool read, same weights
    other = dataclasses.replace(cell, protocol="finetune", label_fraction=0.1, seed=5)
    bb2, rec2 = _init(strategy, other, ctx)
    assert rec2.pretrain_run == rec.pretrain_run and fake_source["pool"] == 1
    assert all(
        torch.equal(a, b)
        for a, b in zip(bb.model.state_dict().values(), bb2.model.state_dict().values(), strict=True)
    )
    # the loss curve is stored in the results dir with its columns, the last row of an epoch carrying the
    # probe
    hist = pd.read_parquet(ctx.results_dir / "pretrain" / f"{rec.pretrain_run}.parquet")
    assert tuple(hist.columns) == HISTORY_COLUMNS + MONITOR_COLUMNS and len(hist) == 3
    assert hist["step"].tolist() == [1, 2, 3] and hist["probe_auroc"].notna().tolist() == [False, False, True]

    # the encoder does not fit another architecture: the error names the keys
    vit = BACKBONES.get("vit_tiny").build(32)
    with pytest.raises(
        WeightsError, match=r"does not fit vit_tiny: missing keys \[.*unexpected keys \[.*conv1"
    ):
        load_checkpoint(vit, encoder, BACKBONES.get("vit_tiny"), source=f"pretrain:{rec.pretrain_run}")
    wider = {k: torch.zeros(v.shape[0] + 1, *v.shape[1:]) if v.dim() else v for k, v in encoder.items()}
    with pytest.raises(WeightsError, match=r"shape mismatches \[conv1.weight"):
        load_checkpoint(
            BACKBONES.get("resnet_tiny").build(32), wider, BACKBONES.get("resnet_tiny"), source="x"
        )


def test_kill_and_rerun_resumes_to_the_same_steps_and_weights(fake_source, tmp_path, one_thread) -> None:
    strategy = "mocov2"  # the richest state: two encoders, queue, momentum
    cell = tiny_cell(strategy, "vit_tiny", pretrain_epochs=3, probe_every=0, max_pretrain_images=32)
    whole = RunContext(torch.device("cpu"), tmp_path / "a" / "results", tmp_path / "a" / "cache")
    _, rec_whole = _init(strategy, cell, whole, "vit_tiny")

    killed = RunContext(
        torch.device("cpu"), tmp_path / "b" / "results", tmp_path / "b" / "cache", progress=KillAfterEpochs(2)
    )
    with pytest.raises(KeyboardInterrupt):
        _init(strategy, cell, killed, "vit_tiny")
    run_dir = killed.pretrain_dir / rec_whole.pretrain_run
    assert (run_dir / "checkpoint.pt").exists() and not (run_dir / "done").exists()
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["epoch"] == 2
    killed.progress = NullProgress()
    _, rec_resumed = _init(strategy, cell, killed, "vit_tiny")
    assert rec_resumed.extra["pretrain_steps"] == rec_whole.extra["pretrain_steps"] == 3 * (32 // 16)
    assert any(n.startswith("resumed from epoch 2") for n in rec_resumed.notes)
    a = torch.load(whole.pretrain_dir / rec_whole.pretrain_run / "encoder.pt", weights_only=True)
    b = torch.load(run_dir / "encoder.pt", weights_only=True)
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6), k
    hist_a = pd.read_parquet(whole.results_dir / "pretrain" / f"{rec_whole.pretrain_run}.parquet")
    hist_b = pd.read_parquet(killed.results_dir / "pretrain" / f"{rec_whole.pretrain_run}.parquet")
    pd.testing.assert_frame_equal(hist_a, hist_b, atol=1e-5)


def test_unknown_option_and_bad_optimizer_are_config_errors() -> None:
    from chexbench.core.errors import ConfigError

    cell = tiny_cell("simclr", pretrain_optimizer="lamb")
    with pytest.raises(
        ConfigError, match="'pretrain_optimizer' must be one of 'sgd', 'adamw', 'lars', got 'lamb'"
    ):
        STRATEGIES.get("simclr").pretrain_key(cell)
    with pytest.raises(ConfigError, match="unknown key 'queue_size'"):
        STRATEGIES.get("simclr").pretrain_key(dataclasses.replace(cell, strategy_options={"queue_size": 3}))


@pytest.mark.parametrize("strategy", ["simclr", "mocov2"])
def test_a_pretraining_that_diverges_is_a_diverged_error_and_leaves_no_finished_run(
    strategy, fake_source, ctx
) -> None:
    # the loop checks the loss on the device without waiting each step: divergence is still caught,
    # before any checkpoint of non-finite weights is written
    from chexbench.core.training import DivergedError

    cell = tiny_cell(strategy, pretrain_epochs=2, pretrain_lr=1e30, pretrain_optimizer="sgd", probe_every=0)
    bb = BACKBONES.get("resnet_tiny").build(32)
    with pytest.raises(
        DivergedError, match=r"loss became (nan|inf|-inf) at pretraining \w+ epoch 0, by step \d+"
    ):
        STRATEGIES.get(strategy).init_backbone(bb, cell, ctx)
    run_dir = ctx.pretrain_dir / run_id_of(STRATEGIES.get(strategy).pretrain_key(cell))
    assert run_dir.is_dir() and not (run_dir / "done").exists() and not (run_dir / "checkpoint.pt").exists()
