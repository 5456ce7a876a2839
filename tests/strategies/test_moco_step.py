"""MoCo-v2's step and the small strategy fixes of issue 11 (item 5): the queue is neither copied nor
re-normalized per step and its state is exact after a step; the queue never holds a key of every
image; shuffle-BN never silently switches off; a top-K pretraining probed with the linear head
is a warning in the record and the report; the top-K scorer's width and temperature come from
its pretraining (or are refused)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from chexbench.bench.cell_model import apply_head
from chexbench.core.errors import RECORD_WARNING_PREFIX, ConfigError
from chexbench.reports.cell_warnings import warnings_section
from chexbench.spec.registry import BACKBONES
from chexbench.strategies.base import InitRecord
from chexbench.strategies.mocov2 import MoCoModel, MoCoV2
from chexbench.strategies.pretrain import split_forward
from chexbench.strategies.topk import wrap_topk

K, D = 4096, 16


def _encoder() -> nn.Module:
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, stride=2), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )
    net.num_features = 8
    return net


def _moco(queue: int = K) -> MoCoModel:
    return MoCoModel(_encoder(), 8, 16, D, queue, 0.9, 0.2, 2, generator=torch.Generator().manual_seed(2))


def _views(b: int = 8):
    g = torch.Generator().manual_seed(3)
    return torch.randn(b, 1, 12, 12, generator=g), torch.randn(b, 1, 12, 12, generator=g)


def test_the_step_neither_copies_nor_renormalizes_the_queue():
    model = _moco()
    v1, v2 = _views()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        model.loss(v1, v2, 0.0, torch.Generator().manual_seed(5)).backward()
    whole_queue = [
        e for e in prof.events() if any(list(s) == [K, D] for s in e.input_shapes if isinstance(s, list))
    ]
    names = {e.name for e in whole_queue}
    assert not names & {
        "aten::clone",
        "aten::copy_",
        "aten::div",
        "aten::linalg_vector_norm",
        "aten::norm",
    }, names
    assert "aten::mm" in names  # the queue is read once forward, once backward


def test_after_a_step_the_state_dict_holds_that_steps_keys():
    model, ref = _moco(queue=12), _moco(queue=12)
    v1, v2 = _views()
    model.loss(v1, v2, 0.0, torch.Generator().manual_seed(5)).backward()
    state = model.state_dict()  # taking a checkpoint enqueues the step's keys
    assert int(state["queue.ptr"]) == 8 and int(state["queue.total_enqueued"]) == 8
    assert not torch.equal(state["queue.keys"][:8], ref.queue.keys[:8])
    assert torch.equal(state["queue.keys"][8:], ref.queue.keys[8:])
    norms = state["queue.keys"].norm(dim=1)
    torch.testing.assert_close(
        norms, torch.ones_like(norms)
    )  # enqueued keys are unit vectors: no re-normalization needed
    model.loss(
        v1, v2, 0.0, torch.Generator().manual_seed(6)
    ).backward()  # the next step finds the queue consistent
    assert int(model.state_dict()["queue.ptr"]) == 16 % 12


@pytest.mark.parametrize("pool,batch,queue", [(48, 16, 1000), (100, 32, 100), (40, 8, 65536)])
def test_the_queue_is_capped_below_pool_minus_batch(pool, batch, queue):
    opts = {
        **MoCoV2.options,
        "queue_size": queue,
        "pretrain_batch_size": batch,
        "proj_hidden_dim": 16,
        "proj_dim": D,
    }
    model, notes = MoCoV2().build_model(_encoder(), opts, pool, torch.Generator().manual_seed(0))
    assert model.queue.size == pool - batch < pool
    assert any(f"capped at {pool - batch}" in n for n in notes)


def test_a_queue_below_the_cap_is_kept_and_not_noted():
    opts = {
        **MoCoV2.options,
        "queue_size": 20,
        "pretrain_batch_size": 16,
        "proj_hidden_dim": 16,
        "proj_dim": D,
    }
    model, notes = MoCoV2().build_model(_encoder(), opts, 48, torch.Generator().manual_seed(0))
    assert model.queue.size == 20 and not any("capped" in n for n in notes)


def test_shuffle_bn_splits_an_indivisible_batch_into_near_equal_groups_and_says_so():
    enc = _encoder().train()
    x = torch.randn(5, 1, 12, 12)
    got = split_forward(enc, x, 2)
    torch.testing.assert_close(got, torch.cat([enc(x[:3]), enc(x[3:])]))
    assert not torch.allclose(got, enc(x))  # not one BN group over the whole batch
    opts = {**MoCoV2.options, "pretrain_batch_size": 10, "bn_splits": 3, "proj_hidden_dim": 16, "proj_dim": D}
    _, notes = MoCoV2().build_model(_encoder(), opts, 100, torch.Generator().manual_seed(0))
    assert "shuffle-BN: batch 10 is not divisible by bn_splits 3; BN groups of [4, 3, 3] images" in notes


def _scorer_file(tmp_path, hidden: int = 0):
    wrapped = wrap_topk(BACKBONES.get("vit_tiny").build(32, {}), {"scorer_hidden": hidden})
    path = tmp_path / "scorer.pt"
    torch.save(wrapped.scorer.state_dict(), path)
    return path


def _topk_init(path, temperature: float = 0.5, hidden: int = 0) -> InitRecord:
    return InitRecord(
        source="pretrain:abc",
        extra={
            "topk_scorer": str(path),
            "topk_pretrain_k": 0.25,
            "scorer_hidden": hidden,
            "topk_temperature": temperature,
        },
    )


def test_a_topk_pretraining_probed_with_the_linear_head_is_a_warning_in_record_and_report(tmp_path):
    backbone = BACKBONES.get("vit_tiny").build(32, {})
    features, notes = apply_head(backbone, {"head": "linear"}, _topk_init(_scorer_file(tmp_path)))
    assert features is backbone
    warnings = [n for n in notes if n.startswith(RECORD_WARNING_PREFIX)]
    assert len(warnings) == 1 and "CLS token" in warnings[0] and "never trained" in warnings[0]
    records = pd.DataFrame(
        [
            {
                "cell_id": "c1",
                "strategy": "mocov2_topk",
                "backbone": "vit_tiny",
                "protocol": "linear",
                "data_json": json.dumps({"protocol_extra": {"head_notes": notes}}),
            },
            {
                "cell_id": "c2",
                "strategy": "mocov2",
                "backbone": "vit_tiny",
                "protocol": "linear",
                "data_json": json.dumps({"protocol_extra": {"head_notes": []}}),
            },
        ]
    )
    section = warnings_section(records)
    assert (
        section.startswith("## Warnings")
        and "`c1`" in section
        and "`c2`" not in section
        and "CLS token" in section
    )
    assert warnings_section(records.iloc[1:]) == ""  # no warning, no section
    _, plain = apply_head(backbone, {"head": "linear"}, InitRecord(source="random"))
    assert plain == []


def test_topk_head_takes_scorer_temperature_and_width_from_pretraining_or_refuses(tmp_path):
    path = _scorer_file(tmp_path, hidden=24)
    opts = {"head": "topk", "topk": 0.25, "scorer_hidden": 0, "topk_temperature": 1.0}  # protocol defaults
    wrapped, notes = apply_head(
        BACKBONES.get("vit_tiny").build(32, {}), opts, _topk_init(path, 0.5, hidden=24)
    )
    assert wrapped.temperature == 0.5 and wrapped.scorer.net[0].out_features == 24
    assert opts["topk_temperature"] == 0.5 and opts["scorer_hidden"] == 24  # what save_cell_model records
    assert any("topk_temperature = 0.5 taken from the top-K pretraining" in n for n in notes)
    asked = {"head": "topk", "topk": 0.25, "scorer_hidden": 24, "topk_temperature": 2.0}
    with pytest.raises(
        ConfigError,
        match="topk_temperature = 2.0 differs from the top-K pretraining's topk_temperature = 0.5",
    ):
        apply_head(BACKBONES.get("vit_tiny").build(32, {}), asked, _topk_init(path, 0.5, hidden=24))


def test_preflight_refuses_topk_scorer_options_that_differ_from_pretraining():
    from chexbench.spec.cell import CellConfig
    from chexbench.spec.registry import PROTOCOLS
    from chexbench.spec.settings import Settings

    def cell(protocol_options):
        return CellConfig(
            "mocov2_topk",
            "vit_tiny",
            "phantom-chexpert",
            "finetune",
            1.0,
            0,
            Settings(image_size=32),
            strategy_options={"topk_temperature": 0.5},
            protocol_options=protocol_options,
        )

    finetune = PROTOCOLS.get("finetune")
    with pytest.raises(
        ConfigError,
        match=r"\[protocol.finetune\] topk_temperature = 2.0 differs from \[strategy.mocov2_topk\]",
    ):
        finetune.preflight(cell({"head": "topk", "topk_temperature": 2.0}))
    finetune.preflight(cell({"head": "topk", "topk_temperature": 0.5}))  # the same value: fine
    finetune.preflight(cell({"head": "topk"}))  # unset: taken from pretraining at run time
    finetune.preflight(cell({"head": "linear", "topk_temperature": 2.0}))  # no scorer used
