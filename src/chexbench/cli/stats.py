"""``chexbench score PRED`` and ``chexbench compare A B``: statistics for any model's predictions."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from chexbench.cli.app import Table, app, console, err_console
from chexbench.core.errors import ConfigError

LabelsOpt = Annotated[
    str | None,
    typer.Option(
        "--labels",
        help=(
            "labels to score, comma-separated, or 'all' (default: the dataset's evaluation labels "
            "recorded with the predictions, as the report uses; else every label in the file)"
        ),
    ),
]

ByOpt = Annotated[
    str | None,
    typer.Option(
        "--by",
        help=(
            "per subgroup instead: sex, age (bands <40, 40–59, 60–79, ≥80), view or site — the file's column"
            " of that name; per-subgroup AUROC with intervals and each label's largest gap between subgroups"
            " with its test (docs/STATISTICS.md, Subgroups)"
        ),
    ),
]


def _num(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(float(x)) else f"{float(x):.3f}"


def _ci(m: float, lo: float, hi: float) -> str:
    if not math.isfinite(float(m)):
        return "n/a"
    if not (math.isfinite(float(lo)) and math.isfinite(float(hi))):
        return escape(f"{m:.3f} [not estimable]")  # Rich would read "[not estimable]" as a style tag
    return f"{m:.3f} [{_num(lo)}, {_num(hi)}]"


def _p(p: float) -> str:
    if p is None or not math.isfinite(float(p)):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _check(bootstrap: int, out: Path | None) -> None:
    if bootstrap < 100:
        raise ConfigError(
            f"--bootstrap must be at least 100 for the interval's bootstrap standard error, got {bootstrap}"
        )
    if out is not None and out.suffix.lower() not in (".csv", ".parquet", ".pq"):
        raise ConfigError(f"--out {out}: expected a .csv or .parquet file name")


@app.command("score")
def score(
    pred: Annotated[
        Path, typer.Argument(help="predictions, CSV or Parquet: image_id, patient_id, label, y_true, y_score")
    ],
    bootstrap: Annotated[int, typer.Option("--bootstrap", help="patient-level bootstrap resamples")] = 2000,
    seed: Annotated[int, typer.Option("--seed", help="seed of the resamples")] = 0,
    out: Annotated[Path | None, typer.Option("--out", help="write the table (.csv or .parquet)")] = None,
    labels: LabelsOpt = None,
    by: ByOpt = None,
) -> None:
    """Per-label and macro AUROC / AUPRC with 95% intervals (per-label AUROC: Hanley–McNeil score interval
    with a
    design effect; per-label AUPRC: logit scale, patient-bootstrap se, t quantile; macro: MOVER over its
    labels'
    intervals); ⚠ flags
    a label with fewer than 10 positive test patients.

    By default over the dataset's evaluation labels recorded with the predictions (a cell's
    predictions file of a results folder: the report's macro and interval, exactly)."""
    # lazy: keeps chexbench --help fast
    from chexbench.reports.score import MACRO, degenerate_warnings, score_file, write_table

    _check(bootstrap, out)
    if by is not None:
        _score_by(pred, by, bootstrap, seed, out, labels)
        return
    df = score_file(pred, bootstrap, seed, labels)
    console.print(f"labels: {df.attrs['labels_source']}", highlight=False, soft_wrap=True)
    table = Table(
        title=(
            f"{pred.name}: 95% intervals (AUROC: Hanley–McNeil score form; AUPRC: logit-t; macro: MOVER over "
            f"its labels), patient-level bootstrap ({bootstrap} resamples, seed {seed})"
        )
    )
    for col in (
        "label",
        "pos / neg",
        "pos patients",
        "AUROC [95% CI]",
        "AUPRC [95% CI]",
        "degenerate",
        "note",
    ):
        table.add_column(col)
    for r in df.itertuples():
        counts = f"{int(r.n_pos)} / {int(r.n_neg)}"
        pos_pat = "" if r.label == MACRO else str(int(r.n_pos_patients))
        note = "; ".join(x for x in (str(r.flag), str(r.note)) if x)
        table.add_row(
            str(r.label),
            counts,
            pos_pat,
            _ci(r.auroc, r.auroc_ci_low, r.auroc_ci_high),
            _ci(r.auprc, r.auprc_ci_low, r.auprc_ci_high),
            str(int(r.n_degenerate)),
            note,
        )
    console.print(table)
    _warn(degenerate_warnings(df, bootstrap))
    if (df["flag"] != "").any():
        console.print(
            f"⚠ {int((df['flag'] != '').sum())} row(s) rest on fewer than 10 positive test patients: read"
            " their intervals with care.",
            highlight=False,
            soft_wrap=True,
        )
    if out is not None:
        console.print(f"wrote {write_table(df, out)}", highlight=False)


