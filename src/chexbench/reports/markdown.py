"""Rendering the report's tables as Markdown. Deterministic: the same results give the same text."""

from __future__ import annotations

import json
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


FEW_NOTE = (
    "⚑: the number rests on a label with fewer than 10 positive test patients; its interval is wide and "
    "depends on a handful of patients."
)


def few_mark(few: object) -> str:
    """`` ⚑`` for a label (bool) or a macro (comma-separated labels) with < 10 positive test patients."""
    return " ⚑" if (few is True or (isinstance(few, str) and few)) else ""


def sd_text(sd: float, n_seeds: int) -> str:
    """`` ±0.012 sd`` beside a seed-pooled number (between-seed sd); "" with one seed."""
    return f" ±{fmt(sd)} sd" if int(n_seeds) > 1 and math.isfinite(float(sd)) else ""


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


def fmt_signed(x: float) -> str:
    """``+.3f`` without a negative zero: -0.0004 rounds to "+0.000", not "-0.000"."""
    text = f"{float(x):+.3f}"
    return "+0.000" if text == "-0.000" else text


def fmt_delta(delta: float, low: float, high: float) -> str:
    """Δ [low, high]; "[n/a]" when there is no interval (too few finite resamples, compare.py)."""
    if not math.isfinite(float(delta)):
        return "n/a"
    if not (math.isfinite(float(low)) and math.isfinite(float(high))):
        return f"{fmt_signed(delta)} [n/a]"
    return f"{fmt_signed(delta)} [{fmt_signed(low)}, {fmt_signed(high)}]"


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


INTERVAL_SENTENCE = (
    "The interval is for the configuration's expected macro AUROC over fine-tuning seeds, on the population"
    " the test patients come from: test-sample variance (patient-level bootstrap) and between-seed variance"
    " (s²/S, on S − 1 degrees of freedom) each scaled by its own t quantile, on the logit scale. In"
    " simulation it covered 0.95–0.99 with 2, 3 and 5 seeds, whether the seed spread exceeded the test-sample"
    " spread or the reverse; the per-label AUROC interval (Hanley–McNeil score form, Methods) covered at"
    " least 0.94 down to ≈ 5 positive patients and AUROC 0.98, the logit-t form this macro interval uses"
    " 0.88–0.98 per label there (docs/STATISTICS.md, `chexbench bench coverage`). With one seed it covers"
    " test-sample variation only. Pretraining variance is in it only where the line under the table says so."
)
ONE_SEED_NOTE = "1 seed: seed variation not estimated (the interval covers test-sample variation only)."


def leaderboard_cell(row: pd.Series) -> str:
    text = fmt_ci(
        row["macro_auroc"], row["macro_auroc_ci_low"], row["macro_auroc_ci_high"]
    ) + significance_mark(row)
    if math.isfinite(row["macro_auroc"]):
        text += degenerate_mark(row["n_degenerate"], row["n_boot"]) + few_mark(
            row.get("few_positive_labels", "")
        )
    if row["n_seeds"] > 1:
        text += f" (±{fmt(row['macro_auroc_sd'])} sd, {row['n_seeds']} seeds)"
    return text


def seeds_note(n_seeds: Iterable[int]) -> str:
    """The note under a table: said once, not in every cell."""
    counts = {int(n) for n in n_seeds}
    if counts == {1}:
        return f"\n\n_Every row: {ONE_SEED_NOTE}_\n"
    if 1 in counts:
        return f"\n\n_Rows without ± sd: {ONE_SEED_NOTE}_\n"
    return ""


def key_columns(t: Tables, shared_only: bool = False) -> list[str]:
    """The grid keys that tell configurations of the same axes apart (each its own column)."""
    return [k for k in t.split_keys if not (shared_only and k.startswith("strategy."))]


