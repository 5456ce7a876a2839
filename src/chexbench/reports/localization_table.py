"""The report's localization section: per cell, AUROC beside the pointing game and deletion AUC
(with their random-heatmap baselines), from ``data_json["protocol_extra"]["localization"]``
(see :mod:`chexbench.bench.localization`). Pure function of the stored records."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

COLUMNS = ("strategy", "backbone", "dataset", "protocol", "head", "K", "label_fraction", "seed", "macro AUROC",
           "heatmap", "pairs", "pointing", "random pointing", "deletion AUC", "random deletion AUC")


def localization_rows(records: pd.DataFrame) -> pd.DataFrame:
    """One row per finished cell that stored a localization result (columns :data:`COLUMNS`)."""
    rows: list[dict[str, Any]] = []
    for _, r in records.iterrows():
        if r.get("status") != "ok":
            continue
        extra = json.loads(r.get("data_json") or "{}").get("protocol_extra", {}) or {}
        loc = extra.get("localization")
        if not loc:
            continue
        proto_opts = json.loads(r.get("config_json") or "{}").get("protocol_options", {}) or {}
        head = extra.get("head", proto_opts.get("head", "linear"))
        rows.append({
            "strategy": r["strategy"], "backbone": r["backbone"], "dataset": r["dataset"], "protocol": r["protocol"],
            "head": head, "K": proto_opts.get("topk", 0.25) if head == "topk" else "",
            "label_fraction": r["label_fraction"], "seed": r["seed"], "macro AUROC": r["macro_auroc"],
            "heatmap": loc["method"], "pairs": loc["pairs"], "pointing": loc["pointing_hit_rate"],
            "random pointing": loc["random_hit_rate"], "deletion AUC": loc.get("deletion_auc"),
            "random deletion AUC": loc.get("random_deletion_auc"),
        })
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    return frame.sort_values(["dataset", "backbone", "strategy", "protocol", "head", "label_fraction", "seed"], kind="stable",
                             key=lambda s: s.astype(str)).reset_index(drop=True)


def localization_section(records: pd.DataFrame, heading: str = "## Localization") -> str:
    """Markdown: a table of AUROC, pointing game and deletion AUC per cell; "" when no cell has one."""
    frame = localization_rows(records)
    if frame.empty:
        return ""

    def fmt(v: Any) -> str:
        if v is None or (isinstance(v, float) and pd.isna(v)):
            return "—"
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = [
        heading,
        "",
        "Test split, (image, label) pairs with a positive label and a ground-truth box. Pointing game: the heatmap's "
        "maximum lies in a box of the label (higher is better; random = the boxes' area fraction). Deletion AUC: the "
        "label's probability as pixels are removed in heatmap order (lower is better; random = random order). "
        "Heatmaps: top-K patch scores (ViT, head = topk) or Grad-CAM (CNN).",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for _, row in frame.iterrows():
        cells = [f"{row[c]:g}" if c == "label_fraction" else fmt(row[c]) for c in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
