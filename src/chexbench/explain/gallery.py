"""``chexbench explain``: heatmap overlays and a Markdown gallery for one finished cell.

The harness hands over the finished cell (:mod:`chexbench.bench.finished`: its stored config,
its model rebuilt from ``<results>/models/<cell_id>.pt``, its test split rebuilt from the
prepared cache); this module computes the maps and draws. For each chosen test image: the image, its positive
labels,
the predicted probabilities and the heatmap (top-K patch scores for ViT top-K cells, Grad-CAM
for CNN cells), with the top-K patches outlined in white and ground-truth boxes in lime.

Output folder (default ``<results>/explain/<cell_id>/``), written complete or not at all::

    gallery.md      one row per image: image id, positive labels, probabilities, overlay link
    gallery.png     all overlays in one grid
    <n>_<image>.png image beside its overlay
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from chexbench.core.atomic import atomic_write_text, clean_stale_temporaries, make_temp_dir
from chexbench.core.errors import ConfigError, DataError
from chexbench.core.inputs import to_input
from chexbench.datasets.celldata import CellData
from chexbench.explain.baselines import baselines_text
from chexbench.explain.heatmaps import (
    explain,
    explain_method,
    patch_rects,
    save_gallery_png,
    save_overlay_png,
)
from chexbench.explain.localization import load_split_boxes, pointing_score
from chexbench.spec.cell import CellConfig


@dataclass
class ExplainSummary:
    out_dir: Path
    cell_id: str
    method: str
    images: list[str] = field(default_factory=list)
    localization: dict[str, Any] | None = None
    note: str = ""


@dataclass
class FinishedCell:
    """A finished cell whose model was saved, as the harness loads it (:mod:`chexbench.bench.finished`):
    ``stored`` is its record's data (JSON), ``meta`` the saved model's metadata (labels, normalize,
    head), ``model`` the classifier in eval mode on the CPU."""

    cell_id: str
    cell: CellConfig
    stored: dict[str, Any]
    model: nn.Module
    meta: dict[str, Any]


def choose_images(data, boxes: dict[str, list], n: int, ids: list[str] | None) -> list[int]:
    """Test-split rows to explain: the given ids (all must exist), else the first ``n`` by id of the
    images with a box of a positive label, then of those with any positive label, then the rest."""
    image_ids = np.asarray(data.test.image_ids, dtype=str)
    if ids:
        where = {iid: i for i, iid in enumerate(image_ids)}
        missing = [i for i in ids if i not in where]
        if missing:
            raise DataError(
                f"--ids: image {missing[0]!r} is not in the cell's test split ({len(image_ids)} images)"
            )
        return [where[i] for i in ids]
    if n < 1:
        raise ConfigError(f"--n must be at least 1, got {n}")
    positive = np.nan_to_num(data.test.targets, nan=0.0) == 1.0

    def rank(i: int) -> tuple[int, str]:
        boxed = any(
            data.labels.index(lbl) < positive.shape[1] and positive[i, data.labels.index(lbl)]
            for lbl, _ in boxes.get(image_ids[i], [])
            if lbl in data.labels
        )
        return (0 if boxed else 1 if positive[i].any() else 2, image_ids[i])

    return sorted(range(len(image_ids)), key=rank)[:n]


def heatmap_method(finished: FinishedCell, why: str = "heatmaps need a ViT or a CNN backbone") -> str:
    """The heatmap method of the finished cell's model; a ConfigError saying ``why`` when it has none."""
    method = explain_method(finished.model)
    if method is None:
        raise ConfigError(
            f"cell {finished.cell_id} ({finished.cell.backbone}, head = {finished.meta['head']}): {why}"
        )
    return method


