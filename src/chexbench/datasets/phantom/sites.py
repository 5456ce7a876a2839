"""Acquisition sites: systematic differences between the three phantom 'hospitals'.

A site fixes the detector response (window and gamma of the intensity curve), quantum
noise, blur (effective resolution), field of view, image aspect, burned-in markers and
the view mix. None of these depends on a patient's findings, so a model can only learn the
labels from the anatomy — but pretraining on one site and transferring to another is a
real domain shift.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from chexbench.datasets.phantom.fields import F32, coordinate_grid, gaussian_blur, smooth_noise, tube


@dataclass(frozen=True)
class Site:
    name: str
    window: tuple[float, float]  # brightness mapped to black / white
    gamma: float  # >1 darkens mid-tones (harder contrast)
    noise: float  # quantum noise std at full brightness (fraction of range)
    blur: float  # Gaussian blur sigma as a fraction of the image width (resolution)
    zoom: float  # >1: tighter field of view (anatomy fills more of the frame)
    aspect: tuple[float, float]  # height / width range; each image draws one
    marker: str  # burned-in laterality marker letter, "" for none
    marker_corner: str  # "tl" | "tr"
    text_band: bool  # burned-in annotation text along the top
    heel: float  # anode heel effect: brightness gradient across the image
    pose_jitter: float


SITES: dict[str, Site] = {
    # CheXpert: portable AP-heavy inpatient films, JPEG, soft contrast, visible noise
    "chexpert": Site(
        "chexpert",
        window=(0.0, 0.88),
        gamma=1.10,
        noise=0.035,
        blur=0.0030,
        zoom=1.06,
        aspect=(1.0, 1.25),
        marker="R",
        marker_corner="tl",
        text_band=True,
        heel=0.06,
        pose_jitter=1.5,
    ),
    # NIH: PA-heavy, wide field of view (shoulders in frame), bright, low noise, PNG
    "nih": Site(
        "nih",
        window=(0.0, 0.85),
        gamma=0.95,
        noise=0.015,
        blur=0.0020,
        zoom=0.90,
        aspect=(1.0, 1.0),
        marker="L",
        marker_corner="tr",
        text_band=False,
        heel=0.0,
        pose_jitter=0.8,
    ),
    # Indiana: outpatient PA films, hard contrast, blurrier (downsampled) PNGs
    "indiana": Site(
        "indiana",
        window=(0.04, 0.90),
        gamma=1.35,
        noise=0.022,
        blur=0.0045,
        zoom=0.98,
        aspect=(0.92, 1.08),
        marker="",
        marker_corner="tr",
        text_band=True,
        heel=-0.04,
        pose_jitter=1.0,
    ),
}

# strokes of the marker letters in a unit box (x right, y down)
_LETTERS: dict[str, list[list[tuple[float, float]]]] = {
    "R": [[(0, 1), (0, 0), (0.7, 0), (0.8, 0.25), (0.7, 0.5), (0, 0.5)], [(0.3, 0.5), (0.85, 1)]],
    "L": [[(0, 0), (0, 1), (0.8, 1)]],
}


def image_shape(site: Site, size: int, rng: np.random.Generator) -> tuple[int, int]:
    """(height, width) of one written image: width ``size``, height from the site's aspect range."""
    aspect = rng.uniform(*site.aspect) if site.aspect[0] != site.aspect[1] else site.aspect[0]
    return int(round(size * aspect)), size


def detector(site: Site, brightness: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness (H, W) in [0, 1] → uint8 image as this site's detector writes it."""
    h, w = brightness.shape
    lo, hi = site.window
    img = np.clip((brightness - lo) / (hi - lo), 0, 1) ** site.gamma
    img = gaussian_blur(img, site.blur * w)
    if site.heel:
        x, _ = coordinate_grid(h, w)
        img = img * (1 + site.heel * x)
    img = img + site.noise * np.sqrt(np.clip(img, 0.02, 1)) * rng.standard_normal((h, w)).astype(F32)
    img = img + 0.01 * smooth_noise(rng, h, w, 3)
    _burn_in(site, img, rng)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def _burn_in(site: Site, img: np.ndarray, rng: np.random.Generator) -> None:
    """Laterality marker letter and annotation text, drawn white in place."""
    overlay = _burn_in_overlay(site.name, *img.shape, int(rng.integers(BURN_IN_VARIANTS)))
    np.maximum(img, overlay, out=img)


BURN_IN_VARIANTS = 4


@lru_cache(maxsize=256)
def _burn_in_overlay(site_name: str, h: int, w: int, variant: int) -> np.ndarray:
    site = SITES[site_name]
    rng = np.random.default_rng([SITE_SALT, variant])
    x, y = coordinate_grid(h, w)
    out = np.zeros((h, w), F32)
    if site.marker:
        box = 0.08
        x0 = -0.92 if site.marker_corner == "tl" else 0.92 - box
        y0 = -h / w + 0.08 + rng.uniform(0, 0.03)
        for stroke in _LETTERS[site.marker]:
            pts = np.array([(x0 + px * box, y0 + py * box) for px, py in stroke], F32)
            np.maximum(out, 0.95 * tube(x, y, pts, 0.008, 1.0 / w), out=out)
    if site.text_band:
        # "text": short bright dashes in one line near the top
        y0 = -h / w + 0.05
        x0 = 0.15 if site.marker_corner == "tl" else -0.9
        for k in range(int(rng.integers(4, 9))):
            seg = np.array([[x0 + 0.07 * k, y0], [x0 + 0.07 * k + 0.045, y0]], F32)
            np.maximum(out, 0.85 * tube(x, y, seg, 0.01, 1.0 / w), out=out)
    out.flags.writeable = False
    return out


SITE_SALT = 20_240_917
