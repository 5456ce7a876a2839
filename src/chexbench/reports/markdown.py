"""Rendering the report's tables as Markdown. Deterministic: the same results give the same text."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import pandas as pd

from chexbench.reports.aggregate import LoadedResults
from chexbench.reports.leaderboard import Tables

SIGNIFICANCE = 0.05
#: above this share of degenerate resamples an interval is flagged as unreliable
DEGENERATE_WARN = 0.05
DEGENERATE_NOTE = (
    "⚠: more than 5% of the resamples lost every positive or every negative of a label, so the interval is "
    "conditional on the remaining resamples and unreliable: the test set is too small for that label."
)


def degenerate_mark(n_degenerate: float, n_boot: int) -> str:
    return " ⚠" if n_boot and float(n_degenerate) / n_boot > DEGENERATE_WARN else ""


def fmt(x: float, digits: int = 3) -> str:
    return "n/a" if x is None or not math.isfinite(float(x)) else f"{float(x):.{digits}f}"


def fmt_ci(mean: float, low: float, high: float, digits: int = 3) -> str:
    """``0.842 [0.831, 0.853]``; ``n/a`` when undefined; the point alone when no interval exists."""
    if not math.isfinite(float(mean)):
        return "n/a"
    if not (math.isfinite(float(low)) and math.isfinite(float(high))):
        return f"{fmt(mean, digits)} [n/a]"
    return f"{fmt(mean, digits)} [{fmt(low, digits)}, {fmt(high, digits)}]"


def fmt_delta(delta: float, low: float, high: float) -> str:
    if not math.isfinite(float(delta)):
        return "n/a"
    return f"{delta:+.3f} [{low:+.3f}, {high:+.3f}]"


def fmt_p(p: float) -> str:
    if p is None or not math.isfinite(float(p)):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def fmt_fraction(f: float) -> str:
    return f"{float(f):g}"


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub Markdown table; cells have their ``|`` escaped."""
    def cell(v: object) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def significance_mark(row: pd.Series) -> str:
    """``↑``/``↓``: better/worse than the baseline after Holm correction of the headline family."""
    p = row.get("p_holm", float("nan"))
    if p is None or not math.isfinite(float(p)) or p >= SIGNIFICANCE:
        return ""
    return " ↑" if row["delta"] > 0 else " ↓"


def leaderboard_cell(row: pd.Series) -> str:
    text = fmt_ci(row["macro_auroc"], row["macro_auroc_ci_low"], row["macro_auroc_ci_high"]) + significance_mark(row)
    if math.isfinite(row["macro_auroc"]):
        text += degenerate_mark(row["n_degenerate"], row["n_boot"])
    if row["n_seeds"] > 1:
        text += f" (±{fmt(row['macro_auroc_sd'])} sd, {row['n_seeds']} seeds)"
    elif math.isfinite(row["macro_auroc"]):
        text += " (1 seed: seed variation not estimated)"
    return text


def summary_section(t: Tables) -> str:
    lb = t.leaderboard
    if lb.empty:
        return "## Summary\n\nNo cell finished, so there is nothing to rank.\n"
    rows = []
    for (backbone, dataset, protocol, fraction), g in lb.groupby(["backbone", "dataset", "protocol", "label_fraction"], sort=True):
        g = g[g["macro_auroc"].notna()]
        if g.empty:
            rows.append([backbone, dataset, protocol, fmt_fraction(fraction), "n/a (no defined macro AUROC)", "n/a", "n/a", "n/a"])
            continue
        best = g.sort_values(["macro_auroc", "strategy"], ascending=[False, True]).iloc[0]
        delta = "— (is the baseline)" if best["strategy"] == t.baseline else (
            fmt_delta(best["delta"], best["delta_ci_low"], best["delta_ci_high"]) if math.isfinite(best["delta"]) else f"n/a ({best['delta_note']})"
        )
        rows.append([
            backbone, dataset, protocol, fmt_fraction(fraction), f"`{best['strategy']}`",
            fmt_ci(best["macro_auroc"], best["macro_auroc_ci_low"], best["macro_auroc_ci_high"]),
            delta, fmt_p(best.get("p_holm", float("nan"))),
        ])
    header = ["backbone", "dataset", "protocol", "label fraction", "best strategy", "macro AUROC [95% CI]",
              f"Δ vs `{t.baseline}` [95% CI]", "p (Holm)"]
    return "## Summary\n\n" + table(header, rows) + "\n"


