"""simclr_topk / mocov2_topk: ViT only, the pooled top-K embedding is the view embedding, the
scorer goes with the encoder into the cache and transfers strictly into a head = topk protocol."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from ssl_fixtures import tiny_cell as _tiny_cell

from chexbench.bench.cell_model import apply_head, head_invalid_reason
from chexbench.core.errors import RECORD_WARNING_PREFIX, WeightsError
from chexbench.spec.cell import CellConfig
from chexbench.spec.registry import BACKBONES, PROTOCOLS, STRATEGIES
from chexbench.strategies.topk import TopKBackbone, load_scorer, wrap_topk


def tiny_cell(name: str, backbone: str, **options) -> CellConfig:
    """conftest's tiny cell; SimCLR variants take no queue option."""
    if name.startswith("simclr"):
        return dataclasses.replace(_tiny_cell("simclr", backbone, **options), strategy=name)
    return _tiny_cell(name, backbone, **options)


@pytest.mark.parametrize("name", ["simclr_topk", "mocov2_topk"])
def test_valid_only_for_vits(name):
    strategy = STRATEGIES.get(name)
    assert "ViT" in strategy.invalid_reason(tiny_cell(name, "resnet_tiny"))
    assert strategy.invalid_reason(tiny_cell(name, "vit_tiny")) is None


@pytest.mark.parametrize("name", ["simclr_topk", "mocov2_topk"])
def test_view_embedding_is_the_topk_pooling(name):
    strategy = STRATEGIES.get(name)
    encoder = BACKBONES.get("vit_tiny").build(32)
    opts = strategy.resolved_options(tiny_cell(name, "vit_tiny", topk=3))
    model, notes = strategy.build_model(encoder, opts, 64, torch.Generator().manual_seed(0))
    assert isinstance(model.encoder, TopKBackbone) and model.encoder.k == 3
    assert any("top-3" in n for n in notes)
    v = torch.randn(8, 1, 32, 32)
    loss = model.loss(v, v + 0.01 * torch.randn_like(v), 0.0, torch.Generator().manual_seed(1))
    loss.backward()
    assert model.encoder.scorer.net[0].weight.grad.abs().sum() > 0  # the contrastive loss trains the scorer
    if name == "mocov2_topk":
        assert isinstance(model.key_encoder, TopKBackbone)
        assert model.key_encoder.model is not model.encoder.model


@pytest.mark.slow
def test_pretrained_scorer_transfers_to_topk_head_and_not_to_linear(fake_source, ctx):
    from chexbench.datasets import celldata

    cell = tiny_cell("simclr_topk", "vit_tiny", topk=4, pretrain_epochs=1, probe_every=0)
    strategy = STRATEGIES.get("simclr_topk")
    backbone = BACKBONES.get("vit_tiny").build(32)
    init = strategy.init_backbone(backbone, cell, ctx)
    run_dir = ctx.pretrain_dir / init.pretrain_run
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]
    scorer_keys = {k for k in ckpt if k.startswith("encoder.scorer.")}
    assert scorer_keys and init.extra["topk_scorer"] == str(run_dir / "scorer.pt")
    json.dumps(init.to_dict())  # the record stays JSON

    wrapped, notes = apply_head(backbone, {"head": "topk", "topk": 2}, init)
    assert isinstance(wrapped, TopKBackbone) and wrapped.k == 2 and any("loaded" in n for n in notes)
    for k in scorer_keys:
        assert torch.equal(wrapped.scorer.state_dict()[k.removeprefix("encoder.scorer.")], ckpt[k])
    same, notes = apply_head(backbone, {"head": "linear"}, init)
    assert same is backbone and len(notes) == 1
    assert notes[0].startswith(
        RECORD_WARNING_PREFIX + "pretrained patch scorer not used (head = linear)"
    )  # a warning

    other = wrap_topk(BACKBONES.get("vit_tiny").build(32), {"scorer_hidden": 7})
    with pytest.raises(WeightsError, match="scorer_hidden"):
        load_scorer(other, init.extra["topk_scorer"])

    # a linear probe over the frozen pretrained scorer's top-K pooling runs and saves its model
    cell = dataclasses.replace(cell, protocol_options={"head": "topk", "topk": 4, "save_model": "true"})
    result = PROTOCOLS.get("linear").run(
        BACKBONES.get("vit_tiny").build(32), celldata.build_cell_data(cell), cell, ctx, init
    )
    assert result.test_scores.shape[1] == 3 and result.extra["head"] == "topk"
    assert (ctx.results_dir / "models" / f"{cell.cell_id}.pt").is_file()


