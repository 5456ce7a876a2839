"""The report's localization section, a pure function of the stored records
(``data_json["protocol_extra"]["localization"]``, see :mod:`chexbench.explain.localization`).

- :func:`localization_summary`: one row per **configuration** (the resolved config without the
  seed; seeds of one configuration are pooled, different configurations never are): AUROC
  beside the pointing game at 0 px and at the stored tolerance, each with a 95% patient-level
  bootstrap interval, the random-heatmap baselines, their ratio and the flat-map count. Seeds
  are pooled on the same (image, label) pairs: each pair's hit is averaged over the seeds, then
  patients are resampled — the interval covers the test sample, the seed spread is shown beside it.
  Beside the area-random map, the label prior (fitted on the training boxes) and shuffled maps (each
  map against another test image's boxes of its label); each rate is given as a ratio to the
  **strongest** of the three, with its patient-level interval (:mod:`chexbench.explain.baselines`).
- :func:`localization_label_rows`: the same per label.
- :func:`localization_rows`: one row per cell, numbers as stored.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from chexbench.bench.cell_model import HEAD_OPTIONS, head_option
from chexbench.bench.record import RecordStatus
from chexbench.explain.baselines import bootstrap_rates, strongest
from chexbench.explain.localization import bootstrap_rate_interval

COLUMNS = (
    "strategy",
    "backbone",
    "dataset",
    "protocol",
    "head",
    "K",
    "label_fraction",
    "seed",
    "macro AUROC",
    "heatmap",
    "pairs",
    "flat maps",
    "pointing",
    "pointing CI",
    "random pointing",
    "tolerance px",
    "tolerant pointing",
    "tolerant CI",
    "random tolerant",
    "label prior",
    "shuffled",
    "÷ strongest",
    "deletion AUC",
    "random deletion AUC",
)
SUMMARY_COLUMNS = (
    "dataset",
    "strategy",
    "backbone",
    "protocol",
    "head",
    "K",
    "label_fraction",
    "heatmap",
    "seeds",
    "macro AUROC",
    "pairs",
    "flat maps",
    "pointing",
    "pointing CI",
    "random pointing",
    "label prior",
    "shuffled",
    "strongest baseline",
    "÷ strongest",
    "÷ strongest CI",
    "tolerance px",
    "tolerant pointing",
    "tolerant CI",
    "random tolerant",
    "tolerant ÷ random",
    "label prior tolerant",
    "shuffled tolerant",
    "tolerant ÷ strongest",
    "tolerant ÷ strongest CI",
    "seed range (tolerant)",
    "deletion AUC",
    "random deletion AUC",
    "prior deletion AUC",
)
#: the baselines' names in the stored records → the report's words
BASELINE_NAMES = {"random": "random", "label_prior": "label prior", "shuffled": "shuffled"}
RESAMPLES = 2000


def _cells(records: pd.DataFrame) -> list[dict[str, Any]]:
    """Finished cells that stored a localization result, with their parsed config and result."""
    out = []
    for _, r in records.iterrows():
        if r.get("status") != RecordStatus.OK:
            continue
        extra = json.loads(r.get("data_json") or "{}").get("protocol_extra", {}) or {}
        loc = extra.get("localization")
        if not loc:
            continue
        config = json.loads(r.get("config_json") or "{}")
        proto_opts = config.get("protocol_options", {}) or {}
        head = extra.get("head", head_option(proto_opts, "head"))
        if (
            head == "topk_classwise"
            and head_option(proto_opts, "classwise_source") != HEAD_OPTIONS["classwise_source"]
        ):
            kernel, offset = (
                int(head_option(proto_opts, "local_kernel")),
                head_option(proto_opts, "local_offset"),
            )
            design = [
                proto_opts["classwise_source"],
                *([f"{kernel}×{kernel}"] if kernel != HEAD_OPTIONS["local_kernel"] else []),
                *([] if offset else ["no offset"]),
            ]
            head = f"{head} ({', '.join(design)})"  # another head design: never read as the default one
        key = json.dumps({k: v for k, v in config.items() if k != "seed"}, sort_keys=True, default=str)
        out.append(
            {
                "record": r,
                "loc": loc,
                "head": head,
                "K": head_option(proto_opts, "topk") if head != "linear" else "",
                "config_key": key,
            }
        )
    return out


def localization_rows(records: pd.DataFrame) -> pd.DataFrame:
    """One row per finished cell that stored a localization result (columns :data:`COLUMNS`)."""
    rows: list[dict[str, Any]] = []
    for c in _cells(records):
        r, loc = c["record"], c["loc"]
        tol = loc.get("tolerant") or {}
        rows.append(
            {
                "strategy": r["strategy"],
                "backbone": r["backbone"],
                "dataset": r["dataset"],
                "protocol": r["protocol"],
                "head": c["head"],
                "K": c["K"],
                "label_fraction": r["label_fraction"],
                "seed": r["seed"],
                "macro AUROC": r["macro_auroc"],
                "heatmap": loc["method"],
                "pairs": loc["pairs"],
                "flat maps": loc.get("flat_maps"),
                "pointing": loc["pointing_hit_rate"],
                "pointing CI": loc.get("pointing_ci"),
                "random pointing": loc["random_hit_rate"],
                "tolerance px": tol.get("tolerance_px"),
                "tolerant pointing": tol.get("pointing_hit_rate"),
                "tolerant CI": tol.get("pointing_ci"),
                "random tolerant": tol.get("random_hit_rate"),
                "deletion AUC": loc.get("deletion_auc"),
                "random deletion AUC": loc.get("random_deletion_auc"),
                **_stored_baselines(loc.get("baselines")),
            }
        )
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    return frame.sort_values(
        ["dataset", "backbone", "strategy", "protocol", "head", "label_fraction", "seed"],
        kind="stable",
        key=lambda s: s.astype(str),
    ).reset_index(drop=True)


def _stored_baselines(base: dict[str, Any] | None) -> dict[str, Any]:
    """A cell's stored baselines (0 px) → the per-cell columns; dashes for a record written before they
    existed."""
    if not base:
        return {"label prior": None, "shuffled": None, "÷ strongest": None}
    ratio = base.get("ratio_to_strongest")
    return {
        "label prior": base["label_prior"]["rate"],
        "shuffled": base["shuffled"]["rate"],
        "÷ strongest": None if ratio is None else f"{ratio:.2f} ({BASELINE_NAMES[base['strongest']]})",
    }


BASELINE_COLUMNS = ("label_prior", "label_prior_tolerant", "shuffled", "shuffled_tolerant")


def _baselines(pairs: pd.DataFrame, hit: str, suffix: str = "") -> dict[str, Any]:
    """The three baselines' rates on ``pairs``, the strongest, and the map's ratio to it with a patient-level
    interval (the same resamples as the rate's); dashes when the pairs carry no stored baselines (older
    records).
    """
    cols = {
        "random": "random" + suffix,
        "label_prior": "label_prior" + suffix,
        "shuffled": "shuffled" + suffix,
    }
    if any(c not in pairs or pairs[c].isna().any() for c in cols.values()):
        return {"label_prior": None, "shuffled": None, "strongest": None, "ratio": None, "ratio_ci": None}
    rates = {k: float(pairs[c].mean()) for k, c in cols.items()}
    best = strongest(rates)
    out = {
        "label_prior": rates["label_prior"],
        "shuffled": rates["shuffled"],
        "strongest": BASELINE_NAMES[best],
        "ratio": None,
        "ratio_ci": None,
    }
    if rates[best] > 0:
        ci = bootstrap_rates(
            {"hit": pairs[hit].to_numpy(), "base": pairs[cols[best]].to_numpy()},
            pairs["cluster"].to_numpy(),
            RESAMPLES,
            ratio_to={"ratio": "hit/base"},
        )
        out["ratio"], out["ratio_ci"] = float(pairs[hit].mean()) / rates[best], ci["ratio"]
    return out


def _pooled_pairs(cells: list[dict[str, Any]]) -> pd.DataFrame | None:
    """The pairs every seed of one configuration evaluated, each hit averaged over the seeds; None
    when a cell stored no per-pair detail."""
    frames = []
    for c in cells:
        detail = c["loc"].get("pair_detail")
        if not detail:
            return None
        frames.append(pd.DataFrame(detail).assign(seed=c["record"]["seed"]))
    long = pd.concat(frames, ignore_index=True)
    n_seeds = long["seed"].nunique()
    for c in BASELINE_COLUMNS:  # a record from before the baselines: NaN, shown as a dash
        if c not in long:
            long[c] = np.nan
    pooled = long.groupby(["image_id", "label"], sort=True).agg(
        cluster=("cluster", "first"),
        n=("seed", "nunique"),
        hit=("hit", "mean"),
        hit_tolerant=("hit_tolerant", "mean"),
        random=("random", "first"),
        random_tolerant=("random_tolerant", "first"),
        flat=("flat", "mean"),
        # a seed's prior (its own training subsample) and its shuffled maps are averaged over the seeds like
        # its hits
        **{c: (c, lambda v: v.mean(skipna=False)) for c in BASELINE_COLUMNS},
    )
    return pooled[pooled["n"] == n_seeds].reset_index()


def _rate_and_ci(pairs: pd.DataFrame, hit: str, chance: str) -> tuple[float, list[float], float]:
    ci = bootstrap_rate_interval(
        pairs[hit].to_numpy(), pairs[chance].to_numpy(), pairs["cluster"].to_numpy(), RESAMPLES
    )
    return float(pairs[hit].mean()), ci["pointing_ci"], float(pairs[chance].mean())


def _groups(records: pd.DataFrame) -> list[list[dict[str, Any]]]:
    by_key: dict[str, list[dict[str, Any]]] = {}
    for c in _cells(records):
        by_key.setdefault(c["config_key"], []).append(c)
    return list(by_key.values())


def _describe(cells: list[dict[str, Any]]) -> dict[str, Any]:
    r = cells[0]["record"]
    return {
        "dataset": r["dataset"],
        "strategy": r["strategy"],
        "backbone": r["backbone"],
        "protocol": r["protocol"],
        "head": cells[0]["head"],
        "K": cells[0]["K"],
        "label_fraction": r["label_fraction"],
        "heatmap": cells[0]["loc"]["method"],
        "seeds": len(cells),
    }


def _count(v: float | None) -> int | float | None:
    """A count as an int when whole (one seed), else to one decimal (a mean over seeds)."""
    return None if v is None else int(v) if float(v).is_integer() else round(float(v), 1)


def localization_summary(records: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration, seeds pooled (columns :data:`SUMMARY_COLUMNS`)."""
    rows = []
    for cells in _groups(records):
        row = _describe(cells)
        aurocs = np.array([float(c["record"]["macro_auroc"]) for c in cells], dtype=np.float64)
        row["macro AUROC"] = (
            float(aurocs[~np.isnan(aurocs)].mean()) if (~np.isnan(aurocs)).any() else float("nan")
        )
        tol_rates = [c["loc"].get("tolerant", {}).get("pointing_hit_rate") for c in cells]
        row["seed range (tolerant)"] = (
            [min(tol_rates), max(tol_rates)] if None not in tol_rates and len(cells) > 1 else None
        )
        row["tolerance px"] = cells[0]["loc"].get("tolerant", {}).get("tolerance_px")
        dels = [(c["loc"].get("deletion_auc"), c["loc"].get("random_deletion_auc")) for c in cells]
        dels = [d for d in dels if d[0] is not None and d[1] is not None]
        row["deletion AUC"] = (
            float(np.mean([d[0] for d in dels])) if dels else None
        )  # mean over the seeds that measured it
        row["random deletion AUC"] = float(np.mean([d[1] for d in dels])) if dels else None
        prior_dels = [c["loc"].get("prior_deletion_auc") for c in cells]
        row["prior deletion AUC"] = float(np.mean(prior_dels)) if dels and None not in prior_dels else None
        pairs = _pooled_pairs(cells)
        if pairs is None or pairs.empty:
            # a seed without per-pair detail (an older record) or seeds without common pairs: the mean of the
            # seeds' own rates, no interval — never one seed's numbers under the row's seed count
            locs = [c["loc"] for c in cells]
            tols = [loc.get("tolerant") or {} for loc in locs]

            def mean(values: list[Any]) -> Any:
                return float(np.mean(values)) if values and None not in values else None

            row.update(
                {
                    "pairs": max(int(loc["pairs"]) for loc in locs),
                    "flat maps": _count(mean([loc.get("flat_maps") for loc in locs])),
                    "pointing": mean([loc["pointing_hit_rate"] for loc in locs]),
                    "pointing CI": locs[0].get("pointing_ci") if len(cells) == 1 else None,
                    "random pointing": mean([loc["random_hit_rate"] for loc in locs]),
                    "tolerant pointing": mean([t.get("pointing_hit_rate") for t in tols]),
                    "tolerant CI": tols[0].get("pointing_ci") if len(cells) == 1 else None,
                    "random tolerant": mean([t.get("random_hit_rate") for t in tols]),
                }
            )
            base = locs[0].get("baselines") if len(cells) == 1 else None
            if base:  # one seed: its stored baselines as they are
                row.update(
                    {
                        "label prior": base["label_prior"]["rate"],
                        "shuffled": base["shuffled"]["rate"],
                        "strongest baseline": BASELINE_NAMES[base["strongest"]],
                        "÷ strongest": base.get("ratio_to_strongest"),
                        "÷ strongest CI": base.get("ratio_ci"),
                    }
                )
        else:
            row["pairs"] = len(pairs)
            row["flat maps"] = _count(float(pairs["flat"].sum()))  # per seed, averaged over the seeds
            row["pointing"], row["pointing CI"], row["random pointing"] = _rate_and_ci(pairs, "hit", "random")
            row["tolerant pointing"], row["tolerant CI"], row["random tolerant"] = _rate_and_ci(
                pairs, "hit_tolerant", "random_tolerant"
            )
            b0, bt = _baselines(pairs, "hit"), _baselines(pairs, "hit_tolerant", "_tolerant")
            row.update(
                {
                    "label prior": b0["label_prior"],
                    "shuffled": b0["shuffled"],
                    "strongest baseline": b0["strongest"],
                    "÷ strongest": b0["ratio"],
                    "÷ strongest CI": b0["ratio_ci"],
                    "label prior tolerant": bt["label_prior"],
                    "shuffled tolerant": bt["shuffled"],
                    "tolerant ÷ strongest": bt["ratio"],
                    "tolerant ÷ strongest CI": bt["ratio_ci"],
                }
            )
        tp, rt = row.get("tolerant pointing"), row.get("random tolerant")
        row["tolerant ÷ random"] = tp / rt if tp is not None and rt else None
        rows.append(row)
    frame = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    return frame.sort_values(
        ["dataset", "backbone", "strategy", "protocol", "head", "K", "label_fraction"],
        kind="stable",
        key=lambda s: s.astype(str),
    ).reset_index(drop=True)