def _warn(lines: list[str]) -> None:
    for line in lines:
        err_console.print(f"[yellow]warning:[/] {escape(line)}", highlight=False, soft_wrap=True)


@app.command("compare")
def compare(
    files: Annotated[
        list[Path],
        typer.Argument(help="prediction files (CSV or Parquet) of two or more models on the same test rows"),
    ],
    baseline: Annotated[
        Path | None, typer.Option("--baseline", help="compare every file with this one (default: all pairs)")
    ] = None,
    on_shared: Annotated[
        bool,
        typer.Option("--on-shared", help="compare on the rows all files share (says how many each loses)"),
    ] = False,
    bootstrap: Annotated[int, typer.Option("--bootstrap", help="patient-level bootstrap resamples")] = 2000,
    seed: Annotated[int, typer.Option("--seed", help="seed of the resamples")] = 0,
    out: Annotated[Path | None, typer.Option("--out", help="write the table (.csv or .parquet)")] = None,
    labels: LabelsOpt = None,
    by: ByOpt = None,
) -> None:
    """Paired ΔAUROC and ΔAUPRC (A − B) per label and macro, for two files, all pairs of several, or each vs
    --baseline:
    patient-level bootstrap CI and p (primary), DeLong as cross-check, Holm over the family."""
    # lazy: keeps chexbench --help fast
    from chexbench.reports.score import MACRO, compare_predictions, degenerate_warnings, write_table

    _check(bootstrap, out)
    if by is not None:
        _compare_by(files, by, baseline, on_shared, bootstrap, seed, out, labels)
        return
    c = compare_predictions(
        files, baseline=baseline, on_shared=on_shared, n_boot=bootstrap, seed=seed, labels=labels
    )
    console.print(f"labels: {c.labels_source}", highlight=False, soft_wrap=True)
    console.print(
        f"Paired on {c.n_rows} (image, label) rows from {c.n_patients} patients, {bootstrap} patient"
        f" resamples (seed {seed}), the same for every model.",
        highlight=False,
        soft_wrap=True,
    )
    if any(c.lost.values()):
        lost = "; ".join(f"{name} lost {c.lost[name]} of its {c.rows_of[name]} rows" for name in c.models)
        console.print(
            f"--on-shared: compared on the shared rows only: {lost}.", highlight=False, soft_wrap=True
        )
    notes: list[str] = []
    for a, b in c.pairs:
        df = c.table[(c.table["model_a"] == a) & (c.table["model_b"] == b)]
        table = Table(title=f"A = {a}, B = {b}")
        for col in (
            "label",
            "AUROC A [95% CI]",
            "AUROC B [95% CI]",
            "ΔAUROC [95% CI]",
            "p",
            "p Holm",
            "ΔAUPRC [95% CI]",
            "DeLong p",
            "clustered DeLong p",
        ):
            table.add_column(col)
        for r in df.itertuples():
            if not math.isfinite(float(r.delta)):
                table.add_row(str(r.label), "n/a", "n/a", f"n/a ({r.note})", "", "", "", "", "")
                continue
            if r.interval_note:  # a point Δ, but no interval and no p-value: not estimable
                table.add_row(
                    str(r.label),
                    _num(r.auroc_a),
                    _num(r.auroc_b),
                    escape(f"{r.delta:+.3f} [not estimable]"),
                    "n/a",
                    "n/a",
                    "n/a",
                    "n/a",
                    "n/a",
                )
                notes.append(f"{a} vs {b}, {r.label}: {r.interval_note}")
                continue
            if r.label == MACRO:
                table.caption = f"macro: {r.note}; its DeLong p sums each image's influence over those labels"
            flag = " ⚠" if isinstance(r.flag, str) and r.flag else ""
            table.add_row(
                str(r.label) + flag,
                _ci(r.auroc_a, r.auroc_a_ci_low, r.auroc_a_ci_high),
                _ci(r.auroc_b, r.auroc_b_ci_low, r.auroc_b_ci_high),
                _delta(r.delta, r.delta_ci_low, r.delta_ci_high),
                _p(r.p_value),
                _p(r.p_holm),
                _delta(r.auprc_delta, r.auprc_delta_ci_low, r.auprc_delta_ci_high),
                _p(r.delong_p),
                _p(r.clustered_delong_p),
            )
        console.print(table)
        _warn(degenerate_warnings(df, bootstrap, prefix=f"{a} vs {b}, Δ "))
        flagged = [f"{r.label}: {r.flag}" for r in df.itertuples() if isinstance(r.flag, str) and r.flag]
        for line in flagged:
            console.print(line, highlight=False, soft_wrap=True)
    _warn(notes)
    console.print(c.family, highlight=False, soft_wrap=True)
    console.print(
        "Intervals: per-label AUROC, Hanley–McNeil score interval with a design effect; per-label AUPRC,"
        " logit scale, patient-bootstrap se, Student-t quantile on min(positive, negative patients) − 1 df;"
        " macro, MOVER over its labels' intervals with their bootstrap correlation; every Δ (per label and"
        " macro, AUROC and AUPRC), MOVER from the two arms' intervals, p where that interval touches 0, so"
        " the Δ interval excludes 0 exactly when p < 0.05 (docs/STATISTICS.md).",
        highlight=False,
        soft_wrap=True,
    )
    console.print(
        "DeLong treats images as independent (too narrow when patients hold several images); the clustered "
        "variant (Obuchowski 1997) does not. The macro DeLong sums each image's influence over labels.",
        highlight=False,
        soft_wrap=True,
    )
    if out is not None:
        console.print(f"wrote {write_table(c.table, out)}", highlight=False)


