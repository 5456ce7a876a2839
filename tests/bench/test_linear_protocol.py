"""Protocol ``linear``: frozen backbone, per-head AUROC equals scikit-learn, selection on validation only."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from chexbench.backbones.base import Backbone
from chexbench.core.context import RunContext
from chexbench.core.metrics import macro_auroc, macro_auroc_per_head
from chexbench.datasets.celldata import CellData, SplitData
from chexbench.spec.cell import CellConfig
from chexbench.spec.registry import BACKBONES, PROTOCOLS
from chexbench.spec.settings import Settings
from chexbench.strategies.base import InitRecord

LABELS = ["Atelectasis", "Cardiomegaly", "Edema"]


class MeanIntensityFeatures(nn.Module):
    """Features (B, 4): mean intensity of the four image quadrants, plus a BatchNorm that must stay frozen."""

    num_features = 4

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm1d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2] // 2, x.shape[-1] // 2
        quads = [x[..., :h, :w], x[..., :h, w:], x[..., h:, :w], x[..., h:, w:]]
        return self.bn(torch.stack([q.mean(dim=(1, 2, 3)) for q in quads], dim=1))


def _split(n: int, seed: int) -> SplitData:
    """Label j is bright quadrant j (plus noise); the fourth quadrant is noise only; some targets masked."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 3)) < 0.5).astype(np.float32)
    img = rng.normal(100, 20, size=(n, 16, 16))
    for j in range(3):
        r, c = divmod(j, 2)
        img[:, r * 8 : r * 8 + 8, c * 8 : c * 8 + 8] += 25 * y[:, j, None, None]
    y[rng.random((n, 3)) < 0.1] = np.nan
    ids = np.array([f"{seed}-{i}" for i in range(n)])
    return SplitData(np.clip(img, 0, 255).astype(np.uint8), y, ids, ids)


def _backbone() -> Backbone:
    return Backbone(MeanIntensityFeatures(), BACKBONES.get("resnet_tiny"), 16)


def _cell(**protocol_options) -> CellConfig:
    return CellConfig(
        "scratch",
        "resnet_tiny",
        "phantom-chexpert",
        "linear",
        1.0,
        0,
        Settings(image_size=16, epochs=8, batch_size=32, warmup_epochs=0.0),
        protocol_options=protocol_options,
    )


def _ctx(tmp_path) -> RunContext:
    return RunContext(torch.device("cpu"), tmp_path / "results", tmp_path / "cache")


def test_per_head_macro_auroc_equals_sklearn() -> None:
    rng = np.random.default_rng(0)
    targets = (rng.random((60, 3)) < 0.4).astype(float)
    targets[rng.random((60, 3)) < 0.2] = np.nan
    targets[:, 2] = np.where(np.isnan(targets[:, 2]), np.nan, 1.0)  # one class only: left out
    scores = np.round(rng.random((4, 60, 3)), 1)  # rounded: many ties
    got = macro_auroc_per_head(targets, scores, [0, 1, 2])
    for g in range(4):
        ref = []
        for j in (0, 1):
            keep = ~np.isnan(targets[:, j])
            ref.append(roc_auc_score(targets[keep, j], scores[g, keep, j]))
        assert got[g] == pytest.approx(np.mean(ref), abs=1e-12)
        assert got[g] == pytest.approx(macro_auroc(targets, scores[g], LABELS, LABELS), abs=1e-12)
    assert np.isnan(macro_auroc_per_head(targets, scores, [2])).all()


def test_linear_probe_learns_keeps_backbone_frozen_and_selects_on_validation(tmp_path) -> None:
    data = CellData(list(LABELS), list(LABELS), _split(200, 1), _split(120, 2), _split(120, 3), {})
    backbone = _backbone()
    backbone.model.bn.running_mean.fill_(100.0)
    backbone.model.bn.running_var.fill_(400.0)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    result = PROTOCOLS.get("linear").run(backbone, data, _cell(), _ctx(tmp_path), InitRecord("random"))
    for k, v in backbone.state_dict().items():  # frozen: weights and BN running statistics unchanged
        assert torch.equal(v, before[k]), k
    assert result.valid_scores.shape == (120, 3) and result.test_scores.shape == (120, 3)
    assert macro_auroc(data.test.targets, result.test_scores, LABELS, LABELS) > 0.9
    assert result.val_macro_auroc == pytest.approx(
        macro_auroc(data.valid.targets, result.valid_scores, LABELS, LABELS)
    )
    assert len(result.history) == 8 and 0 <= result.selected_epoch < 8
    assert (
        result.extra["selected_l2"] in (0.0, 1e-4, 1e-3, 1e-2, 1e-1)
        and len(result.extra["grid_val_macro_auroc"]) == 10
    )

    # the test split never influences selection: other test targets → identical selection and scores
    scrambled = _split(120, 3)
    scrambled.targets = np.random.default_rng(9).permutation(scrambled.targets)
    data2 = CellData(list(LABELS), list(LABELS), _split(200, 1), _split(120, 2), scrambled, {})
    result2 = PROTOCOLS.get("linear").run(
        _backbone_like(before), data2, _cell(), _ctx(tmp_path), InitRecord("random")
    )
    assert (
        result2.extra["selected_l2"] == result.extra["selected_l2"]
        and result2.selected_epoch == result.selected_epoch
    )
    np.testing.assert_array_equal(result2.test_scores, result.test_scores)


def _backbone_like(state: dict) -> Backbone:
    bb = _backbone()
    bb.load_state_dict(state)
    return bb


def test_strong_regularization_is_chosen_when_validation_prefers_it(tmp_path) -> None:
    # a grid with one absurd λ: validation must reject it
    data = CellData(list(LABELS), list(LABELS), _split(120, 4), _split(80, 5), _split(80, 6), {})
    result = PROTOCOLS.get("linear").run(
        _backbone(), data, _cell(l2_grid=[0.0, 1e4], lr_grid=[1e-2]), _ctx(tmp_path), InitRecord("random")
    )
    grid = result.extra["grid_val_macro_auroc"]
    assert set(grid) == {"lr=0.01,l2=0", "lr=0.01,l2=10000"}
    assert result.extra["selected_l2"] == (0.0 if grid["lr=0.01,l2=0"] >= grid["lr=0.01,l2=10000"] else 1e4)
