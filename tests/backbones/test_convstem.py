"""ConvStem ViT (Xiao et al. 2021): token grid, stem structure, compute match with ViT-B/16, profile
helper."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from chexbench.backbones.convstem import ConvStem, convstem_channels
from chexbench.backbones.profile import profile_backbone
from chexbench.spec.cell import CellConfig
from chexbench.spec.registry import BACKBONES, STRATEGIES
from chexbench.spec.settings import Settings


@pytest.mark.slow
def test_vit_b16_convstem_has_the_vit_b16_token_grid_and_matched_compute() -> None:
    torch.set_num_threads(2)
    bb = BACKBONES.get("vit_b16_convstem").build(224)
    assert bb.is_vit and bb.token_grid() == (14, 14) and bb.num_features == 768
    assert len(bb.model.blocks) == 11 and isinstance(bb.model.patch_embed, ConvStem)
    with torch.no_grad():
        tokens = bb.forward_tokens(torch.zeros(1, 1, 224, 224))
    assert tokens.shape == (1, 196, 768)
    params, gflops = profile_backbone("vit_b16_convstem", 224)
    ref_params, ref_gflops = profile_backbone("vit_b16", 224)
    assert ref_params == pytest.approx(85.4, abs=0.3)  # ViT-B/16 without head, one input channel
    assert ref_gflops == pytest.approx(17.5, abs=0.3)  # Dosovitskiy et al. 2021 report 17.6 (3 channels)
    assert abs(params / ref_params - 1) < 0.10 and abs(gflops / ref_gflops - 1) < 0.10
    # the original study's three-convolution variant: stride 8, 28×28 tokens at 224 px
    assert BACKBONES.get("vit_b16_convstem").build(224, {"stem_convs": 3}).token_grid() == (28, 28)


def test_stem_is_four_strided_conv_bn_relu_then_pointwise_projection() -> None:
    stem = ConvStem(
        img_size=64, patch_size=16, in_chans=1, embed_dim=768, channels=convstem_channels(4, 64, 512)
    )
    convs = [m for m in stem.stem if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(3, 3)] * 4 + [(1, 1)]
    assert [c.stride for c in convs] == [(2, 2)] * 4 + [(1, 1)]
    assert [c.in_channels for c in convs] == [1, 64, 128, 256, 512] and convs[-1].out_channels == 768
    assert [type(m) for m in stem.stem] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU] * 4 + [nn.Conv2d]
    assert stem.grid_size == (4, 4) and stem(torch.zeros(2, 1, 64, 64)).shape == (2, 16, 768)
    with pytest.raises(ValueError, match="stride 16, not patch size 8"):
        ConvStem(img_size=64, patch_size=8, channels=(8, 8, 8, 8))


def test_three_conv_option_gives_stride_8_tokens() -> None:
    bb = BACKBONES.get("vit_convstem_tiny").build(32, {"stem_convs": 3})
    assert bb.token_grid() == (4, 4) and bb.model.pos_embed.shape == (1, 1 + 16, 96)
    assert BACKBONES.get("vit_convstem_tiny").build(32, {"stem_convs": 4}).token_grid() == (2, 2)
    with pytest.raises(ValueError, match="stem_convs must be 3"):
        convstem_channels(5, 64, 512)


def test_tiny_variant_forward_and_backward_on_cpu() -> None:
    bb = BACKBONES.get("vit_convstem_tiny").build(32)
    x = torch.randn(4, 1, 32, 32)
    out = bb(x)
    assert out.shape == (4, bb.num_features) and bb.token_grid() == (4, 4)
    # a random projection of the features: their plain sum passes the final LayerNorm (γ = 1, β = 0 at
    # initialization), whose outputs sum to 0 whatever the input, so its gradient is rounding noise (exactly 0
    # in some runs of the suite)
    (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(0))).sum().backward()
    assert bb.model.patch_embed.stem[0].weight.grad.abs().sum() > 0


def test_moco_convstem_is_valid_only_with_a_conv_stem() -> None:
    strategy = STRATEGIES.get("moco_convstem")
    cell = CellConfig("moco_convstem", "vit_b16_convstem", "chexpert", "linear", 1.0, 0, Settings())
    assert strategy.invalid_reason(cell) is None
    assert strategy.invalid_reason(dataclasses.replace(cell, backbone="vit_convstem_tiny")) is None
    for other in ("resnet50", "vit_b16", "vit_tiny", "resnet_tiny"):
        reason = strategy.invalid_reason(dataclasses.replace(cell, backbone=other))
        assert reason.startswith(
            "moco_convstem needs a ViT with a convolutional stem (vit_b16_convstem"
        ) and reason.endswith(other)


def test_profile_of_a_cnn_matches_the_reference() -> None:
    params, gflops = profile_backbone("resnet50", 224)
    assert params == pytest.approx(23.5, abs=0.1)  # timm resnet50 without fc, 1 input channel
    assert gflops == pytest.approx(4.0, abs=0.15)  # He et al. 2016: 3.8–4.1 GFLOPs (multiply-adds)