def write_explanations(
    finished: FinishedCell,
    data: CellData,
    out_dir: Path,
    n: int = 8,
    ids: list[str] | None = None,
    columns: int = 4,
    same_root_expected: bool = True,
) -> ExplainSummary:
    """Overlays, gallery.png and gallery.md for the finished cell into ``out_dir`` (see module docstring).

    ``data``: the cell's rebuilt splits; ``same_root_expected`` is False when they were read from a
    root the user named. When the rebuilt test split is not the one the cell was evaluated on
    (another prepared cache or other image ids), the gallery says so.
    """
    cell, cell_id, model, meta = finished.cell, finished.cell_id, finished.model, finished.meta
    extra = finished.stored.get("protocol_extra", {}) or {}
    method = heatmap_method(finished)
    note = _data_note(finished.stored, data.manifest, same_root_expected=same_root_expected)
    if list(data.labels) != list(meta["labels"]):
        raise DataError(f"cell {cell_id}: the labels of the rebuilt data differ from the saved model's")
    boxes = load_split_boxes(data, "test")
    rows = choose_images(data, boxes, n, ids)
    normalize = tuple(meta["normalize"])
    device = torch.device("cpu")
    x = to_input(np.stack([data.test.images[r] for r in rows]), device, normalize)
    with torch.no_grad():
        probs = torch.sigmoid(model(x).float()).numpy()  # (B, L)
    labels = torch.as_tensor([_explained_label(data, r, probs[i], boxes) for i, r in enumerate(rows)])
    expl = explain(model, x, labels)

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(out_dir.parent, recursive=False)  # galleries of killed runs
    tmp = make_temp_dir(out_dir.parent, out_dir.name)
    try:
        panels, lines = [], _gallery_header(cell, cell_id, method, extra.get("localization"), note)
        for i, r in enumerate(rows):
            image_id = str(data.test.image_ids[r])
            image = np.asarray(data.test.images[r])
            j = int(labels[i])
            shown = [b for lbl, b in boxes.get(image_id, []) if lbl == data.labels[j]]
            patches = (
                patch_rects(expl.topk_indices[i], expl.grid, image.shape, expl.origin)
                if expl.topk_indices is not None
                else []
            )
            positives = [lbl for k, lbl in enumerate(data.labels) if data.test.targets[r, k] == 1.0]
            title = f"{data.labels[j]} p={probs[i, j]:.2f}"
            name = f"{i:02d}_{_safe(Path(image_id).stem)}.png"
            flat = bool(expl.flat[i]) if expl.flat is not None else False
            if flat:
                title += " (flat map)"
            save_overlay_png(
                tmp / name, image, expl.heat[i], patches=patches, boxes=shown, title=title, flat=flat
            )
            panels.append(
                {
                    "image": image,
                    "heat": expl.heat[i],
                    "patches": patches,
                    "boxes": shown,
                    "title": title,
                    "flat": flat,
                }
            )
            top = sorted(range(len(data.labels)), key=lambda k: -probs[i, k])[:3]
            prob_text = ", ".join(f"{data.labels[k]} {probs[i, k]:.2f}" for k in top)
            hit = _hit_text(pointing_score(expl.heat[i], shown), flat) if shown else "—"
            lines.append(
                f"| `{image_id}` | {', '.join(positives) or '—'} | {data.labels[j]} | {hit} | {prob_text} |"
                f" ![{image_id}]({name}) |"
            )
        save_gallery_png(tmp / "gallery.png", panels, columns=columns, title=f"{cell.label()} — {method}")
        atomic_write_text("\n".join([*lines, "", "![gallery](gallery.png)", ""]), tmp / "gallery.md")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExplainSummary(
        out_dir, cell_id, method, [str(data.test.image_ids[r]) for r in rows], extra.get("localization"), note
    )


def check_comparable(cells: Sequence[FinishedCell], data: CellData) -> None:
    """A ConfigError or DataError unless ``cells`` (at least two, each with a heatmap) share the dataset,
    image size and label set of ``data``, the first cell's rebuilt splits."""
    if len(cells) < 2:
        raise ConfigError("a comparison needs at least two cells (--cell A --cell B …)")
    first = cells[0].cell
    for f in cells[1:]:
        if (f.cell.dataset, f.cell.settings.image_size) != (first.dataset, first.settings.image_size) or list(
            f.meta["labels"]
        ) != list(data.labels):
            raise DataError(
                f"cell {f.cell_id} has another dataset, image size or label set than {cells[0].cell_id}: not"
                " comparable"
            )


def write_method_comparison(
    cells: Sequence[FinishedCell], data: CellData, out: Path, n: int = 6, ids: list[str] | None = None
) -> Path:
    """One PNG with each cell's heatmap side by side on the same test images (rows: images, columns:
    cells), each explaining the same label (a positive label with a box). The cells must share their
    test split (``data``, see :func:`check_comparable`). Returns the PNG's path ``out``."""
    for f in cells:
        heatmap_method(f, why="no heatmap for this model")
    check_comparable(cells, data)
    loaded = [(f.cell_id, f.cell, f.model, f.meta) for f in cells]
    first = loaded[0][1]
    boxes = load_split_boxes(data, "test")
    rows = choose_images(data, boxes, n, ids)
    zeros = np.zeros(len(data.labels))
    labels = [_explained_label(data, r, zeros, boxes) for r in rows]
    panels = []
    for i, r in enumerate(rows):
        image_id = str(data.test.image_ids[r])
        image = np.asarray(data.test.images[r])
        shown = [b for lbl, b in boxes.get(image_id, []) if lbl == data.labels[labels[i]]]
        for _cell_id, cell, model, meta in loaded:
            x = to_input(data.test.images[r : r + 1], torch.device("cpu"), tuple(meta["normalize"]))
            expl = explain(model, x, torch.as_tensor([labels[i]]))
            flat = bool(expl.flat[0]) if expl.flat is not None else False
            patches = (
                patch_rects(expl.topk_indices[0], expl.grid, image.shape, expl.origin)
                if expl.topk_indices is not None
                else []
            )
            hit = (
                "flat"
                if flat
                else ("hit" if pointing_score(expl.heat[0], shown) == 1.0 else "miss")
                if shown
                else ""
            )
            title = f"{expl.method}: {data.labels[labels[i]]} {hit}"
            if i == 0:  # the column's heading, once: what the cell is (its protocol, not only its head)
                title = f"{column_title(cell, meta)}\n{title}"
            panels.append(
                {
                    "image": image,
                    "heat": expl.heat[0],
                    "patches": patches,
                    "boxes": shown,
                    "title": title,
                    "flat": flat,
                }
            )
    out = Path(out)
    save_gallery_png(
        out,
        panels,
        columns=len(loaded),
        title=f"{first.dataset}: each column one cell, same images and label",
    )
    return out


