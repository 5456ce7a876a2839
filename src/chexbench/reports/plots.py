"""Report figures (matplotlib, Agg backend): label-fraction curves, ROC curves, forest plot of Δ,
reliability diagrams and pretraining loss curves. Each figure is written atomically."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator
from sklearn.metrics import roc_curve

from chexbench.core.atomic import atomic_path
from chexbench.reports.aggregate import LoadedResults
from chexbench.reports.bootstrap import percentile_ci
from chexbench.reports.calibration import ece_replicates, reliability
from chexbench.reports.leaderboard import Tables
from chexbench.reports.markdown import DEGENERATE_WARN, fmt, fmt_delta, fmt_p
from chexbench.reports.names import config_label, display_name, fraction_words, row_label, setting_label


def _pyplot():
    matplotlib.use("Agg", force=True)

    return plt


#: one colour per strategy, the same in every figure of a report: Okabe & Ito's colour-blind-safe
#: palette (Okabe & Ito 2008, "Color Universal Design"), its yellow left last (faint on white)
_PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442")


#: resolution of the report's PNG figures
PNG_DPI = 120


def save_figure(fig, path: Path) -> Path:
    """Save ``fig`` as PNG (for report.md) and, beside it, as PDF (vector, for a manuscript) and SVG
    (report.html).

    The figure is laid out once, at the PNG's resolution, and the three files are drawn from that
    layout: ``savefig`` would run the layout engine again for each file (constrained layout was a quarter
    of a report's time). Each file is cropped to its own tight bounding box, as
    ``savefig(bbox_inches="tight")`` does: the PNG's is measured in the layout pass itself, the PDF's and
    the SVG's by their own backends (which measure text a few per cent wider than Agg). Each file goes
    through a temp file + rename; the figure is closed. Returns the PNG path.
    """
    plt = _pyplot()
    try:
        fig.set_dpi(PNG_DPI)
        fig.draw_without_rendering()  # runs the layout engine (constrained layout), and nothing else
        png_bbox = fig.get_tightbbox(fig.canvas.get_renderer()).padded(plt.rcParams["savefig.pad_inches"])
        fig.set_layout_engine("none")  # keep the positions just computed
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=PNG_DPI, bbox_inches=png_bbox, metadata={"Software": None})
        with atomic_path(path.with_suffix(".pdf")) as tmp:
            fig.savefig(
                tmp,
                format="pdf",
                bbox_inches="tight",
                metadata={"Creator": None, "Producer": None, "CreationDate": None},
            )
        with (
            atomic_path(path.with_suffix(".svg")) as tmp,
            plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": path.stem}),
        ):
            fig.savefig(
                tmp, format="svg", bbox_inches="tight", metadata={"Date": None}
            )  # inline in report.html
    finally:
        plt.close(fig)
    return path


def _slug(*parts: object) -> str:
    return "_".join(str(p).replace("/", "-").replace(" ", "-").replace(".", "p") for p in parts)


def strategy_colors(strategies) -> dict[str, str]:
    """A fixed colour per strategy (sorted by name), so one strategy looks the same in every figure."""
    return {s: _PALETTE[i % len(_PALETTE)] for i, s in enumerate(sorted(set(strategies)))}


def _configuration_order(frame: pd.DataFrame) -> list[str]:
    """Sort keys telling configurations apart: the strategy, then its configuration label if the tables have
    one."""
    return ["strategy", "configuration_label"] if "configuration_label" in frame.columns else ["strategy"]


def _flags(row) -> list[str]:
    """Reliability flags of a leaderboard row, in words."""
    flags = []
    if int(row.n_seeds) < 2:
        flags.append("1 seed")
    if row.n_boot and float(row.n_degenerate) / float(row.n_boot) > DEGENERATE_WARN:
        flags.append(f"⚠ {float(row.n_degenerate) / float(row.n_boot):.0%} degenerate resamples")
    return flags


def forest_plot(tables: Tables, dataset: str, protocol: str, path: Path) -> Path | None:
    """Δ macro AUROC vs the baseline with 95% intervals, one row per comparison of (dataset, protocol);
    each row prints its numbers, its Holm-corrected p and its reliability flags on the right."""
    lb = tables.leaderboard
    if lb.empty:
        return None
    lb = lb[(lb["dataset"] == dataset) & (lb["protocol"] == protocol)]
    comp = lb[lb["strategy"] != tables.baseline]
    if comp.empty or comp["delta"].notna().sum() == 0:
        return None
    plt = _pyplot()
    comp = comp.sort_values(["label_fraction", "backbone", *_configuration_order(comp)])
    n = len(comp)
    fig, ax = plt.subplots(figsize=(6.0, 1.3 + 0.36 * n))
    y = np.arange(n)[::-1]
    for yi, r in zip(y, comp.itertuples(), strict=True):
        if math.isfinite(r.delta):
            significant = math.isfinite(r.p_holm) and r.p_holm < 0.05
            color = "tab:red" if significant else "tab:blue"
            ax.errorbar(
                r.delta,
                yi,
                xerr=[[r.delta - r.delta_ci_low], [r.delta_ci_high - r.delta]],
                fmt="o",
                color=color,
                capsize=3,
            )
            text = f"{fmt_delta(r.delta, r.delta_ci_low, r.delta_ci_high)}   p(Holm) {fmt_p(r.p_holm)}"
        else:
            text = f"n/a ({r.delta_note})"
        flags = _flags(r)
        if flags:
            text += "   " + "; ".join(flags)
        ax.text(
            1.03,
            yi,
            text,
            transform=ax.get_yaxis_transform(),
            va="center",
            ha="left",
            fontsize=8,
            family="DejaVu Sans",
        )
    ax.axvline(0, color="grey", lw=1, ls="--")
    ax.set_ylim(-0.7, n + 0.3)  # a free row on top holds the column header of the printed numbers
    ax.set_yticks(y, [row_label(r) for r in comp.itertuples()], fontsize=8)
    base = display_name("strategy", tables.baseline)
    ax.set_xlabel(f"Δ macro AUROC vs {base} (95% interval; red: Holm-corrected p < 0.05)", fontsize=9)
    ax.text(
        1.03,
        n - 0.1,
        "Δ [95% CI] · Holm-corrected p · flags",
        transform=ax.get_yaxis_transform(),
        va="center",
        ha="left",
        fontsize=8,
        fontweight="bold",
    )
    ax.set_title(f"Paired differences vs {base} · {setting_label(dataset, protocol)}", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, path)


def fraction_curves(tables: Tables, dataset: str, protocol: str, path: Path) -> Path | None:
    """Macro AUROC vs label fraction per strategy with interval bands; one panel per backbone."""
    lb = tables.leaderboard
    g = lb[(lb["dataset"] == dataset) & (lb["protocol"] == protocol)]
    if g["label_fraction"].nunique() < 2:
        return None
    plt = _pyplot()

    colors = strategy_colors(g["strategy"])
    backbones = sorted(g["backbone"].unique())
    fractions = sorted(g["label_fraction"].unique())
    fig, axes = plt.subplots(
        1, len(backbones), figsize=(4.0 * len(backbones), 3.4), squeeze=False, sharey=True
    )
    for ax, bb in zip(axes[0], backbones, strict=True):
        gb = g[g["backbone"] == bb]
        for _, gs in gb.groupby(_configuration_order(gb), sort=True):  # one line per configuration
            gs = gs.sort_values("label_fraction")
            first = next(gs.itertuples())
            c = colors[first.strategy]
            ax.plot(
                gs["label_fraction"],
                gs["macro_auroc"],
                marker="o",
                color=c,
                label=row_label(first, backbone=False, fraction=False),
            )
            ax.fill_between(
                gs["label_fraction"],
                gs["macro_auroc_ci_low"],
                gs["macro_auroc_ci_high"],
                color=c,
                alpha=0.15,
                lw=0,
            )
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator(fractions))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{100 * v:.3g}%"))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("labelled training patients (% of the train split)", fontsize=9)
        ax.set_title(display_name("backbone", bb), fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("macro AUROC (band: 95% interval)", fontsize=9)
    handles, names = axes[0][0].get_legend_handles_labels()
    for ax in axes[0][1:]:
        for h, name in zip(*ax.get_legend_handles_labels(), strict=True):
            if name not in names:
                handles.append(h)
                names.append(name)
    fig.legend(
        handles,
        names,
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=min(len(names), 5),
        fontsize=8,
        frameon=False,
    )
    fig.suptitle(f"Macro AUROC vs label budget · {setting_label(dataset, protocol)}", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


ROC_GRID = np.linspace(0.0, 1.0, 201)


def _seed_roc(preds: pd.DataFrame, label: str) -> tuple[np.ndarray, np.ndarray] | None:
    """One seed's test ROC curve for ``label`` as (fpr, tpr); None without both classes."""
    p = preds[preds["label"] == label]
    y = p["y_true"].to_numpy()
    if len(np.unique(y)) < 2:
        return None
    fpr, tpr, _ = roc_curve(y, p["y_score"].to_numpy())
    return fpr, tpr


def _on_grid(fpr: np.ndarray, tpr: np.ndarray) -> np.ndarray:
    """A staircase ROC curve as TPR on :data:`ROC_GRID` (the highest TPR reached at each FPR)."""
    idx = np.searchsorted(fpr, ROC_GRID, side="right") - 1
    return tpr[np.clip(idx, 0, len(tpr) - 1)]


def roc_curves(
    results: LoadedResults, tables: Tables, dataset: str, protocol: str, path: Path
) -> Path | None:
    """Test ROC curves per macro label at the largest label fraction, one line per configuration:
    the mean over its seeds of each seed's curve, with the range across seeds as a band. Each
    configuration has its own colour (colour-blind-safe palette) and its backbone's line style,
    named once in the figure's legend; each panel lists its AUROCs (mean over seeds, the number of
    the per-label table) in the configurations' colours."""
    lb = tables.leaderboard
    g = lb[(lb["dataset"] == dataset) & (lb["protocol"] == protocol)]
    labels = tables.macro_labels.get(dataset, [])
    if g.empty or not labels:
        return None
    fraction = g["label_fraction"].max()
    g = g[g["label_fraction"] == fraction].sort_values(["backbone", *_configuration_order(g)])
    styles = {bb: ls for bb, ls in zip(sorted(g["backbone"].unique()), ("-", "--", ":", "-."), strict=False)}
    rows = list(g.itertuples())
    colors = [_PALETTE[i % len(_PALETTE)] for i in range(len(rows))]
    plt = _pyplot()
    ncol = min(3, len(labels))
    nrow = math.ceil(len(labels) / ncol)
    fig, axes = plt.subplots(
        nrow,
        ncol,
        figsize=(3.4 * ncol, 3.4 * nrow + 0.25 * len(rows) / 2 + 0.6),
        squeeze=False,
        layout="constrained",
    )
    seed_counts = set()
    handles, names = [], []
    aucs: dict[str, list[tuple[str, str]]] = {label: [] for label in labels}
    for r, color in zip(rows, colors, strict=True):
        cell_ids = [c for c in str(r.cell_ids).split(",") if c]
        seed_counts.add(len(cell_ids))
        test = {c: results.predictions(c) for c in cell_ids}
        test = {c: p[(p["split"] == "test") & p["y_true"].notna()] for c, p in test.items()}
        drawn = None
        for ax, label in zip(axes.flat, labels, strict=False):
            curves = [cv for cv in (_seed_roc(test[c], label) for c in cell_ids) if cv is not None]
            if not curves:
                continue
            stack = np.vstack([_on_grid(*cv) for cv in curves])
            aurocs = [
                results.scores[c].labels[label].auroc for c in cell_ids if label in results.scores[c].labels
            ]
            aucs[label].append((fmt(float(np.mean(aurocs)) if aurocs else float("nan")), color))
            # one seed: its exact curve; several: the mean of their curves on a common FPR grid
            x, yv = curves[0] if len(curves) == 1 else (np.r_[0.0, ROC_GRID], np.r_[0.0, stack.mean(axis=0)])
            drawn = ax.plot(x, yv, lw=1.4, color=color, ls=styles.get(r.backbone, "-"))[0]
            if len(curves) > 1:
                ax.fill_between(ROC_GRID, stack.min(axis=0), stack.max(axis=0), color=color, alpha=0.12, lw=0)
        if drawn is not None:
            seeds = f"{len(cell_ids)} seeds" if len(cell_ids) > 1 else "1 seed"
            handles.append(drawn)
            names.append(f"{row_label(r, fraction=False)} ({seeds})")
    for ax, label in zip(axes.flat, labels, strict=False):
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        ax.set_title(label.replace("_", " "), fontsize=9)
        ax.set_xlabel("1 − specificity", fontsize=8)
        ax.set_ylabel("sensitivity", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_aspect("equal")
        ax.grid(alpha=0.25)
        # this panel's AUROCs, one per configuration in its colour, in the lower right (below the curves)
        for k, (text, color) in enumerate(reversed(aucs[label])):
            ax.text(
                0.97,
                0.04 + 0.075 * k,
                text,
                transform=ax.transAxes,
                ha="right",
                va="bottom",
                fontsize=7,
                color=color,
                fontweight="bold",
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.7, "pad": 0.5},
            )
        ax.text(
            0.97,
            0.04 + 0.075 * len(aucs[label]),
            "AUROC",
            transform=ax.transAxes,
            ha="right",
            va="bottom",
            fontsize=7,
            color="0.3",
        )
    for ax in list(axes.flat)[len(labels) :]:
        ax.axis("off")
    how = (
        "mean over seeds; band: range across seeds" if max(seed_counts) > 1 else "one seed per configuration"
    )
    fig.legend(
        handles, names, loc="outside lower center", ncol=min(len(names), 3), fontsize=7.5, frameon=False
    )
    fig.suptitle(
        f"ROC curves on test · {setting_label(dataset, protocol)} · {fraction_words(fraction)} ({how})",
        fontsize=10,
    )
    return save_figure(fig, path)


def _pooled_ece_interval(
    results: LoadedResults, cell_ids: list[str], test: pd.DataFrame
) -> tuple[float, float]:
    """95% patient-level bootstrap interval of the pooled ECE of ``test`` (rows of ``cell_ids``, one
    test set): the resamples of the cells' AUROC intervals; (NaN, NaN) without them."""
    key = results.test_set_of.get(cell_ids[0]) if cell_ids else None
    if key is None or key not in results.test_sets:
        return float("nan"), float("nan")
    res = results.test_sets[key].resamples
    reps = ece_replicates(
        test["y_true"].to_numpy(dtype=float),
        test["y_score"].to_numpy(dtype=float),
        res.index_of(test["patient_id"].to_numpy()),
        res.weights,
    )
    return percentile_ci(reps)


def reliability_figures(results: LoadedResults, tables: Tables, figures_dir: Path) -> list[tuple[str, Path]]:
    """One reliability diagram per configuration at the largest label fraction, one figure per
    (dataset, protocol), panels in a grid: test images of every macro label and every seed pooled;
    above, observed frequency per bin against the diagonal; below, the number of image–label pairs
    per bin; the title gives the pooled ECE with its 95% patient-level bootstrap interval."""
    lb = tables.leaderboard
    out: list[tuple[str, Path]] = []
    if lb.empty:
        return out
    for (dataset, protocol), g in lb.groupby(["dataset", "protocol"], sort=True):
        labels = tables.macro_labels.get(dataset, [])
        g = g[g["label_fraction"] == g["label_fraction"].max()]
        if g.empty or not labels:
            continue
        panels = []
        for r in g.sort_values(["backbone", *_configuration_order(g)]).itertuples():
            cell_ids = [c for c in str(r.cell_ids).split(",") if c]
            test = pd.concat([results.predictions(c) for c in cell_ids], ignore_index=True)
            test = test[(test["split"] == "test") & test["y_true"].notna() & test["label"].isin(labels)]
            if test.empty or test["y_score"].min() < 0 or test["y_score"].max() > 1:
                continue
            rel = reliability(test["y_true"].to_numpy(), test["y_score"].to_numpy())
            panels.append((r, rel, len(cell_ids), _pooled_ece_interval(results, cell_ids, test)))
        if not panels:
            continue
        plt = _pyplot()
        ncol = min(3, len(panels)) if len(panels) != 4 else 2
        nrow = math.ceil(len(panels) / ncol)
        fig = plt.figure(figsize=(3.3 * ncol, 3.6 * nrow + 0.6), layout="constrained")
        grid = fig.add_gridspec(2 * nrow, ncol, height_ratios=[3.2, 1.0] * nrow)
        top_left = None
        for k, (r, rel, n_seeds, (lo, hi)) in enumerate(panels):
            row, col = divmod(k, ncol)
            ax = fig.add_subplot(grid[2 * row, col], sharex=top_left, sharey=top_left)
            counts = fig.add_subplot(grid[2 * row + 1, col], sharex=ax)
            top_left = top_left or ax
            centers = (rel.edges[:-1] + rel.edges[1:]) / 2
            width = rel.edges[1] - rel.edges[0]
            filled = rel.count > 0  # an empty bin has no observed frequency: no bar, not a bar at 0
            ax.bar(centers[filled], rel.observed[filled], width=width * 0.9, color=_PALETTE[0], alpha=0.55)
            ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=0.8)
            ax.plot(rel.mean_predicted[filled], rel.observed[filled], "o-", color=_PALETTE[3], ms=2.5, lw=0.9)
            interval = f" [{lo:.3f}, {hi:.3f}]" if math.isfinite(lo) and math.isfinite(hi) else " [n/a]"
            seeds = f"{n_seeds} seeds" if n_seeds > 1 else "1 seed"
            ax.set_title(f"{row_label(r, fraction=False)}\nECE {rel.ece:.3f}{interval} · {seeds}", fontsize=8)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.02)
            ax.tick_params(labelsize=7, labelbottom=False)
            ax.grid(alpha=0.25)
            counts.bar(centers, rel.count, width=width * 0.9, color="0.45")
            counts.set_ylim(0, max(float(rel.count.max()), 1.0) * 1.15)
            counts.yaxis.set_major_locator(MaxNLocator(3, integer=True))
            counts.tick_params(labelsize=7)
            counts.set_xlabel("predicted probability", fontsize=8)
            if col == 0:
                ax.set_ylabel("observed fraction positive", fontsize=8)
                counts.set_ylabel("pairs", fontsize=8)
        fig.suptitle(
            f"Reliability on test · {setting_label(dataset, protocol)} ·"
            f" {fraction_words(g['label_fraction'].max())} · {len(labels)} labels and all seeds pooled\nbars:"
            " observed frequency per bin, red: mean predicted → observed, grey: image–label pairs per bin;"
            " ECE [95% patient-level bootstrap interval]",
            fontsize=8.5,
        )
        path = save_figure(fig, figures_dir / f"reliability_{_slug(dataset, protocol)}.png")
        out.append((f"Reliability diagrams · {setting_label(dataset, protocol)}", path))
    return out


