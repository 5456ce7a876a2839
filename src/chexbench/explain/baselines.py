"""Baselines for the pointing game that never look at the test image's lesion.

A heatmap "points at the lesion" only if it beats maps that cannot know where *this* lesion is:

- **area-random** (:func:`chexbench.explain.localization.random_hit_probability`): a map whose maximum
  is a uniformly random pixel; its hit probability is the fraction of the image the boxes cover.
- **label prior**: per label, one fixed map fitted on the boxes of the cell's **training** split — the
  count, at every pixel, of training images whose boxes of that label contain it (within the tolerance).
  Its maximum is the point that hits the most training boxes; it is scored on the test pairs like any
  map (tied maxima count as the fraction of them that hit). Normalised, the strict count map is the
  mean box mask of the training images, which orders pixels for the deletion-curve baseline. A label
  without a training box has no prior: its pairs score the area-random expectation.
- **shuffled maps**: each test pair's own heatmap scored against the boxes of *another* test image
  with the same label (a random cyclic derangement within each label, fixed seed). It keeps whatever
  the map knows about where the label usually is and nothing about where this image's lesion is.

The strongest baseline is the one with the highest rate on the same pairs; a claim is stated against it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from chexbench.explain.maxima import maximum_points

Box = tuple[float, float, float, float]  # (x0, y0, x1, y1) in pixels of the cell's image
BASELINES = ("random", "label_prior", "shuffled")


def _inside(y: float, x: float, boxes: Iterable[Box], tolerance: float) -> bool:
    for x0, y0, x1, y1 in boxes:
        dx, dy = max(x0 - x, 0.0, x - x1), max(y0 - y, 0.0, y - y1)
        if dx * dx + dy * dy <= tolerance * tolerance:
            return True
    return False


def points_score(points: Sequence[Sequence[float]], boxes: Iterable[Box], tolerance: float = 0.0) -> float:
    """The pointing score of a map given its maxima (y, x) — the fraction of them within ``tolerance``
    of a box; 0 for no maximum (a flat map)."""
    boxes = list(boxes)
    if len(points) == 0:
        return 0.0
    return float(np.mean([_inside(float(y), float(x), boxes, tolerance) for y, x in points]))


def tolerance_mask(boxes: list[Box], height: int, width: int, tolerance: float = 0.0) -> np.ndarray:
    """Boolean (H, W): pixels whose centre lies within ``tolerance`` px (Euclidean) of any box."""
    yy, xx = np.mgrid[0:height, 0:width] + 0.5
    mask = np.zeros((height, width), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        dx = np.maximum(np.maximum(x0 - xx, 0.0), xx - x1)
        dy = np.maximum(np.maximum(y0 - yy, 0.0), yy - y1)
        mask |= dx * dx + dy * dy <= tolerance * tolerance
    return mask


def prior_map(
    train_boxes: Iterable[list[Box]], height: int, width: int, tolerance: float = 0.0
) -> np.ndarray:
    """Label-prior map (H, W): at each pixel centre, the number of training images (one list of boxes of
    the label per image) with a box within ``tolerance`` of it. Its maximum hits the most training images."""
    count = np.zeros((height, width), dtype=np.float64)
    for boxes in train_boxes:
        if boxes:
            count += tolerance_mask(list(boxes), height, width, tolerance)
    return count


def fit_label_priors(
    train: dict[str, list[tuple[str, Box]]], labels: Iterable[str], height: int, width: int, tolerance: float
) -> dict[str, dict[str, Any]]:
    """Per label, from the training split's boxes only (image_id → [(label, box)]): the strict (0 px) and
    tolerant prior maps, their maxima and how many training images and boxes they were fitted on."""
    out: dict[str, dict[str, Any]] = {}
    for label in labels:
        per_image = [[b for lbl, b in items if lbl == label] for _, items in sorted(train.items())]
        per_image = [b for b in per_image if b]
        strict, tolerant = (
            prior_map(per_image, height, width, 0.0),
            prior_map(per_image, height, width, tolerance),
        )
        out[label] = {
            "train_images": len(per_image),
            "train_boxes": int(sum(len(b) for b in per_image)),
            "map": strict,
            "points": [list(p) for p in maximum_points(strict)] if per_image else [],
            "points_tolerant": [list(p) for p in maximum_points(tolerant)] if per_image else [],
            "hit_fraction": float(strict.max() / len(per_image)) if per_image else None,
        }
    return out


def shuffle_partners(labels: Sequence[str], seed: int) -> np.ndarray:
    """For each pair, the index of another pair with the same label (a random cyclic derangement within each
    label, so every pair's boxes are borrowed exactly once), or -1 when its label has a single pair."""
    labels = np.asarray(labels, dtype=str)
    partner = np.full(len(labels), -1, dtype=np.int64)
    rng = np.random.default_rng([int(seed), 2])
    for label in sorted(set(labels.tolist())):
        idx = np.flatnonzero(labels == label)
        if len(idx) < 2:
            continue
        order = idx[rng.permutation(len(idx))]
        partner[order] = np.roll(order, -1)
    return partner


def bootstrap_rates(
    values: dict[str, np.ndarray],
    clusters: np.ndarray,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    ratio_to: dict[str, str] | None = None,
) -> dict[str, list[float]]:
    """Percentile intervals of the mean of each column of ``values`` (name → (n,)), resampling ``clusters``
    (patients) with replacement — the same resamples for every column, as in
    :func:`chexbench.explain.localization.bootstrap_rate_interval` (same seed, same draws). ``ratio_to``
    {out_name: "num/den"} adds the interval of the ratio of two columns' means per resample."""
    _, inverse = np.unique(np.asarray(clusters).astype(str), return_inverse=True)
    c = int(inverse.max()) + 1
    count = np.bincount(inverse, minlength=c).astype(np.float64)
    w = (
        np.random.default_rng(seed).multinomial(c, np.full(c, 1.0 / c), size=resamples).astype(np.float64)
    )  # (R, C)
    n = w @ count
    means = {
        k: (w @ np.bincount(inverse, weights=np.asarray(v, dtype=np.float64), minlength=c)) / n
        for k, v in values.items()
    }
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    out = {k: [float(x) for x in np.percentile(m, q)] for k, m in means.items()}
    for name, spec in (ratio_to or {}).items():
        num, den = spec.split("/")
        with np.errstate(divide="ignore", invalid="ignore"):
            r = means[num] / means[den]
        r = r[np.isfinite(r)]
        out[name] = [float(x) for x in np.percentile(r, q)] if len(r) else [float("nan"), float("nan")]
    return out


def strongest(rates: dict[str, float]) -> str:
    """The baseline with the highest rate (ties: the first of :data:`BASELINES`)."""
    present = [b for b in BASELINES if rates.get(b) is not None]
    return max(present, key=lambda b: (rates[b], -BASELINES.index(b)))


def baseline_summary(
    hits: np.ndarray, base: dict[str, np.ndarray], clusters: np.ndarray, resamples: int, seed: int
) -> dict[str, Any]:
    """Rates and patient-level intervals of the three baselines on the same pairs as ``hits``, the strongest
    of them, and the map's ratio to it with its interval."""
    rates = {k: float(np.mean(v)) for k, v in base.items()}
    best = strongest(rates)
    ci = bootstrap_rates(
        {"hit": hits, **base}, clusters, resamples, seed=seed, ratio_to={"ratio": f"hit/{best}"}
    )
    rate = float(np.mean(hits))
    return {
        **{k: {"rate": rates[k], "ci": ci[k]} for k in base},
        "strongest": best,
        "strongest_rate": rates[best],
        "ratio_to_strongest": rate / rates[best] if rates[best] > 0 else None,
        "ratio_ci": ci["ratio"] if rates[best] > 0 else None,
    }


def baselines_text(loc: dict[str, Any]) -> str:
    """One sentence for a stored localization result: the label prior and shuffled maps with their intervals
    and
    the ratio to the strongest baseline; "" for a record written before the baselines existed."""
    base = loc.get("baselines")
    if not base:
        return ""
    words = {"random": "random", "label_prior": "label prior", "shuffled": "shuffled maps"}

    def rate(name: str) -> str:
        return "{} {:.3f} [{:.3f}, {:.3f}]".format(words[name], base[name]["rate"], *base[name]["ci"])

    ratio = base.get("ratio_to_strongest")
    text = f"{rate('label_prior')}, {rate('shuffled')}"
    if ratio is None:
        return text + f"; strongest baseline {words[base['strongest']]} (rate 0)"
    return text + "; ÷ strongest baseline ({}) {:.2f} [{:.2f}, {:.2f}]".format(
        words[base["strongest"]], ratio, *base["ratio_ci"]
    )
