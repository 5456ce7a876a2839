"""Strategy ``mocov2_topk``: MoCo-v2 whose query and key embeddings are the score-weighted
top-K of the ViT's patch tokens; the key encoder's scorer is the momentum copy of the
query's (see :mod:`chexbench.strategies.topk`). Valid only for ViT backbones."""

from __future__ import annotations

from typing import Any

from chexbench.strategies.mocov2 import MoCoV2
from chexbench.strategies.topk import TOPK_OPTIONS, TopKPretrainMixin


class MoCoV2TopK(TopKPretrainMixin, MoCoV2):
    name = "mocov2_topk"
    options: dict[str, Any] = {**MoCoV2.options, **TOPK_OPTIONS}
