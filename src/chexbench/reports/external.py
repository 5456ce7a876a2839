"""The external-validation matrix: each cell's model on other datasets' test splits
(``settings.evaluate_on``).

Reads the external predictions files (``external/<cell_id>/<target>.parquet``, ``bench/external.py``)
of the folder's scored cells and scores them like internal predictions: per-label AUROC with the
chosen patient-level interval, the macro over the labels the record names (shared evaluation
labels; those with no AUROC or no patient-level interval on the target left out and named) with
the chosen macro interval — the functions of ``bootstrap.py`` and ``compare.py``,
called, never re-derived here. Resamples are drawn on the target's test patients, so they are the
ones the target's own cells get.

**Δ vs internal.** The target's internal cell is the grid's twin of the source cell (same strategy,
backbone, protocol, label fraction and seed, trained on the target; its id is in the record), or,
when the folder does not hold it, the one scored cell with those axis values on the target. Both
predict the same target test images, so Δ = external − internal is paired by image and patient
(same resamples for both arms), on the shared labels; it is given only when the two files hold the
same (image, label, truth) rows on those labels, and otherwise says why not.

An external file made by an earlier run of its cell (another write id) is left out and listed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chexbench.bench.store import ResultsView
from chexbench.reports.aggregate import LoadedResults
from chexbench.reports.bootstrap import (
    CellScores,
    check_prediction_frame,
    draw_patient_resamples,
    macro_ci,
    macro_point,
    score_predictions,
    truth_key,
)
from chexbench.reports.compare import paired_label_delta, paired_macro_delta
from chexbench.reports.markdown import few_mark, fmt_ci, fmt_delta, fmt_fraction, fmt_p, table
from chexbench.reports.score import few_patients_flag, macro_flag

MACRO = "macro"
#: columns of ``external.csv`` / ``external.parquet``: one row per (source cell, target, label or macro)
EXTERNAL_COLUMNS = (
    "cell_id",
    "strategy",
    "backbone",
    "protocol",
    "label_fraction",
    "seed",
    "source",
    "target",
    "label",
    "auroc",
    "auroc_ci_low",
    "auroc_ci_high",
    "n_images",
    "n_patients",
    "n_pos_patients",
    "flag",
    "internal_cell_id",
    "internal_auroc",
    "internal_ci_low",
    "internal_ci_high",
    "delta",
    "delta_ci_low",
    "delta_ci_high",
    "p_value",
    "delta_note",
    "shared_labels",
    "macro_labels",
    "dropped_labels",
    "not_predicted_labels",
    "target_key",
)


@dataclass
class ExternalResults:
    rows: pd.DataFrame  # EXTERNAL_COLUMNS
    left_out: list[str] = field(default_factory=list)  # files not scored, each with why


def external_results(results: LoadedResults) -> ExternalResults:
    """Score every current external predictions file of the folder's scored cells."""
    store = results.view if results.view is not None else ResultsView(results.root)
    records = store.external_records()
    readable = {(Path(rec["path"]).parent.name, Path(rec["path"]).stem) for rec in records}
    left_out = [
        f"`{path}`: unreadable (damaged, or no chexbench record in its footer); `chexbench run` redoes it"
        for path in sorted((results.root / "external").glob("*/*.parquet"))
        if (path.parent.name, path.stem) not in readable
    ]
    if not records:
        return ExternalResults(pd.DataFrame(columns=list(EXTERNAL_COLUMNS)), left_out)
    ok = results.ok.set_index("cell_id", drop=False)
    rows: list[dict[str, Any]] = []
    for rec in records:
        cell_id = str(rec.get("cell_id"))
        if cell_id not in ok.index:
            left_out.append(f"`{rec['path']}`: its cell {cell_id} is not a scored cell of this folder")
            continue
        if rec.get("cell_write_id") != store.cell_write_id(cell_id):
            left_out.append(
                f"`{rec['path']}`: made by an earlier run of cell {cell_id}; `chexbench run` redoes it"
            )
            continue
        rows += _rows_of(rec, store, results, ok)
    frame = pd.DataFrame(rows, columns=list(EXTERNAL_COLUMNS))
    # grouped by source dataset and configuration, seeds together; a stable sort keeps each pair's label order
    # (macro first)
    frame = frame.sort_values(
        ["source", "strategy", "backbone", "protocol", "label_fraction", "seed", "cell_id", "target"],
        kind="stable",
        ignore_index=True,
    )
    return ExternalResults(frame, left_out)


