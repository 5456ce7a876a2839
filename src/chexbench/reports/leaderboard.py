"""Scored cells → leaderboard tables: one row per configuration (seeds pooled), Δ vs baseline.

A *configuration* is (dataset, protocol, label_fraction, backbone, strategy); its cells are
its seeds. Macro metrics average a dataset's evaluation labels that are defined (both
classes present) on the test set of every cell of that dataset, so all rows of one dataset
average the same labels.

Comparison families (for the corrections):
- *headline*: every macro-AUROC Δ vs the baseline strategy in the report (all datasets,
  protocols, label fractions, backbones) — Holm and BH over that one family;
- *per-label*: every per-label AUROC Δ vs the baseline — BH over that family (exploratory).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from chexbench.reports.aggregate import CONFIG_AXES, LoadedResults
from chexbench.reports.bootstrap import macro_point, macro_replicates
from chexbench.reports.compare import adjust_p_values, paired_delta
from chexbench.reports.seeds import SeedSummary, combine_seeds


@dataclass
class Tables:
    """The report's numbers: DataFrames that the Markdown and the Parquet/CSV are made from."""

    leaderboard: pd.DataFrame  # one row per configuration
    per_label: pd.DataFrame  # one row per configuration × evaluation label
    macro_labels: dict[str, list[str]]  # dataset → labels in the macro average
    undefined_labels: dict[str, dict[str, str]]  # dataset → label → why it is left out
    baseline: str


def macro_label_sets(results: LoadedResults) -> tuple[dict[str, list[str]], dict[str, dict[str, str]]]:
    """Per dataset: the evaluation labels defined in every ok cell, and why the others are not."""
    labels: dict[str, list[str]] = {}
    undefined: dict[str, dict[str, str]] = {}
    for dataset, recs in results.ok.groupby("dataset", sort=True):
        order: list[str] = []
        why: dict[str, str] = {}
        for cell_id in recs["cell_id"]:
            for name, ls in results.scores[cell_id].labels.items():
                if name not in order:
                    order.append(name)
                if not ls.defined and name not in why:
                    why[name] = f"{ls.reason} ({ls.n_pos} pos / {ls.n_neg} neg)"
        labels[str(dataset)] = [k for k in order if k not in why]
        undefined[str(dataset)] = why
    return labels, undefined


def _summaries(results: LoadedResults, cell_ids: list[str], labels: list[str], rng: np.random.Generator) -> dict[str, SeedSummary]:
    """Macro AUROC/AUPRC and per-label AUROC/AUPRC summaries over the seeds ``cell_ids``."""
    cells = [results.scores[c] for c in cell_ids]
    out: dict[str, SeedSummary] = {}
    for metric in ("auroc", "auprc"):
        out[f"macro_{metric}"] = combine_seeds(
            [macro_point(c, labels, metric) for c in cells],
            [macro_replicates(c, labels, metric) for c in cells],
            rng,
        )
        for label in cells[0].labels:
            if all(label in c.labels for c in cells):
                out[f"{label}:{metric}"] = combine_seeds(
                    [getattr(c.labels[label], metric) for c in cells],
                    [getattr(c.labels[label], f"{metric}_boot") for c in cells],
                    rng,
                )
    return out


