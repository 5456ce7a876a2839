"""Projection heads used during contrastive pretraining (discarded before transfer)."""

from __future__ import annotations

from torch import nn


class ProjectionHead(nn.Sequential):
    """MLP ``(B, in_dim) → (B, out_dim)``: ``Linear → [BN] → ReLU → Linear``.

    SimCLR (Chen et al. 2020, sec. 2.1) showed a nonlinear head before the loss improves the
    representation below it; MoCo-v2 (Chen et al. 2020b) adopted the same 2-layer MLP.
    ``batch_norm=True`` follows the SimCLR code release; MoCo-v2's head has none.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, batch_norm: bool = False):
        layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim, bias=not batch_norm)]
        if batch_norm:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers += [nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim)]
        super().__init__(*layers)
