"""Strategy ``byol``: BYOL (Grill et al. 2020, "Bootstrap Your Own Latent").

An online network (encoder → projector → predictor) regresses the projection that a target
network — the online encoder and projector's exponential moving average, momentum rising
from ``momentum`` to 1 on a cosine (sec. 3.2) — gives the *other* view; the loss is
symmetrized (:func:`~chexbench.strategies.losses.byol_loss`, ``2 − 2 cos``). No negatives:
the predictor and the slow target keep it from collapsing. Projector and predictor are
``Linear → BN → ReLU → Linear`` (4096 hidden, 256 out in the paper). Both views pass each
network as one batch. Departures: AdamW instead of LARS (as for SimCLR), and the radiograph
views of :mod:`chexbench.strategies.augment` instead of BYOL's colour augmentations.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import nn

from chexbench.core.distributed import local_rows
from chexbench.strategies.heads import ProjectionHead
from chexbench.strategies.losses import byol_loss
from chexbench.strategies.momentum import cosine_momentum, momentum_update
from chexbench.strategies.pretrain import PretrainOptions, PretrainStrategy


class BYOLOptions(PretrainOptions):
    """BYOL's options, over the common pretraining options."""

    momentum: float = Field(
        0.996, ge=0, le=1, description="target-network EMA momentum at the start; rises to 1 on a cosine"
    )
    pred_hidden_dim: int = Field(4096, ge=1, description="hidden width of the predictor")


#: the paper's head widths (4096 hidden, 256 out) as defaults
BYOL_OPTION_MODEL = BYOLOptions.with_defaults("BYOLOptions", proj_dim=256, proj_hidden_dim=4096)
#: BYOL on a ResNet (Grill et al. 2020, sec. 3.2 and appendix C): τ_base 0.996, wd 1.5e-6, 10 warmup
#: epochs; AdamW 1e-3 stands in for LARS (lr 0.2 × B/256), as for SimCLR
BYOL_RESNET_RECIPE: dict[str, Any] = {
    "pretrain_optimizer": "adamw",
    "pretrain_lr": 1e-3,
    "pretrain_weight_decay": 1.5e-6,
    "pretrain_warmup_epochs": 10.0,
    "momentum": 0.996,
}
#: on a ViT: the ViT recipe of MoCo v3 (Chen, Xie & He 2021), in whose framework BYOL on ViT was
#: compared: AdamW lr 1.5e-4 × B/256, wd 0.1, 40 warmup epochs; momentum 0.99 → 1
BYOL_VIT_RECIPE: dict[str, Any] = {
    "pretrain_optimizer": "adamw",
    "pretrain_lr": 1.5e-4,
    "pretrain_weight_decay": 0.1,
    "pretrain_warmup_epochs": 40.0,
    "momentum": 0.99,
}


class BYOLModel(nn.Module):
    """Online encoder + projector + predictor, EMA target encoder + projector; ``loss(v1, v2, progress)``."""

    def __init__(
        self,
        encoder: nn.Module,
        num_features: int,
        hidden_dim: int,
        proj_dim: int,
        pred_hidden_dim: int,
        momentum: float,
    ):
        super().__init__()
        self.encoder = encoder
        self.projector = ProjectionHead(num_features, hidden_dim, proj_dim, batch_norm=True)
        self.predictor = ProjectionHead(proj_dim, pred_hidden_dim, proj_dim, batch_norm=True)
        self.target_encoder = copy.deepcopy(encoder)
        self.target_projector = copy.deepcopy(self.projector)
        for p in [*self.target_encoder.parameters(), *self.target_projector.parameters()]:
            p.requires_grad_(False)
        self.base_momentum = momentum

    def loss(
        self,
        v1: torch.Tensor,
        v2: torch.Tensor,
        progress: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        v = torch.cat([local_rows(v1), local_rows(v2)])  # (2b, 1, H, W)
        p1, p2 = self.predictor(self.projector(self.encoder(v))).chunk(2)  # (b, proj_dim) each
        with torch.no_grad():
            m = cosine_momentum(progress, self.base_momentum)
            momentum_update(self.encoder, self.target_encoder, m)
            momentum_update(self.projector, self.target_projector, m)
            z1, z2 = self.target_projector(self.target_encoder(v)).chunk(2)
        return byol_loss(p1, p2, z1, z2)


class BYOL(PretrainStrategy):
    name = "byol"
    option_model = BYOL_OPTION_MODEL
    #: the meanings of its own options, from their field descriptions (declared once)
    recipes: ClassVar[dict[str, dict[str, Any]]] = {"cnn": BYOL_RESNET_RECIPE, "vit": BYOL_VIT_RECIPE}

    def build_model(self, encoder, opts, pool_size, generator):
        model = BYOLModel(
            encoder,
            encoder.num_features,
            int(opts["proj_hidden_dim"]),
            int(opts["proj_dim"]),
            int(opts["pred_hidden_dim"]),
            float(opts["momentum"]),
        )
        return model, []
