"""The batched (GPU-style) augmentations match a per-sample reference statistically.

The reference draws each sample's parameters with NumPy from the documented distributions
and applies them one image at a time with SciPy (bilinear warp with border padding via
``map_coordinates``, intensity maps, ``gaussian_filter``, Gaussian noise). Summary features
of many outputs of one structured image must have the same distributions (two-sample
Kolmogorov–Smirnov test) — so the batched code draws independent parameters per sample and
applies each to its own image.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage, stats

from chexbench.strategies.augment import ViewAugment, contrastive_view, random_affine

N, S = 400, 32


def _image() -> np.ndarray:
    """A [0, 1] image with structure in position and intensity: a ramp, a disk and a bar."""
    yy, xx = np.mgrid[0:S, 0:S] / S
    img = (
        0.2
        + 0.3 * xx
        + 0.4 * (((xx - 0.65) ** 2 + (yy - 0.35) ** 2) < 0.02)
        + 0.3 * (np.abs(yy - 0.75) < 0.05)
    )
    return np.clip(img, 0, 1)


def _warp(img: np.ndarray, mat: np.ndarray) -> np.ndarray:
    """Output pixel → normalized coords (align_corners=False) → ``mat`` → input pixel, bilinear, border."""
    c = (np.arange(S) * 2 + 1) / S - 1
    u, v = np.meshgrid(c, c)  # x (columns), y (rows) in [-1, 1]
    xs = mat[0, 0] * u + mat[0, 1] * v + mat[0, 2]
    ys = mat[1, 0] * u + mat[1, 1] * v + mat[1, 2]
    px, py = ((xs + 1) * S - 1) / 2, ((ys + 1) * S - 1) / 2
    return ndimage.map_coordinates(img, [py, px], order=1, mode="nearest")


def _reference_view(img: np.ndarray, aug: ViewAugment, rng: np.random.Generator) -> np.ndarray:
    area = rng.uniform(*aug.crop_scale)
    r = math.exp(rng.uniform(math.log(aug.crop_ratio[0]), math.log(aug.crop_ratio[1])))
    w, h = min(math.sqrt(area * r), 1.0), min(math.sqrt(area / r), 1.0)
    cx, cy = (1 - w) * rng.uniform(-1, 1), (1 - h) * rng.uniform(-1, 1)
    th = math.radians(rng.uniform(-aug.max_rotation_deg, aug.max_rotation_deg))
    f = -1.0 if rng.uniform() < aug.flip_p else 1.0
    x = _warp(
        img,
        np.array(
            [[w * math.cos(th) * f, -h * math.sin(th), cx], [w * math.sin(th) * f, h * math.cos(th), cy]]
        ),
    )
    g = math.exp(rng.uniform(-aug.gamma, aug.gamma))
    con = rng.uniform(1 - aug.contrast, 1 + aug.contrast)
    bri = rng.uniform(-aug.brightness, aug.brightness)
    x = np.clip(x, 0, 1) ** g
    x = np.clip((x - x.mean()) * con + x.mean() + bri, 0, 1)
    if rng.uniform() < aug.blur_p:
        x = ndimage.gaussian_filter(x, rng.uniform(*aug.blur_sigma) * S / 224, mode="nearest", truncate=3.0)
    if rng.uniform() < aug.noise_p:
        x = np.clip(x + rng.standard_normal(x.shape) * rng.uniform(0, aug.noise_std), 0, 1)
    return x


def _reference_affine(
    img: np.ndarray, rng: np.random.Generator, scale=(0.85, 1.0), rot=5.0, shift=0.05
) -> np.ndarray:
    s = math.sqrt(rng.uniform(*scale))
    th = math.radians(rng.uniform(-rot, rot))
    tx, ty = rng.uniform(-shift, shift), rng.uniform(-shift, shift)
    c, sn = math.cos(th) * s, math.sin(th) * s
    return _warp(img, np.array([[c, -sn, tx], [sn, c, ty]]))


def _features(x: np.ndarray) -> dict[str, np.ndarray]:
    """Per-sample summaries (N,) of images (N, S, S): intensity, spread, where the mass is, sharpness."""
    cols = np.arange(S)[None, None, :]
    rows = np.arange(S)[None, :, None]
    mass = x.sum(axis=(1, 2))
    return {
        "mean": x.mean(axis=(1, 2)),
        "std": x.std(axis=(1, 2)),
        "centroid_x": (x * cols).sum(axis=(1, 2)) / mass,
        "centroid_y": (x * rows).sum(axis=(1, 2)) / mass,
        "sharpness": np.abs(np.diff(x, axis=2)).mean(axis=(1, 2)),
    }


def _assert_same_distributions(batched: np.ndarray, reference: np.ndarray) -> None:
    fb, fr = _features(batched), _features(reference)
    for name in fb:
        p = stats.ks_2samp(fb[name], fr[name]).pvalue
        assert p > 1e-3, f"{name}: batched vs per-sample KS p = {p:.2e}"


@pytest.mark.parametrize(
    "aug",
    [
        ViewAugment(),
        ViewAugment(crop_scale=(0.2, 0.6), max_rotation_deg=30, flip_p=0.5, blur_p=1.0, noise_std=0.1),
    ],
)
def test_contrastive_view_matches_per_sample_reference(aug):
    img = _image()
    x01 = torch.as_tensor(img, dtype=torch.float32).expand(N, 1, S, S).contiguous()
    batched = contrastive_view(x01, aug, torch.Generator().manual_seed(0), normalize=(0.0, 1.0))[:, 0].numpy()
    rng = np.random.default_rng(1)
    reference = np.stack([_reference_view(img, aug, rng) for _ in range(N)])
    _assert_same_distributions(batched, reference)
    assert batched.std(axis=0).mean() > 0.01  # samples differ: parameters are drawn per sample


def test_light_affine_matches_per_sample_reference():
    img = _image()
    x = torch.as_tensor(img, dtype=torch.float32).expand(N, 1, S, S).contiguous()
    batched = random_affine(x, generator=torch.Generator().manual_seed(0))[:, 0].numpy()
    rng = np.random.default_rng(1)
    reference = np.stack([_reference_affine(img, rng) for _ in range(N)])
    _assert_same_distributions(batched, reference)


def test_the_reference_detects_a_wrong_distribution():
    """The check has power: a crop scale the batched code was not given is rejected."""
    img = _image()
    x01 = torch.as_tensor(img, dtype=torch.float32).expand(N, 1, S, S).contiguous()
    batched = contrastive_view(
        x01, ViewAugment(crop_scale=(0.2, 0.4)), torch.Generator().manual_seed(0), normalize=(0.0, 1.0)
    )[:, 0].numpy()
    rng = np.random.default_rng(1)
    reference = np.stack([_reference_view(img, ViewAugment(), rng) for _ in range(N)])
    with pytest.raises(AssertionError, match="KS p"):
        _assert_same_distributions(batched, reference)


def test_each_sample_gets_its_own_transform():
    """Batched on distinct images = each image augmented alone with the same parameters:
    the warp of sample i reads only image i (no mixing across the batch)."""
    rng = np.random.default_rng(2)
    imgs = torch.as_tensor(rng.random((6, 1, S, S)), dtype=torch.float32)
    out = random_affine(imgs, generator=torch.Generator().manual_seed(3))
    swapped = random_affine(imgs.flip(0), generator=torch.Generator().manual_seed(3))
    # same parameter stream, images in reverse order: sample i's parameters now act on image 5-i
    alone = [
        random_affine(imgs[i : i + 1].expand(6, 1, S, S), generator=torch.Generator().manual_seed(3))[i]
        for i in range(6)
    ]
    torch.testing.assert_close(out, torch.stack(alone))
    assert not torch.allclose(out, swapped.flip(0))
