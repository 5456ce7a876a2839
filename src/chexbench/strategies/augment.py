"""Batched augmentations for one-channel radiographs (tensors on any device).

``light_augment`` is the fine-tuning augmentation: a mild random resized crop and a small
rotation as one affine warp per sample. No horizontal flip by default: laterality carries
meaning in chest radiographs (heart on the left, situs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
        return (lo + (hi - lo) * torch.rand(b, generator=generator)).to(dev, non_blocking=True)

    s = torch.sqrt(u(*scale))  # fraction of the side kept (area scale → side)
    theta = u(-max_rotation_deg, max_rotation_deg) * math.pi / 180
    tx, ty = u(-max_translate, max_translate), u(-max_translate, max_translate)
    flip = torch.where(torch.rand(b, generator=generator).to(dev, non_blocking=True) < flip_p, -1.0, 1.0)
    cos, sin = torch.cos(theta) * s, torch.sin(theta) * s
    mat = torch.stack(
        [torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1
    )  # (B, 2, 3), output → input sampling coordinates
    grid = F.affine_grid(mat.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def light_augment(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fine-tuning augmentation on a normalized batch (B, 1, H, W)."""
    return random_affine(x, generator=generator)


# -- contrastive views for radiographs ----------------------------------------------------
# Self-supervised pretraining needs stronger, CXR-appropriate augmentation than fine-tuning:
# MoCo-CXR (Sowrirajan et al. 2021) and Azizi et al. 2021 replace color jitter (meaningless
# on one channel) by intensity changes, keep crops moderate (a small crop may cut away the
# finding), and rotate only a little. Everything runs batched on the batch's device.