def summary_section(t: Tables) -> str:
    sm = t.summary
    if t.leaderboard.empty or sm.empty:
        return "## Summary\n\nNo cell finished, so there is nothing to rank.\n"
    keys = key_columns(t, shared_only=True)
    n_family = int(sm["n_family"].iloc[0])
    head = (
        "## Summary\n\nPer row, the strategy with the highest macro AUROC is named **best** only when it is"
        " better than every other strategy of the row in the paired test on macro AUROC (the seed-aware Δ"
        " interval, MOVER on both arms' intervals, each holding test-sample and between-seed variance; p"
        f" where it touches 0), after Holm correction over all {n_family} such comparison(s) of this summary"
        ' (p < 0.05). Otherwise the row says "no significant difference" and gives the top point estimate.'
        " Closest competitor: the comparison with the largest corrected p.\n"
    )
    rows = []
    for r in sm.sort_values(
        ["backbone", "dataset", "protocol", "label_fraction", *keys], kind="stable"
    ).to_dict("records"):
        lead = [
            r["backbone"],
            r["dataset"],
            r["protocol"],
            fmt_fraction(r["label_fraction"]),
            *[r[k] for k in keys],
        ]
        if not r["top_label"]:
            rows.append([*lead, "n/a (no defined macro AUROC)", "n/a", "n/a", "n/a"])
            continue
        top = f"`{r['top_label']}`"
        auroc = fmt_ci(r["macro_auroc"], r["macro_auroc_ci_low"], r["macro_auroc_ci_high"]) + sd_text(
            r["macro_auroc_sd"], r["n_seeds"]
        )
        verdict = r["verdict"]
        if verdict == "best":
            best = f"**{top}**"
        elif verdict == "only one":
            best = f"{top} (the only strategy here: nothing to compare)"
        elif verdict == "not tested":
            best = f"not tested (top point estimate: {top})"
        else:
            best = f"no significant difference (top point estimate: {top})"
        if verdict == "only one":
            closest, delta, p = "—", "—", "—"
        else:
            closest = f"`{r['closest']}`"
            delta = (
                fmt_delta(r["closest_delta"], r["closest_ci_low"], r["closest_ci_high"])
                if not r["closest_note"]
                else f"n/a ({r['closest_note']})"
            )
            p = fmt_p(r["closest_p_holm"])
        rows.append([*lead, best, auroc, closest, delta, p])
    header = [
        "backbone",
        "dataset",
        "protocol",
        "label fraction",
        *keys,
        "best strategy",
        "top macro AUROC [95% CI]",
        "closest competitor",
        "Δ top − closest [95% CI]",
        "p (Holm)",
    ]
    return head + "\n" + table(header, rows) + "\n"


