"""Batched augmentations for one-channel radiographs (tensors on any device).

``light_augment`` is the fine-tuning augmentation: a mild random resized crop and a small
rotation as one affine warp per sample. No horizontal flip by default: laterality carries
meaning in chest radiographs (heart on the left, situs).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_affine(
    x: torch.Tensor,
    scale: tuple[float, float] = (0.85, 1.0),
    max_rotation_deg: float = 5.0,
    max_translate: float = 0.05,
    flip_p: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One affine warp per sample of ``x`` (B, C, H, W): zoom-in crop, rotation, shift, flip."""
    b = x.shape[0]
    dev = x.device

    def u(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, generator=generator).to(dev)

    s = torch.sqrt(u(*scale))  # fraction of the side kept (area scale → side)
    theta = u(-max_rotation_deg, max_rotation_deg) * math.pi / 180
    tx, ty = u(-max_translate, max_translate), u(-max_translate, max_translate)
    flip = torch.where(torch.rand(b, generator=generator).to(dev) < flip_p, -1.0, 1.0)
    cos, sin = torch.cos(theta) * s, torch.sin(theta) * s
    mat = torch.stack(
        [torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1
    )  # (B, 2, 3), output → input sampling coordinates
    grid = F.affine_grid(mat.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def light_augment(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fine-tuning augmentation on a normalized batch (B, 1, H, W)."""
    return random_affine(x, generator=generator)
