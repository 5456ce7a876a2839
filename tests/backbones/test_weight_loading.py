"""ImageNet-style weights arrive from a local file, strictly: tensors equal, head dropped, errors loud."""

import pytest
import torch
from timm.models.resnet import BasicBlock, ResNet
from timm.models.vision_transformer import VisionTransformer

from chexbench.backbones.base import load_checkpoint, read_state_dict
from chexbench.core.context import RunContext
from chexbench.core.errors import SkipCell, WeightsError
from chexbench.spec.cell import CellConfig
from chexbench.spec.registry import BACKBONES, STRATEGIES


def _rgb_resnet_tiny() -> ResNet:
    # the same architecture as resnet_tiny, but 3 input channels and a 1000-way head, like an ImageNet
    # checkpoint
    return ResNet(
        BasicBlock,
        layers=(1, 1, 1, 1),
        channels=(32, 64, 128, 256),
        stem_width=32,
        in_chans=3,
        num_classes=1000,
    )


def _cell(backbone: str, weights: str | None) -> CellConfig:
    return CellConfig(
        strategy="imagenet",
        backbone=backbone,
        dataset="chexpert",
        protocol="finetune",
        label_fraction=1.0,
        seed=0,
        strategy_options={"weights": weights} if weights else {},
    )


def test_imagenet_strategy_loads_local_file_exactly(tmp_path):
    torch.manual_seed(0)
    rgb = _rgb_resnet_tiny()
    path = tmp_path / "resnet_tiny_in1k.pth"
    torch.save(rgb.state_dict(), path)
    spec = BACKBONES.get("resnet_tiny")
    backbone = spec.build(64)
    before = {k: v.clone() for k, v in backbone.model.state_dict().items()}
    ctx = RunContext(torch.device("cpu"), tmp_path, tmp_path)
    record = STRATEGIES.get("imagenet").init_backbone(backbone, _cell("resnet_tiny", str(path)), ctx)

    got = backbone.model.state_dict()
    src = rgb.state_dict()
    for k, v in got.items():
        if k == "conv1.weight":
            assert torch.equal(v, src[k].sum(dim=1, keepdim=True))
        else:
            assert torch.equal(v, src[k]), k
    assert any(not torch.equal(before[k], got[k]) for k in got)  # the weights really changed
    assert record.loaded_keys == len(got)
    assert record.extra["dropped_keys"] == ["fc.bias", "fc.weight"]
    assert any("conv1.weight: RGB filters summed" in n for n in record.notes)
    assert record.source == str(path)


def test_safetensors_and_wrapped_checkpoints(tmp_path):
    from safetensors.torch import save_file

    rgb = _rgb_resnet_tiny()
    save_file(rgb.state_dict(), tmp_path / "w.safetensors")
    torch.save({"state_dict": rgb.state_dict()}, tmp_path / "w.pth")
    for name in ("w.safetensors", "w.pth"):
        state = read_state_dict(tmp_path / name)
        assert torch.equal(state["layer1.0.conv1.weight"], rgb.state_dict()["layer1.0.conv1.weight"])


def test_wrong_architecture_fails_naming_keys(tmp_path):
    wrong = ResNet(BasicBlock, layers=(2, 1, 1, 1), channels=(32, 64, 128, 256), in_chans=3, num_classes=10)
    spec = BACKBONES.get("resnet_tiny")
    with pytest.raises(WeightsError, match=r"unexpected keys \[layer1\.1\.") as e:
        load_checkpoint(
            spec.build(64),
            wrong.state_dict(),
            spec,
            source="wrong.pth",
            declared_unexpected=spec.head_prefixes,
        )
    assert "does not fit resnet_tiny" in str(e.value)
    state = _rgb_resnet_tiny().state_dict()
    del state["layer4.0.bn2.weight"]
    with pytest.raises(WeightsError, match=r"missing keys \[layer4\.0\.bn2\.weight\]"):
        load_checkpoint(
            spec.build(64), state, spec, source="partial.pth", declared_unexpected=spec.head_prefixes
        )
    wide = ResNet(BasicBlock, layers=(1, 1, 1, 1), channels=(32, 64, 128, 512), in_chans=3, num_classes=10)
    with pytest.raises(WeightsError, match="shape mismatches"):
        load_checkpoint(
            spec.build(64), wide.state_dict(), spec, source="wide.pth", declared_unexpected=spec.head_prefixes
        )


def test_vit_pos_embed_resampled_to_image_size(tmp_path):
    src = VisionTransformer(
        img_size=32,
        patch_size=8,
        in_chans=3,
        num_classes=5,
        embed_dim=96,
        depth=4,
        num_heads=3,
        mlp_ratio=2.0,
    )
    spec = BACKBONES.get("vit_tiny")
    backbone = spec.build(64)
    report = load_checkpoint(
        backbone, src.state_dict(), spec, source="vit.pth", declared_unexpected=spec.head_prefixes
    )
    assert backbone.model.pos_embed.shape == (1, 1 + 64, 96)
    assert torch.equal(backbone.model.blocks[0].attn.qkv.weight, src.blocks[0].attn.qkv.weight)
    assert any("pos_embed resampled" in n for n in report.notes)
    assert report.dropped_keys == ["head.bias", "head.weight"]


def test_missing_weights_skip_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv("CHEXBENCH_CACHE", str(tmp_path))
    strategy = STRATEGIES.get("imagenet")
    reason = strategy.unavailable_reason(_cell("resnet50", None))
    assert reason and str(tmp_path / "weights" / "resnet50.a1_in1k.safetensors") in reason
    with pytest.raises(SkipCell):
        strategy.init_backbone(
            BACKBONES.get("resnet_tiny").build(64),
            _cell("resnet_tiny", None),
            RunContext(torch.device("cpu"), tmp_path, tmp_path),
        )
    assert "weights file not found" in strategy.unavailable_reason(
        _cell("resnet50", str(tmp_path / "nope.pth"))
    )


def test_conventional_cache_location_is_found(tmp_path, monkeypatch):
    monkeypatch.setenv("CHEXBENCH_CACHE", str(tmp_path))
    assert STRATEGIES.get("imagenet").unavailable_reason(_cell("resnet50", None))
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "resnet50.a1_in1k.pth").write_bytes(b"")  # presence is what planning checks
    assert STRATEGIES.get("imagenet").unavailable_reason(_cell("resnet50", None)) is None
