"""Report figures (matplotlib, Agg backend): label-fraction curves, ROC curves, forest plot of Δ,
reliability diagrams and pretraining loss curves. Each figure is written atomically."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from chexbench.atomic import atomic_path
from chexbench.reports.aggregate import LoadedResults
from chexbench.reports.leaderboard import Tables


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> Path:
    """Save ``fig`` as PNG through a temp file + rename; closes the figure."""
    plt = _pyplot()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    finally:
        plt.close(fig)
    return path


def _slug(*parts: object) -> str:
    return "_".join(str(p).replace("/", "-").replace(" ", "-").replace(".", "p") for p in parts)


def forest_plot(tables: Tables, dataset: str, protocol: str, path: Path) -> Path | None:
    """Δ macro AUROC vs the baseline with 95% intervals, one row per comparison of (dataset, protocol)."""
    lb = tables.leaderboard
    if lb.empty:
        return None
    lb = lb[(lb["dataset"] == dataset) & (lb["protocol"] == protocol)]
    comp = lb[(lb["strategy"] != tables.baseline) & lb["delta"].notna()]
    if comp.empty:
        return None
    plt = _pyplot()
    comp = comp.sort_values(["dataset", "protocol", "label_fraction", "backbone", "configuration_label"])
    n = len(comp)
    fig, ax = plt.subplots(figsize=(7.5, 1.2 + 0.32 * n))
    y = np.arange(n)[::-1]
    lo = comp["delta"] - comp["delta_ci_low"]
    hi = comp["delta_ci_high"] - comp["delta"]
    significant = comp["p_holm"].fillna(1.0) < 0.05
    colors = np.where(significant, "tab:red", "tab:blue")
    for yi, (d, err_lo, err_hi, c) in enumerate(zip(comp["delta"], lo, hi, colors, strict=True)):
        ax.errorbar(d, y[yi], xerr=[[err_lo], [err_hi]], fmt="o", color=c, capsize=3)
    ax.axvline(0, color="grey", lw=1, ls="--")
    names = [f"f={r.label_fraction:g} · {r.backbone} · {r.configuration_label}" for r in comp.itertuples()]
    ax.set_yticks(y, names, fontsize=8)
    ax.set_xlabel(f"Δ macro AUROC vs {tables.baseline} (95% CI; red: Holm p < 0.05)")
    ax.set_title(f"Paired differences vs baseline · {dataset} · {protocol}")
    return save_figure(fig, path)


def fraction_curves(tables: Tables, dataset: str, protocol: str, path: Path) -> Path | None:
    """Macro AUROC vs label fraction per strategy with interval bands; one panel per backbone."""
    lb = tables.leaderboard
    g = lb[(lb["dataset"] == dataset) & (lb["protocol"] == protocol)]
    if g["label_fraction"].nunique() < 2:
        return None
    plt = _pyplot()
    backbones = sorted(g["backbone"].unique())
    fig, axes = plt.subplots(1, len(backbones), figsize=(4.2 * len(backbones), 3.4), squeeze=False, sharey=True)
    for ax, bb in zip(axes[0], backbones, strict=True):
        for strategy, gs in g[g["backbone"] == bb].groupby("configuration_label", sort=True):  # one line per configuration
            gs = gs.sort_values("label_fraction")
            line = ax.plot(gs["label_fraction"], gs["macro_auroc"], marker="o", label=strategy)[0]
            ax.fill_between(gs["label_fraction"], gs["macro_auroc_ci_low"], gs["macro_auroc_ci_high"], color=line.get_color(), alpha=0.2)
        ax.set_xscale("log")
        ax.set_xlabel("label fraction")
        ax.set_title(bb)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("macro AUROC (95% CI)")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(f"{dataset} · {protocol}")
    return save_figure(fig, path)


def roc_curves(results: LoadedResults, tables: Tables, dataset: str, protocol: str, path: Path) -> Path | None:
    """Test ROC curve per macro label, one line per strategy/backbone (largest fraction, first seed)."""
    from sklearn.metrics import roc_curve

    lb = tables.leaderboard
    g = lb[(lb["dataset"] == dataset) & (lb["protocol"] == protocol)]
    labels = tables.macro_labels.get(dataset, [])
    if g.empty or not labels:
        return None
    g = g[g["label_fraction"] == g["label_fraction"].max()]
    plt = _pyplot()
    ncol = min(4, len(labels))
    nrow = math.ceil(len(labels) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 3.0 * nrow), squeeze=False)
    for r in g.itertuples():
        cell_id = r.cell_ids.split(",")[0]
        preds = results.predictions(cell_id)
        preds = preds[(preds["split"] == "test") & preds["y_true"].notna()]
        for ax, label in zip(axes.flat, labels, strict=False):
            p = preds[preds["label"] == label]
            fpr, tpr, _ = roc_curve(p["y_true"].to_numpy(), p["y_score"].to_numpy())
            auc = results.scores[cell_id].labels[label].auroc
            ax.plot(fpr, tpr, lw=1.2, label=f"{r.configuration_label}/{r.backbone} {auc:.2f}")
    for ax, label in zip(axes.flat, labels, strict=False):
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("1 − specificity", fontsize=8)
        ax.set_ylabel("sensitivity", fontsize=8)
        ax.legend(fontsize=6, loc="lower right")
    for ax in list(axes.flat)[len(labels):]:
        ax.axis("off")
    fig.suptitle(f"ROC curves on test · {dataset} · {protocol} · label fraction {g['label_fraction'].max():g} · first seed")
    fig.tight_layout()
    return save_figure(fig, path)


def pretrain_curves(pretrain: pd.DataFrame, path: Path) -> Path | None:
    """Pretraining loss vs step per run (and the probe AUROC where it was measured)."""
    if pretrain.empty:
        return None
    plt = _pyplot()
    has_probe = pretrain["probe_auroc"].notna().any()
    fig, axes = plt.subplots(1, 2 if has_probe else 1, figsize=(10 if has_probe else 5.5, 3.6), squeeze=False)
    for run_id, g in pretrain.groupby("run_id", sort=True):
        g = g.sort_values("step")
        name = f"{g['strategy'].iloc[0]}/{g['backbone'].iloc[0]} ({run_id})"
        axes[0][0].plot(g["step"], g["loss"], lw=1.2, label=name)
        if has_probe:
            gp = g[g["probe_auroc"].notna()]
            axes[0][1].plot(gp["step"], gp["probe_auroc"], marker="o", lw=1.2, label=name)
    axes[0][0].set_xlabel("step")
    axes[0][0].set_ylabel("pretraining loss")
    axes[0][0].set_title("Self-supervised pretraining loss")
    axes[0][0].legend(fontsize=7)
    if has_probe:
        axes[0][1].set_xlabel("step")
        axes[0][1].set_ylabel("linear-probe AUROC")
        axes[0][1].set_title("Probe during pretraining")
    fig.tight_layout()
    return save_figure(fig, path)


def write_figures(results: LoadedResults, tables: Tables, figures_dir: Path) -> str:
    """Render every figure that the results support; returns the report's Figures section."""
    made: list[tuple[str, Path]] = []
    notes: list[str] = []
    lb = tables.leaderboard
    pairs = sorted({(r.dataset, r.protocol) for r in lb.itertuples()}) if not lb.empty else []
    for dataset, protocol in pairs:
        p = forest_plot(tables, dataset, protocol, figures_dir / f"forest_{_slug(dataset, protocol)}.png")
        if p:
            made.append((f"Δ macro AUROC vs `{tables.baseline}` · {dataset} · {protocol}", p))
        p = fraction_curves(tables, dataset, protocol, figures_dir / f"fraction_{_slug(dataset, protocol)}.png")
        if p:
            made.append((f"Label-fraction curves · {dataset} · {protocol}", p))
        else:
            notes.append(f"No label-fraction curve for {dataset} · {protocol}: only one label fraction was run.")
        p = roc_curves(results, tables, dataset, protocol, figures_dir / f"roc_{_slug(dataset, protocol)}.png")
        if p:
            made.append((f"ROC curves · {dataset} · {protocol}", p))
    from chexbench.reports.calibration import reliability_figures

    made += reliability_figures(results, tables, figures_dir)
    p = pretrain_curves(results.pretrain, figures_dir / "pretrain_loss.png")
    if p:
        made.append(("Pretraining loss curves", p))
    else:
        notes.append("No pretraining loss curve: no self-supervised pretraining log in this results directory.")
    lines = ["## Figures\n"]
    for title, path in made:
        lines.append(f"**{title}**\n\n![{title}](figures/{path.name})\n")
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"
