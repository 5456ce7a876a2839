"""``chexbench report``: report.md, figures and leaderboard tables from a results directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from chexbench.cli.app import app, console
from chexbench.core.errors import ConfigError


@app.command("report")
def report(
    results: Annotated[Path, typer.Option("--results", help="results directory written by `chexbench run`")] = Path("chexbench-results"),
    baseline: Annotated[str, typer.Option("--baseline", help="strategy every other strategy is compared with")] = "scratch",
    bootstrap: Annotated[int, typer.Option("--bootstrap", help="patient-level bootstrap resamples")] = 2000,
    seed: Annotated[int, typer.Option("--seed", help="seed of the bootstrap resamples")] = 0,
    figures: Annotated[bool, typer.Option("--figures/--no-figures", help="render figures/*.png and *.pdf")] = True,
    formats: Annotated[
        list[str] | None,
        typer.Option("--format", help="also write tables/leaderboard.* and tables/paired.* for a manuscript: latex | markdown | csv (repeatable)"),
    ] = None,
) -> None:
    """Write report.md (leaderboards with patient-level bootstrap CIs, paired Δ vs baseline), figures and leaderboard.parquet/.csv."""
    # lazy: keeps chexbench --help fast
    from chexbench.reports.export import FORMATS, check_formats
    from chexbench.reports.report import write_report

    formats = check_formats(formats or [])
    if bootstrap < 100:
        raise ConfigError(f"--bootstrap must be at least 100 for the interval's bootstrap standard error, got {bootstrap}")
    with console.status("scoring cells and bootstrapping…"):
        path = write_report(results, baseline=baseline, n_boot=bootstrap, seed=seed, figures=figures, table_formats=formats)
    console.print(str(path), highlight=False, soft_wrap=True)
    for fmt in formats:
        for kind in ("leaderboard", "paired"):
            console.print(str(results / "tables" / f"{kind}.{FORMATS[fmt]}"), highlight=False, soft_wrap=True)
