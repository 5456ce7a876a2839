"""Strategy ``simclr_topk``: SimCLR whose view embedding is the score-weighted top-K of the
ViT's patch tokens (see :mod:`chexbench.strategies.topk` for the pooling and for how the
patch scorer is transferred). Valid only for ViT backbones."""

from __future__ import annotations

from typing import Any

from chexbench.strategies.simclr import SimCLR
from chexbench.strategies.topk import TOPK_OPTIONS, TopKPretrainMixin


class SimCLRTopK(TopKPretrainMixin, SimCLR):
    name = "simclr_topk"
    options: dict[str, Any] = {**SimCLR.options, **TOPK_OPTIONS}
