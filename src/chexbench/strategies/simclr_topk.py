"""Strategy ``simclr_topk``: SimCLR whose view embedding is the score-weighted top-K of the
ViT's patch tokens (see :mod:`chexbench.strategies.topk` for the pooling and for how the
patch scorer is transferred). Valid only for ViT backbones."""

from __future__ import annotations

from chexbench.strategies.simclr import SIMCLR_OPTIONS, SimCLR
from chexbench.strategies.topk import TopKOptions, TopKPretrainMixin


class SimCLRTopKOptions(TopKOptions, SIMCLR_OPTIONS):  # type: ignore[misc,valid-type]
    """SimCLR's options, then the top-K pooling's."""


class SimCLRTopK(TopKPretrainMixin, SimCLR):
    name = "simclr_topk"
    option_model = SimCLRTopKOptions