PRETRAIN_LINE_STYLES = ("-", "--", ":", "-.")
PRETRAIN_RUN_MARKERS = (None, "s", "^", "D", "v", "x")


#: the collapse monitors drawn under the loss: (column, y label, title)
MONITOR_PANELS = (
    ("embed_std_ratio", "std of normalized embedding × √d", "Embedding spread (collapse → 0)"),
    ("embed_rank", "effective rank", "Embedding effective rank"),
    ("teacher_entropy", "teacher entropy (nats)", "DINO teacher entropy"),
)


def pretrain_curves(pretrain: pd.DataFrame, path: Path) -> Path | None:
    """Pretraining loss vs optimizer step per run (and the kNN-probe AUROC vs epochs completed); under them,
    where the logs hold them, the collapse monitors per epoch (a collapsed epoch marked ×)."""
    if pretrain.empty:
        return None
    plt = _pyplot()

    has_probe = pretrain["probe_auroc"].notna().any()
    panels = [p for p in MONITOR_PANELS if p[0] in pretrain.columns and pretrain[p[0]].notna().any()]
    cols = max(2 if has_probe else 1, len(panels))
    rows = 2 if panels else 1
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    colors = strategy_colors(pretrain["strategy"])
    # colour: the method; line style: the backbone; marker: further runs of the same pair
    # (another pretraining seed or option), so that no two runs look alike
    line_styles = {
        b: PRETRAIN_LINE_STYLES[i % len(PRETRAIN_LINE_STYLES)]
        for i, b in enumerate(sorted(pretrain["backbone"].unique()))
    }
    runs_of: dict[tuple[str, str], int] = {}
    for run_id, g in pretrain.groupby("run_id", sort=True):
        g = g.sort_values("step")
        strategy, backbone = g["strategy"].iloc[0], g["backbone"].iloc[0]
        name = f"{config_label(strategy, backbone)} (run {str(run_id)[:8]})"
        nth = runs_of[(strategy, backbone)] = runs_of.get((strategy, backbone), -1) + 1
        style = {"color": colors[strategy], "linestyle": line_styles[backbone], "lw": 1.3}
        marker = PRETRAIN_RUN_MARKERS[nth % len(PRETRAIN_RUN_MARKERS)]
        axes[0][0].plot(
            g["step"], g["loss"], marker=marker, markevery=max(len(g) // 6, 1), ms=4, label=name, **style
        )
        if has_probe:
            gp = g[g["probe_auroc"].notna()]
            # the history's epoch is 0-based and the probe runs at the end of it
            axes[0][1].plot(
                gp["epoch"] + 1, gp["probe_auroc"], marker=marker or "o", ms=4, label=name, **style
            )
        for ax, (col, _, _) in zip(axes[1] if panels else [], panels, strict=False):
            gm = g[g[col].notna()]
            ax.plot(gm["epoch"] + 1, gm[col], marker=marker or "o", ms=4, **style)
            bad = gm[gm["collapsed"].fillna(False).astype(bool)] if "collapsed" in gm else gm.iloc[:0]
            if len(bad):
                ax.plot(
                    bad["epoch"] + 1,
                    bad[col],
                    linestyle="none",
                    marker="x",
                    ms=9,
                    mew=2,
                    color=colors[strategy],
                )
    axes[0][0].set_xlabel("optimizer step")
    axes[0][0].set_ylabel("pretraining loss")
    axes[0][0].set_title("Self-supervised pretraining loss", fontsize=10)
    if has_probe:
        axes[0][1].set_xlabel("epochs completed")
        axes[0][1].set_ylabel("kNN-probe AUROC (validation)")
        axes[0][1].set_title("Probe during pretraining", fontsize=10)
    for ax, (col, ylabel, title) in zip(axes[1] if panels else [], panels, strict=False):
        ax.set_xlabel("epochs completed")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        if (
            col == "embed_std_ratio"
        ):  # the rule is the pretraining run's (its meta.json states it); × marks its verdict
            ax.set_yscale("symlog", linthresh=0.01)
            ax.text(
                0.01,
                0.98,
                "× collapsed epoch (docs/SELF_SUPERVISED.md)",
                transform=ax.transAxes,
                va="top",
                fontsize=7,
                color="0.3",
            )
    used = {(0, 0)} | ({(0, 1)} if has_probe else set()) | {(1, i) for i in range(len(panels))}
    for r in range(rows):
        for c in range(cols):
            if (r, c) not in used:
                axes[r][c].set_visible(False)
    for ax in [a for row in axes for a in row if a.get_visible()]:
        _count_axis(ax)  # steps and epochs are counts
        ax.grid(alpha=0.3)
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(
        handles,
        names,
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=min(len(names), 3),
        fontsize=8,
        frameon=False,
    )
    fig.tight_layout()
    return save_figure(fig, path)


def _count_axis(ax) -> None:
    """Integer ticks on an x axis of counts; a few distinct values (a probe run once or twice) get
    exactly their own ticks and half a step of room, not matplotlib's 0.945 … 1.050."""
    xs = sorted(
        {
            float(x)
            for line in ax.get_lines()
            for x in np.asarray(line.get_xdata(), dtype=float)
            if np.isfinite(x)
        }
    )
    if 0 < len(xs) <= 6:
        ax.xaxis.set_major_locator(FixedLocator(xs))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        pad = 0.5 if len(xs) == 1 else 0.05 * (xs[-1] - xs[0])
        ax.set_xlim(xs[0] - pad, xs[-1] + pad)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def write_figures(results: LoadedResults, tables: Tables, figures_dir: Path) -> str:
    """Render every figure that the results support; returns the report's Figures section."""
    made: list[tuple[str, Path]] = []
    notes: list[str] = []
    lb = tables.leaderboard
    pairs = sorted({(r.dataset, r.protocol) for r in lb.itertuples()}) if not lb.empty else []
    for dataset, protocol in pairs:
        p = forest_plot(tables, dataset, protocol, figures_dir / f"forest_{_slug(dataset, protocol)}.png")
        if p:
            made.append(
                (
                    (
                        f"Δ macro AUROC vs {display_name('strategy', tables.baseline)} ·"
                        f" {setting_label(dataset, protocol)}"
                    ),
                    p,
                )
            )
        p = fraction_curves(
            tables, dataset, protocol, figures_dir / f"fraction_{_slug(dataset, protocol)}.png"
        )
        if p:
            made.append((f"Label-fraction curves · {setting_label(dataset, protocol)}", p))
        else:
            notes.append(
                f"No label-fraction curve for {setting_label(dataset, protocol)}: only one label fraction was"
                " run."
            )
        p = roc_curves(
            results, tables, dataset, protocol, figures_dir / f"roc_{_slug(dataset, protocol)}.png"
        )
        if p:
            made.append((f"ROC curves · {setting_label(dataset, protocol)}", p))
    made += reliability_figures(results, tables, figures_dir)
    p = pretrain_curves(results.pretrain, figures_dir / "pretrain_loss.png")
    if p:
        made.append(("Pretraining loss curves", p))
    else:
        notes.append(
            "No pretraining loss curve: no self-supervised pretraining log in this results directory."
        )
    lines = [
        "## Figures\n",
        "Each figure is also written as a vector PDF beside its PNG (`figures/*.pdf`), for a manuscript.\n",
    ]
    for title, path in made:
        lines.append(f"**{title}**\n\n![{title}](figures/{path.name})\n")
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"
