"""``chexbench submit``: an array of shard jobs through submitit (SLURM, or local processes).

Job ``i`` of ``n`` runs ``chexbench run --grid … --shard i/n`` (with ``--gpus`` for a
multi-GPU job, which relaunches itself under torchrun). The submission is appended to
``<results>/jobs.json`` (atomic write), which ``chexbench status`` reads to show each
job's state and how many of its shard's cells are stored.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from chexbench.cli.app import GridOpt, OnlyOpt, ResultsOpt, Table, app, console
from chexbench.core.atomic import atomic_path, atomic_write_text, pid_alive
from chexbench.core.errors import ConfigError
from chexbench.core.lock import FileLock

JOBS_FILE = "jobs.json"
#: a SLURM job id (``123``, array task ``123_4``) or a local executor's pid
_JOB_ID = re.compile(r"[0-9]+(_[0-9]+)?")
#: seconds between looks at a job `submit --wait` waits for
WAIT_POLL_S = 1.0


def shard_command(grid: str, results: Path, shard: str, gpus: int, device: str, only: list[str]) -> list[str]:
    """The ``chexbench run`` command line job ``shard`` executes."""
    cmd = [sys.executable, "-m", "chexbench", "run", "--grid", grid, "--results", str(results), "--shard", shard, "--device", device]
    if gpus > 1:
        cmd += ["--gpus", str(gpus)]
    for o in only:
        cmd += ["--only", o]
    return cmd


def run_shard_job(cmd: list[str]) -> int:
    """Body of one submitted job: run the shard; a failing shard fails the job (with its output tail).

    The job writes its own state (``RUNNING`` at start, ``FINISHED`` / ``FAILED`` at the end)
    as JSON into its submitit folder, so ``chexbench status`` follows it without unpickling
    anything (submitit's result pickles could carry code planted by whoever can write there).
    """
    # lazy: submitit is optional (the slurm extra); keeps chexbench --help fast
    import submitit

    env = submitit.JobEnvironment()
    state_file = Path(env.paths.folder) / state_file_name(str(env.job_id))
    _write_state(state_file, "RUNNING")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    _write_state(state_file, "FINISHED" if proc.returncode == 0 else "FAILED", returncode=proc.returncode)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[2:])} exited with {proc.returncode}: {(proc.stdout + proc.stderr)[-2000:]}")
    return 0


def state_file_name(job_id: str) -> str:
    """The JSON state file a job writes into its submitit folder."""
    return f"{job_id}_chexbench_state.json"


def _write_state(path: Path, state: str, **extra: Any) -> None:
    info = {"state": state, "host": socket.gethostname(), "pid": os.getpid(), **extra,
            "updated_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(info))


def read_jobs(results: Path) -> list[dict[str, Any]]:
    """Every submission recorded in ``results/jobs.json`` (oldest first).

    The file is data from a folder that may not be ours: every job folder must lie inside
    the results folder and every job id must look like one, else this refuses (ConfigError).
    """
    path = Path(results) / JOBS_FILE
    if not path.exists():
        return []
    try:
        subs = list(json.loads(path.read_text())["submissions"])
        for sub in subs:
            for job in sub["jobs"]:
                _check_job_entry(path, Path(results), job)
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ConfigError(f"{path}: not a chexbench jobs file ({e})") from None
    return subs


def _check_job_entry(path: Path, results: Path, job: dict[str, Any]) -> None:
    job_id, folder = str(job["job_id"]), Path(str(job["folder"]))
    if not _JOB_ID.fullmatch(job_id):
        raise ConfigError(f"{path}: job id {job_id!r} is not a scheduler job id; refusing to read it")
    inside = folder if folder.is_absolute() else results / folder
    if not inside.resolve().is_relative_to(results.resolve()):
        raise ConfigError(f"{path}: job folder {folder} lies outside the results folder {results}; refusing to read it")


def record_submission(results: Path, submission: dict[str, Any]) -> Path:
    results.mkdir(parents=True, exist_ok=True)
    with FileLock(results / f".{JOBS_FILE}.lck"):
        subs = read_jobs(results) + [submission]
        path = results / JOBS_FILE
        atomic_write_text(json.dumps({"submissions": subs}, indent=2), path)
    return path


def job_state(executor: str, folder: str, job_id: str) -> str:
    """The job's state from the JSON it writes (never from submitit's pickles); else SLURM's, or the local pid's.

    FINISHED / FAILED once the job ended; RUNNING while it runs (LOST if its process is gone);
    before the job started: SLURM's state from ``sacct``, or for a local job whether its pid lives.
    """
    if not _JOB_ID.fullmatch(job_id):
        raise ConfigError(f"job id {job_id!r} is not a scheduler job id")
    state = _read_state(Path(folder) / state_file_name(job_id))
    if state is not None:
        name = str(state.get("state", "UNKNOWN"))
        if name == "RUNNING" and state.get("host") == socket.gethostname() and not pid_alive(state.get("pid")):
            return "LOST (ended without a result)"
        return name if name in ("RUNNING", "FINISHED", "FAILED") else "UNKNOWN"
    if executor == "slurm":
        return _sacct_state(job_id)
    pid = int(job_id.split("_")[0])
    return "RUNNING" if pid_alive(pid) else "LOST (no state)"


def _read_state(path: Path) -> dict[str, Any] | None:
    try:
        state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return state if isinstance(state, dict) else None


def _sacct_state(job_id: str) -> str:
    """SLURM's state of ``job_id`` (``sacct``), or UNKNOWN when it cannot be asked."""
    try:
        out = subprocess.run(["sacct", "-j", job_id, "-o", "JobID,State", "--parsable2", "--noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        return f"UNKNOWN ({type(e).__name__})"
    for line in out.stdout.splitlines():
        jid, _, state = line.partition("|")
        if jid == job_id and state:
            return state.split()[0]
    return "UNKNOWN"


@app.command()
def submit(
    grid: GridOpt = "smoke",
    results: ResultsOpt = Path("chexbench-results"),
    only: OnlyOpt = None,
    jobs: Annotated[int, typer.Option("--jobs", "-n", help="number of shard jobs (the grid is split into this many shards)")] = 1,
    partition: Annotated[str | None, typer.Option(help="SLURM partition")] = None,
    gpus_per_job: Annotated[int, typer.Option(help="GPUs per job; > 1 trains each cell data-parallel (torchrun)")] = 1,
    cpus_per_job: Annotated[int, typer.Option(help="CPU cores per job")] = 8,
    mem_gb: Annotated[int, typer.Option(help="memory per job (GB)")] = 64,
    timeout_min: Annotated[int, typer.Option(help="wall-clock limit per job (minutes)")] = 24 * 60,
    executor: Annotated[str, typer.Option(help="slurm | local (local processes, for testing the setup)")] = "slurm",
    device: Annotated[str, typer.Option(help="device inside each job: auto | cpu | cuda")] = "auto",
    wait: Annotated[bool, typer.Option(help="block until every job ends; exit 1 if one failed")] = False,
) -> None:
    """Submit an array of ``--jobs`` shard jobs; ``chexbench status`` follows them."""
    # lazy: submitit is optional (the slurm extra); keeps chexbench --help fast
    import submitit

    from chexbench.bench.runner import preflight
    from chexbench.spec.grid import parse_only
    from chexbench.spec.parse import load_grid

    _check_submit_options(executor, jobs, gpus_per_job)
    g = load_grid(grid)
    planned = g.cells(parse_only(only))
    preflight(planned)  # a missing data root fails here, not in n queued jobs
    results = results.resolve()
    grid_arg = str(Path(grid).resolve()) if Path(grid).exists() else grid
    ex = submitit.AutoExecutor(folder=results / "jobs" / "%j", cluster=executor)
    ex.update_parameters(**_job_parameters(
        executor, f"chexbench-{g.name}", timeout_min, jobs, partition, gpus_per_job, cpus_per_job, mem_gb, device
    ))
    shards = [f"{i}/{jobs}" for i in range(jobs)]
    commands = [shard_command(grid_arg, results, s, gpus_per_job, device, list(only or [])) for s in shards]
    submitted = ex.map_array(run_shard_job, commands)
    record = {
        "grid": grid_arg,
        "grid_name": g.name,
        "only": list(only or []),
        "executor": executor,
        "submitted_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "jobs": [
            {"shard": s, "job_id": str(j.job_id), "folder": str(j.paths.folder)} for s, j in zip(shards, submitted, strict=True)
        ],
    }
    path = record_submission(results, record)
    table = Table(title=f"{len(submitted)} {executor} job(s) for grid {g.name}", title_justify="left")
    for col in ("shard", "job"):
        table.add_column(col)
    for s, j in zip(shards, submitted, strict=True):
        table.add_row(s, str(j.job_id))
    console.print(table)
    console.print(f"jobs recorded in {path}; follow them with: chexbench status --results {results}")
    if wait and _wait_for_jobs(executor, shards, submitted):
        sys.exit(1)


def _check_submit_options(executor: str, jobs: int, gpus_per_job: int) -> None:
    if executor not in ("slurm", "local"):
        raise ConfigError(f"--executor must be slurm or local, got '{executor}'")
    if jobs < 1 or gpus_per_job < 1:
        raise ConfigError(f"--jobs and --gpus-per-job must be ≥ 1 (got {jobs}, {gpus_per_job})")
    if executor == "slurm" and shutil.which("sbatch") is None:
        raise ConfigError("--executor slurm: no SLURM here (sbatch not found); use --executor local to try the setup")


def _job_parameters(
    executor: str,
    name: str,
    timeout_min: int,
    jobs: int,
    partition: str | None,
    gpus_per_job: int,
    cpus_per_job: int,
    mem_gb: int,
    device: str,
) -> dict[str, Any]:
    """submitit parameters shared by every shard job of one submission."""
    params: dict[str, Any] = {"timeout_min": timeout_min, "name": name, "tasks_per_node": 1}
    if executor == "slurm":
        params.update(gpus_per_node=gpus_per_job, cpus_per_task=cpus_per_job, mem_gb=mem_gb, slurm_array_parallelism=jobs)
        if partition:
            params["slurm_partition"] = partition
    elif device != "cpu" and _cuda_count() > 0:
        params["gpus_per_node"] = gpus_per_job  # the local executor hands each job its own GPUs
    return params


def _wait_for_jobs(executor: str, shards: list[str], submitted: list[Any]) -> int:
    """Block until every job ends; print each failure; return how many failed."""
    failed = 0
    for s, j in zip(shards, submitted, strict=True):
        while not j.done():  # submitit's look at the scheduler / result file: nothing unpickled
            time.sleep(WAIT_POLL_S)
        state = job_state(executor, str(j.paths.folder), str(j.job_id))
        if state != "FINISHED":  # the job's own JSON state, as `chexbench status` reads it
            failed += 1
            console.print(f"  [red]shard {s} failed[/] ({state}); its output: {j.paths.stderr}")
    console.print(f"{len(submitted) - failed}/{len(submitted)} jobs finished")
    return failed


def _cuda_count() -> int:
    # lazy: keeps chexbench --help fast
    import torch

    return torch.cuda.device_count()


def print_jobs(results: Path) -> None:
    """The latest submission's jobs: state and stored cells of each shard (used by ``chexbench status``)."""
    # lazy: keeps chexbench --help fast
    from chexbench.bench.shard import Shard, shard_cells
    from chexbench.bench.store import ResultStore
    from chexbench.spec.grid import parse_only
    from chexbench.spec.parse import load_grid
    from chexbench.perf.throughput import split_costs as shard_costs

    subs = read_jobs(results)
    if not subs:
        return
    sub = subs[-1]
    store = ResultStore(results, read_only=True)  # status only looks: nothing is moved
    try:
        planned = load_grid(sub["grid"]).cells(parse_only(sub.get("only")))
    except ConfigError:
        planned = None
    table = Table(title=f"{sub['executor']} jobs submitted {sub['submitted_at']} (grid {sub['grid_name']})", title_justify="left")
    for col in ("shard", "job", "state", "cells stored"):
        table.add_column(col)
    costs = shard_costs(planned) if planned is not None else None  # the split `run --shard` makes
    for job in sub["jobs"]:
        cells = ""
        if planned is not None:
            mine = [p.cell.cell_id for p in shard_cells(planned, Shard.parse(job["shard"]), costs) if p.status == "run"]
            cells = f"{sum(store.has(c) for c in mine)}/{len(mine)}"
        table.add_row(job["shard"], job["job_id"], job_state(sub["executor"], job["folder"], job["job_id"]), cells)
    console.print(table)