def localization_label_rows(records: pd.DataFrame) -> pd.DataFrame:
    """Per configuration and label, seeds pooled: pairs, pointing (0 px and tolerant, with intervals) and
    random."""
    rows = []
    for cells in _groups(records):
        pairs = _pooled_pairs(cells)
        if pairs is None or pairs.empty:
            continue
        for label, sub in pairs.groupby("label", sort=True):
            p0, ci0, r0 = _rate_and_ci(sub, "hit", "random")
            pt, cit, rt = _rate_and_ci(sub, "hit_tolerant", "random_tolerant")
            b0 = _baselines(sub, "hit")
            rows.append(
                {
                    **_describe(cells),
                    "label": label,
                    "pairs": len(sub),
                    "pointing": p0,
                    "pointing CI": ci0,
                    "random pointing": r0,
                    "label prior": b0["label_prior"],
                    "shuffled": b0["shuffled"],
                    "strongest baseline": b0["strongest"],
                    "÷ strongest": b0["ratio"],
                    "÷ strongest CI": b0["ratio_ci"],
                    "tolerant pointing": pt,
                    "tolerant CI": cit,
                    "random tolerant": rt,
                }
            )
    return pd.DataFrame(rows)


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return "—"
    if isinstance(v, (list, tuple)) and len(v) == 2:
        return f"[{v[0]:.3f}, {v[1]:.3f}]"
    if isinstance(v, (float, np.floating)):
        return f"{v:.3f}"
    return str(v)


