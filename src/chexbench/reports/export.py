"""Manuscript tables: the leaderboard and the paired comparisons as LaTeX, Markdown or CSV.

Both tables are long (one row per configuration), with names in words, intervals and marks:

    ↑ / ↓   better / worse than the baseline: seed-aware paired t test, Holm-corrected over the
            report's headline family, p < 0.05 (LaTeX: $\\uparrow$ / $\\downarrow$)
    †       interval unreliable: more than 5% of the resamples lost every positive or every
            negative of a label (the test set is too small for it)

CSV keeps the numbers in their own columns (mean, low, high, p, …) beside the formatted text,
so a plotting script needs no parsing. Written to ``RESULTS/tables/{leaderboard,paired}.{tex,md,csv}``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from chexbench.core.atomic import atomic_write_text
from chexbench.core.errors import ConfigError
from chexbench.reports.leaderboard import Tables
from chexbench.reports.markdown import (
    DEGENERATE_WARN,
    SIGNIFICANCE,
    fmt_ci,
    fmt_delta,
    fmt_p,
    table,
)
from chexbench.reports.names import display_name, row_label

FORMATS: dict[str, str] = {"latex": "tex", "markdown": "md", "csv": "csv"}
SORT = ["dataset", "protocol", "label_fraction", "backbone", "strategy"]


def _sort_keys(frame: pd.DataFrame) -> list[str]:
    return SORT + (["configuration_label"] if "configuration_label" in frame.columns else [])


def check_formats(formats: list[str] | tuple[str, ...]) -> list[str]:
    """The requested formats, validated (one line naming the bad one)."""
    for f in formats:
        if f not in FORMATS:
            raise ConfigError(f"--format '{f}': choose from {', '.join(FORMATS)}")
    return list(dict.fromkeys(formats))


def _mark(row, latex: bool) -> str:
    p = row.get("p_holm", float("nan"))
    if (
        p is None
        or not math.isfinite(float(p))
        or p >= SIGNIFICANCE
        or not math.isfinite(float(row["delta"]))
    ):
        return ""
    up = row["delta"] > 0
    return ("$\\uparrow$" if up else "$\\downarrow$") if latex else ("↑" if up else "↓")


def _unreliable(row) -> bool:
    return bool(row["n_boot"]) and float(row["n_degenerate"]) / float(row["n_boot"]) > DEGENERATE_WARN


def _names(row: pd.Series) -> dict[str, str]:
    return {
        "Dataset": display_name("dataset", row["dataset"]),
        "Protocol": display_name("protocol", row["protocol"]),
        "Labels": f"{100 * float(row['label_fraction']):.3g}%",
        "Backbone": display_name("backbone", row["backbone"]),
        "Strategy": row_label(row, backbone=False, fraction=False),
    }


def leaderboard_frame(t: Tables, latex: bool = False) -> pd.DataFrame:
    """One row per configuration: names, seeds, macro AUROC [95% CI] with its marks (and the raw numbers)."""
    rows = []
    for _, r in t.leaderboard.sort_values(_sort_keys(t.leaderboard)).iterrows():
        text = fmt_ci(r["macro_auroc"], r["macro_auroc_ci_low"], r["macro_auroc_ci_high"]) + _mark(r, latex)
        if math.isfinite(r["macro_auroc"]) and _unreliable(r):
            text += "$^\\dagger$" if latex else "†"
        rows.append(
            {
                **_names(r),
                "Seeds": int(r["n_seeds"]),
                "Macro AUROC [95% CI]": text,
                "Macro AUPRC [95% CI]": fmt_ci(
                    r["macro_auprc"], r["macro_auprc_ci_low"], r["macro_auprc_ci_high"]
                ),
                "macro_auroc": r["macro_auroc"],
                "macro_auroc_ci_low": r["macro_auroc_ci_low"],
                "macro_auroc_ci_high": r["macro_auroc_ci_high"],
                "macro_auroc_sd": r["macro_auroc_sd"],
                "p_holm": r["p_holm"],
                "unreliable_interval": _unreliable(r),
            }
        )
    return pd.DataFrame(rows)


def paired_frame(t: Tables, latex: bool = False) -> pd.DataFrame:
    """One row per comparison with the baseline: Δ macro AUROC [95% CI], p, Holm and BH p, mark."""
    lb = t.leaderboard
    comp = lb[lb["strategy"] != t.baseline].sort_values(_sort_keys(lb)) if not lb.empty else lb
    rows = []
    for _, r in comp.iterrows():
        delta = (
            fmt_delta(r["delta"], r["delta_ci_low"], r["delta_ci_high"])
            if math.isfinite(r["delta"])
            else f"n/a ({r['delta_note']})"
        )
        rows.append(
            {
                **_names(r),
                "Seeds": int(r["n_seeds"]),
                f"Δ macro AUROC vs {display_name('strategy', t.baseline)} [95% CI]": delta + _mark(r, latex),
                "p": fmt_p(r["p_value"]),
                "p (Holm)": fmt_p(r["p_holm"]),
                "p (BH)": fmt_p(r["p_bh"]),
                "delta": r["delta"],
                "delta_ci_low": r["delta_ci_low"],
                "delta_ci_high": r["delta_ci_high"],
                "p_value": r["p_value"],
                "p_holm": r["p_holm"],
                "p_bh": r["p_bh"],
            }
        )
    return pd.DataFrame(rows)


#: raw-number columns: in the CSV only
RAW_COLUMNS = frozenset(
    {
        "macro_auroc",
        "macro_auroc_ci_low",
        "macro_auroc_ci_high",
        "macro_auroc_sd",
        "p_holm",
        "unreliable_interval",
        "delta",
        "delta_ci_low",
        "delta_ci_high",
        "p_value",
        "p_bh",
    }
)


def _caption(t: Tables, kind: str, latex: bool) -> str:
    n = int(t.leaderboard["p_value"].notna().sum()) if not t.leaderboard.empty else 0
    base = display_name("strategy", t.baseline)
    up, down, dagger = ("$\\uparrow$", "$\\downarrow$", "$^\\dagger$") if latex else ("↑", "↓", "†")
    marks = (
        f"{up}/{down}: better/worse than {base} (seed-aware paired test, Holm-corrected over the {n} "
        "macro-AUROC comparisons of the report, p < 0.05)."
    )
    if kind == "leaderboard":
        return (
            "Macro AUROC, mean over fine-tuning seeds, with 95% intervals for that mean (test-sample"
            " variance from a patient-level bootstrap plus between-seed variance, t quantiles, logit scale)."
            f" {marks} {dagger}: interval unreliable (more than 5% of resamples lost a class of a label)."
        )
    return (
        f"Paired difference in macro AUROC vs {base} on the same test images and patient resamples, with 95%"
        f" interval and two-sided p; Holm and Benjamini–Hochberg corrections over the {n} comparisons."
        f" {marks}"
    )


_LATEX_ESCAPES = {
    "\\": "\\textbackslash{}",
    "&": "\\&",
    "%": "\\%",
    "#": "\\#",
    "_": "\\_",
    "{": "\\{",
    "}": "\\}",
    "~": "\\textasciitilde{}",
    "^": "\\textasciicircum{}",
    "$": "\\$",
    "Δ": "$\\Delta$",
    "−": "$-$",
    "–": "--",
    "<": "$<$",
    ">": "$>$",
}


def latex_escape(text: str) -> str:
    """Escape LaTeX specials in plain text, leaving ``$…$`` math (our marks) untouched."""
    out, math_mode = [], False
    text = re.sub(r"(?<![\w.])-(?=\d)", "−", str(text))  # a negative number's sign, not a hyphen
    for part in text.split("$"):
        out.append(part if math_mode else "".join(_LATEX_ESCAPES.get(ch, ch) for ch in part))
        math_mode = not math_mode
    return "$".join(out)


def to_latex(df: pd.DataFrame, caption: str, label: str) -> str:
    """A booktabs ``table`` environment (needs ``\\usepackage{booktabs}``)."""
    cols = [c for c in df.columns if c not in RAW_COLUMNS]
    align = "".join("r" if c in ("Seeds", "Labels", "p", "p (Holm)", "p (BH)") else "l" for c in cols)
    lines = [
        "\\begin{table}[t]",
        "\\centering",
        "\\small",
        f"\\begin{{tabular}}{{{align}}}",
        "\\toprule",
        " & ".join(latex_escape(c) for c in cols) + " \\\\",
        "\\midrule",
    ]
    lines += [" & ".join(latex_escape(str(v)) for v in r) + " \\\\" for r in df[cols].itertuples(index=False)]
    lines += [
        "\\bottomrule",
        "\\end{tabular}",
        f"\\caption{{{latex_escape(caption)}}}",
        f"\\label{{{label}}}",
        "\\end{table}",
    ]
    return "\n".join(lines) + "\n"


def to_markdown(df: pd.DataFrame, caption: str) -> str:
    cols = [c for c in df.columns if c not in RAW_COLUMNS]
    return table(cols, df[cols].itertuples(index=False)) + f"\n\n{caption}\n"


def write_tables(t: Tables, out_dir: Path, formats: list[str]) -> list[Path]:
    """Write the leaderboard and paired tables in each of ``formats``; returns the files written."""
    written = []
    for fmt in check_formats(formats):
        latex = fmt == "latex"
        for kind, frame in (("leaderboard", leaderboard_frame(t, latex)), ("paired", paired_frame(t, latex))):
            caption = _caption(t, kind, latex)
            path = out_dir / f"{kind}.{FORMATS[fmt]}"
            if frame.empty:
                text = f"No {kind} rows: no finished cell.\n" if fmt != "csv" else ""
            elif latex:
                text = to_latex(frame, caption, f"tab:chexbench-{kind}")
            elif fmt == "markdown":
                text = to_markdown(frame, caption)
            else:
                text = frame.to_csv(index=False)
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(text, path)
            written.append(path)
    return written
