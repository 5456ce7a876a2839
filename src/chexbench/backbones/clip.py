"""CLIP image towers (Radford et al. 2021): ViT-B/16 and ViT-B/32 through timm, one input channel.

timm's ``vit_base_patch{16,32}_clip_224`` is OpenAI CLIP's and open_clip's visual
transformer: a pre-norm (``ln_pre``) before the blocks, no patch-embedding bias, the class
token after ``ln_post`` as the pooled feature (the projection into the joint image-text space
is not part of the backbone). OpenAI's towers (and CheXzero, trained from them) use QuickGELU,
open_clip's own ``ViT-B-16`` GELU: the activation is not visible in a checkpoint's keys, so it
is the option ``act``, defaulting to the model each backbone is for (``vit_b16_clip``:
open_clip ViT-B-16, GELU; ``vit_b32_clip``: OpenAI ViT-B/32, QuickGELU).
"""

from __future__ import annotations

from typing import Any, Literal

import timm
from pydantic import Field
from torch import nn

from chexbench.backbones.vit import VitSpec
from chexbench.spec.options import Options


class ClipOptions(Options):
    act: Literal["gelu", "quick_gelu"] = Field(
        "gelu",
        description=(
            "the MLP activation: gelu (open_clip's own models) or quick_gelu (OpenAI CLIP and models trained"
            " from it)"
        ),
    )


class _ClipSpec(VitSpec):
    timm_arch = ""

    def create(self, image_size: int, options: dict[str, Any]) -> nn.Module:
        return timm.create_model(
            self.timm_arch,
            pretrained=False,
            img_size=image_size,
            in_chans=1,
            num_classes=0,
            act_layer=str(options["act"]),
        )


class VitB16Clip(_ClipSpec):
    name = "vit_b16_clip"
    timm_arch = "vit_base_patch16_clip_224"
    size_multiple = 16
    option_model = ClipOptions


class VitB32Clip(_ClipSpec):
    name = "vit_b32_clip"
    timm_arch = "vit_base_patch32_clip_224"
    size_multiple = 32
    option_model = ClipOptions.with_defaults("ClipB32Options", act="quick_gelu")