def _delta(d: float, lo: float, hi: float) -> str:
    if d is None or not math.isfinite(float(d)):
        return "n/a"
    return f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def _flagged(text: str, flag: str) -> str:
    return f"{text} ⚠" if isinstance(flag, str) and flag else text


def _print_subgroups(a, title: str) -> None:
    """One table of per-subgroup AUROC per label, one of each label's largest gap (``reports.subgroups``)."""
    from chexbench.reports.subgroups import PATIENT_BOOTSTRAP

    table = Table(
        title=f"{title}: AUROC [95% CI] by {a.variable} (pos / neg images, positive patients / patients)"
    )
    table.add_column("label")
    for g in a.subgroups:
        table.add_column(g)
    for label, rows in a.table.groupby("label", sort=False):
        cells = []
        for r in rows.itertuples():
            value = (
                _ci(r.auroc, r.auroc_ci_low, r.auroc_ci_high)
                if math.isfinite(float(r.auroc))
                else f"n/a ({r.note})"
            )
            cells.append(
                _flagged(
                    f"{value} ({int(r.n_pos)}/{int(r.n_neg)}, {int(r.n_pos_patients)}/{int(r.n_patients)})",
                    r.flag,
                )
            )
        table.add_row(str(label), *cells)
    console.print(table)
    gaps = Table(title=f"{title}: largest gap per label between {a.variable} subgroups")
    for col in ("label", "higher − lower", "gap [95% CI]", "p", "p Holm", "test", "note"):
        gaps.add_column(col)
    for r in a.gaps.itertuples():
        if not isinstance(r.higher, str):
            gaps.add_row(str(r.label), "", "n/a", "", "", "", str(r.note))
            continue
        gaps.add_row(
            _flagged(str(r.label), r.flag),
            f"{r.higher} − {r.lower}",
            _delta(r.gap, r.gap_ci_low, r.gap_ci_high),
            _p(r.p_value),
            _p(r.p_holm),
            str(r.test),
            str(r.note),
        )
    console.print(gaps)
    if a.n_without:
        console.print(
            f"{a.n_without} image(s) have no {a.variable} value and are in no subgroup.",
            highlight=False,
            soft_wrap=True,
        )
    few = a.table[a.table["flag"] != ""]
    if len(few):
        console.print(
            f"⚠ {len(few)} subgroup × label row(s) rest on fewer than 10 positive patients: read their"
            " intervals and gaps with care.",
            highlight=False,
            soft_wrap=True,
        )
    console.print(
        "Gap test: MOVER on the two subgroups' Hanley–McNeil score intervals; independent (correlation 0)"
        f" when the two subgroups share no patient, else '{PATIENT_BOOTSTRAP}' (both AUROCs recomputed on"
        " each patient resample, their correlation used). Holm over every pair of subgroups of every label.",
        highlight=False,
        soft_wrap=True,
    )


