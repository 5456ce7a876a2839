"""The ResNets' stem pooling computed channels-last on the CPU (a speed-up) changes no number: outputs,
gradients and the weights after training steps are bitwise those of ``nn.MaxPool2d``."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from chexbench.backbones.resnet import CpuChannelsLastMaxPool2d
from chexbench.spec.registry import BACKBONES


def test_pooling_output_and_gradient_are_bitwise_those_of_max_pool_with_ties():
    torch.manual_seed(0)
    # after a ReLU and rounding, most windows hold ties (zeros, equal values): the index picked must agree
    x = torch.relu(torch.randn(4, 8, 17, 16)).round(decimals=1)
    fast, plain = CpuChannelsLastMaxPool2d(3, 2, 1), nn.MaxPool2d(3, 2, 1)
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yb = fast(a * 1.0), plain(b * 1.0)  # (* 1.0: a non-leaf input, as in the stem)
    assert torch.equal(ya, yb) and ya.is_contiguous()
    g = torch.randn_like(ya)
    (ga,), (gb,) = torch.autograd.grad(ya, a, g), torch.autograd.grad(yb, b, g)
    assert torch.equal(ga, gb)


def test_the_gradient_reaches_the_layer_below_in_nchw_layout():
    seen = {}
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    h = x * 2.0
    y = CpuChannelsLastMaxPool2d(3, 2, 1)(h)
    # a hook registered after the pooling's own sees what the layer below receives
    h.register_hook(lambda grad: seen.update(contiguous=grad.is_contiguous()))
    y.sum().backward()
    assert seen["contiguous"]


def test_a_channels_last_input_keeps_its_layout():
    x = torch.randn(2, 4, 8, 8).contiguous(memory_format=torch.channels_last)
    y = CpuChannelsLastMaxPool2d(3, 2, 1)(x)
    assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
    assert torch.equal(y, nn.MaxPool2d(3, 2, 1)(x))


def test_resnet_tiny_trains_to_the_same_weights_as_with_plain_max_pooling():
    torch.manual_seed(0)
    fast = BACKBONES.get("resnet_tiny").build(64)
    assert isinstance(fast.model.maxpool, CpuChannelsLastMaxPool2d)
    plain = copy.deepcopy(fast)
    plain.model.maxpool = nn.MaxPool2d(3, 2, 1)
    assert fast.state_dict().keys() == plain.state_dict().keys()
    x, y = torch.rand(8, 1, 64, 64), torch.randint(0, 2, (8, fast.num_features)).float()
    for model in (fast, plain):
        torch.manual_seed(1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for _ in range(3):
            opt.zero_grad()
            F.binary_cross_entropy_with_logits(model(x), y).backward()
            opt.step()
    for (name, p), q in zip(fast.state_dict().items(), plain.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


def test_resnet50_stem_uses_it_and_its_checkpoint_keys_are_unchanged():
    model = BACKBONES.get("resnet50").build(64).model
    assert isinstance(model.maxpool, CpuChannelsLastMaxPool2d)
    assert not any("maxpool" in key for key in model.state_dict())