def leaderboard_section(t: Tables, results: LoadedResults) -> str:
    lb = t.leaderboard
    parts = [
        "## Leaderboards\n",
        "Macro AUROC, mean over fine-tuning seeds [95% interval] ±between-seed sd. "
        + INTERVAL_SENTENCE
        + f" ↑/↓: better/worse than `{t.baseline}` (the same seed-aware paired test, Holm-corrected over the"
        " headline family, p < 0.05). " + DEGENERATE_NOTE + " " + FEW_NOTE + "\n",
    ]
    if lb.empty:
        return "\n".join(parts) + "\nNo finished cells.\n"
    keys = key_columns(t)
    if keys:
        parts.append(
            "Configurations that share strategy, backbone, dataset, protocol and label fraction but differ"
            f" in {', '.join(f'`{k}`' for k in keys)} are separate rows, never pooled (`default`: not set in"
            " the grid; `unset`: absent from a record written before the setting existed, beside `null`"
            " where it is set to nothing).\n"
        )
    for (dataset, protocol), g in lb.groupby(["dataset", "protocol"], sort=True):
        parts.append(f"### {dataset} · {protocol}\n")
        test_keys = sorted({k for ks in g["test_set"] for k in ks.split(",")})
        for key in test_keys:
            ts = results.test_sets[key]
            labels = t.test_set_labels.get(key, [])
            lead = (
                f"Test set `{ts.images_key[:8]}/{ts.truth_key[:8]}`: " if len(test_keys) > 1 else "Test set: "
            )
            parts.append(
                f"{lead}{ts.n_images} images from {ts.n_patients} patients ({ts.images_per_patient:.2f}"
                f" images per patient); macro over {len(labels)} label(s):"
                f" {', '.join(labels) if labels else 'none'}."
            )
            for label, why in t.test_set_undefined.get(key, {}).items():
                parts.append(f"Not in the macro: `{label}` is undefined on the test set — {why}.")
            first = results.scores.get(ts.cell_ids[0]) if ts.cell_ids else None
            for label in labels:
                note = (
                    first.labels[label].interval_note if first is not None and label in first.labels else ""
                )
                if note:  # a point but no interval ("[n/a]"): one patient would make it a zero-width "[x, x]"
                    parts.append(f"`{label}`: {note}; its rows and the macro's show the point with [n/a].")
        parts.append("")
        backbones = sorted(g["backbone"].unique())
        for fraction, gf in g.groupby("label_fraction", sort=True):
            parts.append(f"Label fraction {fmt_fraction(fraction)}:\n")
            rows, other_labels = [], []
            for _, gs in gf.groupby(["strategy", *keys], sort=True):
                by_bb = {r["backbone"]: r for _, r in gs.iterrows()}
                first = gs.iloc[0]
                cells = []
                for b in backbones:
                    if b not in by_bb:
                        cells.append("—")
                        continue
                    cell = leaderboard_cell(by_bb[b])
                    own = json.loads(by_bb[b]["labels"])
                    header = [
                        lab
                        for k in str(by_bb[b]["test_set"]).split(",")
                        for lab in t.test_set_labels.get(k, [])
                    ]
                    if (
                        list(dict.fromkeys(header)) != own
                    ):  # its records evaluate other labels than the header lists
                        other_labels.append(
                            f"`{first['strategy']}` · {b}: macro over {len(own)} label(s): "
                            f"{', '.join(own) or 'none'} — not the test set's list above"
                        )
                        cell += f" (see note {len(other_labels)})"
                    cells.append(cell)
                rows.append([f"`{first['strategy']}`", *[first[k] for k in keys], *cells])
            notes = "".join(f"\nNote {i}: {text}." for i, text in enumerate(other_labels, 1))
            pretraining = "; ".join(
                f"`{r['strategy']}` · {r['backbone']}: {r['pretraining']}"
                for _, r in gf.sort_values(["strategy", *keys, "backbone"]).iterrows()
                if "pretraining" in r
            )
            if pretraining:
                notes += f"\n\nPretraining variance in the interval — {pretraining}."
            parts.append(
                table(["strategy", *keys, *backbones], rows) + seeds_note(gf["n_seeds"]) + notes + "\n"
            )
    return "\n".join(parts)


def comparison_section(t: Tables) -> str:
    lb = t.leaderboard
    comp = lb[lb["strategy"] != t.baseline] if not lb.empty else lb
    head = (
        f"## Paired comparisons vs `{t.baseline}`\n\nΔ macro AUROC = strategy − baseline on the same patient"
        " resamples (seeds resampled independently in each arm). Paired only on the same test images with"
        " the same `y_true`, and with the baseline configuration that shares every other varying key. The"
        " interval is MOVER on the two arms' seed-pooled intervals (each test-sample and between-seed"
        " variance), their correlation from the shared resamples (seeds.py); p: two-sided, the level at"
        " which that interval touches 0, so the interval excludes 0 exactly when p < 0.05. Family for both"
        f" corrections: all {int(comp['p_value'].notna().sum()) if not comp.empty else 0} macro-AUROC"
        f" comparisons vs `{t.baseline}` in this report (every dataset, protocol, label fraction and"
        " backbone). Holm controls the family-wise error rate, BH the false discovery rate.\n"
    )
    if comp.empty:
        return head + "\nNothing to compare.\n"
    keys = key_columns(t)
    rows = []
    for _, r in comp.iterrows():
        delta = fmt_delta(r["delta"], r["delta_ci_low"], r["delta_ci_high"])
        if not math.isfinite(r["delta"]):
            delta = f"n/a ({r['delta_note']})"
        rows.append(
            [
                r["dataset"],
                r["protocol"],
                fmt_fraction(r["label_fraction"]),
                r["backbone"],
                f"`{r['strategy']}`",
                *[r[k] for k in keys],
                delta,
                fmt_p(r["p_value"]),
                fmt_p(r["p_holm"]),
                fmt_p(r["p_bh"]),
            ]
        )
    header = [
        "dataset",
        "protocol",
        "label fraction",
        "backbone",
        "strategy",
        *keys,
        "Δ macro AUROC [95% CI]",
        "p",
        "p Holm",
        "p BH",
    ]
    return head + "\n" + table(header, rows) + "\n"


