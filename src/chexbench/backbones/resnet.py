"""ResNet-50 (He et al. 2016) through timm, one input channel; and a small CPU variant."""

from __future__ import annotations

from typing import Any

import timm
from timm.models.resnet import BasicBlock, ResNet
from torch import nn

from chexbench.backbones.base import BackboneSpec


class _ResNetSpec(BackboneSpec):
    kind = "cnn"
    head_prefixes = ("fc.",)
    first_conv_keys = ("conv1.weight",)
    size_multiple = 32


class ResNet50(_ResNetSpec):
    name = "resnet50"
    imagenet_weights = "resnet50.a1_in1k"

    def create(self, image_size: int, options: dict[str, Any]) -> nn.Module:
        return timm.create_model("resnet50", pretrained=False, in_chans=1, num_classes=0)


class ResNetTiny(_ResNetSpec):
    name = "resnet_tiny"
    profile_size = 64

    def create(self, image_size: int, options: dict[str, Any]) -> nn.Module:
        return ResNet(
            BasicBlock,
            layers=(1, 1, 1, 1),
            channels=(32, 64, 128, 256),
            stem_width=32,
            in_chans=1,
            num_classes=0,
        )
