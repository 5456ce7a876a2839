"""Quantitative localization of a cell's heatmaps against ground-truth lesion boxes.

Boxes come from the dataset root: NIH's ``BBox_List_2017.csv`` (real NIH and the NIH-layout
phantom) or a phantom's ``phantom_boxes.csv`` sidecar (CheXpert and Indiana layouts). They
are given in pixels of the original image and mapped here onto the cell's images exactly as
the prepared cache made them (shorter side resized to S, centre crop; see datasets/decode.py).

The unit of evaluation is an (image, label) pair of the **test split** whose target is
positive and which has at least one box of that label. Metrics:

- **Pointing game** (Zhang et al. 2016, "Top-down Neural Attention by Excitation Backprop"):
  a hit when the heatmap's maximum pixel lies inside a box of the label (tolerance 0 px; a
  maximal plateau counts by its centroid).
  The **random-heatmap baseline** is its expectation for a heatmap of i.i.d. values, whose
  maximum is a uniformly random pixel: the fraction of the image the label's boxes cover.
- **Deletion AUC** (Petsiuk et al. 2018, RISE): pixels are set to the normalized mean (0) in
  order of decreasing heat, in ``steps`` equal fractions; the area under the curve of the
  label's predicted probability versus the deleted fraction (trapezoid on [0, 1]). Lower is
  better; the baseline deletes in a random order (fixed seed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn

from chexbench.core.errors import ConfigError, DataError
from chexbench.core.inputs import to_input
from chexbench.datasets.celldata import CellData
from chexbench.datasets.nih import load_nih_boxes
from chexbench.datasets.prepared import read_prepared_index
from chexbench.datasets.tables import read_csv_checked
from chexbench.explain.baselines import (
    baseline_summary,
    fit_label_priors,
    points_score,
    shuffle_partners,
    tolerance_mask,
)

# FLAT_RTOL and maximum_point: still imported from here by explain.heatmaps until it imports explain.maxima
from chexbench.explain.heatmaps import explain, explain_method
from chexbench.explain.maxima import is_flat, maximum_points

#: (x0, y0, x1, y1) in pixels of the cell's (S × S) image
Box = tuple[float, float, float, float]


def read_native_boxes(root: Path) -> pd.DataFrame | None:
    """Boxes of a dataset root as columns image_ref, label, x, y, w, h (original pixels), or None."""
    root = Path(root)
    if any((root / n).is_file() for n in ("BBox_List_2017.csv", "BBox_List_2017.csv.gz")):
        return load_nih_boxes(root).rename(columns={"image_id": "image_ref"})
    sidecar = root / "phantom_boxes.csv"
    if sidecar.is_file():
        df = read_csv_checked(sidecar, ("image", "label", "x", "y", "w", "h"))
        return df.rename(columns={"image": "image_ref"})[["image_ref", "label", "x", "y", "w", "h"]]
    return None


def map_box_to_cache(
    x: float, y: float, w: float, h: float, width: int, height: int, size: int
) -> Box | None:
    """A box in an original (width × height) image → the prepared (size × size) image
    (shorter side → size, centre crop), clipped; None when nothing of it is left."""
    scale = size / min(width, height)
    nw, nh = max(size, round(width * scale)), max(size, round(height * scale))
    sx, sy = nw / width, nh / height
    left, top = (nw - size) // 2, (nh - size) // 2
    x0, y0 = np.clip([x * sx - left, y * sy - top], 0, size)
    x1, y1 = np.clip([(x + w) * sx - left, (y + h) * sy - top], 0, size)
    if x1 - x0 < 1e-6 or y1 - y0 < 1e-6:
        return None
    return float(x0), float(y0), float(x1), float(y1)


def load_split_boxes(data: CellData, split: str = "test") -> dict[str, list[tuple[str, Box]]]:
    """Boxes of ``split``'s images in the cell's pixel coordinates: image_id → [(label, box)].

    Empty when the dataset root has no box file or the data has no manifest (synthetic data).
    """
    manifest = data.manifest or {}
    if not manifest.get("root") or not manifest.get("cache_dir"):
        return {}
    root = Path(manifest["root"])
    boxes = read_native_boxes(root)
    if boxes is None or boxes.empty:
        return {}
    size = int(manifest.get("image_size") or data.split(split).images.shape[-1])
    # the file the cache's manifest names: a re-indexed cache has index.<tag>.parquet, no index.parquet
    index = read_prepared_index(Path(manifest["cache_dir"]), columns=["image_id", "path"])
    wanted = set(np.asarray(data.split(split).image_ids, dtype=str).tolist())
    index = index[index["image_id"].astype(str).isin(wanted)]
    by_ref: dict[str, tuple[str, str]] = {}
    for image_id, path in zip(index["image_id"].astype(str), index["path"].astype(str), strict=True):
        for ref in (image_id, path, f"{root.name}/{path}"):
            by_ref.setdefault(ref, (image_id, path))
    out: dict[str, list[tuple[str, Box]]] = {}
    sizes: dict[str, tuple[int, int]] = {}
    for row in boxes.itertuples(index=False):
        hit = by_ref.get(str(row.image_ref).strip())
        if hit is None:
            continue
        image_id, path = hit
        if image_id not in sizes:
            sizes[image_id] = _image_size(root, path)
        box = map_box_to_cache(float(row.x), float(row.y), float(row.w), float(row.h), *sizes[image_id], size)
        if box is not None:
            out.setdefault(image_id, []).append((str(row.label), box))
    return out


def _image_size(root: Path, path: str) -> tuple[int, int]:
    """(width, height) of an original image, read from its header only."""
    file = Path(path) if Path(path).is_absolute() else root / path
    try:
        with Image.open(file) as im:
            return im.size
    except OSError as e:
        raise DataError(f"cannot read the size of {file} to place its lesion boxes: {e}") from None


def box_mask(boxes: list[Box], height: int, width: int) -> np.ndarray:
    """Boolean (H, W): pixels whose centre lies inside any box."""
    yy, xx = np.mgrid[0:height, 0:width] + 0.5
    mask = np.zeros((height, width), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        mask |= (xx >= x0) & (xx <= x1) & (yy >= y0) & (yy <= y1)
    return mask


#: Zhang et al. (2016) count a hit within 15 px of the box on images of about 224 px
STANDARD_TOLERANCE_PX_AT_224 = 15.0


def standard_tolerance(size: int) -> float:
    """The pointing game's usual tolerance (15 px at 224 px, Zhang et al. 2016) scaled to ``size`` px."""
    return STANDARD_TOLERANCE_PX_AT_224 * float(size) / 224.0


