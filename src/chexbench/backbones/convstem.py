"""ViT with a convolutional stem (Xiao et al. 2021, "Early Convolutions Help Transformers See Better").

The patchify stem (one 16×16 stride-16 convolution) is replaced by ``stem_convs`` stacked
3×3 stride-2 convolutions, each followed by BatchNorm and ReLU, and a final 1×1 convolution
to the embedding width; it plugs into timm's :class:`VisionTransformer` through its
``embed_layer`` hook. Default (``stem_convs = 4``): stride 16, so 224 px gives the same
14×14 token grid as ViT-B/16, and one transformer block fewer (depth 11) keeps compute
matched, as the paper does. ``stem_convs = 3`` is the original study's stride-8 variant
(28×28 tokens at 224 px, about 4× the attention cost).
"""

from __future__ import annotations

from functools import partial
from typing import Any, Literal

import torch
from pydantic import Field
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from chexbench.backbones.vit import VitSpec
from chexbench.spec.options import Options


class ConvStem(nn.Module):
    """(B, C, H, W) → tokens (B, N, D): ``len(channels)`` × [3×3 conv stride 2, BN, ReLU] → 1×1 conv to D.

    Exposes ``img_size``, ``patch_size`` (the total stride), ``grid_size`` and ``num_patches``
    as timm's PatchEmbed does, so the ViT sizes its position embedding from it.
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 1,
        embed_dim: int = 768,
        channels: tuple[int, ...] = (64, 128, 256, 512),
        bias: bool = True,
        **_: Any,  # PatchEmbed arguments that do not apply (dynamic_img_pad, norm_layer, …)
    ):
        super().__init__()
        stride = 2 ** len(channels)
        if patch_size != stride:
            raise ValueError(
                f"ConvStem with {len(channels)} stride-2 convolutions has stride {stride}, not patch size"
                f" {patch_size}"
            )
        if img_size % stride:
            raise ValueError(f"ConvStem: image size {img_size} is not a multiple of its stride {stride}")
        self.img_size = (img_size, img_size)
        self.patch_size = (stride, stride)
        self.grid_size = (img_size // stride, img_size // stride)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.flatten = True
        layers: list[nn.Module] = []
        prev = in_chans
        for width in channels:
            layers += [
                nn.Conv2d(prev, width, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            prev = width
        layers.append(nn.Conv2d(prev, embed_dim, 1, bias=bias))
        self.stem = nn.Sequential(*layers)

    def feat_ratio(self, as_scalar: bool = True) -> int | tuple[int, int]:
        return self.patch_size[0] if as_scalar else self.patch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (B, D, H/s, W/s)
        return x.flatten(2).transpose(1, 2)  # (B, N, D)


def convstem_channels(stem_convs: int, first: int, cap: int) -> tuple[int, ...]:
    """Widths doubling from ``first`` per stride-2 convolution, capped at ``cap``."""
    if stem_convs not in (3, 4):
        raise ValueError(f"stem_convs must be 3 (stride 8) or 4 (stride 16), got {stem_convs}")
    return tuple(min(first * 2**i, cap) for i in range(stem_convs))


class ConvStemOptions(Options):
    stem_convs: Literal[3, 4] = Field(
        4, description="stride-2 3×3 convolutions in the stem: 4 gives patch stride 16, 3 gives stride 8"
    )
    depth: int = Field(
        11,
        ge=1,
        description=(
            "transformer blocks after the stem (11, one fewer than ViT-B's 12, keeps the compute equal: Xiao"
            " et al. 2021)"
        ),
    )


class _ConvStemSpec(VitSpec):
    """A timm ViT whose patch embedding is a :class:`ConvStem`; subclasses set the widths."""

    conv_stem = True
    head_prefixes = ("head.",)
    first_conv_keys = ("patch_embed.stem.0.weight",)
    size_multiple = 16
    embed_dim: int = 768
    num_heads: int = 12
    mlp_ratio: float = 4.0
    stem_widths: tuple[int, int] = (64, 512)  # first conv width, cap of the doubling widths

    def create(self, image_size: int, options: dict[str, Any]) -> nn.Module:
        convs = int(options["stem_convs"])
        return VisionTransformer(
            img_size=image_size,
            patch_size=2**convs,
            in_chans=1,
            num_classes=0,
            embed_dim=self.embed_dim,
            depth=int(options["depth"]),
            num_heads=self.num_heads,
            mlp_ratio=self.mlp_ratio,
            embed_layer=partial(ConvStem, channels=convstem_channels(convs, *self.stem_widths)),
        )


class VitB16ConvStem(_ConvStemSpec):
    name = "vit_b16_convstem"
    option_model = ConvStemOptions


class VitConvStemTiny(_ConvStemSpec):
    name = "vit_convstem_tiny"
    size_multiple = 8
    profile_size = 64
    option_model = ConvStemOptions.with_defaults("ConvStemTinyOptions", stem_convs=3, depth=3)
    embed_dim = 96
    num_heads = 3
    mlp_ratio = 2.0
    stem_widths = (24, 96)
