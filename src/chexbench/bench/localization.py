"""Quantitative localization of a cell's heatmaps against ground-truth lesion boxes.

Boxes come from the dataset root: NIH's ``BBox_List_2017.csv`` (real NIH and the NIH-layout
phantom) or a phantom's ``phantom_boxes.csv`` sidecar (CheXpert and Indiana layouts). They
are given in pixels of the original image and mapped here onto the cell's images exactly as
the prepared cache made them (shorter side resized to S, centre crop; see datasets/cache.py).

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

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import nn

if TYPE_CHECKING:
    from chexbench.datasets.celldata import CellData

#: (x0, y0, x1, y1) in pixels of the cell's (S × S) image
Box = tuple[float, float, float, float]


def read_native_boxes(root: Path) -> pd.DataFrame | None:
    """Boxes of a dataset root as columns image_ref, label, x, y, w, h (original pixels), or None."""
    root = Path(root)
    if any((root / n).is_file() for n in ("BBox_List_2017.csv", "BBox_List_2017.csv.gz")):
        from chexbench.datasets.nih import load_nih_boxes

        return load_nih_boxes(root).rename(columns={"image_id": "image_ref"})
    sidecar = root / "phantom_boxes.csv"
    if sidecar.is_file():
        from chexbench.datasets.tables import read_csv_checked

        df = read_csv_checked(sidecar, ("image", "label", "x", "y", "w", "h"))
        return df.rename(columns={"image": "image_ref"})[["image_ref", "label", "x", "y", "w", "h"]]
    return None


def map_box_to_cache(x: float, y: float, w: float, h: float, width: int, height: int, size: int) -> Box | None:
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
    index = pd.read_parquet(Path(manifest["cache_dir"]) / "index.parquet", columns=["image_id", "path"])
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
    from PIL import Image

    from chexbench.errors import DataError

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


def pointing_hit(heat: np.ndarray, boxes: list[Box], tolerance: float = 0.0) -> bool:
    """Is the maximum of ``heat`` (H, W) inside one of ``boxes`` (grown by ``tolerance`` pixels)?

    When the maximum is a plateau (an upsampled coarse map is flat near the border), the point
    is the plateau's centroid, so ties do not favour the top-left corner.
    """
    y, x = maximum_point(heat)
    return any(x0 - tolerance <= x <= x1 + tolerance and y0 - tolerance <= y <= y1 + tolerance for x0, y0, x1, y1 in boxes)


def maximum_point(heat: np.ndarray, rtol: float = 1e-6) -> tuple[float, float]:
    """(y, x) in pixel coordinates (pixel centres at +0.5) of the maximum of heat (H, W); the
    centroid of the pixels within ``rtol`` of it when it is not unique."""
    top = float(heat.max())
    ys, xs = np.nonzero(heat >= top - rtol * max(abs(top), 1.0))
    return float(ys.mean()) + 0.5, float(xs.mean()) + 0.5


def random_hit_probability(boxes: list[Box], height: int, width: int) -> float:
    """Pointing-game hit probability of a heatmap whose maximum is a uniformly random pixel."""
    return float(box_mask(boxes, height, width).mean())


@torch.no_grad()
def deletion_curve(model: nn.Module, x: torch.Tensor, order: np.ndarray, label: int, steps: int) -> np.ndarray:
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


def curve_auc(probs: np.ndarray) -> float:
    """Trapezoid area of probs over equally spaced fractions of [0, 1]."""
    p = np.asarray(probs, dtype=np.float64)
    return float(((p[:-1] + p[1:]) / 2).mean()) if len(p) > 1 else float(p[0])


def evaluate_localization(
    model: nn.Module,
    data: CellData,
    normalize: tuple[float, float],
    device: torch.device,
    max_images: int = 64,
    deletion_steps: int = 10,
    seed: int = 0,
    batch_size: int = 32,
) -> dict[str, Any] | None:
    """Pointing game and deletion AUC of the model's heatmaps on the test split, with their
    random baselines; None when the model has no heatmap method or no test image has a box
    of a positive label."""
    from chexbench.bench import training as T
    from chexbench.reports.heatmaps import explain, explain_method

    method = explain_method(model)
    if method is None:
        return None
    boxes = load_split_boxes(data, "test")
    test = data.test
    pairs: list[tuple[int, int, list[Box]]] = []  # (row, label column, boxes)
    for row, image_id in enumerate(np.asarray(test.image_ids, dtype=str)):
        for j, label in enumerate(data.labels):
            label_boxes = [b for lbl, b in boxes.get(image_id, []) if lbl == label]
            if label_boxes and test.targets[row, j] == 1.0:
                pairs.append((row, j, label_boxes))
    rows = sorted({r for r, _, _ in pairs})[:max_images]
    pairs = [p for p in pairs if p[0] in set(rows)]
    if not pairs:
        return None
    model.eval()
    rng = np.random.default_rng(seed)
    size = test.images.shape[-2:]
    hits, chance, del_auc, rand_auc, per_label = [], [], [], [], {}
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        x = T.to_input(np.stack([test.images[r] for r, _, _ in chunk]), device, normalize)
        labels = torch.as_tensor([j for _, j, _ in chunk], device=device)
        heat = explain(model, x, labels).heat  # (B, H, W)
        for i, (_row, j, label_boxes) in enumerate(chunk):
            hit = pointing_hit(heat[i], label_boxes)
            p0 = random_hit_probability(label_boxes, *size)
            hits.append(hit)
            chance.append(p0)
            stats = per_label.setdefault(data.labels[j], {"pairs": 0, "hits": 0, "random": 0.0})
            stats["pairs"] += 1
            stats["hits"] += int(hit)
            stats["random"] += p0
            if deletion_steps > 0:
                order = np.argsort(-heat[i].reshape(-1), kind="stable")
                del_auc.append(curve_auc(deletion_curve(model, x[i : i + 1], order, j, deletion_steps)))
                rand_order = rng.permutation(order.size)
                rand_auc.append(curve_auc(deletion_curve(model, x[i : i + 1], rand_order, j, deletion_steps)))
    return {
        "method": method,
        "split": "test",
        "images": len(rows),
        "pairs": len(pairs),
        "tolerance_px": 0,
        "pointing_hit_rate": float(np.mean(hits)),
        "random_hit_rate": float(np.mean(chance)),
        "deletion_auc": float(np.mean(del_auc)) if del_auc else None,
        "random_deletion_auc": float(np.mean(rand_auc)) if rand_auc else None,
        "deletion_steps": deletion_steps,
        "per_label": {
            k: {"pairs": v["pairs"], "pointing_hit_rate": v["hits"] / v["pairs"], "random_hit_rate": v["random"] / v["pairs"]}
            for k, v in sorted(per_label.items())
        },
    }
