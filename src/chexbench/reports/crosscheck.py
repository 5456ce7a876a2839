"""DeLong as an analytic cross-check of the headline comparisons (never the primary interval).

For each comparison vs the baseline, the first seed of each arm: Δ macro AUROC with
(1) the primary interval (MOVER on the two macro intervals, ``compare.paired_macro_delta``), (2) DeLong's
normal interval, which
treats images as independent, and (3) the clustered variant (Obuchowski 1997), which sums
structural components per patient. Labels of one image are correlated too, so the macro
variance sums each image's influence over labels before squaring (``delong.auroc_influence``).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from scipy.stats import norm

from chexbench.reports.aggregate import LoadedResults
from chexbench.reports.compare import paired_macro_delta
from chexbench.reports.delong import auroc_influence, influence_variance
from chexbench.reports.leaderboard import Tables

Z95 = float(norm.ppf(0.975))


def cell_influence(results: LoadedResults, cell_id: str, labels: list[str]) -> pd.DataFrame:
    """Per (image, label): the macro AUROC's influence value ψ / L on this cell's test set."""
    preds = results.predictions(cell_id)
    preds = preds[(preds["split"] == "test") & preds["y_true"].notna() & preds["label"].isin(labels)]
    frames = []
    for _, g in preds.groupby("label", sort=True):
        _, psi = auroc_influence(g["y_true"].to_numpy(), g["y_score"].to_numpy())
        frames.append(g[["image_id", "patient_id", "label"]].assign(psi=psi / len(labels)))
    return (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=["image_id", "patient_id", "label", "psi"])
    )


def delong_crosscheck(results: LoadedResults, tables: Tables) -> pd.DataFrame:
    """One row per paired comparison in the leaderboard (first seed of each arm)."""
    lb = tables.leaderboard
    rows: list[dict] = []
    if lb.empty:
        return pd.DataFrame(rows)
    cache: dict[str, pd.DataFrame] = {}
    index = {r["configuration_hash"]: r for _, r in lb.iterrows()}
    for _, r in lb.iterrows():
        if r["strategy"] == tables.baseline or not np.isfinite(r["delta"]):
            continue
        base = index[r["baseline_configuration"]]
        labels = json.loads(r["labels"])
        cell_a, cell_b = r["cell_ids"].split(",")[0], base["cell_ids"].split(",")[0]
        sa, sb = results.scores[cell_a], results.scores[cell_b]
        boot = paired_macro_delta(sa, sb, labels)
        for c in (cell_a, cell_b):
            if c not in cache:
                cache[c] = cell_influence(results, c, labels)
        joined = cache[cell_a].merge(cache[cell_b], on=["image_id", "label"], suffixes=("_a", "_b"))
        per_image = (joined["psi_a"] - joined["psi_b"]).groupby(joined["image_id"]).sum()
        patient_of = joined.groupby("image_id")["patient_id_a"].first().loc[per_image.index]
        se_images = np.sqrt(influence_variance(per_image.to_numpy()))
        se_patients = np.sqrt(influence_variance(per_image.to_numpy(), patient_of.to_numpy()))
        boot_width = boot.ci_high - boot.ci_low
        rows.append(
            {
                "dataset": r["dataset"],
                "protocol": r["protocol"],
                "label_fraction": r["label_fraction"],
                "backbone": r["backbone"],
                "strategy": r["strategy"],
                "configuration_label": r["configuration_label"],
                "cell_a": cell_a,
                "cell_b": cell_b,
                "delta": boot.delta,
                "bootstrap_ci_low": boot.ci_low,
                "bootstrap_ci_high": boot.ci_high,
                "delong_ci_low": boot.delta - Z95 * se_images,
                "delong_ci_high": boot.delta + Z95 * se_images,
                "clustered_ci_low": boot.delta - Z95 * se_patients,
                "clustered_ci_high": boot.delta + Z95 * se_patients,
                "delong_width_ratio": 2 * Z95 * se_images / boot_width if boot_width > 0 else np.nan,
                "clustered_width_ratio": 2 * Z95 * se_patients / boot_width if boot_width > 0 else np.nan,
            }
        )
    return pd.DataFrame(rows)
