"""Strategy ``simclr``: SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive
Learning of Visual Representations").

Two augmented views of each image go through the encoder and an MLP projection head; the
NT-Xent loss pulls each pair together against the other ``2B − 2`` views of the batch.
Both views pass the encoder as one batch, so BatchNorm normalizes over all ``2B`` views
(the single-device equivalent of SimCLR's global BN; under torchrun negatives are gathered
from every rank and BN is synchronized on CUDA, see :mod:`chexbench.core.distributed`). The optimization
recipe depends on the backbone family (:attr:`SimCLR.recipes`). Departure from the paper: AdamW
instead of LARS (no LARS in torch; AdamW is the usual single-GPU substitute), and the
augmentations are the radiograph set of :mod:`chexbench.strategies.augment` (no color).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from chexbench.core.distributed import local_rows
from chexbench.strategies.heads import ProjectionHead
from chexbench.strategies.losses import nt_xent_across_ranks
from chexbench.strategies.pretrain import PretrainOptions, PretrainStrategy

#: defaults: SimCLR's ResNet recipe (what ``options`` says when no backbone is known)
SIMCLR_OPTIONS = PretrainOptions.with_defaults(
    "SimCLROptions",
    temperature=0.1,
    pretrain_optimizer="adamw",
    pretrain_lr=1e-3,
    pretrain_weight_decay=1e-6,
    pretrain_warmup_epochs=10.0,
)
#: SimCLR on a ResNet (Chen et al. 2020): 10 warmup epochs, wd 1e-6; AdamW 1e-3 stands in for LARS
SIMCLR_RESNET_RECIPE: dict[str, Any] = {
    "pretrain_optimizer": "adamw",
    "pretrain_lr": 1e-3,
    "pretrain_weight_decay": 1e-6,
    "pretrain_warmup_epochs": 10.0,
}
#: on a ViT, the ViT optimization recipe of MoCo v3 (Chen, Xie & He 2021), the framework in which
#: they also trained SimCLR on ViTs: AdamW lr 1.5e-4 × B/256, wd 0.1, 40 warmup epochs
SIMCLR_VIT_RECIPE: dict[str, Any] = {
    "pretrain_optimizer": "adamw",
    "pretrain_lr": 1.5e-4,
    "pretrain_weight_decay": 0.1,
    "pretrain_warmup_epochs": 40.0,
}


class SimCLRModel(nn.Module):
    """Encoder + projection head; ``loss(v1, v2)`` with views (B, 1, H, W)."""

    def __init__(
        self, encoder: nn.Module, num_features: int, hidden_dim: int, proj_dim: int, temperature: float
    ):
        super().__init__()
        self.encoder = encoder
        self.projector = ProjectionHead(num_features, hidden_dim, proj_dim, batch_norm=True)
        self.temperature = temperature

    #: under DDP on CUDA, BatchNorm is synchronized across ranks (SimCLR's global BN)
    sync_bn = True

    def loss(
        self,
        v1: torch.Tensor,
        v2: torch.Tensor,
        progress: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        v1, v2 = local_rows(v1), local_rows(v2)  # under torchrun: this rank's slice of the global batch
        z1, z2 = self.projector(self.encoder(torch.cat([v1, v2]))).chunk(2)  # (b, proj_dim) each
        return nt_xent_across_ranks(z1, z2, self.temperature)  # negatives from every rank


class SimCLR(PretrainStrategy):
    name = "simclr"
    option_model = SIMCLR_OPTIONS
    recipes: ClassVar[dict[str, dict[str, Any]]] = {"cnn": SIMCLR_RESNET_RECIPE, "vit": SIMCLR_VIT_RECIPE}

    def build_model(self, encoder, opts, pool_size, generator):
        model = SimCLRModel(
            encoder,
            encoder.num_features,
            int(opts["proj_hidden_dim"]),
            int(opts["proj_dim"]),
            float(opts["temperature"]),
        )
        return model, []