def leaderboard_section(t: Tables, results: LoadedResults) -> str:
    lb = t.leaderboard
    parts = ["## Leaderboards\n",
             f"Macro AUROC, mean over seeds, with its 95% interval. ↑/↓: better/worse than `{t.baseline}` "
             "(paired bootstrap, Holm-corrected over the headline family, p < 0.05). " + DEGENERATE_NOTE + "\n"]
    if lb.empty:
        return "\n".join(parts) + "\nNo finished cells.\n"
    for (dataset, protocol), g in lb.groupby(["dataset", "protocol"], sort=True):
        parts.append(f"### {dataset} · {protocol}\n")
        labels = t.macro_labels.get(dataset, [])
        parts.append(f"Macro over {len(labels)} label(s): {', '.join(labels) if labels else 'none'}.")
        for label, why in t.undefined_labels.get(dataset, {}).items():
            parts.append(f"Not in the macro: `{label}` is undefined on the test set — {why}.")
        for key in sorted(set(g["test_set"])):
            ts = results.test_sets[key.split(",")[0]]
            parts.append(f"Test set: {ts.n_images} images from {ts.n_patients} patients ({ts.images_per_patient:.2f} images per patient).")
        parts.append("")
        backbones = sorted(g["backbone"].unique())
        for fraction, gf in g.groupby("label_fraction", sort=True):
            parts.append(f"Label fraction {fmt_fraction(fraction)}:\n")
            rows = []
            for strategy, gs in gf.groupby("strategy", sort=True):
                by_bb = {r["backbone"]: r for _, r in gs.iterrows()}
                rows.append([f"`{strategy}`"] + [leaderboard_cell(by_bb[b]) if b in by_bb else "—" for b in backbones])
            parts.append(table(["strategy", *backbones], rows) + "\n")
    return "\n".join(parts)


def comparison_section(t: Tables) -> str:
    lb = t.leaderboard
    comp = lb[lb["strategy"] != t.baseline] if not lb.empty else lb
    head = (
        f"## Paired comparisons vs `{t.baseline}`\n\n"
        "Δ macro AUROC = strategy − baseline on the same patient resamples (seeds resampled "
        "independently in each arm). p: two-sided bootstrap p-value. Family for both corrections: "
        f"all {int(comp['p_value'].notna().sum()) if not comp.empty else 0} macro-AUROC comparisons "
        f"vs `{t.baseline}` in this report (every dataset, protocol, label fraction and backbone). "
        "Holm controls the family-wise error rate, BH the false discovery rate.\n"
    )
    if comp.empty:
        return head + "\nNothing to compare.\n"
    rows = []
    for _, r in comp.iterrows():
        delta = fmt_delta(r["delta"], r["delta_ci_low"], r["delta_ci_high"])
        if not math.isfinite(r["delta"]):
            delta = f"n/a ({r['delta_note']})"
        rows.append([r["dataset"], r["protocol"], fmt_fraction(r["label_fraction"]), r["backbone"], f"`{r['strategy']}`",
                     delta, fmt_p(r["p_value"]), fmt_p(r["p_holm"]), fmt_p(r["p_bh"])])
    header = ["dataset", "protocol", "label fraction", "backbone", "strategy", "Δ macro AUROC [95% CI]", "p", "p Holm", "p BH"]
    return head + "\n" + table(header, rows) + "\n"


def per_label_section(t: Tables, n_boot: int) -> str:
    pl = t.per_label
    parts = ["## Per-label AUROC\n",
             "Mean over seeds [95% interval]; n/a where the label has only one class on the test set. "
             f"Δ vs `{t.baseline}` per label is in `leaderboard.parquet`'s companion `per_label.csv` "
             "(BH-corrected over all per-label comparisons: exploratory). " + DEGENERATE_NOTE + "\n"]
    if pl.empty:
        return "\n".join(parts) + "\nNo finished cells.\n"
    for (dataset, protocol, fraction, backbone), g in pl.groupby(["dataset", "protocol", "label_fraction", "backbone"], sort=True):
        parts.append(f"### {dataset} · {protocol} · label fraction {fmt_fraction(fraction)} · {backbone}\n")
        strategies = sorted(g["strategy"].unique())
        rows = []
        for label in list(dict.fromkeys(g["label"])):
            gl = g[g["label"] == label]
            first = gl.iloc[0]
            counts = f"{first['n_pos']} / {first['n_neg']}"
            by_s = {r["strategy"]: r for _, r in gl.iterrows()}
            cells = []
            for s in strategies:
                if s not in by_s:
                    cells.append("—")
                    continue
                r = by_s[s]
                cells.append(fmt_ci(r["auroc"], r["auroc_ci_low"], r["auroc_ci_high"]) + degenerate_mark(r["n_degenerate"], n_boot)
                             if math.isfinite(r["auroc"]) else f"n/a ({r['undefined_reason']})")
            rows.append([label, counts, *cells])
        parts.append(table(["label", "test pos / neg", *[f"`{s}`" for s in strategies]], rows) + "\n")
    return "\n".join(parts)


def skipped_section(results: LoadedResults) -> str:
    sk = results.skipped
    head = "## Skipped cells\n\nCells the plan did not run, with the reason (skipped is not failed).\n"
    if sk.empty:
        return head + "\nNone.\n"
    rows = [[f"`{r.cell_id}`", r.strategy, r.backbone, r.dataset, r.protocol, fmt_fraction(r.label_fraction), r.seed, r.reason]
            for r in sk.sort_values(["strategy", "backbone", "dataset", "protocol", "label_fraction", "seed"]).itertuples()]
    return head + "\n" + table(["cell", "strategy", "backbone", "dataset", "protocol", "label fraction", "seed", "reason"], rows) + "\n"


