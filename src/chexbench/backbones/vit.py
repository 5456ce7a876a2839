"""ViT-B/16 (Dosovitskiy et al. 2021) through timm, one input channel; and a small CPU variant."""

from __future__ import annotations

from typing import Any

import timm
import torch
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from chexbench.backbones.base import BackboneSpec


class VitSpec(BackboneSpec):
    """Shared ViT behaviour: patch-embed conv adapted to 1 channel, position embeddings resampled."""

    kind = "vit"
    head_prefixes = ("head.",)
    first_conv_keys = ("patch_embed.proj.weight",)
    size_multiple = 16

    def adapt_checkpoint(
        self, state: dict[str, torch.Tensor], model: nn.Module
    ) -> tuple[dict[str, torch.Tensor], list[str]]:
        state, notes = super().adapt_checkpoint(state, model)
        target = model.state_dict()
        key = "pos_embed"
        if key in state and key in target and state[key].shape != target[key].shape:
            grid = tuple(model.patch_embed.grid_size)
            old = state[key].shape
            prefix = (
                0 if getattr(model, "no_embed_class", False) else model.num_prefix_tokens
            )  # reg4 DINOv2: patches only
            state[key] = resample_abs_pos_embed(state[key], new_size=list(grid), num_prefix_tokens=prefix)
            notes.append(
                f"pos_embed resampled {tuple(old)}→{tuple(state[key].shape)} (bicubic) for a"
                f" {grid[0]}×{grid[1]} token grid"
            )
        return state, notes


class VitB16(VitSpec):
    name = "vit_b16"
    imagenet_weights = "vit_base_patch16_224.augreg2_in21k_ft_in1k"

    def create(self, image_size: int, options: dict[str, Any]) -> nn.Module:
        return timm.create_model(
            "vit_base_patch16_224", pretrained=False, img_size=image_size, in_chans=1, num_classes=0
        )


class VitTiny(VitSpec):
    name = "vit_tiny"
    size_multiple = 8
    profile_size = 64

    def create(self, image_size: int, options: dict[str, Any]) -> nn.Module:
        return VisionTransformer(
            img_size=image_size,
            patch_size=8,
            in_chans=1,
            num_classes=0,
            embed_dim=96,
            depth=4,
            num_heads=3,
            mlp_ratio=2.0,
        )
