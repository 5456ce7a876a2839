"""``chexbench score PRED`` and ``chexbench compare A B``: statistics for any model's predictions."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from chexbench.cli.app import app, console
from chexbench.errors import ConfigError


def _num(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(float(x)) else f"{float(x):.3f}"


def _ci(m: float, lo: float, hi: float) -> str:
    if not math.isfinite(float(m)):
        return "n/a"
    return f"{m:.3f} [{_num(lo)}, {_num(hi)}]"


def _p(p: float) -> str:
    if p is None or not math.isfinite(float(p)):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _check(bootstrap: int, out: Path | None) -> None:
    if bootstrap < 100:
        raise ConfigError(f"--bootstrap must be at least 100 for a 95% percentile interval, got {bootstrap}")
    if out is not None and out.suffix.lower() not in (".csv", ".parquet", ".pq"):
        raise ConfigError(f"--out {out}: expected a .csv or .parquet file name")


@app.command("score")
def score(
    pred: Annotated[Path, typer.Argument(help="predictions, CSV or Parquet: image_id, patient_id, label, y_true, y_score")],
    bootstrap: Annotated[int, typer.Option("--bootstrap", help="patient-level bootstrap resamples")] = 2000,
    seed: Annotated[int, typer.Option("--seed", help="seed of the resamples")] = 0,
    out: Annotated[Path | None, typer.Option("--out", help="write the table (.csv or .parquet)")] = None,
) -> None:
    """Per-label and macro AUROC / AUPRC with patient-level bootstrap 95% intervals."""
    from chexbench.reports.score import score_file, write_table

    _check(bootstrap, out)
    df = score_file(pred, bootstrap, seed)
    table = Table(title=f"{pred.name}: 95% patient-level bootstrap ({bootstrap} resamples, seed {seed})")
    for col in ("label", "pos / neg", "AUROC [95% CI]", "AUPRC [95% CI]", "degenerate", "note"):
        table.add_column(col)
    for r in df.itertuples():
        counts = f"{int(r.n_pos)} / {int(r.n_neg)}"
        table.add_row(str(r.label), counts, _ci(r.auroc, r.auroc_ci_low, r.auroc_ci_high),
                      _ci(r.auprc, r.auprc_ci_low, r.auprc_ci_high), str(int(r.n_degenerate)), str(r.note))
    console.print(table)
    if out is not None:
        console.print(f"wrote {write_table(df, out)}", highlight=False)


@app.command("compare")
def compare(
    a: Annotated[Path, typer.Argument(help="predictions of model A (CSV or Parquet)")],
    b: Annotated[Path, typer.Argument(help="predictions of model B, same test images")],
    bootstrap: Annotated[int, typer.Option("--bootstrap", help="patient-level bootstrap resamples")] = 2000,
    seed: Annotated[int, typer.Option("--seed", help="seed of the resamples")] = 0,
    out: Annotated[Path | None, typer.Option("--out", help="write the table (.csv or .parquet)")] = None,
) -> None:
    """Paired ΔAUROC = A − B per label and macro: patient-level bootstrap CI and p (primary), DeLong as cross-check."""
    from chexbench.reports.score import MACRO, compare_files, write_table

    _check(bootstrap, out)
    df = compare_files(a, b, bootstrap, seed)
    table = Table(title=f"A = {a.name}, B = {b.name}: paired on shared images, {bootstrap} patient resamples")
    for col in ("label", "AUROC A", "AUROC B", "Δ [95% CI]", "p", "p Holm", "p BH", "DeLong p", "clustered DeLong p"):
        table.add_column(col)
    for r in df.itertuples():
        if not math.isfinite(float(r.delta)):
            table.add_row(str(r.label), "n/a", "n/a", f"n/a ({r.note})", "", "", "", "", "")
            continue
        delta = f"{r.delta:+.3f} [{r.delta_ci_low:+.3f}, {r.delta_ci_high:+.3f}]"
        is_macro = r.label == MACRO
        table.add_row(str(r.label), _num(r.auroc_a), _num(r.auroc_b), delta, _p(r.p_value),
                      "" if is_macro else _p(r.p_holm), "" if is_macro else _p(r.p_bh),
                      "" if is_macro else _p(r.delong_p), "" if is_macro else _p(r.clustered_delong_p))
    console.print(table)
    console.print("Holm / BH family: the per-label comparisons of this pair. DeLong treats images as independent "
                  "(too narrow when patients hold several images); the clustered variant (Obuchowski 1997) does not.",
                  highlight=False)
    if out is not None:
        console.print(f"wrote {write_table(df, out)}", highlight=False)
