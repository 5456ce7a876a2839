"""DINO, BYOL and MAE: their mechanisms (centring, teacher update, masking), pretraining through
the shared run (resumable), and the collapse monitors every method records."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from ssl_fixtures import tiny_cell
from test_pretrain import KillAfterEpochs

from chexbench.core.context import NullProgress, RunContext
from chexbench.spec.registry import BACKBONES, STRATEGIES
from chexbench.strategies.dino import DINOModel
from chexbench.strategies.mae import MAEModel, random_masking
from chexbench.strategies.monitors import effective_rank, is_collapsed, monitor_row, normalized_std
from chexbench.strategies.pretrain import view_augment
from chexbench.strategies.vit_tokens import vit_features

SMALL = {
    "dino": {"out_dim": 32, "local_crops": 2},
    "mae": {"decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2},
    "byol": {"pred_hidden_dim": 32},
}


def _opts(strategy: str, backbone: str = "vit_tiny", **over):
    cell = tiny_cell(strategy, backbone, **SMALL[strategy], **over)
    return STRATEGIES.get(strategy).resolved_options(cell)


@pytest.mark.parametrize("backbone", ["vit_tiny", "vit_convstem_tiny"])
def test_the_token_path_equals_the_backbone_and_takes_smaller_crops(backbone) -> None:
    torch.manual_seed(0)
    enc = BACKBONES.get(backbone).build(32).eval()
    x = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(vit_features(enc.model, x), enc(x), rtol=1e-5, atol=1e-5)
    assert vit_features(enc.model, torch.randn(2, 1, 16, 16)).shape == (2, enc.num_features)


def test_mae_masks_three_quarters_and_masked_patches_never_enter_the_encoder() -> None:
    keep, mask = random_masking(5, 64, 0.75, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert keep.shape == (5, 16) and (mask.sum(1) == 48).all()
    assert all(len(set(row.tolist())) == 16 for row in keep)  # distinct per image, and images differ
    assert not torch.equal(keep[0], keep[1])
    torch.manual_seed(0)
    enc = BACKBONES.get("vit_tiny").build(32).eval()  # patch 8: a 4×4 grid
    model = MAEModel(enc, _opts("mae"))
    x = torch.randn(3, 1, 32, 32)
    keep, mask = random_masking(3, 16, 0.75, torch.Generator().manual_seed(1), torch.device("cpu"))
    out = model.encode_visible(x, keep)
    assert out.shape == (3, 1 + 4, enc.num_features)  # the class token and the 4 visible patches
    # replace every masked patch's pixels: the encoder's output does not move
    changed = x.clone()
    patches = changed.view(3, 1, 4, 8, 4, 8)
    for b in range(3):
        for n in mask[b].nonzero().flatten().tolist():
            patches[b, 0, n // 4, :, n % 4, :] = torch.randn(8, 8) * 100
    torch.testing.assert_close(model.encode_visible(changed, keep), out)
    # … while changing one visible patch does
    visible = keep[0, 0].item()
    patches[0, 0, visible // 4, :, visible % 4, :] += 1.0
    assert not torch.allclose(model.encode_visible(changed, keep)[0], out[0])


def test_mae_refuses_cnns_and_conv_stems_with_a_reason() -> None:
    mae = STRATEGIES.get("mae")
    assert mae.invalid_reason(tiny_cell("mae", "vit_tiny")) is None
    assert "convolutional stem" in mae.invalid_reason(tiny_cell("mae", "vit_convstem_tiny"))
    assert "not one" in mae.invalid_reason(tiny_cell("mae", "resnet_tiny"))


def test_dino_teacher_is_an_ema_of_the_student_and_the_centre_follows_the_teacher_mean() -> None:
    torch.manual_seed(0)
    model = DINOModel(BACKBONES.get("resnet_tiny").build(32), _opts("dino", "resnet_tiny", momentum=0.9))
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    x = torch.rand(4, 1, 32, 32)
    g, loc = model.make_views(x, view_augment(_opts("dino")), torch.Generator(), (0.5, 0.25))
    assert [v.shape[-1] for v in g] == [32, 32] and [v.shape[-1] for v in loc] == [model.local_size] * 2 == [
        16,
        16,
    ]
    model.loss(g, loc, 0.0).backward()  # first step: teacher = student (EMA of equal weights)
    opt.step()
    teacher_before = [p.clone() for p in model.teacher_head.parameters()]
    student = [p.clone() for p in model.head.parameters()]
    center_before = model.center.clone()
    with torch.no_grad():
        t_logits = model.teacher_head(model.teacher_encoder(torch.cat(g)))  # what the step's teacher will see
    model.loss(g, loc, 0.0)
    for t0, s, t1 in zip(teacher_before, student, model.teacher_head.parameters(), strict=True):
        torch.testing.assert_close(t1, 0.9 * t0 + 0.1 * s)
    # the centre moved towards the teacher's batch mean (computed after this step's EMA)
    with torch.no_grad():
        t_after = model.teacher_head(model.teacher_encoder(torch.cat(g)))
    torch.testing.assert_close(
        model.center, 0.9 * center_before + 0.1 * t_after.mean(0, keepdim=True), rtol=1e-4, atol=1e-5
    )
    assert not torch.allclose(t_logits.mean(0), t_after.mean(0))  # (the EMA did change the teacher)


def test_dino_teacher_temperature_warms_up_linearly_per_epoch() -> None:
    model = DINOModel(
        BACKBONES.get("resnet_tiny").build(32),
        _opts(
            "dino",
            "resnet_tiny",
            pretrain_epochs=10,
            warmup_teacher_temp=0.04,
            teacher_temp=0.07,
            warmup_teacher_temp_epochs=3,
        ),
    )
    temps = [model.teacher_temp(e / 10 + 0.01) for e in range(5)]
    assert temps == pytest.approx([0.04, 0.05, 0.06, 0.07, 0.07])


def test_monitors_closed_forms() -> None:
    d = 16
    iso = torch.eye(d).repeat(4, 1)  # the d axes, each 4 times: std per dim = sqrt((1/d)(1 − 1/d))
    assert normalized_std(iso) == pytest.approx((1 / d * (1 - 1 / d)) ** 0.5)
    assert effective_rank(iso) == pytest.approx(d - 1, rel=0.02)  # centring removes one direction
    const = torch.ones(32, d)
    assert normalized_std(const) == 0.0 and effective_rank(const) == 1.0
    assert is_collapsed(monitor_row(const, const)) and not is_collapsed(
        monitor_row(torch.randn(64, d), torch.randn(64, d))
    )
    assert is_collapsed(monitor_row(torch.full((4, d), float("nan")), const))


def _run(strategy, backbone, ctx, **over):
    cell = tiny_cell(strategy, backbone, **{**SMALL.get(strategy, {}), **over})
    rec = STRATEGIES.get(strategy).init_backbone(BACKBONES.get(backbone).build(32), cell, ctx)
    hist = pd.read_parquet(ctx.results_dir / "pretrain" / f"{rec.pretrain_run}.parquet")
    return rec, hist


@pytest.mark.parametrize(
    ("strategy", "backbone"),
    [("dino", "vit_tiny"), ("mae", "vit_tiny"), ("byol", "resnet_tiny"), ("mocov2", "resnet_tiny")],
)
def test_every_method_pretrains_and_records_its_monitors_per_epoch(
    strategy, backbone, fake_source, ctx
) -> None:
    rec, hist = _run(strategy, backbone, ctx, probe_every=0)
    per_epoch = hist.dropna(subset=["embed_std_ratio"])
    assert per_epoch["epoch"].tolist() == [0, 1]
    assert (per_epoch["embed_rank"] > 1.5).all() and (per_epoch["feature_rank"] > 1.5).all()
    assert (
        per_epoch["collapsed"].tolist() == [False, False] and rec.extra["pretrain_collapsed_at_epoch"] is None
    )
    assert per_epoch["teacher_entropy"].notna().all() == (strategy == "dino")


def test_a_constant_encoder_is_marked_collapsed_in_the_record(fake_source, ctx, monkeypatch) -> None:
    from chexbench.strategies.simclr import SimCLRModel

    def constant(self, x):  # the objective sees one point for every image
        return {"embedding": torch.ones(x.shape[0], self.projector[-1].out_features)}

    monkeypatch.setattr(SimCLRModel, "monitor_outputs", constant, raising=False)
    rec, hist = _run("simclr", "resnet_tiny", ctx, probe_every=0)
    assert rec.extra["pretrain_collapsed_at_epoch"] == 1
    assert any(n.startswith("collapsed at epoch 1: embedding std x sqrt(d) 0.0000 < 0.01") for n in rec.notes)
    assert hist.dropna(subset=["embed_std_ratio"])["collapsed"].tolist() == [True, True]
    meta = json.loads((ctx.pretrain_dir / rec.pretrain_run / "meta.json").read_text())
    assert meta["collapsed_at_epoch"] == 1 and "0.01" in meta["collapse_rule"]


@pytest.mark.parametrize(("strategy", "backbone"), [("dino", "resnet_tiny"), ("mae", "vit_tiny")])
def test_kill_and_rerun_gives_the_same_encoder(strategy, backbone, fake_source, tmp_path, one_thread) -> None:
    cell = tiny_cell(
        strategy, backbone, **SMALL[strategy], pretrain_epochs=3, probe_every=0, max_pretrain_images=32
    )
    whole = RunContext(torch.device("cpu"), tmp_path / "a" / "results", tmp_path / "a" / "cache")
    rec_whole = STRATEGIES.get(strategy).init_backbone(BACKBONES.get(backbone).build(32), cell, whole)
    killed = RunContext(
        torch.device("cpu"), tmp_path / "b" / "results", tmp_path / "b" / "cache", progress=KillAfterEpochs(2)
    )
    with pytest.raises(KeyboardInterrupt):
        STRATEGIES.get(strategy).init_backbone(BACKBONES.get(backbone).build(32), cell, killed)
    killed.progress = NullProgress()
    rec = STRATEGIES.get(strategy).init_backbone(BACKBONES.get(backbone).build(32), cell, killed)
    assert any(n.startswith("resumed from epoch 2") for n in rec.notes)
    a = torch.load(whole.pretrain_dir / rec_whole.pretrain_run / "encoder.pt", weights_only=True)
    b = torch.load(killed.pretrain_dir / rec.pretrain_run / "encoder.pt", weights_only=True)
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6), k
    ha = pd.read_parquet(whole.results_dir / "pretrain" / f"{rec_whole.pretrain_run}.parquet")
    hb = pd.read_parquet(killed.results_dir / "pretrain" / f"{rec.pretrain_run}.parquet")
    pd.testing.assert_frame_equal(ha, hb, atol=1e-5)


@pytest.mark.parametrize(("strategy", "backbone"), [("dino", "resnet_tiny"), ("byol", "vit_tiny")])
def test_a_learning_rate_far_too_high_is_marked_collapsed(strategy, backbone, fake_source, ctx) -> None:
    from chexbench.core.training import DivergedError

    cell = tiny_cell(
        strategy,
        backbone,
        **SMALL[strategy],
        pretrain_lr=1e30,
        pretrain_optimizer="sgd",
        probe_every=0,
        grad_clip=0.0,
    )
    try:
        rec = STRATEGIES.get(strategy).init_backbone(BACKBONES.get(backbone).build(32), cell, ctx)
    except DivergedError as e:  # the loss left the numbers: the error carries the monitors' verdict
        assert "collapsed at epoch 1" in str(e), str(e)
    else:  # finite but degenerate
        assert rec.extra["pretrain_collapsed_at_epoch"] == 1


def test_a_uniform_dino_teacher_is_collapse_even_when_its_outputs_still_differ_a_little() -> None:
    import math

    row = {
        "embed_std_ratio": 0.03,
        "teacher_entropy": 6.93,
    }  # measured: τ_t 0.02, centre momentum 0.5, K = 1024
    assert is_collapsed(row, math.log(1024)) and not is_collapsed(row)  # the entropy rule is DINO's only
    assert not is_collapsed({"embed_std_ratio": 0.4, "teacher_entropy": 2.0}, math.log(1024))


def test_a_bad_option_of_a_cell_is_one_line_naming_the_cell_and_its_table() -> None:
    from chexbench.core.errors import ConfigError

    cell = tiny_cell("dino", "vit_tiny", **{**SMALL["dino"], "out_dim": -1})
    with pytest.raises(ConfigError) as err:
        STRATEGIES.get("dino").resolved_options(cell)
    message = str(err.value)
    assert message.startswith(f"cell {cell.cell_id}: ") and "[strategy.dino]" in message, message
    assert "out_dim" in message and "\n" not in message
