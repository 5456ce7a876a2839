"""Radiograph augmentations: shapes, ranges, identities, reproducibility, laterality by default."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from chexbench.strategies.augment import (
    ViewAugment,
    adjust_intensity,
    gaussian_blur,
    light_augment,
    preview_pairs,
    random_resized_crop,
    view_pair,
)


def _batch(b: int = 6, s: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(b, 1, s, s, generator=g)


def test_full_crop_without_rotation_is_the_identity() -> None:
    x = _batch()
    y = random_resized_crop(x, scale=(1.0, 1.0), ratio=(1.0, 1.0), max_rotation_deg=0.0)
    torch.testing.assert_close(y, x, atol=1e-5, rtol=0)


def test_flip_probability_one_mirrors_and_zero_never_does() -> None:
    x = _batch()
    flipped = random_resized_crop(x, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=1.0)
    torch.testing.assert_close(flipped, x.flip(-1), atol=1e-5, rtol=0)
    assert ViewAugment().flip_p == 0.0  # laterality matters in CXR: no flip unless configured


def test_crop_zooms_in_on_a_known_pattern() -> None:
    # a left-to-right ramp: a crop of half the width spans half the intensity range
    ramp = torch.linspace(0, 1, 64).view(1, 1, 1, 64).expand(4, 1, 64, 64).contiguous()
    y = random_resized_crop(
        ramp, scale=(0.25, 0.25), ratio=(1.0, 1.0), generator=torch.Generator().manual_seed(1)
    )
    spans = y[:, 0, 32].amax(-1) - y[:, 0, 32].amin(-1)
    torch.testing.assert_close(spans, torch.full((4,), 0.5), atol=0.03, rtol=0)


def test_intensity_stays_in_range_and_zero_amplitude_is_identity() -> None:
    x = _batch()
    torch.testing.assert_close(adjust_intensity(x, 0.0, 0.0, 0.0), x)
    y = adjust_intensity(x, 0.5, 0.5, 0.5, torch.Generator().manual_seed(0))
    assert y.min() >= 0 and y.max() <= 1 and not torch.allclose(y, x)


def test_blur_matches_a_reference_convolution_and_zero_sigma_is_identity() -> None:
    x = _batch(2, 24)
    sigma = torch.tensor([0.0, 1.5])
    y = gaussian_blur(x, sigma)
    torch.testing.assert_close(y[0], x[0])
    r = int(np.ceil(3 * 1.5))
    k1 = torch.exp(-0.5 * (torch.arange(-r, r + 1.0) / 1.5) ** 2)
    k2 = torch.outer(k1, k1) / k1.sum() ** 2
    ref = F.conv2d(F.pad(x[1:], (r, r, r, r), mode="replicate"), k2.view(1, 1, 2 * r + 1, 2 * r + 1))
    torch.testing.assert_close(y[1:], ref, atol=1e-5, rtol=0)
    assert y[1].std() < x[1].std()


def test_views_are_reproducible_distinct_and_normalized() -> None:
    x = _batch()
    a1, a2 = view_pair(x, ViewAugment(), torch.Generator().manual_seed(3))
    b1, b2 = view_pair(x, ViewAugment(), torch.Generator().manual_seed(3))
    assert torch.equal(a1, b1) and torch.equal(a2, b2)
    assert a1.shape == x.shape and not torch.allclose(a1, a2)
    assert a1.min() >= (0 - 0.5) / 0.25 - 1e-6 and a1.max() <= (1 - 0.5) / 0.25 + 1e-6


def test_light_augment_keeps_its_contract() -> None:
    x = _batch()
    y = light_augment(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and not torch.equal(x, y)


def test_preview_sheet_layout() -> None:
    images = (torch.rand(3, 32, 32) * 255).to(torch.uint8)
    sheet = preview_pairs(images, ViewAugment(), seed=0)
    assert sheet.dtype == torch.uint8 and sheet.shape == (3 * 32, 3 * 32 + 2)
    assert torch.equal(sheet[:32, :32], images[0])  # first column: the original
