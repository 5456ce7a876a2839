"""Vectorized 2-D field primitives the phantom is drawn with (numpy only, no pixel loops).

Every shape is a *soft* mask in [0, 1] over a coordinate grid ``(x, y)`` of shape ``(H, W)``
in normalized units (``x`` in [-1, 1] across the width, ``y`` in the same units downwards),
so the anatomy is resolution independent and edges are anti-aliased at any size.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

F32 = np.float32


def soft_step(signed_distance: np.ndarray, width: float) -> np.ndarray:
    """0 → 1 as a linear ramp from -``width`` to +``width`` (positive inside); input shape."""
    t = signed_distance * F32(0.5 / max(width, 1e-6)) + F32(0.5)
    np.maximum(t, 0.0, out=t)
    np.minimum(t, 1.0, out=t)
    return t.astype(F32, copy=False)


def affine_window(
    x: np.ndarray, y: np.ndarray, x0: float, x1: float, y0: float, y1: float
) -> tuple[slice, slice] | None:
    """Rows and columns of an affine grid (x, y) that can hold points with x0<=x<=x1 and y0<=y<=y1.

    For an affine grid the pixels with x in range form, in every row, one run of columns that
    moves monotonically with the row, so the first and last rows bound them (and likewise the
    first and last columns bound the rows). Cheap: four 1-D scans instead of the whole grid.
    """
    cols = np.flatnonzero(((x[0] >= x0) & (x[0] <= x1)) | ((x[-1] >= x0) & (x[-1] <= x1)))
    rows = np.flatnonzero(((y[:, 0] >= y0) & (y[:, 0] <= y1)) | ((y[:, -1] >= y0) & (y[:, -1] <= y1)))
    if cols.size == 0 or rows.size == 0:
        return None
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def windowed(x: np.ndarray, y: np.ndarray, cx: float, cy: float, radius: float, fn) -> np.ndarray:
    """``fn(x_win, y_win)`` evaluated only in the window within ``radius`` of (cx, cy); zeros elsewhere."""
    out = np.zeros(x.shape, dtype=F32)
    win = affine_window(x, y, cx - radius, cx + radius, cy - radius, cy + radius)
    if win is not None:
        out[win] = fn(x[win], y[win])
    return out


def ellipse(
    x: np.ndarray,
    y: np.ndarray,
    cx: float,
    cy: float,
    a: float,
    b: float,
    edge: float,
    angle: float = 0.0,
    power: float = 2.0,
) -> np.ndarray:
    """Soft (super-)ellipse mask centred at (cx, cy) with semi-axes (a, b), rotated by ``angle`` rad.

    ``x``, ``y`` must be an affine coordinate grid (as every grid of the phantom is).
    """
    return windowed(
        x,
        y,
        cx,
        cy,
        float(np.hypot(a, b)) + 2 * edge,
        lambda xw, yw: _ellipse(xw, yw, cx, cy, a, b, edge, angle, power),
    )


def _ellipse(
    x: np.ndarray,
    y: np.ndarray,
    cx: float,
    cy: float,
    a: float,
    b: float,
    edge: float,
    angle: float,
    power: float,
) -> np.ndarray:
    dx, dy = x - cx, y - cy
    if angle:
        c, s = np.cos(angle), np.sin(angle)
        dx, dy = c * dx + s * dy, -s * dx + c * dy
    if power == 2.0:
        r = np.sqrt((dx / a) ** 2 + (dy / b) ** 2)
    else:
        r = (np.abs(dx / a) ** power + np.abs(dy / b) ** power) ** (1.0 / power)
    return soft_step((1.0 - r) * min(a, b), edge)


def gaussian_blob(x: np.ndarray, y: np.ndarray, cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
    """exp(-r²/2) bump (cut at 4 sigma), shape (H, W)."""
    return windowed(
        x,
        y,
        cx,
        cy,
        4 * max(sx, sy),
        lambda xw, yw: np.exp(-0.5 * (((xw - cx) / sx) ** 2 + ((yw - cy) / sy) ** 2)).astype(F32, copy=False),
    )


def polyline_distance(x: np.ndarray, y: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Distance of every grid point to a polyline ``points`` (K, 2); shape (H, W)."""
    best = np.full(x.shape, np.inf, dtype=F32)
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:], strict=True):
        vx, vy = x1 - x0, y1 - y0
        t = np.clip(((x - x0) * vx + (y - y0) * vy) / max(vx * vx + vy * vy, 1e-12), 0.0, 1.0)
        d = np.hypot(x - x0 - t * vx, y - y0 - t * vy)
        np.minimum(best, d, out=best)
    return best


