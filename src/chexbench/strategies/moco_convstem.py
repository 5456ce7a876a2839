"""Strategy ``moco_convstem``: the study's name for MoCo-v2 on a ViT with a convolutional stem.

An alias of :mod:`chexbench.strategies.mocov2`, not another method: the same objective
(momentum key encoder, key queue, MLP head, InfoNCE at τ = 0.2), the same options, and the
same recipe that ``mocov2`` uses on any ViT — MoCo v3's (Chen, Xie & He 2021, "An Empirical
Study of Training Self-Supervised Vision Transformers"): AdamW (lr 1.5e-4 at batch 256,
weight decay 0.1, none on biases and norms), 40 warmup epochs then cosine decay, and the
momentum rising from 0.99 to 1 on a cosine. So ``mocov2`` on ``vit_b16`` and
``moco_convstem`` on ``vit_b16_convstem`` differ only in the stem (Xiao et al. 2021). A grid
sets its options under ``[strategy.mocov2]``; its pretraining runs are ``mocov2``'s (one run
serves both names), and when a grid holds both names on a conv-stem backbone the plan runs
the cell once, under this name. MoCo v3 stabilized ViT training by freezing a random patch
projection; the conv stem removes that instability while staying trainable (Xiao et al.),
so it is trained here. The stem has BatchNorm, so the shuffle-BN emulation of MoCo-v2
(``bn_splits``) applies to it. Valid only for backbones with a conv stem.
"""

from __future__ import annotations

from typing import ClassVar

from chexbench.spec.registry import BACKBONES
from chexbench.strategies.mocov2 import MoCoV2


class MoCoConvStem(MoCoV2):
    name = "moco_convstem"
    alias_of: ClassVar[str | None] = "mocov2"

    def invalid_reason(self, cell) -> str | None:
        spec = BACKBONES.get(cell.backbone)
        if not getattr(spec, "conv_stem", False):
            with_stem = ", ".join(
                n for n in BACKBONES.names() if getattr(BACKBONES.get(n), "conv_stem", False)
            )
            return f"moco_convstem needs a ViT with a convolutional stem ({with_stem}); got {cell.backbone}"
        return None