def test_head_option_validity():
    vit = CellConfig(
        "scratch", "vit_tiny", "phantom-chexpert", "finetune", 1.0, 0, protocol_options={"head": "topk"}
    )
    cnn = CellConfig(
        "scratch", "resnet_tiny", "phantom-chexpert", "finetune", 1.0, 0, protocol_options={"head": "topk"}
    )
    lin = CellConfig(
        "scratch", "vit_tiny", "phantom-chexpert", "linear", 1.0, 0, protocol_options={"head": "topk"}
    )
    bad = CellConfig(
        "scratch", "vit_tiny", "phantom-chexpert", "finetune", 1.0, 0, protocol_options={"head": "attention"}
    )
    assert head_invalid_reason(vit, "finetune") is None
    assert "ViT" in head_invalid_reason(cnn, "finetune")
    assert "pretrained patch scorer" in head_invalid_reason(lin, "linear")
    assert "head must be one of" in head_invalid_reason(bad, "finetune")
    assert PROTOCOLS.get("finetune").invalid_reason(cnn) is not None


def test_k_is_a_grid_axis_and_invalid_heads_are_skipped():
    from chexbench.spec.parse import parse_grid

    grid = parse_grid(
        {
            "axes": {
                "strategy": ["scratch", "simclr_topk"],
                "backbone": ["vit_tiny", "resnet_tiny"],
                "dataset": ["phantom-chexpert"],
                "protocol": ["finetune", "linear"],
                "protocol.topk": [4, 16],
            },
            "protocol": {"finetune": {"head": "topk"}, "linear": {"head": "topk"}},
        },
        "k.toml",
    )
    cells = grid.cells()
    run = [
        (p.cell.strategy, p.cell.backbone, p.cell.protocol, p.cell.protocol_options["topk"])
        for p in cells
        if p.status == "run"
    ]
    assert sorted(run) == sorted(
        [
            ("scratch", "vit_tiny", "finetune", 4),
            ("scratch", "vit_tiny", "finetune", 16),
            ("simclr_topk", "vit_tiny", "finetune", 4),
            ("simclr_topk", "vit_tiny", "finetune", 16),
            ("simclr_topk", "vit_tiny", "linear", 4),
            ("simclr_topk", "vit_tiny", "linear", 16),
        ]
    )
    assert len({p.cell.cell_id for p in cells}) == len(cells) == 16
    reasons = " ".join(p.reason for p in cells if p.status == "skipped")
    assert "needs a ViT" in reasons and "pretrained patch scorer" in reasons


def test_the_documented_topk_pretraining_grid_decays_and_pretrains_once_per_seed_at_every_label_fraction():
    # docs/TOPK.md's pretraining hypothesis: the old grid ran a 4-epoch pretraining inside a 40-epoch warmup
    # and pretrained once for every seed; this one must leave warmup early and give each seed its own run
    from pathlib import Path

    from chexbench.bench.shard import pretrain_group
    from chexbench.spec.parse import load_grid

    grid = load_grid(str(Path(__file__).parents[2] / "docs" / "topk_pretraining_decay.toml"))
    run = [p for p in grid.cells() if p.status == "run"]
    runs: dict[tuple[str, float], set[str]] = {}
    for p in run:
        cell = p.cell
        if cell.strategy == "scratch":
            assert pretrain_group(p) == ""
            continue
        opts = STRATEGIES.get(cell.strategy).resolved_options(cell)
        assert float(opts["pretrain_warmup_epochs"]) <= 0.1 * float(opts["pretrain_epochs"]), cell.strategy
        runs.setdefault((cell.strategy, cell.label_fraction), set()).add(pretrain_group(p))
    assert {f for _, f in runs} == {0.01, 0.1, 1.0}
    assert {s for s, _ in runs} == {"simclr", "simclr_topk", "mocov2", "mocov2_topk"}
    assert all(len(groups) == 3 for groups in runs.values())  # one pretraining run per seed
    # the same three runs serve every label fraction and read-out of a strategy
    for strategy in ("simclr", "simclr_topk", "mocov2", "mocov2_topk"):
        assert runs[(strategy, 0.01)] == runs[(strategy, 0.1)] == runs[(strategy, 1.0)]