def _score_by(pred: Path, by: str, bootstrap: int, seed: int, out: Path | None, labels: str | None) -> None:
    from chexbench.reports.score import write_table
    from chexbench.reports.subgroups import score_file_by

    a, source = score_file_by(pred, by, bootstrap, seed, labels)
    console.print(f"labels: {source}", highlight=False, soft_wrap=True)
    _print_subgroups(a, f"{pred.name} ({bootstrap} patient resamples, seed {seed})")
    if out is not None:
        gaps_out = out.with_name(f"{out.stem}_gaps{out.suffix}")
        console.print(
            f"wrote {write_table(a.table, out)} and {write_table(a.gaps, gaps_out)}", highlight=False
        )


def _compare_by(
    files: list[Path],
    by: str,
    baseline: Path | None,
    on_shared: bool,
    bootstrap: int,
    seed: int,
    out: Path | None,
    labels: str | None,
) -> None:
    from chexbench.reports.score import write_table
    from chexbench.reports.subgroups import compare_files_by

    c = compare_files_by(
        files, by, baseline=baseline, on_shared=on_shared, n_boot=bootstrap, seed=seed, labels=labels
    )
    console.print(f"labels: {c.labels_source}", highlight=False, soft_wrap=True)
    for (a, b), df in c.table.groupby(["model_a", "model_b"], sort=False):
        table = Table(
            title=(
                f"A = {a}, B = {b}: ΔAUROC (A − B) within each {by} subgroup, paired on the same patient"
                " resamples"
            )
        )
        for col in (
            "subgroup",
            "label",
            "pos patients",
            "AUROC A [95% CI]",
            "AUROC B [95% CI]",
            "ΔAUROC [95% CI]",
            "p",
            "p Holm",
        ):
            table.add_column(col)
        for r in df.itertuples():
            table.add_row(
                str(r.subgroup),
                _flagged(str(r.label), r.flag),
                str(int(r.n_pos_patients)),
                _ci(r.auroc_a, r.auroc_a_ci_low, r.auroc_a_ci_high),
                _ci(r.auroc_b, r.auroc_b_ci_low, r.auroc_b_ci_high),
                (
                    _delta(r.delta, r.delta_ci_low, r.delta_ci_high)
                    if math.isfinite(float(r.delta_ci_low))
                    else f"n/a ({r.note})"
                    if r.note
                    else "n/a"
                ),
                _p(r.p_value),
                _p(r.p_holm),
            )
        console.print(table)
    console.print(c.family, highlight=False, soft_wrap=True)
    for name, a in c.analyses.items():
        _print_subgroups(a, name)
    if out is not None:
        import pandas as pd

        gaps = pd.concat([a.gaps.assign(model=name) for name, a in c.analyses.items()], ignore_index=True)
        gaps_out = out.with_name(f"{out.stem}_gaps{out.suffix}")
        console.print(f"wrote {write_table(c.table, out)} and {write_table(gaps, gaps_out)}", highlight=False)