def per_label_section(t: Tables, n_boot: int) -> str:
    pl = t.per_label
    parts = [
        "## Per-label AUROC\n",
        "Mean over seeds [95% interval] ±between-seed sd (the per-label AUROC interval of Methods, widened"
        " by the between-seed part as in the leaderboards); n/a where the label has only one class on the"
        f" test set. Test counts: positive / negative images (positive patients). Δ vs `{t.baseline}` per"
        " label is in `leaderboard.parquet`'s companion `per_label.csv` (BH-corrected over all per-label"
        " comparisons: exploratory). " + DEGENERATE_NOTE + " " + FEW_NOTE + "\n",
    ]
    if pl.empty:
        return "\n".join(parts) + "\nNo finished cells.\n"
    for (dataset, protocol, fraction, backbone), g in pl.groupby(
        ["dataset", "protocol", "label_fraction", "backbone"], sort=True
    ):
        parts.append(f"### {dataset} · {protocol} · label fraction {fmt_fraction(fraction)} · {backbone}\n")
        configurations = list(
            dict.fromkeys(g.sort_values(["strategy", "configuration_label"])["configuration_label"])
        )
        rows = []
        for label in list(dict.fromkeys(g["label"])):
            gl = g[g["label"] == label]
            counts = sorted(
                {
                    f"{r['n_pos']} / {r['n_neg']} ({r.get('n_pos_patients', '?')} pos patients)"
                    + few_mark(bool(r.get("few_positive_patients", False)))
                    for _, r in gl.iterrows()
                }
            )
            by_c = {r["configuration_label"]: r for _, r in gl.iterrows()}
            cells = []
            for c in configurations:
                if c not in by_c:
                    cells.append("—")
                    continue
                r = by_c[c]
                cells.append(
                    fmt_ci(r["auroc"], r["auroc_ci_low"], r["auroc_ci_high"])
                    + degenerate_mark(r["n_degenerate"], n_boot)
                    + few_mark(bool(r.get("few_positive_patients", False)))
                    + sd_text(r["auroc_sd"], r["n_seeds"])
                    if math.isfinite(r["auroc"])
                    else f"n/a ({r['undefined_reason']})"
                )
            rows.append([label, "; ".join(counts), *cells])
        parts.append(
            table(["label", "test pos / neg", *[f"`{c}`" for c in configurations]], rows)
            + seeds_note(g.drop_duplicates("configuration_hash")["n_seeds"])
            + "\n"
        )
    return "\n".join(parts)


def superseded_section(results: LoadedResults) -> str:
    """Cells left out because a newer cell has the same configuration and seed ("" when none)."""
    sup = results.superseded
    if sup.empty:
        return ""
    head = (
        "## Superseded cells\n\nThese ok cells have the same configuration and seed as a newer cell (for"
        " example written under an older results schema); the newer one (`created_at`) is used, these are not"
        " averaged in.\n"
    )
    rows = [
        [
            f"`{r.cell_id}`",
            f"`{r.kept_cell_id}`",
            r.strategy,
            r.backbone,
            r.dataset,
            r.protocol,
            fmt_fraction(r.label_fraction),
            r.seed,
            r.created_at,
            r.kept_created_at,
        ]
        for r in sup.itertuples()
    ]
    return (
        head
        + "\n"
        + table(
            [
                "dropped cell",
                "kept cell",
                "strategy",
                "backbone",
                "dataset",
                "protocol",
                "label fraction",
                "seed",
                "dropped created",
                "kept created",
            ],
            rows,
        )
        + "\n"
    )


