"""Published chest X-ray models through ``checkpoint``: each built with its own library (random weights),
saved in that library's format, loaded strictly; the backbone's features equal the library's forward.

The documented channel handling: the library sees a gray [0, 1] image repeated over RGB and
normalized with its own per-channel statistics; the backbone sees the one channel normalized
with their RGB averages, the per-channel statistics folded exactly into its patch embedding
(ViTs), so the two forwards see the same image. Fast tests use small configurations of each
library mapped onto small timm models of the same structure; the ``slow`` ones use the
published architectures through the registered backbones.
"""

from __future__ import annotations

import json

import pytest
import torch
from published_fixtures import (
    fake_hub_cache,
    hf_dinov2,
    mae_checkpoint,
    open_clip_model,
    preprocessor_config,
    xrv_densenet,
)
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from chexbench.backbones import layouts
from chexbench.backbones.base import audit_checkpoint
from chexbench.backbones.vit import VitSpec
from chexbench.core.context import RunContext
from chexbench.core.errors import WeightsError
from chexbench.spec.cell import CellConfig
from chexbench.spec.registry import BACKBONES, STRATEGIES

STRATEGY = STRATEGIES.get("checkpoint")
TOL = (
    1e-4  # float32 reductions in another order (fused vs separate q/k/v, attention kernels); measured ≤ 5e-6
)


def _cell(path, backbone, size, backbone_options=None, **opts) -> CellConfig:
    settings = CellConfig.from_dict(
        {
            "strategy": "x",
            "backbone": "x",
            "dataset": "x",
            "protocol": "x",
            "label_fraction": 1.0,
            "seed": 0,
            "settings": {"image_size": size},
        }
    ).settings
    return CellConfig(
        strategy="checkpoint",
        backbone=backbone,
        dataset="phantom-chexpert",
        protocol="linear",
        label_fraction=1.0,
        seed=0,
        settings=settings,
        strategy_options={"path": str(path), **opts},
        backbone_options=backbone_options or {},
    )


def _init(cell: CellConfig, tmp_path):
    backbone = BACKBONES.get(cell.backbone).build(cell.settings.image_size, cell.backbone_options).eval()
    STRATEGY.preflight(cell)  # the pre-run check agrees with the load
    record = STRATEGY.init_backbone(backbone, cell, RunContext(torch.device("cpu"), tmp_path, tmp_path))
    return backbone, record


def _every_file_key_accounted(record, backbone, file_keys: set[str]) -> None:
    """Strict: every key of the backbone was loaded, every key of the file not loaded was dropped with a
    reason."""
    dropped = set(record.extra["dropped_keys"])
    assert dropped <= file_keys and set(record.extra["dropped_reasons"]) == dropped
    assert all(record.extra["dropped_reasons"][k] for k in dropped)
    assert record.loaded_keys == len(backbone.model.state_dict()) and record.reinitialized_keys == []


# -- fast: small configurations, the mapping itself ------------------------------------------------
class _SmallVit(VitSpec):
    name = "small_test_vit"


def _small_dinov2_pair(registers: int, seed: int):
    """A small transformers DINOv2 (± registers; 70 px, a 5×5 grid; weights perturbed off their init) and the
    one-channel timm ViT of the same shape at 42 px (a 3×3 grid) to map it into."""
    from transformers import Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    torch.manual_seed(seed)
    small = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=70, patch_size=14)
    hf = (
        Dinov2WithRegistersModel(Dinov2WithRegistersConfig(**small, num_register_tokens=registers))
        if registers
        else Dinov2Model(Dinov2Config(**small))
    ).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    timm_vit = VisionTransformer(
        img_size=42,
        patch_size=14,
        in_chans=1,
        num_classes=0,
        embed_dim=64,
        depth=2,
        num_heads=2,
        init_values=1e-5,
        reg_tokens=registers,
        no_embed_class=bool(registers),
    ).eval()
    return hf, timm_vit


def _mapped_into(model, layout: str, tensors: dict[str, torch.Tensor]):
    mapped = layouts.convert(layout, tensors, model, "test")
    report, state = audit_checkpoint(
        model, mapped.state, _SmallVit(), source="test", declared_unexpected=("head.",)
    )
    model.load_state_dict({**model.state_dict(), **state}, strict=True)
    return mapped, report


