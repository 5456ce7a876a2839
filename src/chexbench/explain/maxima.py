"""The maxima of a heatmap: where a map points, and when it points nowhere (a flat map).

Shared by the heatmap methods (:mod:`chexbench.explain.heatmaps`, which mark the maximum) and
the pointing game (:mod:`chexbench.explain.localization`, which scores it).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: a map whose range is at most this fraction of its magnitude is flat (no maximum to point with)
FLAT_RTOL = 1e-6


def is_flat(heat: np.ndarray, rtol: float = FLAT_RTOL) -> bool:
    """A map with no maximum to point with: not finite, constant, or a range within ``rtol`` of its magnitude
    (e.g. an all-zero Grad-CAM after its ReLU)."""
    heat = np.asarray(heat, dtype=np.float64)
    if heat.size == 0 or not np.isfinite(heat).all():
        return True
    hi, lo = float(heat.max()), float(heat.min())
    return hi - lo <= rtol * max(abs(hi), abs(lo)) or hi == lo


def maximum_points(heat: np.ndarray, rtol: float = FLAT_RTOL) -> list[tuple[float, float]]:
    """The maxima of heat (H, W) as (y, x) pixel-centre coordinates (+0.5), one per connected
    (8-neighbour) region of pixels within ``rtol`` of the maximum; [] for a flat map.

    A connected plateau (an upsampled coarse cell) is one maximum, placed at its centroid, or
    at its pixel nearest the centroid when the centroid falls outside it; separate tied regions
    stay separate points, so two far-apart maxima never average into a point neither of them is.
    """
    heat = np.asarray(heat, dtype=np.float64)
    if is_flat(heat, rtol):
        return []
    top = float(heat.max())
    plateau = heat >= top - rtol * max(abs(top), 1e-12)
    regions, n = ndimage.label(plateau, structure=np.ones((3, 3), dtype=bool))
    points = []
    for r in range(1, n + 1):
        ys, xs = np.nonzero(regions == r)
        cy, cx = ys.mean(), xs.mean()
        if regions[int(round(cy)), int(round(cx))] != r:  # non-convex region: its pixel nearest the centroid
            i = int(np.argmin((ys - cy) ** 2 + (xs - cx) ** 2))
            cy, cx = float(ys[i]), float(xs[i])
        points.append((float(cy) + 0.5, float(cx) + 0.5))
    return points


def maximum_point(heat: np.ndarray, rtol: float = FLAT_RTOL) -> tuple[float, float] | None:
    """The first of :func:`maximum_points` (for drawing a marker), None for a flat map."""
    points = maximum_points(heat, rtol)
    return points[0] if points else None
