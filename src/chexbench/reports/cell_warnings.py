"""The report's "Warnings" section: cells that ran, but whose number comes with a caveat.

A protocol stores notes about its head in the record (``data_json → protocol_extra →
head_notes``); notes starting with :data:`~chexbench.core.errors.RECORD_WARNING_PREFIX` are
warnings — e.g. a ``*_topk`` strategy probed with ``head = "linear"``, which reads a CLS
token its pretraining never trained as an embedding. A cell whose self-supervised pretraining
run collapsed (``init_json → extra → pretrain_collapsed_at_epoch``, see
:mod:`chexbench.strategies.monitors`) gets a warning too: "collapsed at epoch N".
"""

from __future__ import annotations

import json

import pandas as pd

from chexbench.core.errors import RECORD_WARNING_PREFIX


def record_warnings(data_json: str) -> list[str]:
    """The warnings stored in one record's ``data_json`` (prefix removed)."""
    try:
        extra = json.loads(data_json or "{}").get("protocol_extra", {}) or {}
    except (ValueError, AttributeError):
        return []
    notes = extra.get("head_notes", []) or []
    return [
        n[len(RECORD_WARNING_PREFIX) :]
        for n in notes
        if isinstance(n, str) and n.startswith(RECORD_WARNING_PREFIX)
    ]


def init_warnings(init_json: str) -> list[str]:
    """The warnings of one record's initialization: a pretraining run that collapsed."""
    try:
        init = json.loads(init_json or "{}")
        extra = init.get("extra", {}) or {}
    except (ValueError, AttributeError):
        return []
    epoch = extra.get("pretrain_collapsed_at_epoch")
    if epoch is None:
        return []
    note = next(
        (n for n in init.get("notes", []) or [] if isinstance(n, str) and n.startswith("collapsed at epoch")),
        "",
    )
    detail = note.split(":", 1)[1].strip() if ":" in note else "its embeddings collapsed"
    return [f"pretraining run {init.get('pretrain_run')} collapsed at epoch {epoch} ({detail})"]


def warnings_section(records: pd.DataFrame) -> str:
    """``## Warnings`` with one row per (cell, warning); "" when no record has one."""
    if records.empty or "data_json" not in records:
        return ""
    rows = []
    for r in records.itertuples():
        for w in [*init_warnings(getattr(r, "init_json", "")), *record_warnings(getattr(r, "data_json", ""))]:
            rows.append(f"| `{r.cell_id}` | {r.strategy} | {r.backbone} | {r.protocol} | {w} |")
    if not rows:
        return ""
    return (
        "## Warnings\n\nCells that ran, but whose number needs this caveat.\n\n"
        "| cell | strategy | backbone | protocol | warning |\n|---|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n"
    )