@pytest.mark.parametrize("registers", [0, 4])
def test_small_transformers_dinov2_equals_timm_after_mapping_and_resampling(registers):
    hf, timm_vit = _small_dinov2_pair(registers, seed=registers)
    mapped, report = _mapped_into(timm_vit, "hf_transformers", hf.state_dict())
    assert set(mapped.dropped) == {"embeddings.mask_token"}
    assert any("5×5→3×3" in n for n in mapped.notes)  # the model is used at 42 px: a 3×3 grid
    x = torch.randn(2, 1, 42, 42)
    with torch.no_grad():
        ref = hf(pixel_values=x.repeat(1, 3, 1, 1))
        feats, tokens = timm_vit(x), timm_vit.forward_features(x)
    assert torch.allclose(feats, ref.pooler_output, atol=TOL)
    assert torch.allclose(
        tokens, ref.last_hidden_state, atol=TOL
    )  # class, registers, patches in the same order


@pytest.mark.parametrize("quick_gelu", [False, True])
def test_small_open_clip_tower_equals_timm_after_mapping(quick_gelu):
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(int(quick_gelu))
    clip = CLIP(
        16,
        CLIPVisionCfg(layers=2, width=64, head_width=32, patch_size=16, image_size=48),
        CLIPTextCfg(context_length=8, vocab_size=40, width=32, heads=2, layers=1),
        quick_gelu=quick_gelu,
    ).eval()
    with torch.no_grad():
        for p in clip.visual.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    timm_vit = VisionTransformer(
        img_size=48,
        patch_size=16,
        in_chans=1,
        num_classes=0,
        embed_dim=64,
        depth=2,
        num_heads=2,
        pre_norm=True,
        norm_layer=nn.LayerNorm,
        act_layer="quick_gelu" if quick_gelu else "gelu",
    ).eval()
    mapped, _ = _mapped_into(timm_vit, "open_clip", clip.state_dict())
    assert mapped.dropped["visual.proj"].startswith("projection into CLIP's joint")
    assert {k for k, r in mapped.dropped.items() if r == layouts.TEXT_TOWER} == {
        k for k in clip.state_dict() if not k.startswith("visual.")
    }
    x = torch.randn(2, 1, 48, 48)
    with torch.no_grad():
        assert torch.allclose(
            timm_vit(x) @ clip.visual.proj, clip.encode_image(x.repeat(1, 3, 1, 1)), atol=TOL
        )


def _library_input(x01: torch.Tensor, rgb) -> torch.Tensor:
    """The library's own preprocessing of a gray [0, 1] image: repeated over RGB, per-channel statistics."""
    mean, std = (torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1) for v in rgb)
    return (x01.repeat(1, 3, 1, 1) - mean) / std


def _folded_into(model, layout: str, tensors: dict[str, torch.Tensor], rgb):
    """The mapping as ``checkpoint`` does it with normalize = auto: per-channel statistics folded, then
    loaded."""
    norm = layouts.model_normalization(layout, None, folded=True)
    mapped = layouts.convert(layout, tensors, model, "test")
    notes = layouts.fold_rgb_normalization(mapped.state, model, list(rgb), norm)
    _, state = audit_checkpoint(
        model, mapped.state, _SmallVit(), source="test", declared_unexpected=("head.",)
    )
    model.load_state_dict({**model.state_dict(), **state}, strict=True)
    return norm, notes


@pytest.mark.parametrize("registers", [0, 4])
def test_imagenet_stats_dinov2_folded_equals_transformers_on_its_own_preprocessing(registers):
    """DINOv2 with ImageNet statistics (differing per channel): the offset goes into the patch embedding's
    bias."""
    hf, timm_vit = _small_dinov2_pair(registers, seed=10 + registers)
    assert layouts.rgb_statistics("hf_transformers", None) == tuple(map(list, layouts.IMAGENET_RGB))
    norm, notes = _folded_into(timm_vit, "hf_transformers", hf.state_dict(), layouts.IMAGENET_RGB)
    assert (
        (norm.mean, norm.std) == (0.449, 0.226)
        and "folded exactly" in norm.source
        and "approximation" not in norm.source
    )
    assert len(notes) == 1 and "patch_embed.proj.bias" in notes[0]
    x01 = torch.rand(2, 1, 42, 42)
    with torch.no_grad():
        ref = hf(pixel_values=_library_input(x01, layouts.IMAGENET_RGB))
        feats = timm_vit((x01 - norm.mean) / norm.std)
    assert (feats - ref.pooler_output).abs().max() < 1e-5


