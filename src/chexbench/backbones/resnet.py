"""ResNet-50 (He et al. 2016) through timm, one input channel; and a small CPU variant."""

from __future__ import annotations

from typing import Any

import timm
from timm.models.resnet import BasicBlock, ResNet
from torch import nn

from chexbench.backbones.base import BackboneSpec
from chexbench.spec.registry import BACKBONES


class _ResNetSpec(BackboneSpec):
    kind = "cnn"
    head_prefixes = ("fc.",)
    first_conv_keys = ("conv1.weight",)
    size_multiple = 32


@BACKBONES.register
class ResNet50(_ResNetSpec):
    name = "resnet50"
    description = "ResNet-50 (He et al. 2016), timm resnet50, 1 input channel, 2048-d features"
    imagenet_weights = "resnet50.a1_in1k"

    def create(self, image_size: int, options: dict[str, Any]) -> nn.Module:
        return timm.create_model("resnet50", pretrained=False, in_chans=1, num_classes=0)


@BACKBONES.register
class ResNetTiny(_ResNetSpec):
    name = "resnet_tiny"
    description = "ResNet-10 (BasicBlock ×[1,1,1,1], widths 32–256): the ResNet family at CPU size, for tests and smoke runs"
    profile_size = 64

    def create(self, image_size: int, options: dict[str, Any]) -> nn.Module:
        return ResNet(BasicBlock, layers=(1, 1, 1, 1), channels=(32, 64, 128, 256), stem_width=32, in_chans=1, num_classes=0)
