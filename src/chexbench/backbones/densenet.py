"""DenseNet-121 (Huang et al. 2017) through timm, one input channel: torchxrayvision's architecture.

torchxrayvision's DenseNet-121 zoo (Cohen et al. 2022) is torchvision's DenseNet-121 with one
input channel and an 18-way pathology classifier; its ``features.*`` names are timm's
``densenet121`` names key for key, and its pooled features (ReLU after ``norm5``, global
average) are timm's pooled features. The zoo's input is a 224 px image scaled to
[-1024, 1024]: the ``torchxrayvision`` checkpoint format records that normalization
(:mod:`chexbench.backbones.layouts`).
"""

from __future__ import annotations

from typing import Any

import timm
from torch import nn

from chexbench.backbones.base import BackboneSpec


class DenseNet121(BackboneSpec):
    name = "densenet121"
    kind = "cnn"
    imagenet_weights = "densenet121.tv_in1k"
    head_prefixes = ("classifier.",)
    first_conv_keys = ("features.conv0.weight",)
    size_multiple = 32

    def create(self, image_size: int, options: dict[str, Any]) -> nn.Module:
        return timm.create_model("densenet121", pretrained=False, in_chans=1, num_classes=0)