@pytest.mark.parametrize("size", [48, 32, 80])
def test_openai_stats_clip_tower_folded_equals_open_clip_on_its_own_preprocessing(size):
    """OpenAI CLIP statistics, a tower without patch-embedding bias: the offset goes into the patch tokens'
    position embeddings; resampled to another grid (timm's bicubic, antialiased) it stays that constant."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(size)
    clip = CLIP(
        16,
        CLIPVisionCfg(layers=2, width=64, head_width=32, patch_size=16, image_size=48),
        CLIPTextCfg(context_length=8, vocab_size=40, width=32, heads=2, layers=1),
    ).eval()
    with torch.no_grad():
        for p in clip.visual.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    timm_vit = VisionTransformer(
        img_size=size,
        patch_size=16,
        in_chans=1,
        num_classes=0,
        embed_dim=64,
        depth=2,
        num_heads=2,
        pre_norm=True,
        norm_layer=nn.LayerNorm,
    ).eval()
    rgb = layouts.rgb_statistics("open_clip", None)
    assert rgb == tuple(map(list, layouts.OPENAI_CLIP_RGB))
    norm, notes = _folded_into(timm_vit, "open_clip", clip.state_dict(), rgb)
    assert len(notes) == 1 and "pos_embed" in notes[0]
    x01 = torch.rand(2, 1, size, size)
    with torch.no_grad():
        if (
            size != 48
        ):  # the library at this size: its positions resampled as timm does (the backbone's own path)
            from timm.layers import resample_abs_pos_embed

            pos = clip.visual.positional_embedding.data
            clip.visual.positional_embedding.data = resample_abs_pos_embed(
                pos.unsqueeze(0), [size // 16] * 2
            )[0]
            clip.visual.grid_size = (size // 16, size // 16)
        ref = clip.encode_image(_library_input(x01, rgb))
        got = timm_vit((x01 - norm.mean) / norm.std) @ clip.visual.proj
    assert (got - ref).abs().max() < 1e-5


def test_a_constant_offset_survives_position_resampling():
    """The interpolations the position embeddings go through (timm's resample_abs_pos_embed with its defaults,
    transformers' bicubic with and without antialiasing) have weights summing to 1: pos + δ → resampled + δ.
    """
    from timm.layers import resample_abs_pos_embed

    torch.manual_seed(0)
    pos, delta = torch.randn(1, 1 + 25, 8), torch.randn(8) * 3
    shifted = torch.cat([pos[:, :1], pos[:, 1:] + delta], dim=1)
    for grid in ([3, 3], [8, 8], [4, 7]):
        a, b = resample_abs_pos_embed(pos, grid), resample_abs_pos_embed(shifted, grid)
        assert torch.allclose(b[:, 1:], a[:, 1:] + delta, atol=1e-5) and torch.equal(a[:, :1], b[:, :1])
        img = pos[:, 1:].reshape(1, 5, 5, 8).permute(0, 3, 1, 2)
        for antialias in (False, True):
            r0 = nn.functional.interpolate(
                img, size=grid, mode="bicubic", align_corners=False, antialias=antialias
            )
            r1 = nn.functional.interpolate(
                img + delta.view(1, 8, 1, 1),
                size=grid,
                mode="bicubic",
                align_corners=False,
                antialias=antialias,
            )
            assert torch.allclose(r1, r0 + delta.view(1, 8, 1, 1), atol=1e-5)


def test_padded_first_convolution_is_not_folded_and_says_approximation():
    """A CNN stem pads its border: the per-channel offset is not constant there, so nothing is folded."""
    import timm

    model = timm.create_model("resnet18", pretrained=False, in_chans=1, num_classes=0)
    vit = VisionTransformer(
        img_size=32, patch_size=16, in_chans=1, num_classes=0, embed_dim=16, depth=1, num_heads=2
    )
    state = {"patch_embed.proj.weight": torch.randn(16, 3, 16, 16)}
    assert layouts.foldable(vit) and not layouts.foldable(model)
    assert (
        layouts.fold_rgb_normalization(
            dict(state), model, list(layouts.IMAGENET_RGB), layouts.model_normalization("mae", None)
        )
        == []
    )
    assert "approximation" in layouts.model_normalization("mae", None).source
    assert "approximation" not in layouts.model_normalization("mae", None, folded=True).source


def test_unknown_keys_of_a_layout_are_one_line_naming_them():
    from transformers import Dinov2Config, Dinov2Model

    hf = Dinov2Model(
        Dinov2Config(
            hidden_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=28, use_swiglu_ffn=True
        )
    )
    timm_vit = VisionTransformer(
        img_size=28, patch_size=14, in_chans=1, num_classes=0, embed_dim=32, depth=1, num_heads=2
    )
    with pytest.raises(WeightsError) as e:
        layouts.convert("hf_transformers", hf.state_dict(), timm_vit, "f.safetensors")
    line = str(e.value)
    assert (
        "\n" not in line
        and "keys the hf_transformers layout does not know" in line
        and "encoder.layer.0.mlp." in line
    )  # SwiGLU (ViT-g): not mapped


def test_auto_recognizes_each_layout_by_its_keys(tmp_path):
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
    from transformers import Dinov2Config, Dinov2Model

    clip = CLIP(
        16,
        CLIPVisionCfg(layers=1, width=32, head_width=16, patch_size=16, image_size=32),
        CLIPTextCfg(context_length=8, vocab_size=40, width=32, heads=2, layers=1),
    ).state_dict()
    dino = Dinov2Model(
        Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=28)
    ).state_dict()
    xrv = xrv_densenet().state_dict()
    assert layouts.detect(xrv) == "torchxrayvision"
    assert (
        layouts.detect(dino) == "hf_transformers"
        and layouts.detect({f"dinov2.{k}": v for k, v in dino.items()}) == "hf_transformers"
    )
    assert layouts.detect(clip) == "open_clip"
    assert layouts.detect({**clip, "input_resolution": torch.tensor(224)}) == "openai_clip"
    assert (
        layouts.detect({k[len("visual.") :]: v for k, v in clip.items() if k.startswith("visual.")})
        == "open_clip"
    )
    assert (
        layouts.detect({"visual.trunk.cls_token": torch.zeros(1), "text.proj": torch.zeros(1)}) == "open_clip"
    )
    assert layouts.detect({"cls_token": torch.zeros(1), "decoder_embed.weight": torch.zeros(1)}) == "mae"
    tv = {
        k: v.repeat(1, 3, 1, 1) if k == "features.conv0.weight" else v
        for k, v in xrv.items()
        if k != "classifier.weight"
    }
    assert (
        layouts.detect(tv) is None
    )  # torchvision's ImageNet DenseNet: generic names, ImageNet normalization


# -- torchxrayvision (DenseNet-121 at its published size is fast enough for every run) -------------
@pytest.mark.parametrize("saved", ["state_dict", "whole_model"])
def test_torchxrayvision_densenet_features_equal_xrv(tmp_path, saved):
    import torchxrayvision as xrv

    model = xrv_densenet(seed=3)
    model.op_threshs = torch.rand(18)  # what the zoo's files carry beside the weights
    path = tmp_path / "xrv.pt"
    torch.save(
        model.state_dict() if saved == "state_dict" else model, path
    )  # the zoo's files are whole pickled models
    backbone, record = _init(_cell(path, "densenet121", 224), tmp_path)
    assert record.extra["layout"] == "torchxrayvision"
    assert set(record.extra["dropped_keys"]) == {"classifier.weight", "classifier.bias", "op_threshs"}
    _every_file_key_accounted(record, backbone, set(model.state_dict()))
    mean, std = record.extra["normalize"]
    assert (mean, std) == (0.5, 1 / 2048) and "[-1024, 1024]" in record.extra["normalize_source"]
    img = torch.randint(0, 256, (2, 224, 224), dtype=torch.uint8)
    x_xrv = (
        torch.from_numpy(xrv.datasets.normalize(img.numpy(), 255)).float().unsqueeze(1)
    )  # the library's own scaling
    x_ours = (
        img.float().unsqueeze(1) / 255 - mean
    ) / std  # chexbench.core.inputs.to_input with the recorded pair
    assert torch.allclose(x_ours, x_xrv, atol=1e-3)
    with torch.no_grad():
        ref, got = model.features2(x_xrv), backbone(x_ours)
    assert torch.allclose(got, ref, rtol=1e-4, atol=1e-3 * ref.abs().max().item() * 1e-3)


def test_a_file_of_another_architecture_is_one_line_naming_keys(tmp_path):
    model = xrv_densenet()
    state = model.state_dict()
    del state["features.denseblock4.denselayer16.conv2.weight"]
    state["features.denseblock5.denselayer1.conv1.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "wrong.pt")
    with pytest.raises(WeightsError) as e:
        STRATEGY.preflight(_cell(tmp_path / "wrong.pt", "densenet121", 224))
    line = str(e.value)
    assert "\n" not in line and "missing keys [features.denseblock4.denselayer16.conv2.weight]" in line
    assert "unexpected keys [features.denseblock5.denselayer1.conv1.weight]" in line
    with pytest.raises(
        WeightsError, match=r"does not fit vit_b16: .*missing keys"
    ):  # an xrv DenseNet is no ViT
        torch.save(model.state_dict(), tmp_path / "xrv.pt")
        STRATEGY.preflight(_cell(tmp_path / "xrv.pt", "vit_b16", 224))


# -- the published architectures through the registered backbones ------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("registers", [True, False])
def test_transformers_dinov2_vit_b14_features_equal_transformers(tmp_path, registers):
    model = hf_dinov2(registers, seed=int(registers))  # RAD-DINO's configuration: 518 px, patch 14
    folder = tmp_path / "rad-dino"
    model.save_pretrained(folder)
    # RAD-DINO's statistics (equal over RGB); the register model with ImageNet's (differing per channel)
    rgb = (
        (list(layouts.IMAGENET_RGB[0]), list(layouts.IMAGENET_RGB[1]))
        if registers
        else ([0.5307] * 3, [0.2583] * 3)
    )
    (folder / "preprocessor_config.json").write_text(preprocessor_config(*rgb))
    name = "vit_b14_reg4_dinov2" if registers else "vit_b14_dinov2"
    backbone, record = _init(_cell(folder, name, 56), tmp_path)  # a model folder: its model.safetensors
    mean, std = record.extra["normalize"]
    assert record.extra["layout"] == "hf_transformers" and [mean, std] == (
        [0.449, 0.226] if registers else [0.5307, 0.2583]
    )
    assert (
        "preprocessor_config.json" in record.extra["normalize_source"]
        and "approximation" not in record.extra["normalize_source"]
    )
    assert "folded exactly" in record.extra["normalize_source"]
    _every_file_key_accounted(record, backbone, set(model.state_dict()))
    assert record.extra["dropped_keys"] == ["embeddings.mask_token"]
    x01 = torch.rand(2, 1, 56, 56)
    with torch.no_grad():
        ref = model(
            pixel_values=_library_input(x01, rgb)
        )  # transformers resamples 37×37 positions to 4×4 itself
        x = (x01 - mean) / std  # chexbench.core.inputs.to_input with the recorded pair
        feats, tokens = backbone(x), backbone.forward_tokens(x)
    assert torch.allclose(feats, ref.pooler_output, atol=TOL)
    assert torch.allclose(tokens, ref.last_hidden_state[:, 1 + 4 * registers :], atol=TOL)
    other = "vit_b14_dinov2" if registers else "vit_b14_reg4_dinov2"
    with pytest.raises(WeightsError, match=f"register tokens .*use {name}"):
        STRATEGY.preflight(_cell(folder, other, 56))


@pytest.mark.slow
def test_open_clip_vit_b16_tower_equals_its_encode_image(tmp_path):
    """open_clip's ViT-B-16 (GELU) as the hub holds it (a plain state dict) and as its training saves it
    (``{"epoch", "name", "state_dict"}`` of the DistributedDataParallel model). OpenAI's ViT-B/32 layout
    (QuickGELU) runs end to end in test_library_built_models_on_one_leaderboard…"""
    model = open_clip_model("ViT-B-16")
    path = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(model.state_dict(), path)
    ddp = {
        "epoch": 32,
        "name": "cxr-clip",
        "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()},
    }
    torch.save(ddp, tmp_path / "epoch_32.pt")
    x01 = torch.rand(1, 1, 224, 224)
    with torch.no_grad():
        ref = model.encode_image(
            _library_input(x01, layouts.OPENAI_CLIP_RGB)
        )  # open_clip's own preprocessing
    for file, dropped in [(path, "visual.proj"), (tmp_path / "epoch_32.pt", "module.visual.proj")]:
        backbone, record = _init(_cell(file, "vit_b16_clip", 224), tmp_path)
        assert record.extra["layout"] == "open_clip" and dropped in record.extra["dropped_reasons"]
        _every_file_key_accounted(
            record, backbone, set(torch.load(file, weights_only=True).get("state_dict", model.state_dict()))
        )
        assert (
            record.extra["normalize"] == [0.449164, 0.26857]
            and "OpenAI CLIP" in record.extra["normalize_source"]
        )
        assert "folded exactly" in record.extra["normalize_source"]
        with torch.no_grad():
            got = (
                backbone((x01 - 0.449164) / 0.26857) @ model.visual.proj
            )  # the projection is dropped from the backbone: apply it to compare
        assert torch.allclose(got, ref, atol=TOL), (file, (got - ref).abs().max())
    with pytest.raises(
        WeightsError,
        match=r'OpenAI CLIP towers use QuickGELU; set act = "quick_gelu" under \[backbone.vit_b16_clip\]',
    ):
        STRATEGY.preflight(_cell(path, "vit_b16_clip", 224, format="openai_clip"))


@pytest.mark.slow
def test_mae_checkpoint_loads_its_encoder_into_vit_b16(tmp_path):
    encoder = mae_checkpoint(tmp_path / "mae_pretrain.pth")
    backbone, record = _init(_cell(tmp_path / "mae_pretrain.pth", "vit_b16", 224), tmp_path)
    assert record.extra["layout"] == "mae" and record.extra["wrapper"] == "model"
    dropped = record.extra["dropped_keys"]
    assert (
        "mask_token" in dropped
        and any(k.startswith("decoder_blocks.7.") for k in dropped)
        and "decoder_pred.weight" in dropped
    )
    assert not any(k.startswith(("blocks.", "patch_embed.", "cls_token")) for k in dropped)
    mean, std = record.extra["normalize"]
    assert [mean, std] == [0.449, 0.226] and "folded exactly" in record.extra[
        "normalize_source"
    ]  # ImageNet's, as MAE's
    x01 = torch.rand(1, 1, 224, 224)
    with torch.no_grad():
        assert torch.allclose(
            backbone((x01 - mean) / std), encoder(_library_input(x01, layouts.IMAGENET_RGB)), atol=TOL
        )


# -- hf-hub: references, from the local cache only ------------------------------------------------------
def _tiny_timm_weights() -> bytes:
    from checkpoint_fixtures import rgb_resnet_tiny
    from safetensors.torch import save

    return save(rgb_resnet_tiny(seed=4).state_dict())


def test_hub_reference_resolves_in_the_local_cache_and_records_commit_and_sha(tmp_path, monkeypatch):
    import hashlib

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    blob = _tiny_timm_weights()
    fake_hub_cache(tmp_path / "hub", "lab/cxr-resnet", {"model.safetensors": blob}, commit="c" * 40)
    fake_hub_cache(
        tmp_path / "hub",
        "lab/cxr-resnet",
        {"model.safetensors": blob, "other.safetensors": blob},
        commit="d" * 40,
        ref="v2",
    )
    for ref, commit, file in [
        ("hf-hub:lab/cxr-resnet", "c" * 40, "model.safetensors"),
        ("hf-hub:lab/cxr-resnet@v2:other.safetensors", "d" * 40, "other.safetensors"),
        (f"hf-hub:lab/cxr-resnet@{'c' * 40}", "c" * 40, "model.safetensors"),
    ]:
        _, record = _init(_cell(ref, "resnet_tiny", 32), tmp_path)
        assert (
            record.extra["hub_revision"] == commit
            and record.extra["hub_file"] == file
            and record.source == ref
        )
        assert record.extra["checkpoint_sha256"] == hashlib.sha256(blob).hexdigest()


def test_absent_hub_reference_is_one_line_naming_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(WeightsError) as e:
        STRATEGY.preflight(_cell("hf-hub:microsoft/rad-dino@main", "vit_b14_dinov2", 224))
    line = str(e.value)
    assert "\n" not in line and line.endswith("run: chexbench weights fetch hf-hub:microsoft/rad-dino@main")
    fake_hub_cache(
        tmp_path / "hub", "microsoft/rad-dino", {"config.json": "{}"}
    )  # the repo is there, its weights are not
    with pytest.raises(WeightsError, match="is not in the local Hugging Face cache"):
        STRATEGY.preflight(_cell("hf-hub:microsoft/rad-dino", "vit_b14_dinov2", 224))
    from chexbench.core.errors import ConfigError
    from chexbench.spec.parse import parse_grid

    raw = {
        "axes": {
            "strategy": ["checkpoint"],
            "backbone": ["vit_b14_dinov2"],
            "dataset": ["phantom-chexpert"],
            "protocol": ["linear"],
        },
        "strategy": {"checkpoint": {"name": "x", "path": "hf-hub:rad-dino"}},
    }
    with pytest.raises(
        ConfigError,
        match=r"malformed hub reference 'hf-hub:rad-dino': expected hf-hub:ORG/NAME\[@REVISION\]\[:FILE\]",
    ):
        parse_grid(raw, "g.toml")


def test_run_with_an_absent_hub_reference_writes_nothing(tmp_path, cache, monkeypatch):
    from typer.testing import CliRunner

    from chexbench.cli import app

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    grid = tmp_path / "g.toml"
    grid.write_text("""
[axes]
strategy = ["checkpoint"]
backbone = ["resnet_tiny"]
dataset = ["phantom-chexpert"]
protocol = ["linear"]
[settings]
image_size = 32
[dataset.phantom-chexpert]
patients = 120
size = 64
[[strategy.checkpoint]]
name = "lab-resnet"
path = "hf-hub:lab/cxr-resnet"
""")
    out = CliRunner().invoke(
        app, ["run", "--grid", str(grid), "--results", str(tmp_path / "results"), "--device", "cpu"]
    )
    assert out.exit_code != 0
    assert (
        "chexbench weights fetch hf-hub:lab/cxr-resnet" in out.output
        and len(out.output.strip().splitlines()) == 1
    )
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").rglob("*.parquet"))


def test_open_clip_config_beside_the_weights_decides_activation_and_normalization(tmp_path, monkeypatch):
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    clip = CLIP(
        16,
        CLIPVisionCfg(layers=1, width=32, head_width=16, patch_size=16, image_size=32),
        CLIPTextCfg(context_length=8, vocab_size=40, width=32, heads=2, layers=1),
    )
    path = tmp_path / "open_clip_model.safetensors"
    save_file(clip.state_dict(), path)
    cfg = {
        "model_cfg": {"quick_gelu": True},
        "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
    }
    (tmp_path / "open_clip_config.json").write_text(json.dumps(cfg))
    model = VisionTransformer(
        img_size=32,
        patch_size=16,
        in_chans=1,
        num_classes=0,
        embed_dim=32,
        depth=1,
        num_heads=2,
        pre_norm=True,
    )
    with pytest.raises(
        WeightsError, match=r'open_clip_config.json says quick_gelu = True; set act = "quick_gelu"'
    ):
        layouts.activation_check("open_clip", model, path, "vit_b16_clip", "test")
    norm = layouts.model_normalization("open_clip", path)
    assert norm.pair() == (0.5, 0.25) and "open_clip_config.json" in norm.source


def test_weights_fetch_of_a_hub_reference_offline_is_one_line_and_writes_nothing(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from chexbench.cli import app

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = CliRunner().invoke(app, ["weights", "fetch", "hf-hub:microsoft/rad-dino"])
    assert out.exit_code != 0 and "HF_HUB_OFFLINE" in out.output and len(out.output.strip().splitlines()) == 1
    assert not (tmp_path / "hub").exists()


def test_weights_fetch_downloads_weights_and_configs_into_the_cache_a_run_reads(tmp_path, monkeypatch):
    """The hub client is replaced by one serving a fake repo; the files land in huggingface_hub's layout."""
    import huggingface_hub
    from typer.testing import CliRunner

    from chexbench.cli import app

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    blob, commit = _tiny_timm_weights(), "e" * 40
    repo_files = {
        "model.safetensors": blob,
        "pytorch_model.bin": b"not wanted",
        "config.json": "{}",
        "README.md": "x",
    }
    downloaded = []

    class FakeApi:
        def model_info(self, repo, revision=None):
            assert repo == "lab/cxr-resnet"
            return type(
                "Info", (), {"sha": commit, "siblings": [type("S", (), {"rfilename": n}) for n in repo_files]}
            )

    def fake_download(repo, filename, revision=None, cache_dir=None):
        downloaded.append(filename)
        return str(
            fake_hub_cache(cache_dir, repo, {filename: repo_files[filename]}, commit=revision, ref=revision)
            / filename
        )

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    out = CliRunner().invoke(app, ["weights", "fetch", "hf-hub:lab/cxr-resnet"])
    assert out.exit_code == 0, out.output
    assert downloaded == ["model.safetensors", "config.json"]
    assert commit in out.output and "sha256" in out.output
    _, record = _init(
        _cell("hf-hub:lab/cxr-resnet", "resnet_tiny", 32), tmp_path
    )  # refs/main now names the commit
    assert record.extra["hub_revision"] == commit


@pytest.mark.slow
def test_open_clip_with_a_timm_trunk_biomedclip_layout_loads_into_vit_b16(tmp_path):
    """BiomedCLIP's open_clip model: the image tower is timm's vit_base_patch16_224 (visual.trunk.*)
    with a linear projection (visual.head.proj); the text tower (here a small one) is dropped."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(5)
    clip = CLIP(
        512,
        CLIPVisionCfg(
            timm_model_name="vit_base_patch16_224", timm_pool="", timm_proj="linear", image_size=224
        ),
        CLIPTextCfg(context_length=8, vocab_size=40, width=32, heads=2, layers=1),
    ).eval()
    path = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(clip.state_dict(), path)
    backbone, record = _init(_cell(path, "vit_b16", 224), tmp_path)
    assert (
        record.extra["layout"] == "open_clip"
        and record.extra["dropped_reasons"]["visual.head.proj.weight"] == layouts.PROJECTION
    )
    _every_file_key_accounted(record, backbone, set(clip.state_dict()))
    mean, std = record.extra["normalize"]
    assert (
        "folded exactly" in record.extra["normalize_source"]
    )  # OpenAI CLIP's statistics, into the trunk's patch bias
    x01 = torch.rand(1, 1, 224, 224)
    with torch.no_grad():
        ref = clip.encode_image(_library_input(x01, layouts.OPENAI_CLIP_RGB))
        got = clip.visual.head(backbone((x01 - mean) / std))
    assert torch.allclose(got, ref, atol=TOL)


def test_foundation_models_grid_puts_each_checkpoint_on_its_backbone_only():
    from pathlib import Path

    from chexbench.spec.parse import load_grid

    planned = load_grid(str(Path(__file__).parents[2] / "docs" / "foundation_models.toml")).cells()
    # ImageNet cells run where the weights are fetched, else are skipped with the fetch command
    ready = [p for p in planned if p.status == "run" or "chexbench weights fetch" in p.reason]
    run = {(p.cell.strategy, p.cell.backbone) for p in ready}
    assert run == {
        ("scratch", "densenet121"),
        ("scratch", "vit_b16"),
        ("imagenet", "densenet121"),
        ("imagenet", "vit_b16"),
        ("xrv-densenet121-all", "densenet121"),
        ("rad-dino", "vit_b14_dinov2"),
        ("biomedclip", "vit_b16"),
        ("chexzero", "vit_b32_clip"),
        ("cxr-mae", "vit_b16"),
    }
    cells = [p.cell for p in ready]
    assert {c.protocol for c in cells} == {"linear", "finetune"} and {c.label_fraction for c in cells} == {
        0.01,
        0.1,
        1.0,
    }
    assert len(cells) == 9 * 2 * 3 * 3


@pytest.mark.slow
def test_library_built_models_on_one_leaderboard_and_the_saved_backbone_equals_the_library(
    tmp_path, cache, monkeypatch
):
    """`chexbench run` with a torchxrayvision DenseNet and an OpenAI-layout CLIP ViT-B/32 (the latter
    through a fake hub cache): each saved frozen backbone gives the library's features."""
    import pandas as pd
    from typer.testing import CliRunner

    from chexbench.bench.store import ResultStore
    from chexbench.cli import app

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    xrv_model = xrv_densenet(seed=7)
    torch.save(xrv_model, tmp_path / "xrv.pt")
    clip = open_clip_model("ViT-B-32-quickgelu", seed=8)
    buf = tmp_path / "clip.bin"
    torch.save(clip.state_dict(), buf)
    fake_hub_cache(tmp_path / "hub", "lab/cxr-clip", {"pytorch_model.bin": buf.read_bytes()}, commit="f" * 40)
    grid = tmp_path / "g.toml"
    grid.write_text(f"""
[axes]
strategy = ["checkpoint"]
backbone = ["densenet121", "vit_b32_clip"]
dataset = ["phantom-chexpert"]
protocol = ["linear"]
[settings]
image_size = 64
max_train_images = 48
max_eval_images = 32
epochs = 1
[dataset.phantom-chexpert]
patients = 120
size = 64
[protocol.linear]
save_model = true
localize = false
epochs = 2
[[strategy.checkpoint]]
name = "xrv"
path = "{tmp_path / "xrv.pt"}"
backbone = "densenet121"
[[strategy.checkpoint]]
name = "cxr-clip"
path = "hf-hub:lab/cxr-clip"
format = "openai_clip"
backbone = "vit_b32_clip"
""")
    results = tmp_path / "results"
    runner = CliRunner()
    out = runner.invoke(app, ["run", "--grid", str(grid), "--results", str(results), "--device", "cpu"])
    assert out.exit_code == 0, out.output
    recs = ResultStore(results).records().set_index("strategy")
    assert set(recs.index) == {"xrv", "cxr-clip"} and set(recs["status"]) == {"ok"}
    import open_clip
    from open_clip.model import resize_pos_embed

    clip64 = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None, force_image_size=64).eval()
    state = dict(clip.state_dict())
    resize_pos_embed(state, clip64)  # open_clip's own resampling of the 7×7 positions to 2×2
    clip64.load_state_dict(state)
    x = torch.rand(2, 1, 64, 64)
    for name, reference in [
        ("xrv", lambda x01: xrv_model.features2((x01 - 0.5) * 2048)),
        ("cxr-clip", lambda x01: clip64.encode_image(_library_input(x01, layouts.OPENAI_CLIP_RGB))),
    ]:
        init = json.loads(recs.loc[name, "init_json"])
        payload = torch.load(results / "models" / f"{recs.loc[name, 'cell_id']}.pt", weights_only=True)
        spec = BACKBONES.get(recs.loc[name, "backbone"])
        backbone = spec.build(64, {}).eval()
        backbone.model.load_state_dict(
            {
                k[len("backbone.model.") :]: v
                for k, v in payload["state_dict"].items()
                if k.startswith("backbone.model.")
            }
        )
        mean, std = payload["normalize"]
        assert [mean, std] == init["extra"]["normalize"]
        with torch.no_grad():
            got = backbone((x - mean) / std)
            if name == "cxr-clip":
                got = got @ clip.visual.proj
                assert init["extra"]["hub_revision"] == "f" * 40
            ref = reference(x)
        assert torch.allclose(got, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item()), name
    report = runner.invoke(app, ["report", "--results", str(results), "--baseline", "xrv"])
    assert report.exit_code == 0, report.output
    assert {"xrv", "cxr-clip"} <= set(pd.read_parquet(results / "leaderboard.parquet")["strategy"])