def _internal_cell(rec: dict[str, Any], ok: pd.DataFrame) -> tuple[str, str]:
    """(cell id of the target's internal result, "" or why there is none)."""
    twin = str(rec.get("internal_cell_id", ""))
    if twin in ok.index:
        return twin, ""
    same = ok[
        (ok["dataset"] == rec["target"])
        & (ok["strategy"] == rec["strategy"])
        & (ok["backbone"] == rec["backbone"])
        & (ok["protocol"] == rec["protocol"])
        & np.isclose(ok["label_fraction"].astype(float), float(rec["label_fraction"]))
        & (ok["seed"].astype(int) == int(rec["seed"]))
    ]
    if len(same) == 1:
        return str(same["cell_id"].iloc[0]), ""
    if len(same) > 1:
        return "", f"{len(same)} cells of the folder match on the target, none is this grid's twin {twin}"
    return "", f"no internal cell on {rec['target']} in this folder (twin {twin})"


def _rows_of(
    rec: dict[str, Any], store: ResultsView, results: LoadedResults, ok: pd.DataFrame
) -> list[dict[str, Any]]:
    shared = [str(x) for x in rec["shared_labels"]]
    ext = store.external_predictions(rec["cell_id"], rec["target"])
    check_prediction_frame(ext, rec["path"])
    ext = ext[ext["label"].isin(shared)]
    resamples = draw_patient_resamples(ext["patient_id"], results.n_boot, results.seed)
    scores = score_predictions(ext, resamples, shared, name=f"{rec['cell_id']}→{rec['target']}")
    internal_id, note = _internal_cell(rec, ok)
    internal: CellScores | None = None
    if internal_id:
        theirs = results.predictions(internal_id)
        theirs = theirs[(theirs["split"] == "test") & theirs["label"].isin(shared)]
        if truth_key(theirs) != truth_key(ext):
            note = (
                f"internal cell {internal_id}'s test rows differ from the external ones on the shared labels "
                "(other images or truth: e.g. another max_eval_images or uncertainty policy): not paired"
            )
        else:
            internal = score_predictions(theirs, resamples, shared, name=internal_id)
    base = {
        "cell_id": rec["cell_id"],
        "strategy": rec["strategy"],
        "backbone": rec["backbone"],
        "protocol": rec["protocol"],
        "label_fraction": float(rec["label_fraction"]),
        "seed": int(rec["seed"]),
        "source": rec["source_dataset"],
        "target": rec["target"],
        "n_images": scores.n_images,
        "n_patients": scores.n_patients,
        "internal_cell_id": internal_id if internal is not None else "",
        "shared_labels": ", ".join(shared),
        "macro_labels": ", ".join(rec["macro_labels"]),
        "dropped_labels": ", ".join(rec["dropped_labels"]),
        "not_predicted_labels": ", ".join(rec.get("not_predicted_labels", [])),
        "target_key": rec["target_key"],
    }
    rows = [{**base, **_macro_row(scores, internal, [str(x) for x in rec["macro_labels"]], note)}]
    for label in shared:
        rows.append({**base, **_label_row(scores, internal, label, note)})
    return rows


def _label_row(scores: CellScores, internal: CellScores | None, label: str, note: str) -> dict[str, Any]:
    ls = scores.labels[label]
    lo, hi = ls.auroc_ci()
    row = {
        "label": label,
        "auroc": ls.auroc,
        "auroc_ci_low": lo,
        "auroc_ci_high": hi,
        "n_pos_patients": ls.n_pos_patients,
        "flag": few_patients_flag(ls) or ls.reason or ls.interval_note,
    }
    if internal is None:
        return {**row, **_no_delta(note)}
    li = internal.labels[label]
    ilo, ihi = li.auroc_ci()
    d = paired_label_delta(ls, li)
    why = "" if ls.defined and li.defined else "AUROC undefined in one arm"
    return {
        **row,
        "internal_auroc": li.auroc,
        "internal_ci_low": ilo,
        "internal_ci_high": ihi,
        "delta": d.delta,
        "delta_ci_low": d.ci_low,
        "delta_ci_high": d.ci_high,
        "p_value": d.p_value,
        "delta_note": why,
    }