def failed_section(results: LoadedResults) -> str:
    fa = results.failed
    head = "## Failed cells\n\nCells that ran and failed (or whose predictions cannot be read); rerun `chexbench run` to retry them.\n"
    if fa.empty:
        return head + "\nNone.\n"
    rows = [[f"`{r.cell_id}`", r.strategy, r.backbone, r.dataset, r.protocol, fmt_fraction(r.label_fraction), r.seed, r.failure_reason]
            for r in fa.itertuples()]
    return head + "\n" + table(["cell", "strategy", "backbone", "dataset", "protocol", "label fraction", "seed", "reason"], rows) + "\n"


def provenance_section(results: LoadedResults) -> str:
    head = ("## Appendix: provenance\n\nEvery number above comes from these cells; the config hash identifies the "
            "resolved configuration, the cell id that plus the results-schema version.\n")
    recs = results.records
    if recs.empty:
        return head + "\nNo cell records.\n"
    rows = [[f"`{r.cell_id}`", r.status, r.strategy, r.backbone, r.dataset, r.protocol, fmt_fraction(r.label_fraction), r.seed,
             f"`{str(r.config_hash)[:12]}`", r.grid, r.torch_version, r.timm_version, r.chexbench_version,
             (str(r.git_sha)[:10] or "—") if r.git_sha else "—", r.device_name, r.created_at]
            for r in recs.itertuples()]
    header = ["cell", "status", "strategy", "backbone", "dataset", "protocol", "label fraction", "seed", "config hash", "grid",
              "torch", "timm", "chexbench", "git", "device", "created"]
    return head + "\n" + table(header, rows) + "\n"


def calibration_section(t: Tables, results: LoadedResults) -> str:
    head = ("## AUPRC, calibration and operating point\n\n"
            "Macro AUPRC (average precision; depends on prevalence, so compare within a dataset). Test ECE (15 equal-width bins) and sensitivity / specificity on test at the threshold maximizing "
            "Youden's J on *validation*, each averaged over the macro labels, then over seeds. n/a: scores are "
            "not probabilities, or a macro label has only one class on validation (listed below the table).\n")
    lb = t.leaderboard
    if lb.empty:
        return head + "\nNo finished cells.\n"
    rows = [[r.dataset, r.protocol, fmt_fraction(r.label_fraction), r.backbone, f"`{r.strategy}`",
             fmt_ci(r.macro_auroc, r.macro_auroc_ci_low, r.macro_auroc_ci_high),
             fmt_ci(r.macro_auprc, r.macro_auprc_ci_low, r.macro_auprc_ci_high),
             fmt(r.macro_ece), fmt(r.macro_sensitivity), fmt(r.macro_specificity)] for r in lb.itertuples()]
    notes = sorted({f"`{label}` ({n})" for cal in results.calibration.values() for label, n in zip(cal["label"], cal["note"], strict=True) if n})
    text = head + "\n" + table(["dataset", "protocol", "label fraction", "backbone", "strategy", "macro AUROC [95% CI]",
                                "macro AUPRC [95% CI]", "macro ECE", "sensitivity", "specificity"], rows) + "\n"
    if notes:
        text += "\nNot available for: " + "; ".join(notes) + ".\n"
    return text


def crosscheck_section(cross: pd.DataFrame, t: Tables, results: LoadedResults) -> str:
    head = ("## Cross-check: DeLong vs the patient-level bootstrap\n\n"
            f"Δ macro AUROC vs `{t.baseline}` for the first seed of each arm. The patient-level bootstrap interval is "
            "the primary one. DeLong's interval treats every image as independent; the clustered variant "
            "(Obuchowski 1997) sums each patient's structural components. Width ratio: analytic width / bootstrap width.\n")
    if cross.empty:
        return head + "\nNo paired comparison to check.\n"
    multi = [ts for ts in results.test_sets.values() if ts.images_per_patient > 1.0]
    if multi:
        worst = max(multi, key=lambda ts: ts.images_per_patient)
        head += (f"\n**Patients hold several images here** (up to {worst.images_per_patient:.2f} per patient on "
                 f"`{worst.dataset}`): DeLong's independence assumption fails, so its interval is too narrow and is "
                 "shown only as a check, never as the result.\n")
    rows = [[r.dataset, r.protocol, fmt_fraction(r.label_fraction), r.backbone, f"`{r.strategy}`",
             fmt_delta(r.delta, r.bootstrap_ci_low, r.bootstrap_ci_high),
             f"[{r.delong_ci_low:+.3f}, {r.delong_ci_high:+.3f}]", f"[{r.clustered_ci_low:+.3f}, {r.clustered_ci_high:+.3f}]",
             fmt(r.delong_width_ratio, 2), fmt(r.clustered_width_ratio, 2)] for r in cross.itertuples()]
    header = ["dataset", "protocol", "label fraction", "backbone", "strategy", "Δ [patient bootstrap 95% CI]",
              "DeLong 95% CI", "clustered DeLong 95% CI", "DeLong width ratio", "clustered width ratio"]
    return head + "\n" + table(header, rows) + "\n"
