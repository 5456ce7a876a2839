"""A learning rate far too high is a DivergedError naming the epoch and step, in both protocols,
never a scikit-learn error about NaN input far from the cause."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from chexbench.backbones.base import Backbone
from chexbench.core.context import RunContext
from chexbench.core.training import DivergedError
from chexbench.datasets.celldata import CellData, SplitData
from chexbench.spec.cell import CellConfig
from chexbench.spec.registry import BACKBONES, PROTOCOLS
from chexbench.spec.settings import Settings
from chexbench.strategies.base import InitRecord

LABELS = ["Atelectasis", "Cardiomegaly", "Edema"]


class TinyConv(nn.Module):
    num_features = 8

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3))


class Overflowing(TinyConv):
    """Features that overflow to inf (a backbone whose pretraining blew up)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * torch.tensor(float("inf"))


class NanWhenEvaluated(TinyConv):
    """Finite while training, NaN when evaluated: the loss alone cannot see it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        return out if self.training else out * torch.tensor(float("nan"))


def _split(n: int, seed: int) -> SplitData:
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 3)) < 0.5).astype(np.float32)
    img = rng.integers(0, 255, size=(n, 16, 16)).astype(np.uint8)
    ids = np.array([f"{seed}-{i}" for i in range(n)])
    return SplitData(img, y, ids, ids)


def _data() -> CellData:
    return CellData(list(LABELS), list(LABELS), _split(64, 1), _split(32, 2), _split(32, 3), {})


def _cell(protocol: str, lr: float, **options) -> CellConfig:
    settings = Settings(image_size=16, epochs=3, batch_size=16, warmup_epochs=0.0, lr=lr)
    return CellConfig(
        "scratch", "resnet_tiny", "phantom-chexpert", protocol, 1.0, 0, settings, protocol_options=options
    )


def _run(protocol: str, module: nn.Module, cell: CellConfig, tmp_path):
    backbone = Backbone(module, BACKBONES.get("resnet_tiny"), 16)
    ctx = RunContext(torch.device("cpu"), tmp_path / "results", tmp_path / "cache")
    return PROTOCOLS.get(protocol).run(backbone, _data(), cell, ctx, InitRecord("random"))


def test_finetune_with_an_absurd_learning_rate_is_diverged_with_epoch_and_step(tmp_path):
    torch.manual_seed(0)
    with pytest.raises(DivergedError, match=r"epoch \d+ step \d+"):
        _run("finetune", TinyConv(), _cell("finetune", 1e6, augment=False), tmp_path)


def test_non_finite_validation_outputs_with_a_finite_loss_are_diverged(tmp_path):
    with pytest.raises(DivergedError, match=r"validation outputs became non-finite .* at epoch 0 step \d+"):
        _run("finetune", NanWhenEvaluated(), _cell("finetune", 1e-3, augment=False), tmp_path)


def test_a_sane_learning_rate_does_not_diverge(tmp_path):
    torch.manual_seed(0)
    result = _run("finetune", TinyConv(), _cell("finetune", 1e-3, augment=False), tmp_path)
    assert np.isfinite(result.test_scores).all()


def test_a_linear_probe_head_that_blows_up_is_diverged_with_epoch_step_and_head(tmp_path):
    torch.manual_seed(0)
    with pytest.raises(DivergedError, match=r"(lr=1e\+30.*)?epoch \d+ step \d+"):
        _run("linear", TinyConv(), _cell("linear", 1e-3, lr_grid=[1e-2, 1e30], l2_grid=[0.0]), tmp_path)


def test_non_finite_features_of_a_frozen_backbone_are_diverged(tmp_path):
    with pytest.raises(DivergedError, match="features of the frozen backbone"):
        _run("linear", Overflowing(), _cell("linear", 1e-3, l2_grid=[0.0]), tmp_path)