def _cells_with_reasons(cells: pd.DataFrame, reason: str) -> str:
    """One row per cell (id, axis values) with the text of its ``reason`` column."""
    rows = [
        [
            f"`{r.cell_id}`",
            r.strategy,
            r.backbone,
            r.dataset,
            r.protocol,
            fmt_fraction(r.label_fraction),
            r.seed,
            getattr(r, reason),
        ]
        for r in cells.itertuples()
    ]
    header = ["cell", "strategy", "backbone", "dataset", "protocol", "label fraction", "seed", "reason"]
    return table(header, rows) + "\n"


def skipped_section(results: LoadedResults) -> str:
    sk = results.skipped
    head = "## Skipped cells\n\nCells the plan did not run, with the reason (skipped is not failed).\n"
    if sk.empty:
        return head + "\nNone.\n"
    order = ["strategy", "backbone", "dataset", "protocol", "label_fraction", "seed"]
    return head + "\n" + _cells_with_reasons(sk.sort_values(order), "reason")


def failed_section(results: LoadedResults) -> str:
    fa = results.failed
    head = (
        "## Failed cells\n\nCells that ran and failed (or whose predictions cannot be read); rerun `chexbench"
        " run` to retry them.\n"
    )
    if fa.empty:
        return head + "\nNone.\n"
    return head + "\n" + _cells_with_reasons(fa, "failure_reason")


def provenance_section(results: LoadedResults) -> str:
    head = (
        "## Appendix: provenance\n\nEvery number above comes from these cells; the config hash identifies the"
        " resolved configuration, the configuration hash the same without the seed (the cells pooled over"
        " seeds share it), the cell id the config hash plus the results-schema version.\n"
    )
    recs = results.records
    if recs.empty:
        return head + "\nNo cell records.\n"
    superseded = dict(zip(results.superseded["cell_id"], results.superseded["kept_cell_id"], strict=True))
    rows = [
        [
            f"`{r.cell_id}`",
            f"superseded by `{superseded[r.cell_id]}`" if r.cell_id in superseded else r.status,
            r.strategy,
            r.backbone,
            r.dataset,
            r.protocol,
            fmt_fraction(r.label_fraction),
            r.seed,
            f"`{str(r.config_hash)[:12]}`",
            f"`{str(r.configuration_hash)[:12]}`",
            r.grid,
            r.torch_version,
            r.timm_version,
            r.chexbench_version,
            (str(r.git_sha)[:10] or "—") if r.git_sha else "—",
            r.device_name,
            r.created_at,
        ]
        for r in recs.itertuples()
    ]
    header = [
        "cell",
        "status",
        "strategy",
        "backbone",
        "dataset",
        "protocol",
        "label fraction",
        "seed",
        "config hash",
        "configuration",
        "grid",
        "torch",
        "timm",
        "chexbench",
        "git",
        "device",
        "created",
    ]
    return head + "\n" + table(header, rows) + "\n"