def tube(x: np.ndarray, y: np.ndarray, points: np.ndarray, radius: float, edge: float) -> np.ndarray:
    """Soft mask of a curve of given radius through ``points`` (K, 2); computed only near the curve."""
    pad = radius + 2 * edge
    (x0, y0), (x1, y1) = points.min(axis=0) - pad, points.max(axis=0) + pad
    out = np.zeros(x.shape, dtype=F32)
    win = affine_window(x, y, x0, x1, y0, y1)
    if win is not None:
        out[win] = soft_step(radius - polyline_distance(x[win], y[win], points), edge)
    return out


@lru_cache(maxsize=64)
def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Smoothstep-interpolation weights (n_out, n_in) from a coarse lattice of n_in nodes."""
    pos = (np.arange(n_out) + 0.5) / n_out * (n_in - 1)
    lo = np.clip(np.floor(pos).astype(int), 0, n_in - 2)
    t = pos - lo
    t = t * t * (3 - 2 * t)  # smoothstep: no visible lattice creases
    m = np.zeros((n_out, n_in), dtype=F32)
    m[np.arange(n_out), lo] = 1 - t
    m[np.arange(n_out), lo + 1] += t
    return m


def smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Band-limited noise, zero mean, unit-ish std, ~``cells`` blobs across the width; (H, W)."""
    ch = max(2, int(round(cells * height / width)) + 1)
    cw = cells + 1
    lattice = rng.standard_normal((ch, cw)).astype(F32)
    return _interp_matrix(height, ch) @ lattice @ _interp_matrix(width, cw).T


@lru_cache(maxsize=64)
def _gauss_weights(sigma_px: float) -> np.ndarray:
    r = max(1, int(np.ceil(3 * sigma_px)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma_px) ** 2)
    return (k / k.sum()).astype(F32)


def _shift_sum(img: np.ndarray, weights: np.ndarray, axis: int) -> np.ndarray:
    """Convolution along ``axis`` with a short kernel, edges replicated."""
    r = len(weights) // 2
    pad = [(0, 0), (0, 0)]
    pad[axis] = (r, r)
    padded = np.pad(img, pad, mode="edge")
    n = img.shape[axis]
    out = np.zeros_like(img)
    for k, wk in enumerate(weights):
        out += wk * (padded[k : k + n] if axis == 0 else padded[:, k : k + n])
    return out


def _box_blur(img: np.ndarray, r: int, axis: int) -> np.ndarray:
    """Mean over a window of 2r+1 along ``axis`` via cumulative sums (cost independent of r)."""
    pad = [(0, 0), (0, 0)]
    pad[axis] = (r + 1, r)
    c = np.cumsum(np.pad(img, pad, mode="edge"), axis=axis, dtype=F32)
    n = img.shape[axis]
    hi = c[2 * r + 1 : 2 * r + 1 + n] if axis == 0 else c[:, 2 * r + 1 : 2 * r + 1 + n]
    lo = c[:n] if axis == 0 else c[:, :n]
    return (hi - lo) / (2 * r + 1)


def gaussian_blur(img: np.ndarray, sigma_px: float) -> np.ndarray:
    """Separable Gaussian blur, edges replicated; wide kernels as three box blurs; (H, W)."""
    if sigma_px < 0.3:
        return img
    img = img.astype(F32, copy=False)
    if sigma_px <= 3:
        w = _gauss_weights(round(float(sigma_px), 2))
        return _shift_sum(_shift_sum(img, w, 0), w, 1)
    # three passes of a box of width 2r+1 have variance 3 * ((2r+1)^2 - 1) / 12 = sigma^2
    r = max(1, int(round((np.sqrt(4 * sigma_px**2 + 1) - 1) / 2)))
    for axis in (0, 1):
        for _ in range(3):
            img = _box_blur(img, r, axis)
    return img


@lru_cache(maxsize=64)
def coordinate_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates: x in (-1, 1) across the width; y in the same units, 0 at mid-height.

    Read-only (H, W) arrays, cached per shape.
    """
    xs = (np.arange(width, dtype=F32) + 0.5) / width * 2 - 1
    ys = ((np.arange(height, dtype=F32) + 0.5) - height / 2) / width * 2
    x = np.ascontiguousarray(np.broadcast_to(xs[None, :], (height, width)))
    y = np.ascontiguousarray(np.broadcast_to(ys[:, None], (height, width)))
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def mask_box(mask: np.ndarray, threshold: float = 0.5) -> tuple[int, int, int, int] | None:
    """Bounding box (x, y, w, h) in pixels of ``mask > threshold``, or None when empty."""
    on = mask > threshold
    rows, cols = np.flatnonzero(on.any(axis=1)), np.flatnonzero(on.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)
