"""Strategy ``moco_convstem``: MoCo-v2 on a ViT with a convolutional stem, with the ViT recipe.

The objective is MoCo-v2's (momentum key encoder, key queue, MLP head, InfoNCE at τ = 0.2;
see :mod:`chexbench.strategies.mocov2`), on ``vit_b16_convstem`` (Xiao et al. 2021). The
optimization follows MoCo-v3 (Chen, Xie & He 2021, "An Empirical Study of Training
Self-Supervised Vision Transformers"): AdamW (lr 1.5e-4 at batch 256, weight decay 0.1,
none on biases and norms), linear warmup then cosine decay, and the momentum rising from
0.99 to 1 on a cosine schedule. MoCo-v3 found ViT training unstable — loss spikes that
start in the patch projection — and stabilized it by freezing a random patch projection;
Xiao et al. showed a convolutional stem removes that instability while staying trainable,
which is why the stem here is trained. The stem has BatchNorm, so the shuffle-BN emulation
of MoCo-v2 (``bn_splits``) applies to it. Valid only for backbones with a conv stem.
"""

from __future__ import annotations

from typing import Any

from chexbench.registry import BACKBONES, STRATEGIES
from chexbench.strategies.mocov2 import MOCO_OPTIONS, MoCoV2


class MoCoConvStem(MoCoV2):
    name = "moco_convstem"
    description = "MoCo-v2 on a ConvStem ViT (Xiao et al. 2021) with MoCo-v3's AdamW + warmup + cosine momentum"
    options: dict[str, Any] = {
        **MOCO_OPTIONS,
        "pretrain_optimizer": "adamw",
        "pretrain_lr": 1.5e-4,
        "pretrain_weight_decay": 0.1,
        "pretrain_warmup_epochs": 10.0,
        "momentum": 0.99,
        "cosine_momentum": True,
    }

    def invalid_reason(self, cell) -> str | None:
        spec = BACKBONES.get(cell.backbone)
        if not getattr(spec, "conv_stem", False):
            with_stem = ", ".join(n for n in BACKBONES.names() if getattr(BACKBONES.get(n), "conv_stem", False))
            return f"moco_convstem needs a ViT with a convolutional stem ({with_stem}); got {cell.backbone}"
        return None


STRATEGIES.add("moco_convstem", MoCoConvStem(), MoCoConvStem.description)