def _macro_row(
    scores: CellScores, internal: CellScores | None, labels: list[str], note: str
) -> dict[str, Any]:
    """The macro over ``labels`` that have an AUROC and a patient-level interval in every arm (the others are
    named in ``flag``): a label with one positive patient on the target would leave the macro without an
    interval.
    """
    arms = [scores] if internal is None else [scores, internal]
    used = [k for k in labels if all(a.labels[k].defined and not a.labels[k].interval_note for a in arms)]
    left = [k for k in labels if k not in used]
    lo, hi = macro_ci(scores, used)
    flag = "; ".join(
        x
        for x in (
            macro_flag(scores, used),
            (
                "left out of the macro (no AUROC or no patient-level interval on the target):"
                f" {', '.join(left)}"
                if left
                else ""
            ),
        )
        if x
    )
    row = {
        "label": MACRO,
        "auroc": macro_point(scores, used),
        "auroc_ci_low": lo,
        "auroc_ci_high": hi,
        "n_pos_patients": min((scores.labels[k].n_pos_patients for k in used), default=0),
        "flag": flag,
        "macro_labels": ", ".join(used),
    }
    if internal is None:
        return {**row, **_no_delta(note)}
    ilo, ihi = macro_ci(internal, used)
    d = paired_macro_delta(scores, internal, used)  # the report's macro Δ: MOVER on the two macro intervals
    return {
        **row,
        "internal_auroc": macro_point(internal, used),
        "internal_ci_low": ilo,
        "internal_ci_high": ihi,
        "delta": d.delta,
        "delta_ci_low": d.ci_low,
        "delta_ci_high": d.ci_high,
        "p_value": d.p_value,
        "delta_note": "",
    }


def _no_delta(note: str) -> dict[str, Any]:
    nan = math.nan
    return {
        "internal_auroc": nan,
        "internal_ci_low": nan,
        "internal_ci_high": nan,
        "delta": nan,
        "delta_ci_low": nan,
        "delta_ci_high": nan,
        "p_value": nan,
        "delta_note": note,
    }


def _source_label(r: Any) -> str:
    return (
        f"{r.strategy} · {r.backbone} · {r.protocol} · f={fmt_fraction(r.label_fraction)} · seed {r.seed} ·"
        f" on {r.source}"
    )


