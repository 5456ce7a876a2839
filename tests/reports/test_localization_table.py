"""The localization section: one row per cell that stored a localization, numbers as stored."""

from __future__ import annotations

import json

import pandas as pd

from chexbench.reports.localization_table import localization_rows, localization_section


def _record(cell_id: str, backbone: str, head: str | None, loc: dict | None, status: str = "ok") -> dict:
    opts = {"head": head, "topk": 8} if head else {}
    return {
        "cell_id": cell_id, "status": status, "strategy": "scratch", "backbone": backbone, "dataset": "phantom-nih",
        "protocol": "finetune", "label_fraction": 1.0, "seed": 0, "macro_auroc": 0.8125,
        "config_json": json.dumps({"protocol_options": opts}),
        "data_json": json.dumps({"protocol_extra": {"head": head or "linear", **({"localization": loc} if loc else {})}}),
    }


LOC = {"method": "topk_scores", "pairs": 40, "pointing_hit_rate": 0.45, "random_hit_rate": 0.0825,
       "deletion_auc": 0.31, "random_deletion_auc": 0.4}


def test_rows_and_markdown():
    records = pd.DataFrame([
        _record("a", "vit_tiny", "topk", LOC),
        _record("b", "resnet_tiny", None, {**LOC, "method": "gradcam", "pointing_hit_rate": 0.2, "deletion_auc": None}),
        _record("c", "vit_tiny", None, None),
        _record("d", "vit_tiny", "topk", LOC, status="failed"),
    ])
    rows = localization_rows(records)
    assert list(rows["backbone"]) == ["resnet_tiny", "vit_tiny"]
    assert rows.loc[1, "K"] == 8 and rows.loc[0, "K"] == ""
    md = localization_section(records)
    assert md.startswith("## Localization")
    assert "| scratch | vit_tiny | phantom-nih | finetune | topk | 8 | 1 | 0 | 0.812 | topk_scores | 40 | 0.450 | 0.083 | 0.310 | 0.400 |" in md
    assert "| gradcam | 40 | 0.200 | 0.083 | — | 0.400 |" in md


def test_empty_without_localization():
    assert localization_section(pd.DataFrame([_record("c", "vit_tiny", None, None)])) == ""