def calibration_section(t: Tables, results: LoadedResults) -> str:
    head = (
        "## AUPRC, calibration and operating point\n\nMacro AUPRC (average precision; depends on prevalence,"
        " so compare within a dataset). Test ECE (15 equal-width bins; its 95% interval: logit scale around"
        " the seed mean, with the standard error of ECE over AUROC's patient resamples and the between-seed"
        " part, as AUPRC's — ECE is biased upward on small test sets, and this interval, centred on the"
        " estimate, does not correct that bias; its coverage was not simulated) and sensitivity / specificity"
        " on test at the threshold maximizing Youden's J on *validation*, each averaged over the macro"
        " labels, then over seeds. n/a: scores are not probabilities, or a macro label has only one class on"
        " validation (listed below the table).\n"
    )
    lb = t.leaderboard
    if lb.empty:
        return head + "\nNo finished cells.\n"
    rows = [
        [
            r.dataset,
            r.protocol,
            fmt_fraction(r.label_fraction),
            r.backbone,
            f"`{r.configuration_label}`",
            fmt_ci(r.macro_auroc, r.macro_auroc_ci_low, r.macro_auroc_ci_high)
            + sd_text(r.macro_auroc_sd, r.n_seeds),
            fmt_ci(r.macro_auprc, r.macro_auprc_ci_low, r.macro_auprc_ci_high)
            + sd_text(r.macro_auprc_sd, r.n_seeds),
            fmt_ci(
                r.macro_ece,
                getattr(r, "macro_ece_ci_low", float("nan")),
                getattr(r, "macro_ece_ci_high", float("nan")),
            ),
            fmt(r.macro_sensitivity),
            fmt(r.macro_specificity),
        ]
        for r in lb.itertuples()
    ]
    notes = sorted(
        {
            f"`{label}` ({n})"
            for cal in results.calibration.values()
            for label, n in zip(cal["label"], cal["note"], strict=True)
            if n
        }
    )
    text = (
        head
        + "\n"
        + table(
            [
                "dataset",
                "protocol",
                "label fraction",
                "backbone",
                "strategy",
                "macro AUROC [95% CI]",
                "macro AUPRC [95% CI]",
                "macro ECE [95% CI]",
                "sensitivity",
                "specificity",
            ],
            rows,
        )
        + "\n"
    )
    if notes:
        text += "\nNot available for: " + "; ".join(notes) + ".\n"
    return text


def crosscheck_section(cross: pd.DataFrame, t: Tables, results: LoadedResults) -> str:
    head = (
        f"## Cross-check: DeLong vs the patient-level bootstrap\n\nΔ macro AUROC vs `{t.baseline}` for the"
        " first seed of each arm. The primary interval (MOVER on the two macro intervals, their correlation"
        " from the shared patient resamples) is the one the report uses. DeLong's interval treats every"
        " image as independent; the clustered variant (Obuchowski 1997) sums each patient's structural"
        " components. Width ratio: analytic width / bootstrap width.\n"
    )
    if cross.empty:
        return head + "\nNo paired comparison to check.\n"
    multi = [ts for ts in results.test_sets.values() if ts.images_per_patient > 1.0]
    if multi:
        worst = max(multi, key=lambda ts: ts.images_per_patient)
        head += (
            f"\n**Patients hold several images here** (up to {worst.images_per_patient:.2f} per patient on"
            f" `{worst.dataset}`): DeLong's independence assumption fails, so its interval is too narrow and"
            " is shown only as a check, never as the result.\n"
        )
    rows = [
        [
            r.dataset,
            r.protocol,
            fmt_fraction(r.label_fraction),
            r.backbone,
            f"`{r.configuration_label}`",
            fmt_delta(r.delta, r.bootstrap_ci_low, r.bootstrap_ci_high),
            f"[{fmt_signed(r.delong_ci_low)}, {fmt_signed(r.delong_ci_high)}]",
            f"[{fmt_signed(r.clustered_ci_low)}, {fmt_signed(r.clustered_ci_high)}]",
            fmt(r.delong_width_ratio, 2),
            fmt(r.clustered_width_ratio, 2),
        ]
        for r in cross.itertuples()
    ]
    header = [
        "dataset",
        "protocol",
        "label fraction",
        "backbone",
        "strategy",
        "Δ [primary 95% CI]",
        "DeLong 95% CI",
        "clustered DeLong 95% CI",
        "DeLong width ratio",
        "clustered width ratio",
    ]
    return head + "\n" + table(header, rows) + "\n"