def resolve_tolerance(option: Any, size: int) -> float:
    """``pointing_tolerance`` option → pixels of the cell's image: ``"standard"`` (15 px × size/224) or a
    number ≥ 0."""
    if option == "standard":
        return standard_tolerance(size)
    if (
        isinstance(option, bool)
        or not isinstance(option, (int, float))
        or not np.isfinite(option)
        or option < 0
    ):
        raise ConfigError(f'pointing_tolerance must be "standard" or a number of pixels ≥ 0, got {option!r}')
    return float(option)


def pointing_score(heat: np.ndarray, boxes: list[Box], tolerance: float = 0.0) -> float:
    """Pointing-game score of one map (Zhang et al. 2016): 1 when its maximum lies within
    ``tolerance`` px of a box, else 0. A flat map scores 0 (a miss). With k separate tied maxima
    the score is the fraction of them that hit: the expected hit of breaking the tie at random."""
    return points_score(maximum_points(heat), boxes, tolerance)


def pointing_hit(heat: np.ndarray, boxes: list[Box], tolerance: float = 0.0) -> bool:
    """Does the map's (unique) maximum hit a box? False for a flat map or a tie that is not all hits."""
    return pointing_score(heat, boxes, tolerance) == 1.0


def random_hit_probability(boxes: list[Box], height: int, width: int, tolerance: float = 0.0) -> float:
    """Pointing-game hit probability of a heatmap whose maximum is a uniformly random pixel:
    the fraction of pixels within ``tolerance`` of the label's boxes."""
    return float(tolerance_mask(boxes, height, width, tolerance).mean())