def _table(frame: pd.DataFrame, columns: list[str]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in frame.iterrows():
        lines.append(
            "| "
            + " | ".join(f"{row[c]:g}" if c == "label_fraction" else _fmt(row[c]) for c in columns)
            + " |"
        )
    return lines


def localization_section(records: pd.DataFrame, heading: str = "## Localization") -> str:
    """Markdown: the per-configuration table (seeds pooled, intervals), the per-label table and the
    per-cell table; "" when no cell has a localization result."""
    summary = localization_summary(records)
    if summary.empty:
        return ""
    tol = summary["tolerance px"].dropna().unique()
    tol_text = f"{tol[0]:.2f} px" if len(tol) == 1 else "the tolerance in its column"
    lines = [
        heading,
        "",
        (
            "Test split, (image, label) pairs with a positive label and a ground-truth box. **Pointing"
            " game** (Zhang et al. 2016): the heatmap's maximum lies in a box of the label (0 px), or within"
            f" {tol_text} of one (tolerant; the standard 15 px at 224 px, scaled). A flat map (constant, all"
            " zero, 1×1) is a miss and counted under *flat maps* (per seed, averaged over the seeds);"
            " separate tied maxima count as the fraction of them that hit. **Random**: the hit rate of a map"
            " whose maximum is a uniformly random pixel (the boxes' area fraction, grown by the tolerance)."
            f" Intervals: 95% percentile bootstrap over patients ({RESAMPLES} resamples); seeds of one"
            " configuration are pooled on the same pairs (each pair's hit averaged over seeds), the seed"
            " range is shown beside. Heatmaps: `topk_classwise` (the label's own patch logits),"
            " `topk_scores` (class-agnostic patch scorer), `vit_gradcam` (Grad-CAM on a plain ViT's"
            " last-block tokens), `gradcam` (ResNet, last stage). Each map cell is placed at its receptive"
            " field's centre on the image. **Deletion AUC** (Petsiuk et al. 2018; lower is better), where"
            " measured: the label's probability as the pixels are set to 0 from the highest heat down (ties,"
            " and a flat map as a whole, in random order), area over the deleted fraction; *random deletion"
            " AUC* deletes in random order, *prior deletion AUC* in the order of the label prior's map. Mean"
            " over the seeds. **Baselines that never see the test lesion:** *label prior* — per label, the"
            " point that hits the most boxes of the cell's training split, scored on the test pairs;"
            " *shuffled* — each map scored against the boxes of another test image with the same label. **÷"
            " strongest**: the pointing rate divided by the highest of the three baselines (named in"
            " *strongest baseline*), with its 95% patient-level bootstrap interval; a map that does not beat"
            " the strongest baseline (ratio ≤ 1, or an interval reaching 1) has not been shown to find the"
            " lesion."
        ),
        "",
    ]
    summary_cols = [
        c
        for c in SUMMARY_COLUMNS
        if (c not in ("protocol", "label_fraction", "tolerance px") or summary[c].astype(str).nunique() > 1)
        and (
            c not in ("deletion AUC", "random deletion AUC", "prior deletion AUC") or summary[c].notna().any()
        )
    ]
    lines += _table(summary, summary_cols)
    labels = localization_label_rows(records)
    if not labels.empty:
        lines += ["", "Per label (seeds pooled):", ""]
        label_cols = [
            "dataset",
            "strategy",
            "backbone",
            "head",
            "K",
            "label",
            "pairs",
            "pointing",
            "pointing CI",
            "random pointing",
            "label prior",
            "shuffled",
            "÷ strongest",
            "÷ strongest CI",
            "tolerant pointing",
            "tolerant CI",
            "random tolerant",
        ]
        lines += _table(labels, label_cols)
    cells = localization_rows(records)
    if len(cells) > len(summary):
        lines += ["", "<details><summary>Per cell</summary>", ""]
        lines += _table(
            cells,
            [
                c
                for c in COLUMNS
                if c not in ("deletion AUC", "random deletion AUC", "label prior", "shuffled", "÷ strongest")
                or cells[c].notna().any()
            ],
        )
        lines += ["", "</details>"]
    return "\n".join(lines) + "\n"
