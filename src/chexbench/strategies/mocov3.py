"""Strategy ``mocov3``: MoCo v3 (Chen, Xie & He 2021, "An Empirical Study of Training
Self-Supervised Vision Transformers", ICCV; Algorithm 1).

Unlike MoCo-v2 (:mod:`chexbench.strategies.mocov2`) there is no queue: the keys of the other
images *in the batch* are the negatives. A query encoder (backbone → projection MLP →
prediction MLP) and a momentum key encoder (backbone → projection MLP, an exponential moving
average of the query side, without predictor) embed two views ``x1``, ``x2``; the loss is
symmetric::

    loss = ctr(q1, k2) + ctr(q2, k1),   ctr(q, k) = 2τ · CE(q·kᵀ / τ, labels = diagonal)

with ``q``, ``k`` L2-normalized (:func:`mocov3_contrastive`). The key-encoder momentum rises from
``momentum`` (0.99) to 1 along a half cosine over the run (BYOL's schedule, as MoCo v3). The MLPs
are those of the code release: ``Linear(no bias) → BN → ReLU`` per hidden layer, the last
``Linear`` followed by a BN without affine parameters in the projector (none in the
predictor); 3 projector layers on a ViT, 2 on a ResNet; hidden width 4096, output 256.

BatchNorm (ResNet encoder, MLP heads) normalizes over the whole batch of one view, as
MoCo v3's SyncBN does over all GPUs: there is no queue, hence no key from an earlier batch
that batch statistics could leak into, and MoCo v3 uses no shuffle-BN. Under torchrun BN is
synchronized on CUDA and the keys of every rank are the negatives of every query.

Recipes per backbone family (:attr:`MoCoV3.recipes`), the paper's 300-epoch recipes: ViT:
AdamW lr 1.5e-4 × B/256, wd 0.1, 40 warmup epochs, τ = 0.2; ResNet-50: LARS lr 0.3 × B/256,
wd 1e-6, 10 warmup epochs, τ = 1.0; both momentum 0.99 → 1. Departure: the ViT's random patch
projection is not frozen (the stem is what the study compares).
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from chexbench.core.distributed import all_gather_keys, local_rows, rank_range
from chexbench.strategies.losses import in_fp32
from chexbench.strategies.momentum import cosine_momentum, momentum_update
from chexbench.strategies.pretrain import PretrainOptions, PretrainStrategy


class MoCoV3Options(
    PretrainOptions.with_defaults(
        "MoCoV3Base",
        pretrain_optimizer="adamw",
        pretrain_lr=1.5e-4,
        pretrain_weight_decay=0.1,
        proj_dim=256,
        proj_hidden_dim=4096,
    )
):
    """MoCo v3's options, over the common pretraining options (defaults: the ViT recipe's optimizer and
    heads)."""

    momentum: float = Field(
        0.99,
        ge=0,
        le=1,
        description=(
            "start value of the key encoder's EMA momentum; it rises to 1 on a half cosine over the run"
        ),
    )
    temperature: float = Field(
        0.2, gt=0, description="softmax temperature τ of the contrastive loss (the loss is scaled by 2τ)"
    )
    proj_layers: int = Field(
        3, ge=1, description="layers of the projection MLP (MoCo v3: 3 on a ViT, 2 on a ResNet)"
    )
    pred_hidden_dim: int = Field(
        4096, ge=1, description="hidden width of the prediction MLP (query side only)"
    )


#: MoCo v3 on a ViT (Chen, Xie & He 2021, sec. 4 and appendix; the ViT-B 300-epoch recipe)
MOCOV3_VIT_RECIPE: dict[str, Any] = {
    "pretrain_optimizer": "adamw",
    "pretrain_lr": 1.5e-4,  # × B/256
    "pretrain_weight_decay": 0.1,
    "pretrain_warmup_epochs": 40.0,  # of 300
    "temperature": 0.2,
    "momentum": 0.99,
    "proj_layers": 3,
}
#: MoCo v3 on a ResNet-50 (the same paper and code release, 300 epochs)
MOCOV3_RESNET_RECIPE: dict[str, Any] = {
    "pretrain_optimizer": "lars",
    "pretrain_lr": 0.3,  # × B/256
    "pretrain_weight_decay": 1e-6,
    "pretrain_warmup_epochs": 10.0,
    "temperature": 1.0,
    "momentum": 0.99,
    "proj_layers": 2,
}


def mlp(num_layers: int, in_dim: int, hidden_dim: int, out_dim: int, last_bn: bool) -> nn.Sequential:
    """MoCo v3's MLP ``(B, in_dim) → (B, out_dim)``: ``Linear(bias=False) → BN → ReLU`` per hidden
    layer; the last ``Linear(bias=False)`` followed by a BN without affine parameters when ``last_bn``."""
    layers: list[nn.Module] = []
    for i in range(num_layers):
        d_in = in_dim if i == 0 else hidden_dim
        d_out = out_dim if i == num_layers - 1 else hidden_dim
        layers.append(nn.Linear(d_in, d_out, bias=False))
        if i < num_layers - 1:
            layers += [nn.BatchNorm1d(d_out), nn.ReLU(inplace=True)]
        elif last_bn:
            layers.append(nn.BatchNorm1d(d_out, affine=False))
    return nn.Sequential(*layers)


@in_fp32
def mocov3_contrastive(q: torch.Tensor, k: torch.Tensor, temperature: float, offset: int = 0) -> torch.Tensor:
    """MoCo v3's ``ctr(q, k)``: ``2τ · mean_i −log softmax_j(q_i·k_j / τ)[offset + i]``.

    ``q`` (b, D) queries of this rank, ``k`` (B, D) the keys of all ranks (no gradient in MoCo
    v3; not detached here, so the function stays a plain loss); query ``i``'s positive is key
    ``offset + i`` (its own image's other view), every other key is a negative. Both are
    L2-normalized. The factor 2τ makes the gradient's scale independent of τ (paper, Alg. 1).
    """
    if q.dim() != 2 or k.dim() != 2 or q.shape[1] != k.shape[1] or k.shape[0] < offset + q.shape[0]:
        raise ValueError(
            f"mocov3_contrastive expects q (b, D) and k (B ≥ offset + b, D), got {tuple(q.shape)},"
            f" {tuple(k.shape)}, offset {offset}"
        )
    q = F.normalize(q.float(), dim=1)
    k = F.normalize(k.float(), dim=1)
    logits = q @ k.T / temperature  # (b, B)
    labels = torch.arange(q.shape[0], device=q.device) + offset
    return 2 * temperature * F.cross_entropy(logits, labels)


class MoCoV3Model(nn.Module):
    """Query side (encoder → projector → predictor), momentum key side (encoder → projector); ``loss(v1, v2,
    progress)``."""

    #: under DDP on CUDA, BatchNorm is synchronized across ranks (MoCo v3 uses SyncBN; no queue, no
    #: shuffle-BN)
    sync_bn = True

    def __init__(
        self,
        encoder: nn.Module,
        num_features: int,
        proj_layers: int,
        hidden_dim: int,
        pred_hidden_dim: int,
        dim: int,
        momentum: float,
        temperature: float,
    ):
        super().__init__()
        self.encoder = encoder
        self.projector = mlp(proj_layers, num_features, hidden_dim, dim, last_bn=True)
        self.predictor = mlp(2, dim, pred_hidden_dim, dim, last_bn=False)
        self.key_encoder = copy.deepcopy(encoder)
        self.key_projector = copy.deepcopy(self.projector)
        for p in [*self.key_encoder.parameters(), *self.key_projector.parameters()]:
            p.requires_grad_(False)
        self.base_momentum = momentum
        self.temperature = temperature

    def momentum_at(self, progress: float) -> float:
        return cosine_momentum(progress, self.base_momentum)

    def loss(
        self,
        v1: torch.Tensor,
        v2: torch.Tensor,
        progress: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        # v1, v2: the global batch (B, 1, H, W); under torchrun each rank keeps its slice (b = B / w)
        x1, x2 = local_rows(v1), local_rows(v2)
        q1 = self.predictor(self.projector(self.encoder(x1)))  # (b, dim)
        q2 = self.predictor(self.projector(self.encoder(x2)))
        with torch.no_grad():
            m = self.momentum_at(progress)
            momentum_update(self.encoder, self.key_encoder, m)
            momentum_update(self.projector, self.key_projector, m)
            k1 = all_gather_keys(
                self.key_projector(self.key_encoder(x1)).float()
            )  # (B, dim), every rank's keys
            k2 = all_gather_keys(self.key_projector(self.key_encoder(x2)).float())
        offset = rank_range(v1.shape[0])[0]  # this rank's first row in the gathered keys
        return mocov3_contrastive(q1, k2, self.temperature, offset) + mocov3_contrastive(
            q2, k1, self.temperature, offset
        )


class MoCoV3(PretrainStrategy):
    name = "mocov3"
    option_model = MoCoV3Options
    recipes: ClassVar[dict[str, dict[str, Any]]] = {"cnn": MOCOV3_RESNET_RECIPE, "vit": MOCOV3_VIT_RECIPE}

    def build_model(self, encoder, opts, pool_size, generator):
        model = MoCoV3Model(
            encoder,
            encoder.num_features,
            int(opts["proj_layers"]),
            int(opts["proj_hidden_dim"]),
            int(opts["pred_hidden_dim"]),
            int(opts["proj_dim"]),
            float(opts["momentum"]),
            float(opts["temperature"]),
        )
        return model, []
