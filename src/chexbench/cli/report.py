"""``chexbench report``: report.md, figures and leaderboard tables from a results directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from chexbench.cli.app import app, console
from chexbench.core.errors import ConfigError


@app.command("report")
def report(
    results: Annotated[
        Path, typer.Option("--results", help="results directory written by `chexbench run`")
    ] = Path("chexbench-results"),
    baseline: Annotated[
        str, typer.Option("--baseline", help="strategy every other strategy is compared with")
    ] = "scratch",
    bootstrap: Annotated[int, typer.Option("--bootstrap", help="patient-level bootstrap resamples")] = 2000,
    seed: Annotated[int, typer.Option("--seed", help="seed of the bootstrap resamples")] = 0,
    figures: Annotated[
        bool, typer.Option("--figures/--no-figures", help="render figures/*.png and *.pdf")
    ] = True,
    formats: Annotated[
        list[str] | None,
        typer.Option(
            "--format",
            help="html: report.html (written by default; see --no-html); latex | markdown | csv: also "
            "tables/leaderboard.* and tables/paired.* for a manuscript (repeatable)",
        ),
    ] = None,
    html: Annotated[
        bool,
        typer.Option(
            "--html/--no-html",
            help="write report.html beside report.md (one self-contained page "
            "that sorts and filters; same numbers)",
        ),
    ] = True,
) -> None:
    """Write report.md and report.html (leaderboards with patient-level bootstrap CIs, paired Δ vs baseline),
    figures and leaderboard.parquet/.csv."""
    # lazy: keeps chexbench --help fast
    from chexbench.reports.export import FORMATS, check_formats
    from chexbench.reports.report import write_report

    wanted = list(formats or [])
    for f in wanted:
        if f != "html" and f not in FORMATS:
            raise ConfigError(f"--format '{f}': choose from {', '.join(FORMATS)}, html")
    if "html" in wanted:  # the page is not a manuscript table: --format html asks for report.html
        if not html:
            raise ConfigError("--format html and --no-html contradict each other; pass one of them")
        wanted = [f for f in wanted if f != "html"]
    formats = check_formats(wanted)
    if bootstrap < 100:
        raise ConfigError(
            f"--bootstrap must be at least 100 for the interval's bootstrap standard error, got {bootstrap}"
        )
    with console.status("scoring cells and bootstrapping…"):
        path = write_report(
            results,
            baseline=baseline,
            n_boot=bootstrap,
            seed=seed,
            figures=figures,
            table_formats=formats,
            html=html,
        )
    console.print(str(path), highlight=False, soft_wrap=True)
    if html:
        console.print(str(path.with_name("report.html")), highlight=False, soft_wrap=True)
    for fmt in formats:
        for kind in ("leaderboard", "paired"):
            console.print(str(results / "tables" / f"{kind}.{FORMATS[fmt]}"), highlight=False, soft_wrap=True)