@dataclass(frozen=True)
class ViewAugment:
    """Parameters of one contrastive view; defaults are moderate CXR values.

    Geometry (one affine warp): random resized crop of area ``crop_scale`` and aspect
    ``crop_ratio`` (log-uniform), rotation ±``max_rotation_deg``, horizontal flip with
    probability ``flip_p`` (0 by default: laterality matters). Intensity on [0, 1]:
    brightness ±``brightness`` (additive), contrast ×(1 ± ``contrast``) about the image mean,
    gamma ``exp(±gamma)``; Gaussian blur with probability ``blur_p`` and σ in
    ``blur_sigma`` (pixels at 224 px, scaled with the image); Gaussian noise of standard
    deviation up to ``noise_std`` with probability ``noise_p``.
    """

    crop_scale: tuple[float, float] = (0.35, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    max_rotation_deg: float = 10.0
    flip_p: float = 0.0
    brightness: float = 0.2
    contrast: float = 0.2
    gamma: float = 0.25
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    noise_p: float = 0.5
    noise_std: float = 0.03


def _uniform(
    b: int, lo: float, hi: float, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """Drawn on the CPU generator (reproducible on any device), then sent without making the host
    wait for the device's queue (a blocking copy would, at each of a view's draws)."""
    return (lo + (hi - lo) * torch.rand(b, generator=generator)).to(device, non_blocking=True)


def random_resized_crop(
    x: torch.Tensor,
    scale: tuple[float, float] = (0.35, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    max_rotation_deg: float = 0.0,
    flip_p: float = 0.0,
    generator: torch.Generator | None = None,
    out_size: int | None = None,
) -> torch.Tensor:
    """Per-sample random resized crop (+ rotation, flip) of ``x`` (B, C, H, W), output the same size
    or ``out_size``² (DINO's small local crops).

    The crop covers a fraction ``scale`` of the area with aspect ``ratio`` and lies inside
    the image (Szegedy et al. 2015's crop, as in SimCLR), done as one bilinear affine warp.
    """
    b, dev = x.shape[0], x.device
    area = _uniform(b, *scale, generator, dev)
    log_r = _uniform(b, math.log(ratio[0]), math.log(ratio[1]), generator, dev)
    w = torch.sqrt(area * torch.exp(log_r)).clamp(max=1.0)  # crop width as a fraction of the image
    h = torch.sqrt(area / torch.exp(log_r)).clamp(max=1.0)
    cx = (1 - w) * _uniform(b, -1.0, 1.0, generator, dev)  # centre in [-1, 1] coordinates
    cy = (1 - h) * _uniform(b, -1.0, 1.0, generator, dev)
    theta = _uniform(b, -max_rotation_deg, max_rotation_deg, generator, dev) * math.pi / 180
    flip = torch.where(_uniform(b, 0.0, 1.0, generator, dev) < flip_p, -1.0, 1.0)
    cos, sin = torch.cos(theta), torch.sin(theta)
    mat = torch.stack(
        [torch.stack([w * cos * flip, -h * sin, cx], 1), torch.stack([w * sin * flip, h * cos, cy], 1)], 1
    )  # (B, 2, 3): output coordinates → input sampling coordinates
    shape = list(x.shape) if out_size is None else [*x.shape[:2], out_size, out_size]
    grid = F.affine_grid(mat.to(x.dtype), shape, align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def adjust_intensity(
    x: torch.Tensor,
    brightness: float,
    contrast: float,
    gamma: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random gamma, contrast and brightness per sample of ``x`` (B, 1, H, W) in [0, 1]; stays in [0, 1]."""
    b, dev = x.shape[0], x.device
    g = torch.exp(_uniform(b, -gamma, gamma, generator, dev)).view(b, 1, 1, 1)
    c = _uniform(b, 1 - contrast, 1 + contrast, generator, dev).view(b, 1, 1, 1)
    d = _uniform(b, -brightness, brightness, generator, dev).view(b, 1, 1, 1)
    x = x.clamp(0, 1).pow(g)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * c + mean + d).clamp(0, 1)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each sample of ``x`` (B, 1, H, W) with its own σ (B,) in pixels; σ ≤ 0 leaves it unchanged.
    ``sigma`` may be on the CPU (the kernel radius is then read without waiting for the device)."""
    b, c, h, w = x.shape
    radius = max(int(math.ceil(3 * float(sigma.max()))), 1)
    sigma = sigma.to(x.device, non_blocking=True)
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    s = sigma.to(x.dtype).clamp(min=1e-3).view(b, 1)
    kernel = torch.exp(-0.5 * (offsets.view(1, -1) / s) ** 2)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    identity = (offsets == 0).to(x.dtype).expand(b, -1)
    kernel = torch.where((sigma.view(b, 1) > 0), kernel, identity)  # (B, 2r+1)
    kernel = kernel.unsqueeze(1).expand(b, c, -1).reshape(b * c, -1)  # one kernel per (sample, channel)
    flat = x.reshape(1, b * c, h, w)
    flat = F.pad(flat, (radius, radius, radius, radius), mode="replicate")
    flat = F.conv2d(flat, kernel.view(b * c, 1, 1, -1), groups=b * c)
    flat = F.conv2d(flat, kernel.view(b * c, 1, -1, 1), groups=b * c)
    return flat.view(b, c, h, w)


def contrastive_view(
    x01: torch.Tensor,
    aug: ViewAugment,
    generator: torch.Generator | None = None,
    normalize: tuple[float, float] = (0.5, 0.25),
    out_size: int | None = None,
) -> torch.Tensor:
    """One augmented view of a batch ``x01`` (B, 1, H, W) in [0, 1] → normalized (B, 1, H, W),
    or (B, 1, ``out_size``, ``out_size``)."""
    b, dev = x01.shape[0], x01.device
    x = random_resized_crop(
        x01, aug.crop_scale, aug.crop_ratio, aug.max_rotation_deg, aug.flip_p, generator, out_size
    )
    x = adjust_intensity(x, aug.brightness, aug.contrast, aug.gamma, generator)
    if aug.blur_p > 0:
        scale = x.shape[-1] / 224
        cpu = torch.device("cpu")  # σ stays on the CPU: the blur reads its maximum for the kernel size
        sigma = _uniform(b, *aug.blur_sigma, generator, cpu) * scale
        sigma = torch.where(
            _uniform(b, 0.0, 1.0, generator, cpu) < aug.blur_p, sigma, torch.zeros_like(sigma)
        )
        x = gaussian_blur(x, sigma)
    if aug.noise_p > 0 and aug.noise_std > 0:
        std = _uniform(b, 0.0, aug.noise_std, generator, dev)
        std = torch.where(_uniform(b, 0.0, 1.0, generator, dev) < aug.noise_p, std, torch.zeros_like(std))
        # noise drawn on the device from a seed taken from the CPU generator: reproducible and cheap
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        noise = torch.randn(
            x.shape, generator=torch.Generator(device=dev).manual_seed(seed), device=dev, dtype=x.dtype
        )
        x = (x + noise * std.view(b, 1, 1, 1)).clamp(0, 1)
    mean, sd = normalize
    return (x - mean) / sd


def view_pair(
    x01: torch.Tensor,
    aug: ViewAugment,
    generator: torch.Generator | None = None,
    normalize: tuple[float, float] = (0.5, 0.25),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent views of the same batch (the positive pairs of contrastive learning)."""
    return contrastive_view(x01, aug, generator, normalize), contrastive_view(x01, aug, generator, normalize)


def preview_pairs(images: torch.Tensor, aug: ViewAugment, seed: int = 0) -> torch.Tensor:
    """A contact sheet: one row per image of uint8 ``images`` (N, S, S) — original | view 1 | view 2.

    Returns uint8 (N·S, 3·S + 2·gap) with views mapped back to [0, 255] (normalization undone).
    """
    gen = torch.Generator().manual_seed(seed)
    x01 = images.unsqueeze(1).float() / 255.0
    v1, v2 = view_pair(x01, aug, gen, normalize=(0.0, 1.0))
    n, s = images.shape[0], images.shape[-1]
    gap = max(s // 32, 1)
    sheet = torch.full((n * s, 3 * s + 2 * gap), 255, dtype=torch.uint8)
    for col, block in enumerate((x01, v1, v2)):
        tiles = (block.clamp(0, 1) * 255).round().to(torch.uint8)[:, 0]  # (N, S, S)
        sheet[:, col * (s + gap) : col * (s + gap) + s] = tiles.reshape(n * s, s)
    return sheet
