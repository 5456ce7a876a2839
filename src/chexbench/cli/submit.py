"""``chexbench submit``: an array of shard jobs through submitit (SLURM, or local processes).

The command parses its options and prints; the jobs, their state files and ``<results>/jobs.json``
(which ``chexbench status`` reads to show each job's state and how many of its shard's cells are
stored) are :mod:`chexbench.bench.slurm`'s.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer

from chexbench.cli.app import GridOpt, OnlyOpt, ResultsOpt, Table, app, console
from chexbench.core.errors import ConfigError


@app.command()
def submit(
    grid: GridOpt = "smoke",
    results: ResultsOpt = Path("chexbench-results"),
    only: OnlyOpt = None,
    jobs: Annotated[
        int,
        typer.Option("--jobs", "-n", help="number of shard jobs (the grid is split into this many shards)"),
    ] = 1,
    partition: Annotated[str | None, typer.Option(help="SLURM partition")] = None,
    gpus_per_job: Annotated[
        int, typer.Option(help="GPUs per job; > 1 trains each cell data-parallel (torchrun)")
    ] = 1,
    cpus_per_job: Annotated[int, typer.Option(help="CPU cores per job")] = 8,
    mem_gb: Annotated[int, typer.Option(help="memory per job (GB)")] = 64,
    timeout_min: Annotated[int, typer.Option(help="wall-clock limit per job (minutes)")] = 24 * 60,
    executor: Annotated[
        str, typer.Option(help="slurm | local (local processes, for testing the setup)")
    ] = "slurm",
    device: Annotated[str, typer.Option(help="device inside each job: auto | cpu | cuda")] = "auto",
    wait: Annotated[bool, typer.Option(help="block until every job ends; exit 1 if one failed")] = False,
) -> None:
    """Submit an array of ``--jobs`` shard jobs; ``chexbench status`` follows them."""
    # lazy: keeps chexbench --help fast
    from chexbench.bench.runner import preflight
    from chexbench.bench.slurm import (
        Executor,
        job_parameters,
        new_submission,
        record_submission,
        shard_command,
        submit_shards,
    )
    from chexbench.spec.grid import parse_only
    from chexbench.spec.parse import load_grid

    _check_submit_options(executor, jobs, gpus_per_job)
    g = load_grid(grid)
    planned = g.cells(parse_only(only))
    preflight(planned)  # a missing data root fails here, not in n queued jobs
    results = results.resolve()
    grid_arg = str(Path(grid).resolve()) if Path(grid).exists() else grid
    where = Executor(executor)
    local_gpus = _cuda_count() if where is Executor.LOCAL and device != "cpu" else 0
    params = job_parameters(
        where,
        f"chexbench-{g.name}",
        timeout_min,
        jobs,
        partition,
        gpus_per_job,
        cpus_per_job,
        mem_gb,
        local_gpus,
    )
    commands = {
        s: shard_command(grid_arg, results, s, gpus_per_job, device, list(only or []))
        for s in (f"{i}/{jobs}" for i in range(jobs))
    }
    submitted = submit_shards(where, results / "jobs" / "%j", params, commands)
    path = record_submission(results, new_submission(grid_arg, g.name, list(only or []), where, submitted))
    table = Table(title=f"{len(submitted)} {executor} job(s) for grid {g.name}", title_justify="left")
    for col in ("shard", "job"):
        table.add_column(col)
    for job in submitted:
        table.add_row(job.shard, job.entry.job_id)
    console.print(table)
    console.print(f"jobs recorded in {path}; follow them with: chexbench status --results {results}")
    if wait and _wait_for_jobs(where, submitted):
        sys.exit(1)


def _check_submit_options(executor: str, jobs: int, gpus_per_job: int) -> None:
    if executor not in ("slurm", "local"):
        raise ConfigError(f"--executor must be slurm or local, got '{executor}'")
    if jobs < 1 or gpus_per_job < 1:
        raise ConfigError(f"--jobs and --gpus-per-job must be ≥ 1 (got {jobs}, {gpus_per_job})")
    if executor == "slurm" and shutil.which("sbatch") is None:
        raise ConfigError(
            "--executor slurm: no SLURM here (sbatch not found); use --executor local to try the setup"
        )


def _wait_for_jobs(executor, submitted) -> int:
    """Block until every job ends; print each failure; return how many failed."""
    # lazy: keeps chexbench --help fast
    from chexbench.bench.slurm import wait_for

    ended = wait_for(executor, submitted)
    failed = [
        (job, status) for job, status in ended if not status.finished
    ]  # the job's own JSON state, as `status` reads it
    for job, status in failed:
        console.print(f"  [red]shard {job.shard} failed[/] ({status}); its output: {job.handle.paths.stderr}")
    console.print(f"{len(ended) - len(failed)}/{len(ended)} jobs finished")
    return len(failed)


def _cuda_count() -> int:
    # lazy: keeps chexbench --help fast
    import torch

    return torch.cuda.device_count()


def print_jobs(results: Path) -> None:
    """The latest submission's jobs: state and stored cells of each shard (used by ``chexbench status``)."""
    # lazy: keeps chexbench --help fast
    from chexbench.bench.slurm import job_rows, read_jobs
    from chexbench.perf.throughput import split_costs as shard_costs

    subs = read_jobs(results)
    if not subs:
        return
    sub = subs[-1]
    planned = sub.cells()
    costs = shard_costs(planned) if planned is not None else None  # the split `run --shard` makes
    table = Table(
        title=f"{sub.executor} jobs submitted {sub.submitted_at} (grid {sub.grid_name})", title_justify="left"
    )
    for col in ("shard", "job", "state", "cells stored"):
        table.add_column(col)
    for row in job_rows(results, sub, planned, costs):  # status only looks: nothing is moved
        table.add_row(
            row.shard, row.job_id, str(row.status), "" if row.cells is None else f"{row.stored}/{row.cells}"
        )
    console.print(table)