def column_title(cell, meta: dict) -> str:
    """A comparison column's heading: strategy · backbone, then the protocol and the head it trained
    ("fine-tuning, linear head" and "linear probe, linear head" are different models)."""
    protocol = {"finetune": "fine-tuning", "linear": "linear probe"}.get(cell.protocol, cell.protocol)
    return f"{cell.strategy} · {cell.backbone}\n{protocol}, {meta.get('head', '?')} head"


def _hit_text(score: float, flat: bool) -> str:
    if flat:
        return "no (flat map)"
    return "yes" if score == 1.0 else "no" if score == 0.0 else f"{score:.2f} (tied maxima)"


def _data_note(stored: dict[str, Any], manifest: dict[str, Any], same_root_expected: bool = True) -> str:
    """A warning when the rebuilt test split differs from the one the cell was evaluated on
    (another prepared cache — not checked when the user named the root — or other image ids)."""
    old_cache, new_cache = stored.get("cache_id"), manifest.get("cache_id")
    old_ids = (stored.get("splits") or {}).get("test", {}).get("image_ids_sha256")
    new_ids = (manifest.get("splits") or {}).get("test", {}).get("image_ids_sha256")
    if same_root_expected and old_cache and new_cache and old_cache != new_cache:
        return (
            f"the rebuilt test images come from prepared cache {new_cache}, not {old_cache} that the cell was"
            " evaluated on"
        )
    if old_ids and new_ids and old_ids != new_ids:
        return "the rebuilt test split has other image ids than the cell was evaluated on"
    return ""


def _explained_label(data, row: int, probs: np.ndarray, boxes: dict[str, list]) -> int:
    """The label a class-specific heatmap explains: a positive label with a box, else a positive
    label, else the most probable one; ties broken by probability."""
    image_id = str(data.test.image_ids[row])
    positive = [k for k in range(len(data.labels)) if data.test.targets[row, k] == 1.0]
    boxed = [k for k in positive if any(lbl == data.labels[k] for lbl, _ in boxes.get(image_id, []))]
    pool = boxed or positive or list(range(len(data.labels)))
    return max(pool, key=lambda k: probs[k])


def _gallery_header(cell, cell_id: str, method: str, loc: dict[str, Any] | None, note: str = "") -> list[str]:
    what = {
        "topk_scores": "top-K patch scores (white: the K selected patches)",
        "topk_classwise": "the explained label's patch logits (white: its K pooled patches)",
        "gradcam": "Grad-CAM on the last conv stage",
        "vit_gradcam": "Grad-CAM on the last block's patch tokens",
    }[method]
    lines = [
        f"# Heatmaps of cell `{cell_id}`",
        "",
        (
            f"`{cell.label()}` — heatmap: {what}; lime dashed: ground-truth boxes of the explained label; +"
            " marks the maximum."
        ),
        "",
    ]
    if note:
        lines += [f"**Warning:** {note}.", ""]
    if loc:
        lines += [
            f"Localization on the test split ({loc['pairs']} image–label pairs): pointing game"
            f" {loc['pointing_hit_rate']:.3f}"
            + (" [{:.3f}, {:.3f}]".format(*loc["pointing_ci"]) if loc.get("pointing_ci") else "")
            + f" (random heatmap {loc['random_hit_rate']:.3f}"
            + (f"; {baselines_text(loc)})" if baselines_text(loc) else ")")
            + (f", flat maps {loc['flat_maps']}" if loc.get("flat_maps") is not None else "")
            + (
                f", deletion AUC {loc['deletion_auc']:.3f} (random order {loc['random_deletion_auc']:.3f})"
                if loc.get("deletion_auc") is not None
                else ""
            )
            + ".",
            "",
        ]
    return lines + [
        "| image | positive labels | explained | maximum in its box | top probabilities | overlay |",
        "|---|---|---|---|---|---|",
    ]


def _safe(image_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", image_id).strip("_")[-80:]
