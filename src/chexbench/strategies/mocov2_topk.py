"""Strategy ``mocov2_topk``: MoCo-v2 whose query and key embeddings are the score-weighted
top-K of the ViT's patch tokens; the key encoder's scorer is the momentum copy of the
query's (see :mod:`chexbench.strategies.topk`). Valid only for ViT backbones."""

from __future__ import annotations

from chexbench.strategies.mocov2 import MoCoOptions, MoCoV2
from chexbench.strategies.topk import TopKOptions, TopKPretrainMixin


class MoCoV2TopKOptions(TopKOptions, MoCoOptions):
    """MoCo-v2's options, then the top-K pooling's."""


class MoCoV2TopK(TopKPretrainMixin, MoCoV2):
    name = "mocov2_topk"
    option_model = MoCoV2TopKOptions
