"""Lesions placed as real ones are: side, centre and size drawn from the real NIH boxes of the finding
(:mod:`chexbench.datasets.phantom.box_stats`), kept inside the anatomy the lesion belongs to.

A centre is drawn from the side's Gaussian of real box centres (normalized image coordinates, so the
phantom's own pose and anatomy decide where that is in the scene) and kept only when it falls inside
that side's lung field; after :data:`TRIES` misses the lung pixel nearest the side's mean centre is
used. Sizes are drawn from the log-normal of real box sizes and returned in scene units.
"""

from __future__ import annotations

import numpy as np

from chexbench.datasets.phantom.anatomy import Scene
from chexbench.datasets.phantom.box_stats import stats_for

TRIES = 40


def is_frontal(scene: Scene) -> bool:
    """A lateral scene exposes one field as both lungs; real NIH boxes are frontal."""
    return scene.lungs[0] is not scene.lungs[1]


def draw_side(name: str, rng: np.random.Generator) -> int:
    """Side 0 (image left = patient right) or 1, with the real boxes' proportion for ``name`` (0.5 without
    one)."""
    stats = stats_for(name)
    side0 = 0.5 if stats is None else float(stats["side0"])
    return 0 if rng.random() < side0 else 1


def _scene_units_per_pixel(scene: Scene) -> float:
    h, w = scene.x.shape
    return float(
        np.hypot(scene.x[h // 2, -1] - scene.x[h // 2, 0], scene.y[h // 2, -1] - scene.y[h // 2, 0])
    ) / max(w - 1, 1)


def draw_centre(name: str, scene: Scene, side: int, rng: np.random.Generator) -> tuple[float, float] | None:
    """A lesion centre (scene x, y) inside ``side``'s lung field, drawn from the real box centres of ``name``
    on that
    side; None when there is no fit (or no lung pixel), and the painter places it its own way."""
    stats = stats_for(name)
    fit = None if stats is None else stats["centre"].get(str(side))
    if fit is None or not is_frontal(scene):
        return None
    lung = scene.lungs[side] > 0.5
    h, w = lung.shape
    mean, cov = np.asarray(fit["mean"], dtype=np.float64), np.asarray(fit["cov"], dtype=np.float64)
    for _ in range(TRIES):
        nx, ny = rng.multivariate_normal(mean, cov)
        r, c = int(ny * h), int(nx * w)
        if 0 <= r < h and 0 <= c < w and lung[r, c]:
            return float(scene.x[r, c]), float(scene.y[r, c])
    rows, cols = np.nonzero(lung)
    if rows.size == 0:
        return None
    k = int(np.argmin((rows + 0.5 - mean[1] * h) ** 2 + (cols + 0.5 - mean[0] * w) ** 2))
    return float(scene.x[rows[k], cols[k]]), float(scene.y[rows[k], cols[k]])


def draw_size(name: str, scene: Scene, rng: np.random.Generator) -> tuple[float, float] | None:
    """Half width and half height (scene units) of a real box of ``name``, drawn from its log-normal; None
    without a fit."""
    stats = stats_for(name)
    if stats is None:
        return None
    log_w, log_h = rng.multivariate_normal(stats["log_size"]["mean"], stats["log_size"]["cov"])
    h, w = scene.x.shape
    unit = _scene_units_per_pixel(scene)
    return float(np.exp(log_w) * w * unit / 2), float(np.exp(log_h) * h * unit / 2)
