"""Strategy ``simclr``: SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive
Learning of Visual Representations").

Two augmented views of each image go through the encoder and an MLP projection head; the
NT-Xent loss pulls each pair together against the other ``2B − 2`` views of the batch.
Both views pass the encoder as one batch, so BatchNorm normalizes over all ``2B`` views
(the single-device equivalent of SimCLR's global BN; under torchrun negatives are gathered
from every rank and BN is synchronized on CUDA, see :mod:`chexbench.bench.distributed`). Departure from the paper: AdamW
instead of LARS (no LARS in torch; AdamW is the usual single-GPU substitute), and the
augmentations are the radiograph set of :mod:`chexbench.strategies.augment` (no color).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from chexbench.bench.distributed import local_rows, nt_xent_across_ranks
from chexbench.registry import STRATEGIES
from chexbench.strategies.heads import ProjectionHead
from chexbench.strategies.pretrain import COMMON_OPTIONS, PretrainStrategy


class SimCLRModel(nn.Module):
    """Encoder + projection head; ``loss(v1, v2)`` with views (B, 1, H, W)."""

    def __init__(self, encoder: nn.Module, num_features: int, hidden_dim: int, proj_dim: int, temperature: float):
        super().__init__()
        self.encoder = encoder
        self.projector = ProjectionHead(num_features, hidden_dim, proj_dim, batch_norm=True)
        self.temperature = temperature

    #: under DDP on CUDA, BatchNorm is synchronized across ranks (SimCLR's global BN)
    sync_bn = True

    def loss(self, v1: torch.Tensor, v2: torch.Tensor, progress: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
        v1, v2 = local_rows(v1), local_rows(v2)  # under torchrun: this rank's slice of the global batch
        z1, z2 = self.projector(self.encoder(torch.cat([v1, v2]))).chunk(2)  # (b, proj_dim) each
        return nt_xent_across_ranks(z1, z2, self.temperature)  # negatives from every rank


class SimCLR(PretrainStrategy):
    name = "simclr"
    description = "SimCLR (Chen et al. 2020): two views, NT-Xent over the batch, MLP head; pretrained on unlabeled CXRs"
    options: dict[str, Any] = {
        **COMMON_OPTIONS,
        "pretrain_optimizer": "adamw",
        "pretrain_lr": 1e-3,
        "pretrain_weight_decay": 1e-6,
        "pretrain_warmup_epochs": 10.0,
        "temperature": 0.1,
    }

    def build_model(self, encoder, opts, pool_size, generator):
        model = SimCLRModel(encoder, encoder.num_features, int(opts["proj_hidden_dim"]), int(opts["proj_dim"]), float(opts["temperature"]))
        return model, []


STRATEGIES.add("simclr", SimCLR(), SimCLR.description)