def external_section(ext: ExternalResults, results: LoadedResults) -> str:
    """The report's external-validation section ("" when the folder has no external predictions)."""
    rows = ext.rows
    if rows.empty and not ext.left_out:
        return ""
    out = [
        "## External validation\n",
        (
            "Each cell's selected model predicts the test split of every `evaluate_on` dataset, on the"
            " labels both datasets share (harmonized names). Macro and per-label AUROC with 95%"
            f" patient-level intervals (the report's methods, {results.n_boot} resamples of the target's test"
            " patients). Δ = external − the target's internal cell (same strategy, backbone, protocol, label"
            " fraction and seed, trained on the target), paired on the same test images and patients. ⚑:"
            " fewer than 10 positive test patients.\n"
        ),
    ]
    if not rows.empty:
        macro = rows[rows["label"] == MACRO]
        targets = sorted(set(macro["target"]) | set(macro["source"]))
        header = ["model (trained on source)", "source", *[f"→ {t}" for t in targets]]
        body = []
        for (cell_id, source), g in macro.groupby(["cell_id", "source"], sort=False):
            first = g.iloc[0]
            internal = _internal_macro(results, str(cell_id))
            cells = []
            for t in targets:
                hit = g[g["target"] == t]
                if t == source:
                    cells.append(internal)
                elif hit.empty:
                    cells.append("—")
                else:
                    h = hit.iloc[0]
                    cells.append(
                        fmt_ci(h["auroc"], h["auroc_ci_low"], h["auroc_ci_high"]) + few_mark(str(h["flag"]))
                    )
            body.append([_source_label(first).rsplit(" · on ", 1)[0], source, *cells])
        out += [
            "### Matrix: macro AUROC, source × target\n",
            (
                "Rows: the source cell; columns: the target dataset (internal: the cell's own test split,"
                " over its evaluation labels). Off the diagonal, the macro runs over the shared evaluation"
                " labels listed below. Everywhere in this matrix a label without a patient-level interval"
                " (too few positive or negative test patients) is left out of the macro and named, so every"
                " macro has an interval; the leaderboard's macro keeps every defined label.\n"
            ),
            table(header, body),
            "",
        ]
        detail = []
        for r in macro.itertuples(index=False):
            detail.append(
                [
                    r.cell_id,
                    f"{r.source} → {r.target}",
                    fmt_ci(r.auroc, r.auroc_ci_low, r.auroc_ci_high) + few_mark(str(r.flag)),
                    fmt_ci(r.internal_auroc, r.internal_ci_low, r.internal_ci_high),
                    fmt_delta(r.delta, r.delta_ci_low, r.delta_ci_high),
                    fmt_p(r.p_value),
                    f"{r.n_images} / {r.n_patients}",
                    r.macro_labels,
                    r.shared_labels,
                    r.dropped_labels or "—",
                    "; ".join(x for x in (str(r.flag), str(r.delta_note)) if x and x != "nan"),
                ]
            )
        out += [
            "### Shared labels and Δ vs the target's internal result\n",
            table(
                [
                    "cell",
                    "source → target",
                    "external macro AUROC",
                    "internal macro AUROC (same labels)",
                    "Δ [95% CI]",
                    "p",
                    "test images / patients",
                    "macro over",
                    "shared labels",
                    "dropped (target lacks)",
                    "note",
                ],
                detail,
            ),
            "",
        ]
        per = rows[rows["label"] != MACRO]
        lines = [
            [
                r.cell_id,
                f"{r.source} → {r.target}",
                r.label,
                fmt_ci(r.auroc, r.auroc_ci_low, r.auroc_ci_high)
                + few_mark(bool(r.flag and "positive patient" in str(r.flag))),
                fmt_ci(r.internal_auroc, r.internal_ci_low, r.internal_ci_high),
                fmt_delta(r.delta, r.delta_ci_low, r.delta_ci_high),
                fmt_p(r.p_value),
                int(r.n_pos_patients),
            ]
            for r in per.itertuples(index=False)
        ]
        out += [
            "### Per label\n",
            table(
                [
                    "cell",
                    "source → target",
                    "label",
                    "external AUROC",
                    "internal AUROC",
                    "Δ [95% CI]",
                    "p",
                    "positive patients",
                ],
                lines,
            ),
            "",
        ]
    if ext.left_out:
        out += ["Left out:\n", *[f"- {x}" for x in ext.left_out], ""]
    return "\n".join(out) + "\n"


def _internal_macro(results: LoadedResults, cell_id: str) -> str:
    """The cell's own test macro AUROC [CI], by the matrix's one rule (as off the diagonal): over its
    evaluation
    labels that have an AUROC and a patient-level interval, the others named — a label with one positive test
    patient would leave the macro without an interval (the leaderboard's macro keeps every defined label)."""
    scores = results.scores.get(cell_id)
    if scores is None:
        return "n/a (internal)"
    defined = [k for k in scores.labels if scores.labels[k].defined]
    labels = [k for k in defined if not scores.labels[k].interval_note]
    left = [k for k in defined if k not in labels]
    lo, hi = macro_ci(scores, labels)
    without = f"; without {', '.join(left)}: no interval" if left else ""
    return (
        fmt_ci(macro_point(scores, labels), lo, hi)
        + few_mark(macro_flag(scores, labels))
        + f" (internal{without})"
    )