def build_tables(results: LoadedResults, baseline: str = "scratch") -> Tables:
    """Leaderboard and per-label tables with seed-pooled intervals and Δ vs ``baseline``."""
    macro_labels, undefined = macro_label_sets(results)
    rng = np.random.default_rng(np.random.SeedSequence([results.seed, 7]))
    summaries: dict[tuple, dict[str, SeedSummary]] = {}
    meta: dict[tuple, dict] = {}
    for key, recs in results.ok.groupby(list(CONFIG_AXES), sort=True):
        cell_ids = list(recs.sort_values("seed")["cell_id"])
        summaries[key] = _summaries(results, cell_ids, macro_labels[key[0]], rng)
        keys = {results.test_set_of[c] for c in cell_ids}
        meta[key] = {
            "seeds": ",".join(str(s) for s in sorted(recs["seed"])),
            "cell_ids": ",".join(cell_ids),
            "config_hashes": ",".join(str(h)[:12] for h in recs.sort_values("seed")["config_hash"]),
            "test_set": ",".join(sorted(keys)),
            "n_test_images": results.test_sets[sorted(keys)[0]].n_images,
            "n_test_patients": results.test_sets[sorted(keys)[0]].n_patients,
        }

    rows, label_rows = [], []
    for key, summ in summaries.items():
        config = dict(zip(CONFIG_AXES, key, strict=True))
        base_key = (*key[:4], baseline)
        row = {**config, **meta[key], "n_seeds": summ["macro_auroc"].n_seeds, "baseline": baseline}
        for metric in ("macro_auroc", "macro_auprc"):
            s = summ[metric]
            row.update({metric: s.mean, f"{metric}_sd": s.sd, f"{metric}_ci_low": s.ci_low, f"{metric}_ci_high": s.ci_high})
        row["n_degenerate"] = summ["macro_auroc"].n_degenerate
        row.update(_calibration(results, meta[key]["cell_ids"].split(","), macro_labels[key[0]]))
        row["n_boot"] = results.n_boot
        row["labels"] = json.dumps(macro_labels[key[0]])
        row.update(_delta(summaries, meta, key, base_key, "macro_auroc", baseline))
        rows.append(row)
        for label in results.scores[meta[key]["cell_ids"].split(",")[0]].labels:
            if f"{label}:auroc" not in summ:
                continue
            a, p = summ[f"{label}:auroc"], summ[f"{label}:auprc"]
            first = results.scores[meta[key]["cell_ids"].split(",")[0]].labels[label]
            lrow = {
                **config,
                "label": label,
                "n_seeds": a.n_seeds,
                "auroc": a.mean,
                "auroc_sd": a.sd,
                "auroc_ci_low": a.ci_low,
                "auroc_ci_high": a.ci_high,
                "auprc": p.mean,
                "auprc_ci_low": p.ci_low,
                "auprc_ci_high": p.ci_high,
                "n_pos": first.n_pos,
                "n_neg": first.n_neg,
                "n_degenerate": a.n_degenerate,
                "undefined_reason": first.reason,
            }
            lrow.update(_delta(summaries, meta, key, base_key, f"{label}:auroc", baseline))
            label_rows.append(lrow)

    leaderboard = pd.DataFrame(rows)
    per_label = pd.DataFrame(label_rows)
    if not leaderboard.empty:
        leaderboard["p_holm"] = adjust_p_values(leaderboard["p_value"], "holm")
        leaderboard["p_bh"] = adjust_p_values(leaderboard["p_value"], "bh")
    if not per_label.empty:
        per_label["p_bh"] = adjust_p_values(per_label["p_value"], "bh")
    return Tables(leaderboard, per_label, macro_labels, undefined, baseline)


def _calibration(results: LoadedResults, cell_ids: list[str], labels: list[str]) -> dict:
    """Mean over seeds of the macro (over ``labels``) test ECE and sensitivity / specificity at the
    validation-chosen operating point; NaN where a seed lacks them."""
    per_seed = []
    for c in cell_ids:
        cal = results.calibration[c]
        cal = cal[cal["label"].isin(labels)]
        per_seed.append([cal[m].mean() if len(cal) and cal[m].notna().all() else np.nan
                         for m in ("ece", "sensitivity", "specificity")])
    arr = np.array(per_seed, dtype=float).reshape(-1, 3)
    means = arr.mean(axis=0) if len(arr) else np.full(3, np.nan)
    return {"macro_ece": means[0], "macro_sensitivity": means[1], "macro_specificity": means[2]}


def _delta(summaries: dict, meta: dict, key: tuple, base_key: tuple, metric: str, baseline: str) -> dict:
    """Δ vs baseline columns; NaN with a reason when there is nothing to compare."""
    empty = {"delta": np.nan, "delta_ci_low": np.nan, "delta_ci_high": np.nan, "p_value": np.nan}
    if key[4] == baseline:
        return {**empty, "delta_note": "baseline"}
    if base_key not in summaries:
        return {**empty, "delta_note": f"no '{baseline}' cell for this backbone/fraction"}
    if meta[key]["test_set"] != meta[base_key]["test_set"]:
        return {**empty, "delta_note": "different test sets: not paired"}
    a, b = summaries[key].get(metric), summaries[base_key].get(metric)
    if a is None or b is None or not (np.isfinite(a.mean) and np.isfinite(b.mean)):
        return {**empty, "delta_note": "undefined"}
    d = paired_delta(a.mean, b.mean, a.replicates, b.replicates)
    return {"delta": d.delta, "delta_ci_low": d.ci_low, "delta_ci_high": d.ci_high, "p_value": d.p_value, "delta_note": ""}
