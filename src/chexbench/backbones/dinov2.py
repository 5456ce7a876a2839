"""DINOv2 ViT-B/14 (Oquab et al. 2024), with and without register tokens (Darcet et al. 2024), through timm.

The architectures of DINOv2 itself, RAD-DINO (no registers) and CXformer (registers): patch 14, width 768,
depth 12,
LayerScale, class token pooled after the final norm. Hugging Face ``transformers`` checkpoints
(``Dinov2Model``, ``Dinov2WithRegistersModel``) are mapped onto timm's names by the
``hf_transformers`` format (:mod:`chexbench.backbones.layouts`). timm's register variant adds
no position embedding to the class and register tokens (``no_embed_class``): the class
position of a checkpoint is folded into its class token on load, which is exact.
"""

from __future__ import annotations

from typing import Any

import timm
from torch import nn

from chexbench.backbones.vit import VitSpec


class _Dinov2Spec(VitSpec):
    size_multiple = 14
    timm_arch = ""

    def create(self, image_size: int, options: dict[str, Any]) -> nn.Module:
        return timm.create_model(
            self.timm_arch, pretrained=False, img_size=image_size, in_chans=1, num_classes=0
        )


class VitB14Dinov2(_Dinov2Spec):
    name = "vit_b14_dinov2"
    timm_arch = "vit_base_patch14_dinov2"


class VitB14Reg4Dinov2(_Dinov2Spec):
    name = "vit_b14_reg4_dinov2"
    timm_arch = "vit_base_patch14_reg4_dinov2"