def bootstrap_rate_interval(
    hits: np.ndarray,
    chance: np.ndarray,
    clusters: np.ndarray,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Percentile intervals of the mean hit rate, of the random baseline and of their difference,
    resampling ``clusters`` (patients, or images) with replacement: hits, chance, clusters (n,).
    Every pair of a drawn cluster comes with it, so pairs of one patient are not treated as independent."""
    hits, chance = np.asarray(hits, dtype=np.float64), np.asarray(chance, dtype=np.float64)
    _, inverse = np.unique(np.asarray(clusters).astype(str), return_inverse=True)
    c = int(inverse.max()) + 1
    count = np.bincount(inverse, minlength=c).astype(np.float64)  # (C,)
    sum_hit = np.bincount(inverse, weights=hits, minlength=c)
    sum_chance = np.bincount(inverse, weights=chance, minlength=c)
    w = (
        np.random.default_rng(seed).multinomial(c, np.full(c, 1.0 / c), size=resamples).astype(np.float64)
    )  # (R, C)
    n = w @ count  # (R,), > 0: every cluster holds at least one pair
    rate, base = (w @ sum_hit) / n, (w @ sum_chance) / n
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]

    def pct(v: np.ndarray) -> list[float]:
        return [float(x) for x in np.percentile(v, q)]

    return {"pointing_ci": pct(rate), "random_ci": pct(base), "difference_ci": pct(rate - base)}


@torch.no_grad()
def deletion_curve(
    model: nn.Module, x: torch.Tensor, order: np.ndarray, label: int, steps: int
) -> np.ndarray:
    """Probabilities (steps + 1,) of ``label`` as the pixels of x (1, 1, H, W) are set to 0
    in ``order`` (flat pixel indices), a fraction k/steps deleted at step k."""
    h, w = x.shape[-2:]
    n = h * w
    rank = np.empty(n, dtype=np.int64)
    rank[np.asarray(order)] = np.arange(n)
    cut = np.round(np.linspace(0, n, steps + 1)).astype(np.int64)  # (steps + 1,)
    keep = torch.as_tensor(rank[None, :] >= cut[:, None]).view(steps + 1, 1, h, w).to(x.device)
    probs = torch.sigmoid(model(x.expand(steps + 1, -1, -1, -1) * keep).float()[:, label])
    return probs.cpu().numpy()


def deletion_order(heat: np.ndarray, flat: bool, rng: np.random.Generator) -> np.ndarray:
    """Flat pixel indices of ``heat`` (H, W), highest heat first, ties in random order; a flat map
    orders nothing, so its order is random as a whole (a stable sort deleted a flat or tied map from
    the top row down: its deletion score then said where the lesion sits, not what the map knew)."""
    noise = rng.random(heat.size)
    return noise.argsort() if flat else np.lexsort((noise, -np.asarray(heat).reshape(-1)))


def curve_auc(probs: np.ndarray) -> float:
    """Trapezoid area of probs over equally spaced fractions of [0, 1]."""
    p = np.asarray(probs, dtype=np.float64)
    return float(((p[:-1] + p[1:]) / 2).mean()) if len(p) > 1 else float(p[0])


@dataclass
class _PairScores:
    """Per (image, label) pair results, in pair order."""

    hit0: list[float] = field(default_factory=list)  # strict pointing hit
    hit_t: list[float] = field(default_factory=list)  # pointing hit within the tolerance
    chance0: list[float] = field(default_factory=list)  # random-heatmap hit probability, strict
    chance_t: list[float] = field(default_factory=list)  # ... within the tolerance
    flat: list[bool] = field(default_factory=list)
    ties: list[bool] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    clusters: list[str] = field(default_factory=list)
    del_auc: list[float] = field(default_factory=list)
    rand_auc: list[float] = field(default_factory=list)
    prior_auc: list[float] = field(default_factory=list)  # deletion in the label prior's order
    prior0: list[float] = field(default_factory=list)  # label-prior map's hit, strict
    prior_t: list[float] = field(default_factory=list)  # ... within the tolerance
    points: list[list[tuple[float, float]]] = field(default_factory=list)  # the map's maxima (y, x)
    boxes: list[list[Box]] = field(default_factory=list)
    shuf0: list[float] = field(default_factory=list)  # the map against another test image's boxes, strict
    shuf_t: list[float] = field(default_factory=list)  # ... within the tolerance
    grid: Any = None

    def arrays(self) -> dict[str, np.ndarray]:
        names = ("hit0", "hit_t", "chance0", "chance_t", "labels", "clusters", "flat", "prior0", "prior_t")
        return {k: np.asarray(getattr(self, k)) for k in names}

    def add_shuffled(self, seed: int, tol: float) -> np.ndarray:
        """Each pair's map scored against the boxes of its partner (another test image, same label); a label
        with
        one pair has no partner and scores the area-random expectation. Sets shuf0, shuf_t; returns the
        partners.
        """
        partner = shuffle_partners(self.labels, seed)
        self.shuf0.clear()
        self.shuf_t.clear()
        for i, p in enumerate(partner):
            if p < 0:
                self.shuf0.append(self.chance0[i])
                self.shuf_t.append(self.chance_t[i])
            else:
                self.shuf0.append(points_score(self.points[i], self.boxes[p], 0.0))
                self.shuf_t.append(points_score(self.points[i], self.boxes[p], tol))
        return partner


def evaluate_localization(
    model: nn.Module,
    data: CellData,
    normalize: tuple[float, float],
    device: torch.device,
    max_images: int = 64,
    deletion_steps: int = 10,
    seed: int = 0,
    batch_size: int = 32,
    tolerance: Any = "standard",
    resamples: int = 2000,
) -> dict[str, Any] | None:
    """Pointing game (strict, 0 px, and with ``tolerance``; see :func:`resolve_tolerance`) with
    patient-level bootstrap intervals, and deletion AUC, of the model's heatmaps on the test split,
    with their random baselines; None when the model has no heatmap method or no test image has
    a box of a positive label. Flat maps are misses and are counted (``flat_maps``)."""
    method = explain_method(model)
    if method is None:
        return None
    pairs, rows = _positive_box_pairs(data, max_images)
    if not pairs:
        return None
    model.eval()
    test = data.test
    tol = resolve_tolerance(tolerance, int(test.images.shape[-2]))
    patient_ids = getattr(test, "patient_ids", None)
    unit = "patient" if patient_ids is not None and len(patient_ids) == len(test.image_ids) else "image"
    clusters = np.asarray(patient_ids if unit == "patient" else test.image_ids, dtype=str)
    height, width = (int(v) for v in test.images.shape[-2:])
    # the label prior sees the training split's boxes only: moving a test box cannot move it
    priors = fit_label_priors(load_split_boxes(data, "train"), data.labels, height, width, tol)
    scores = _PairScores()
    rng = np.random.default_rng(seed)
    tie_rng = np.random.default_rng(
        [seed, 1]
    )  # its own stream: the random baseline's orders stay as they were
    prior_rng = np.random.default_rng([seed, 3])
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        _score_batch(
            model,
            data,
            chunk,
            clusters,
            normalize,
            device,
            tol,
            deletion_steps,
            rng,
            scores,
            tie_rng,
            priors,
            prior_rng,
        )
    partners = scores.add_shuffled(seed, tol)
    a = {**scores.arrays(), "shuf0": np.asarray(scores.shuf0), "shuf_t": np.asarray(scores.shuf_t)}
    return {
        "method": method,
        "split": "test",
        "images": len(rows),
        **_summary(a, np.ones(len(a["hit0"]), dtype=bool), tol, resamples, seed),
        "random_ci": bootstrap_rate_interval(a["hit0"], a["chance0"], a["clusters"], resamples, seed=seed)[
            "random_ci"
        ],
        "tolerance_px": 0,
        "flat_rule": "miss",
        "tied_maxima": int(np.sum(scores.ties)),
        "map_grid": list(scores.grid) if scores.grid else None,
        "interval": {"level": 0.95, "resamples": resamples, "unit": unit, "method": "percentile bootstrap"},
        "deletion_auc": float(np.mean(scores.del_auc)) if scores.del_auc else None,
        "random_deletion_auc": float(np.mean(scores.rand_auc)) if scores.rand_auc else None,
        "prior_deletion_auc": float(np.mean(scores.prior_auc)) if scores.prior_auc else None,
        "deletion_steps": deletion_steps,
        "label_prior": {
            label: {k: v for k, v in p.items() if k != "map"}
            for label, p in priors.items()
            if label in set(scores.labels)
        },
        "baselines_note": (
            "label prior: per label, the map counting training-split images whose boxes hold each pixel, "
            "scored on the test pairs; shuffled: each map against another test image's boxes of the label"
        ),
        "per_label": {
            label: _summary(a, a["labels"] == label, tol, resamples, seed)
            for label in sorted(set(scores.labels))
        },
        # one entry per pair, so a report can pool seeds of one configuration on the same pairs
        "pair_detail": _pair_detail(test, pairs, a, scores, partners),
    }


def _positive_box_pairs(
    data: CellData, max_images: int
) -> tuple[list[tuple[int, int, list[Box]]], list[int]]:
    """(test row, label column, boxes) of every positive label with a box, on the first
    ``max_images`` such images; and those rows."""
    boxes = load_split_boxes(data, "test")
    test = data.test
    pairs: list[tuple[int, int, list[Box]]] = []
    for row, image_id in enumerate(np.asarray(test.image_ids, dtype=str)):
        for j, label in enumerate(data.labels):
            label_boxes = [b for lbl, b in boxes.get(image_id, []) if lbl == label]
            if label_boxes and test.targets[row, j] == 1.0:
                pairs.append((row, j, label_boxes))
    rows = sorted({r for r, _, _ in pairs})[:max_images]
    return [p for p in pairs if p[0] in set(rows)], rows


def _score_batch(
    model: nn.Module,
    data: CellData,
    chunk: list[tuple[int, int, list[Box]]],
    clusters: np.ndarray,
    normalize: tuple[float, float],
    device: torch.device,
    tol: float,
    deletion_steps: int,
    rng: np.random.Generator,
    scores: _PairScores,
    tie_rng: np.random.Generator,
    priors: dict[str, dict[str, Any]],
    prior_rng: np.random.Generator,
) -> None:
    """Heatmaps of one batch of pairs; append their pointing, chance, label-prior and deletion scores
    (``rng``: the
    random deletion baseline's orders; ``tie_rng``: tie-breaking in the map's own order; ``prior_rng``: in the
    prior's).
    """
    test = data.test
    size = test.images.shape[-2:]
    x = to_input(np.stack([test.images[r] for r, _, _ in chunk]), device, normalize)
    expl = explain(model, x, torch.as_tensor([j for _, j, _ in chunk], device=device))
    scores.grid = expl.grid
    for i, (row, j, label_boxes) in enumerate(chunk):
        heat = expl.heat[i]
        is_flat_map = bool(expl.flat[i]) or is_flat(heat)
        scores.flat.append(is_flat_map)
        scores.ties.append(not is_flat_map and len(maximum_points(heat)) > 1)
        scores.hit0.append(0.0 if is_flat_map else pointing_score(heat, label_boxes, 0.0))
        scores.hit_t.append(0.0 if is_flat_map else pointing_score(heat, label_boxes, tol))
        scores.chance0.append(random_hit_probability(label_boxes, *size))
        scores.chance_t.append(random_hit_probability(label_boxes, *size, tolerance=tol))
        scores.labels.append(data.labels[j])
        scores.clusters.append(clusters[row])
        scores.points.append([] if is_flat_map else maximum_points(heat))
        scores.boxes.append(label_boxes)
        prior = priors[data.labels[j]]
        if prior["train_images"]:
            scores.prior0.append(points_score(prior["points"], label_boxes, 0.0))
            scores.prior_t.append(points_score(prior["points_tolerant"], label_boxes, tol))
        else:  # no training box of the label: no prior, a random point's expectation
            scores.prior0.append(scores.chance0[-1])
            scores.prior_t.append(scores.chance_t[-1])
        if deletion_steps > 0:
            order = deletion_order(heat, is_flat_map, tie_rng)
            scores.del_auc.append(curve_auc(deletion_curve(model, x[i : i + 1], order, j, deletion_steps)))
            rand_order = rng.permutation(order.size)
            scores.rand_auc.append(
                curve_auc(deletion_curve(model, x[i : i + 1], rand_order, j, deletion_steps))
            )
            prior_order = deletion_order(
                prior["map"], not prior["train_images"] or is_flat(prior["map"]), prior_rng
            )
            scores.prior_auc.append(
                curve_auc(deletion_curve(model, x[i : i + 1], prior_order, j, deletion_steps))
            )


def _summary(
    a: dict[str, np.ndarray], keep: np.ndarray, tol: float, resamples: int, seed: int
) -> dict[str, Any]:
    """Hit rates, baselines and bootstrap intervals (strict and tolerant) of the pairs in ``keep``."""
    strict = bootstrap_rate_interval(
        a["hit0"][keep], a["chance0"][keep], a["clusters"][keep], resamples, seed=seed
    )
    tolerant = bootstrap_rate_interval(
        a["hit_t"][keep], a["chance_t"][keep], a["clusters"][keep], resamples, seed=seed
    )
    base0 = {"random": a["chance0"][keep], "label_prior": a["prior0"][keep], "shuffled": a["shuf0"][keep]}
    base_t = {"random": a["chance_t"][keep], "label_prior": a["prior_t"][keep], "shuffled": a["shuf_t"][keep]}
    return {
        "pairs": int(keep.sum()),
        "pointing_hit_rate": float(a["hit0"][keep].mean()),
        "random_hit_rate": float(a["chance0"][keep].mean()),
        "pointing_ci": strict["pointing_ci"],
        "difference_ci": strict["difference_ci"],
        "flat_maps": int(a["flat"][keep].sum()),
        "baselines": baseline_summary(a["hit0"][keep], base0, a["clusters"][keep], resamples, seed),
        "tolerant": {
            "tolerance_px": tol,
            "pointing_hit_rate": float(a["hit_t"][keep].mean()),
            "random_hit_rate": float(a["chance_t"][keep].mean()),
            "pointing_ci": tolerant["pointing_ci"],
            "difference_ci": tolerant["difference_ci"],
            "baselines": baseline_summary(a["hit_t"][keep], base_t, a["clusters"][keep], resamples, seed),
        },
    }


def _pair_detail(
    test: Any,
    pairs: list[tuple[int, int, list[Box]]],
    a: dict[str, np.ndarray],
    scores: _PairScores,
    partners: np.ndarray,
) -> dict[str, list[Any]]:
    """One entry per pair: hits and baselines, and what recomputes the baselines from the test boxes (the
    pair's boxes, the map's maxima, the shuffled partner's index; the label prior's points are per label)."""
    return {
        "image_id": [str(test.image_ids[r]) for r, _, _ in pairs],
        "cluster": [str(c) for c in a["clusters"]],
        "label": [str(v) for v in a["labels"]],
        "hit": [round(float(v), 6) for v in a["hit0"]],
        "hit_tolerant": [round(float(v), 6) for v in a["hit_t"]],
        "random": [round(float(v), 6) for v in a["chance0"]],
        "random_tolerant": [round(float(v), 6) for v in a["chance_t"]],
        "flat": [bool(v) for v in a["flat"]],
        "label_prior": [round(float(v), 6) for v in a["prior0"]],
        "label_prior_tolerant": [round(float(v), 6) for v in a["prior_t"]],
        "shuffled": [round(float(v), 6) for v in a["shuf0"]],
        "shuffled_tolerant": [round(float(v), 6) for v in a["shuf_t"]],
        "shuffled_partner": [int(p) for p in partners],
        "maxima": [[[round(float(y), 3), round(float(x), 3)] for y, x in pts] for pts in scores.points],
        "boxes": [[[round(float(c), 4) for c in b] for b in boxes] for boxes in scores.boxes],
    }
