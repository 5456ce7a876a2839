"""MoCo's two mechanisms besides the loss: a FIFO queue of keys and a momentum encoder.

He et al. 2020, "Momentum Contrast for Unsupervised Visual Representation Learning":
the key encoder is an exponential moving average of the query encoder (eq. 2), and keys of
past batches are kept in a fixed-size queue as negatives (sec. 3.2). The cosine momentum
schedule is the one MoCo-v3 takes from BYOL (Grill et al. 2020).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class KeyQueue(nn.Module):
    """A ring buffer of ``size`` keys of dimension ``dim``: ``keys`` (K, D), oldest overwritten first.

    Starts with random unit vectors (as MoCo does), so early negatives are noise rather
    than zeros. Both the keys and the write pointer are buffers, so the queue is part of
    the module's state dict and survives checkpoint/resume exactly.
    """

    def __init__(self, size: int, dim: int, generator: torch.Generator | None = None):
        super().__init__()
        if size < 1:
            raise ValueError(f"queue size must be ≥ 1, got {size}")
        self.register_buffer("keys", F.normalize(torch.randn(size, dim, generator=generator), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("total_enqueued", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return self.keys.shape[0]

    @torch.no_grad()
    def enqueue(self, new_keys: torch.Tensor) -> None:
        """Write ``new_keys`` (B, D) at the pointer, wrapping around; if B > K only the last K stay."""
        b, k = new_keys.shape[0], self.size
        if b == 0:
            return
        new_keys = new_keys.detach().to(self.keys.dtype)
        kept = new_keys[-k:]
        # pointer arithmetic on the device: reading the pointer (int(ptr)) would make the host wait for it
        slots = (self.ptr + max(b - k, 0) + torch.arange(kept.shape[0], device=self.keys.device)) % k
        self.keys[slots] = kept
        self.ptr.copy_((self.ptr + b) % k)
        self.total_enqueued += b


@torch.no_grad()
def momentum_update(online: nn.Module, target: nn.Module, momentum: float) -> None:
    """``θ_target ← m·θ_target + (1 − m)·θ_online`` for every parameter (MoCo eq. 2).

    Buffers (BatchNorm running statistics) are not averaged: the key encoder runs in train
    mode and keeps its own statistics, as in the reference implementation.
    """
    online_params, target_params = list(online.parameters()), list(target.parameters())
    if len(online_params) != len(target_params):
        raise ValueError(
            f"momentum update: {len(online_params)} online parameters but {len(target_params)} target ones"
        )
    # one multi-tensor kernel per op instead of two small kernels per parameter (ResNet-50: 161 tensors)
    torch._foreach_mul_(target_params, momentum)
    torch._foreach_add_(target_params, [p.detach() for p in online_params], alpha=1.0 - momentum)


def cosine_momentum(progress: float, base: float) -> float:
    """BYOL / MoCo-v3 schedule: ``m`` rises from ``base`` (progress 0) to 1 (progress 1) along a half
    cosine."""
    progress = min(max(progress, 0.0), 1.0)
    return 1.0 - (1.0 - base) * (math.cos(math.pi * progress) + 1.0) / 2.0
