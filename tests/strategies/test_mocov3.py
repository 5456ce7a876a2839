"""``mocov3``: MoCo v3's loss against a float64 reference written from the paper's equations, its
symmetric use with a predictor and no queue, its momentum schedule, recipes per backbone family, and
a couple of pretraining steps on a tiny ViT and ResNet."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from ssl_fixtures import tiny_cell
from torch import nn

from chexbench.spec.registry import BACKBONES, STRATEGIES
from chexbench.strategies.mocov3 import MoCoV3Model, mocov3_contrastive


def ctr_reference(q: np.ndarray, k: np.ndarray, tau: float) -> float:
    """Chen, Xie & He 2021, Alg. 1: ctr(q, k) = 2τ · CrossEntropy(q·kᵀ/τ, labels = arange(N)), with
    q, k L2-normalized; written as the sum −log(exp(q_i·k_i/τ) / Σ_j exp(q_i·k_j/τ)) / N in float64."""
    q = q.astype(np.float64) / np.linalg.norm(q, axis=1, keepdims=True)
    k = k.astype(np.float64) / np.linalg.norm(k, axis=1, keepdims=True)
    total = 0.0
    for i in range(len(q)):
        num = math.exp(float(q[i] @ k[i]) / tau)
        den = sum(math.exp(float(q[i] @ k[j]) / tau) for j in range(len(k)))
        total += -math.log(num / den)
    return 2 * tau * total / len(q)


@pytest.mark.parametrize("tau", [0.2, 1.0])
def test_the_contrastive_loss_equals_the_papers_equation_in_float64(tau):
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(12, 8, generator=g), torch.randn(12, 8, generator=g)
    assert mocov3_contrastive(q, k, tau).item() == pytest.approx(
        ctr_reference(q.numpy(), k.numpy(), tau), rel=1e-6
    )


def test_closed_form_with_orthonormal_pairs():
    # q_i = k_i, all pairs orthogonal: each row is −log(e^{1/τ} / (e^{1/τ} + B − 1)), scaled by 2τ
    tau, b = 0.2, 6
    eye = torch.eye(b)
    want = 2 * tau * -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + b - 1))
    assert mocov3_contrastive(eye, eye, tau).item() == pytest.approx(want, rel=1e-6)


def test_a_ranks_queries_find_their_positives_at_its_offset_among_all_keys():
    g = torch.Generator().manual_seed(1)
    q, k_all = torch.randn(4, 8, generator=g), torch.randn(12, 8, generator=g)
    got = mocov3_contrastive(q, k_all, 0.2, offset=4).item()
    ref = ctr_reference(
        q.numpy(), np.roll(k_all.numpy(), -4, axis=0), 0.2
    )  # positives moved onto the diagonal
    assert got == pytest.approx(ref, rel=1e-6)


class TinyEncoder(nn.Module):
    num_features = 6

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 4, 3, stride=2),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4, 6),
        )

    def forward(self, x):
        return self.net(x)


def _model(**kw) -> MoCoV3Model:
    torch.manual_seed(0)
    args = {
        "proj_layers": 3,
        "hidden_dim": 16,
        "pred_hidden_dim": 12,
        "dim": 8,
        "momentum": 0.99,
        "temperature": 0.2,
        **kw,
    }
    return MoCoV3Model(TinyEncoder(), 6, **args).double()


def test_the_loss_is_symmetric_with_a_predictor_on_the_query_side_only_and_no_queue():
    model = _model()
    x1, x2 = torch.randn(10, 1, 16, 16, dtype=torch.float64), torch.randn(10, 1, 16, 16, dtype=torch.float64)
    loss = model.loss(x1, x2, progress=0.0)
    # at the first step the key side is still a copy of the query side (the EMA of equal weights)
    with torch.no_grad():
        z1, z2 = model.projector(model.encoder(x1)), model.projector(model.encoder(x2))
        q1, q2 = model.predictor(z1), model.predictor(z2)
    want = ctr_reference(q1.numpy(), z2.numpy(), 0.2) + ctr_reference(q2.numpy(), z1.numpy(), 0.2)
    assert loss.item() == pytest.approx(want, rel=1e-5)
    loss.backward()
    assert model.predictor[0].weight.grad is not None and model.encoder.net[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.key_encoder.parameters())  # keys carry no gradient
    assert not any("queue" in k for k in model.state_dict())
    # MoCo v3's MLPs: no bias, BN per hidden layer, a last BN without affine in the projector only
    assert [type(m).__name__ for m in model.projector] == ["Linear", "BatchNorm1d", "ReLU"] * 2 + [
        "Linear",
        "BatchNorm1d",
    ]
    assert not model.projector[-1].affine and type(model.predictor[-1]) is nn.Linear


def test_the_momentum_rises_from_its_start_to_one_on_a_half_cosine():
    model = _model(momentum=0.99)
    assert model.momentum_at(0.0) == pytest.approx(0.99)
    assert model.momentum_at(0.5) == pytest.approx(0.995)
    assert model.momentum_at(1.0) == pytest.approx(1.0)


def test_the_recipe_follows_the_backbone_family():
    s = STRATEGIES.get("mocov3")
    vit = s.resolved_options(_bare("vit_tiny"))
    cnn = s.resolved_options(_bare("resnet_tiny"))
    # ViT: AdamW 1.5e-4 × B/256, wd 0.1, 40 warmup epochs, τ 0.2, 3-layer projector
    assert (
        vit["pretrain_optimizer"],
        vit["pretrain_lr"],
        vit["pretrain_weight_decay"],
        vit["pretrain_warmup_epochs"],
        vit["temperature"],
        vit["proj_layers"],
        vit["momentum"],
    ) == ("adamw", 1.5e-4, 0.1, 40.0, 0.2, 3, 0.99)
    # ResNet: LARS 0.3 × B/256, wd 1e-6, 10 warmup epochs, τ 1.0, 2-layer projector
    assert (
        cnn["pretrain_optimizer"],
        cnn["pretrain_lr"],
        cnn["pretrain_weight_decay"],
        cnn["pretrain_warmup_epochs"],
        cnn["temperature"],
        cnn["proj_layers"],
        cnn["momentum"],
    ) == ("lars", 0.3, 1e-6, 10.0, 1.0, 2, 0.99)
    assert "queue_size" not in vit


def _bare(backbone: str):
    from chexbench.spec.cell import CellConfig

    return CellConfig("mocov3", backbone, "phantom-chexpert", "linear", 1.0, 0)


@pytest.mark.parametrize("backbone", ["vit_tiny", "resnet_tiny"])
def test_a_couple_of_pretraining_steps_on_a_tiny_backbone_transfer_strictly(backbone, fake_source, ctx):
    cell = tiny_cell(
        "mocov3", backbone, pretrain_epochs=1, probe_every=0, proj_hidden_dim=32, pred_hidden_dim=32
    )
    cell = dataclasses.replace(
        cell, strategy_options={k: v for k, v in cell.strategy_options.items() if k != "queue_size"}
    )  # no queue
    bb = BACKBONES.get(backbone).build(32)
    rec = STRATEGIES.get("mocov3").init_backbone(bb, cell, ctx)
    meta = json.loads((ctx.pretrain_dir / rec.pretrain_run / "meta.json").read_text())
    assert meta["steps"] == 3 and math.isfinite(meta["final_loss"]) and rec.reinitialized_keys == []
    assert meta["optimizer"]["name"] == ("lars" if backbone == "resnet_tiny" else "adamw")
    encoder = torch.load(ctx.pretrain_dir / rec.pretrain_run / "encoder.pt", weights_only=True)
    assert all(torch.equal(bb.model.state_dict()[k], v) for k, v in encoder.items())
