"""Heads: projection heads of contrastive pretraining (discarded before transfer) and the
standardized linear head a linear probe fits."""

from __future__ import annotations

import torch
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


@torch.no_grad()
def copy_probe_head(
    module: nn.Module, mean: torch.Tensor, std: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
) -> None:
    """Load a fitted linear probe into ``module``'s ``feature_mean``/``feature_std`` buffers and its
    ``head`` (``nn.Linear``): mean, std (1, D); weight (D, L); bias (1, L) or (L,)."""
    dev = module.head.weight.device
    module.feature_mean.copy_(mean.reshape(1, -1).to(dev))
    module.feature_std.copy_(std.reshape(1, -1).to(dev))
    module.head.weight.copy_(weight.T.to(dev))
    module.head.bias.copy_(bias.reshape(-1).to(dev))
