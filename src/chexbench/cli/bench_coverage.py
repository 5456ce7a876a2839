"""``chexbench bench coverage``: coverage of each interval method by simulation (docs/STATISTICS.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from chexbench.cli.app import bench_app, console
from chexbench.core.errors import ConfigError


@bench_app.command("coverage")
def bench_coverage(
    trials: Annotated[int, typer.Option("--trials", help="simulated test sets per setting (per-label and Δ)")] = 300,
    resamples: Annotated[int, typer.Option("--resamples", help="patient resamples per test set")] = 2000,
    seed_trials: Annotated[int, typer.Option("--seed-trials", help="simulated configurations per seed setting")] = 2000,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    part: Annotated[list[str] | None, typer.Option("--part", help="label, seeds, macro, seed-label, seed-macro (repeat; default: all)")] = None,
    macro_trials: Annotated[int, typer.Option("--macro-trials", help="trials per setting of 'macro', 'seed-label' and 'seed-macro'")] = 300,
    macro_resamples: Annotated[int, typer.Option("--macro-resamples", help="patient resamples of 'macro', 'seed-label' and 'seed-macro'")] = 1000,
    out: Annotated[Path | None, typer.Option("--out", help="also write the tables (Markdown) to this file")] = None,
) -> None:
    """Simulate clustered test sets and seeds; print how often each 95% interval method covers the truth."""
    # lazy: keeps chexbench --help fast
    from chexbench.core.atomic import atomic_write_text
    from chexbench.perf.coverage import PARTS, run_coverage

    if min(trials, resamples, seed_trials, macro_trials) < 1 or min(resamples, macro_resamples) < 100:
        raise ConfigError("--trials, --seed-trials and --macro-trials must be positive and --resamples / --macro-resamples at least 100")
    parts = tuple(part) if part else PARTS
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ConfigError(f"--part {unknown[0]}: expected one of {', '.join(PARTS)}")
    with console.status("simulating…"):
        _, _, body = run_coverage(trials, resamples, seed_trials, seed, parts=parts, macro_trials=macro_trials,
                                  macro_boot=macro_resamples)
    command = (f"chexbench bench coverage --trials {trials} --resamples {resamples} --seed-trials {seed_trials} --seed {seed} "
               f"--macro-trials {macro_trials} --macro-resamples {macro_resamples}" + "".join(f" --part {p}" for p in parts))
    text = f"Command: `{command}`\n\n{body}"
    console.print(text, highlight=False, soft_wrap=True)
    if out is not None:
        atomic_write_text(text, out)
        console.print(f"wrote {out}", highlight=False)
