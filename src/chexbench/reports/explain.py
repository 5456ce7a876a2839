"""``chexbench explain``: heatmap overlays and a Markdown gallery for one finished cell.

The cell's model is rebuilt from its stored config and its saved state dict
(``<results>/models/<cell_id>.pt``, see :mod:`chexbench.bench.cell_model`); its test split is
rebuilt from the prepared cache. For each chosen test image: the image, its positive labels,
the predicted probabilities and the heatmap (top-K patch scores for ViT top-K cells, Grad-CAM
for CNN cells), with the top-K patches outlined in white and ground-truth boxes in lime.

Output folder (default ``<results>/explain/<cell_id>/``), written complete or not at all::

    gallery.md      one row per image: image id, positive labels, probabilities, overlay link
    gallery.png     all overlays in one grid
    <n>_<image>.png image beside its overlay
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from chexbench.errors import ConfigError, DataError


@dataclass
class ExplainSummary:
    out_dir: Path
    cell_id: str
    method: str
    images: list[str] = field(default_factory=list)
    localization: dict[str, Any] | None = None


def load_cell_config(results_dir: Path, cell_id: str):
    """The stored config of a finished (status ok) cell."""
    from chexbench.bench.store import ResultStore
    from chexbench.config import CellConfig

    store = ResultStore(results_dir)
    recs = store.records([cell_id])
    if recs.empty:
        known = store.cell_ids()
        close = [c for c in known if c.startswith(cell_id[:4])][:3]
        hint = f" (close: {', '.join(close)})" if close else ""
        raise DataError(f"no cell '{cell_id}' in {results_dir}{hint}")
    rec = recs.iloc[0]
    if rec["status"] != "ok":
        raise DataError(f"cell {cell_id} in {results_dir} did not finish (status {rec['status']}): nothing to explain")
    extra = json.loads(rec["data_json"]).get("protocol_extra", {})
    return CellConfig.from_dict(json.loads(rec["config_json"])), extra


def choose_images(data, boxes: dict[str, list], n: int, ids: list[str] | None) -> list[int]:
    """Test-split rows to explain: the given ids (all must exist), else the first ``n`` by id of the
    images with a box of a positive label, then of those with any positive label, then the rest."""
    image_ids = np.asarray(data.test.image_ids, dtype=str)
    if ids:
        where = {iid: i for i, iid in enumerate(image_ids)}
        missing = [i for i in ids if i not in where]
        if missing:
            raise DataError(f"--ids: image {missing[0]!r} is not in the cell's test split ({len(image_ids)} images)")
        return [where[i] for i in ids]
    if n < 1:
        raise ConfigError(f"--n must be at least 1, got {n}")
    positive = np.nan_to_num(data.test.targets, nan=0.0) == 1.0

    def rank(i: int) -> tuple[int, str]:
        boxed = any(data.labels.index(lbl) < positive.shape[1] and positive[i, data.labels.index(lbl)]
                    for lbl, _ in boxes.get(image_ids[i], []) if lbl in data.labels)
        return (0 if boxed else 1 if positive[i].any() else 2, image_ids[i])

    return sorted(range(len(image_ids)), key=rank)[:n]


def write_explanations(results_dir: Path, cell_id: str, n: int = 8, ids: list[str] | None = None,
                       out_dir: Path | None = None, columns: int = 4) -> ExplainSummary:
    """Overlays, gallery.png and gallery.md for cell ``cell_id`` (see module docstring)."""
    from chexbench.bench import training as T
    from chexbench.bench.cell_model import load_cell_model
    from chexbench.bench.localization import load_split_boxes
    from chexbench.datasets.celldata import build_cell_data
    from chexbench.reports.heatmaps import (
        explain,
        explain_method,
        patch_rects,
        save_gallery_png,
        save_overlay_png,
    )

    results_dir = Path(results_dir)
    cell, extra = load_cell_config(results_dir, cell_id)
    model, meta = load_cell_model(results_dir, cell)
    method = explain_method(model)
    if method is None:
        raise ConfigError(f"cell {cell_id} ({cell.backbone}, head = {meta['head']}): heatmaps need a ViT with head = topk or a CNN")
    data = build_cell_data(cell)
    if list(data.labels) != list(meta["labels"]):
        raise DataError(f"cell {cell_id}: the labels of the rebuilt data differ from the saved model's")
    boxes = load_split_boxes(data, "test")
    rows = choose_images(data, boxes, n, ids)
    normalize = tuple(meta["normalize"])
    device = torch.device("cpu")
    x = T.to_input(np.stack([data.test.images[r] for r in rows]), device, normalize)
    with torch.no_grad():
        probs = torch.sigmoid(model(x).float()).numpy()  # (B, L)
    labels = torch.as_tensor([_explained_label(data, r, probs[i], boxes) for i, r in enumerate(rows)])
    expl = explain(model, x, labels)

    out_dir = Path(out_dir) if out_dir else results_dir / "explain" / cell_id
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        panels, lines = [], _gallery_header(cell, cell_id, method, extra.get("localization"))
        for i, r in enumerate(rows):
            image_id = str(data.test.image_ids[r])
            image = np.asarray(data.test.images[r])
            j = int(labels[i])
            shown = [b for lbl, b in boxes.get(image_id, []) if lbl == data.labels[j]]
            patches = patch_rects(expl.topk_indices[i], expl.grid, image.shape) if expl.topk_indices is not None else []
            positives = [lbl for k, lbl in enumerate(data.labels) if data.test.targets[r, k] == 1.0]
            title = f"{data.labels[j]} p={probs[i, j]:.2f}"
            name = f"{i:02d}_{_safe(image_id)}.png"
            save_overlay_png(tmp / name, image, expl.heat[i], patches=patches, boxes=shown, title=title)
            panels.append({"image": image, "heat": expl.heat[i], "patches": patches, "boxes": shown, "title": title})
            top = sorted(range(len(data.labels)), key=lambda k: -probs[i, k])[:3]
            prob_text = ", ".join(f"{data.labels[k]} {probs[i, k]:.2f}" for k in top)
            lines.append(f"| `{image_id}` | {', '.join(positives) or '—'} | {data.labels[j]} | {prob_text} | ![{image_id}]({name}) |")
        save_gallery_png(tmp / "gallery.png", panels, columns=columns, title=f"{cell.label()} — {method}")
        (tmp / "gallery.md").write_text("\n".join([*lines, "", "![gallery](gallery.png)", ""]))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExplainSummary(out_dir, cell_id, method, [str(data.test.image_ids[r]) for r in rows], extra.get("localization"))


def _explained_label(data, row: int, probs: np.ndarray, boxes: dict[str, list]) -> int:
    """The label a class-specific heatmap explains: a positive label with a box, else a positive
    label, else the most probable one; ties broken by probability."""
    image_id = str(data.test.image_ids[row])
    positive = [k for k in range(len(data.labels)) if data.test.targets[row, k] == 1.0]
    boxed = [k for k in positive if any(lbl == data.labels[k] for lbl, _ in boxes.get(image_id, []))]
    pool = boxed or positive or list(range(len(data.labels)))
    return max(pool, key=lambda k: probs[k])


def _gallery_header(cell, cell_id: str, method: str, loc: dict[str, Any] | None) -> list[str]:
    what = {"topk_scores": "top-K patch scores (white: the K selected patches)", "gradcam": "Grad-CAM on the last conv stage"}[method]
    lines = [
        f"# Heatmaps of cell `{cell_id}`",
        "",
        f"`{cell.label()}` — heatmap: {what}; lime dashed: ground-truth boxes of the explained label; + marks the maximum.",
        "",
    ]
    if loc:
        lines += [
            f"Localization on the test split ({loc['pairs']} image–label pairs): pointing game {loc['pointing_hit_rate']:.3f} "
            f"(random heatmap {loc['random_hit_rate']:.3f})"
            + (f", deletion AUC {loc['deletion_auc']:.3f} (random order {loc['random_deletion_auc']:.3f})" if loc.get("deletion_auc") is not None else "")
            + ".",
            "",
        ]
    return lines + ["| image | positive labels | explained | top probabilities | overlay |", "|---|---|---|---|---|"]


def _safe(image_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", image_id).strip("_")[-80:]
