"""ResNet-50 (He et al. 2016) through timm, one input channel; and a small CPU variant."""

from __future__ import annotations

from typing import Any

import timm
import torch
from timm.models.resnet import BasicBlock, ResNet
from torch import nn

from chexbench.backbones.base import BackboneSpec


class CpuChannelsLastMaxPool2d(nn.MaxPool2d):
    """The stem's max pooling, computed on the CPU in channels-last memory layout.

    PyTorch's CPU max pooling of a contiguous (NCHW) tensor is a scalar loop: on one thread it was 46 % of
    resnet_tiny's forward pass at 64 px, and ten times slower than the same pooling in channels-last layout.
    The maximum of a window is exact and both layouts pick the same index, so the output and the gradient
    are bitwise those of :class:`torch.nn.MaxPool2d` (tested); both are handed back in NCHW layout, so the
    layers around it compute exactly as before. On other devices, and under ``torch.compile``, it is
    :class:`torch.nn.MaxPool2d`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.dim() != 4 or torch.compiler.is_compiling() or not x.is_contiguous():
            return super().forward(x)  # (a channels-last input, as under a channels-last fast path, stays so)
        if x.requires_grad:  # the gradient leaves the pooling channels-last: give it back as NCHW
            x.register_hook(lambda grad: grad.contiguous())
        return super().forward(x.contiguous(memory_format=torch.channels_last)).contiguous()


class _ResNetSpec(BackboneSpec):
    kind = "cnn"
    head_prefixes = ("fc.",)
    first_conv_keys = ("conv1.weight",)
    size_multiple = 32


def with_fast_cpu_pooling(model: nn.Module) -> nn.Module:
    """``model`` with its stem's ``nn.MaxPool2d`` replaced by :class:`CpuChannelsLastMaxPool2d` (stateless:
    checkpoint keys are unchanged)."""
    pool = model.maxpool
    if type(pool) is nn.MaxPool2d:
        model.maxpool = CpuChannelsLastMaxPool2d(
            pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.return_indices, pool.ceil_mode
        )
    return model


class ResNet50(_ResNetSpec):
    name = "resnet50"
    imagenet_weights = "resnet50.a1_in1k"

    def create(self, image_size: int, options: dict[str, Any]) -> nn.Module:
        return with_fast_cpu_pooling(
            timm.create_model("resnet50", pretrained=False, in_chans=1, num_classes=0)
        )


class ResNetTiny(_ResNetSpec):
    name = "resnet_tiny"
    profile_size = 64

    def create(self, image_size: int, options: dict[str, Any]) -> nn.Module:
        return with_fast_cpu_pooling(
            ResNet(
                BasicBlock,
                layers=(1, 1, 1, 1),
                channels=(32, 64, 128, 256),
                stem_width=32,
                in_chans=1,
                num_classes=0,
            )
        )
