"""ImageNet-initialized cells see inputs normalized as their weights were trained (timm's pretrained
config)."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.models import get_pretrained_cfg

from chexbench.core.context import RunContext
from chexbench.spec.cell import CellConfig
from chexbench.spec.registry import BACKBONES, STRATEGIES
from chexbench.spec.settings import Settings

WITH_WEIGHTS = [n for n in BACKBONES.names() if BACKBONES.get(n).has_imagenet_weights]


def test_every_declared_checkpoint_exists_in_timm_with_its_mean_and_std():
    assert {"resnet50", "vit_b16"} <= set(WITH_WEIGHTS)
    for name in WITH_WEIGHTS:
        spec = BACKBONES.get(name)
        cfg = get_pretrained_cfg(spec.imagenet_weights)
        data = timm.data.resolve_data_config(pretrained_cfg=cfg.to_dict())
        got = spec.imagenet_normalize()
        assert got.mean == pytest.approx(sum(data["mean"]) / 3, abs=1e-6), name
        assert got.std == pytest.approx(sum(data["std"]) / 3, abs=1e-6), name
        assert spec.imagenet_weights in got.source


def test_vit_augreg_is_half_half_and_resnet_is_imagenet():
    assert BACKBONES.get("vit_b16").imagenet_normalize().pair() == (0.5, 0.5)
    assert BACKBONES.get("resnet50").imagenet_normalize().pair() == pytest.approx((0.449, 0.226), abs=1e-3)


def test_vit_b16_imagenet_cell_records_its_own_normalization(tmp_path, monkeypatch):
    """Fails on the old code, which recorded ImageNet's 0.449/0.226 for every backbone."""
    from safetensors.torch import save_file

    monkeypatch.setenv("CHEXBENCH_CACHE", str(tmp_path))
    spec = BACKBONES.get("vit_b16")
    backbone = spec.build(32)
    state = {k: v.clone() for k, v in backbone.model.state_dict().items()}
    state["patch_embed.proj.weight"] = (
        state["patch_embed.proj.weight"].repeat(1, 3, 1, 1) / 3
    )  # an RGB checkpoint
    state["head.weight"], state["head.bias"] = torch.zeros(1000, 768), torch.zeros(1000)
    path = tmp_path / "weights" / f"{spec.imagenet_weights}.safetensors"
    path.parent.mkdir()
    save_file(state, path)
    cell = CellConfig(
        strategy="imagenet",
        backbone="vit_b16",
        dataset="chexpert",
        protocol="linear",
        label_fraction=1.0,
        seed=0,
        settings=Settings(image_size=32),
    )
    record = STRATEGIES.get("imagenet").init_backbone(
        backbone, cell, RunContext(torch.device("cpu"), tmp_path, tmp_path)
    )
    assert record.extra["normalize"] == [0.5, 0.5]
    assert "vit_base_patch16_224.augreg2_in21k_ft_in1k" in record.extra["normalize_source"]
    assert record.to_dict()["extra"]["normalize"] == [0.5, 0.5]  # what the cell's init_json stores


def test_imagenet_is_not_applicable_where_no_weights_exist(tmp_path, monkeypatch):
    monkeypatch.setenv("CHEXBENCH_CACHE", str(tmp_path))
    imagenet = STRATEGIES.get("imagenet")
    for name in BACKBONES.names():
        spec = BACKBONES.get(name)
        cell = CellConfig(
            strategy="imagenet",
            backbone=name,
            dataset="chexpert",
            protocol="linear",
            label_fraction=1.0,
            seed=0,
        )
        reason = imagenet.invalid_reason(cell)
        if spec.has_imagenet_weights:
            assert reason is None and "chexbench weights fetch" in imagenet.unavailable_reason(cell)
        else:  # the skip names no weights file for a model that has none (issue 16 item 9)
            assert reason.startswith("not applicable") and name in reason
            assert "state dict" not in reason and "weights/" not in reason and ".safetensors" not in reason
    assert not BACKBONES.get("vit_b16_convstem").has_imagenet_weights


def test_imagenet_preflight_refuses_a_file_of_another_architecture(tmp_path):
    from timm.models.resnet import BasicBlock, ResNet

    from chexbench.core.errors import WeightsError

    wrong = ResNet(BasicBlock, layers=(1, 2, 1, 1), channels=(32, 64, 128, 256), in_chans=3, num_classes=1000)
    torch.save(wrong.state_dict(), tmp_path / "w.pth")
    cell = CellConfig(
        strategy="imagenet",
        backbone="resnet_tiny",
        dataset="chexpert",
        protocol="linear",
        label_fraction=1.0,
        seed=0,
        settings=Settings(image_size=32),
        strategy_options={"weights": str(tmp_path / "w.pth")},
    )
    with pytest.raises(WeightsError, match=r"unexpected keys \[layer2\.1\."):
        STRATEGIES.get("imagenet").preflight(cell)
