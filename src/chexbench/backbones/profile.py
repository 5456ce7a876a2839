"""Size and compute of a registered backbone: parameters (millions) and GFLOPs at an image size."""

from __future__ import annotations

import functools
import json
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from chexbench.spec.registry import BACKBONES


@functools.lru_cache(maxsize=64)
def _profile(name: str, image_size: int, options_json: str) -> tuple[float, float]:
    with torch.random.fork_rng():
        backbone = BACKBONES.get(name).build(image_size, json.loads(options_json))
    backbone.eval()
    params = sum(p.numel() for p in backbone.parameters())
    counter = FlopCounterMode(display=False)
    # the math attention kernel decomposes into matmuls the counter sees (the fused CPU kernel is not counted)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        backbone(torch.zeros(1, 1, image_size, image_size))
    return params / 1e6, counter.get_total_flops() / 2 / 1e9


def profile_backbone(
    name: str, image_size: int, options: dict[str, Any] | None = None
) -> tuple[float, float]:
    """``(params_millions, gflops)`` of backbone ``name`` on one (1, 1, S, S) image.

    GFLOPs follow the vision-paper convention of multiply-accumulates (ViT-B/16 at 224 px:
    17.6, Dosovitskiy et al. 2021; ResNet-50: 4.1): torch's FLOP counter total halved.
    Counted by :class:`torch.utils.flop_counter.FlopCounterMode` (matmuls, attention and
    convolutions; norms, activations and softmax are not counted). Cached per (name, size, options).
    """
    return _profile(name, int(image_size), json.dumps(options or {}, sort_keys=True))
