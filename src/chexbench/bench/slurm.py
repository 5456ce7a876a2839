"""Shard jobs through submitit (SLURM, or local processes): the command each job runs, the state
file it writes, the submissions recorded in ``<results>/jobs.json``, and each job's state.

Job ``i`` of ``n`` runs ``chexbench run --grid … --shard i/n`` (with ``--gpus`` for a multi-GPU
job, which relaunches itself under torchrun). A job writes its own state (``RUNNING`` at start,
``FINISHED`` / ``FAILED`` at the end) as JSON into its submitit folder, so its state is read
without unpickling anything (submitit's result pickles could carry code planted by whoever can
write there). Before a job has written its state, SLURM's word comes from ``sacct``, a local
job's from whether its pid lives. ``jobs.json`` is data from a folder that may not be ours:
every job folder must lie inside the results folder and every job id must look like one.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from chexbench.bench.shard import Shard, ShardCosts, shard_cells
from chexbench.bench.store import ResultsView
from chexbench.core.atomic import atomic_path, atomic_write_text, pid_alive
from chexbench.core.errors import ConfigError
from chexbench.core.lock import FileLock
from chexbench.spec.grid import PlannedCell, parse_only
from chexbench.spec.parse import load_grid

JOBS_FILE = "jobs.json"
#: a SLURM job id (``123``, array task ``123_4``) or a local executor's pid
_JOB_ID = re.compile(r"[0-9]+(_[0-9]+)?")
#: seconds between looks at a job :func:`wait_for` waits for
WAIT_POLL_S = 1.0


class Executor(StrEnum):
    """Where submitit runs the jobs."""

    SLURM = "slurm"
    LOCAL = "local"  # local processes, to try the setup without a cluster


class JobState(StrEnum):
    """What chexbench concludes about a job."""

    QUEUED = "QUEUED"  # SLURM has not started it (PENDING, CONFIGURING, REQUEUED, …)
    RUNNING = "RUNNING"
    FINISHED = "FINISHED"  # its shard's command exited 0
    FAILED = "FAILED"  # its shard's command exited non-zero
    LOST = "LOST"  # it ended (or its process is gone) without writing a result
    UNKNOWN = "UNKNOWN"


#: SLURM states (``sacct``) of a job that has not started, and of one that runs
_SLURM_QUEUED = frozenset(
    {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SUSPENDED"}
)
_SLURM_RUNNING = frozenset({"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING"})


@dataclass(frozen=True)
class JobStatus:
    """A job's state, why (for LOST / UNKNOWN), and SLURM's own word when the state came from ``sacct``."""

    state: JobState
    reason: str = ""
    slurm: str | None = None

    def __str__(self) -> str:
        if self.slurm is not None:
            return self.slurm
        return f"{self.state} ({self.reason})" if self.reason else str(self.state)

    @property
    def finished(self) -> bool:
        """The job ran its shard to the end (its shard's command exited 0)."""
        return self.state is JobState.FINISHED

    @classmethod
    def from_slurm(cls, word: str) -> JobStatus:
        """SLURM's state of a job that has written no state file (``word`` as ``sacct`` prints it)."""
        if word in _SLURM_QUEUED:
            state = JobState.QUEUED
        elif word in _SLURM_RUNNING:
            state = JobState.RUNNING
        elif word.startswith("UNKNOWN"):
            state = JobState.UNKNOWN
        # COMPLETED, FAILED, CANCELLED, TIMEOUT, NODE_FAIL, OUT_OF_MEMORY, …: over, and no state
        # written
        else:
            state = JobState.LOST
        return cls(state, slurm=word)


@dataclass(frozen=True)
class JobEntry:
    """One shard job of a submission."""

    shard: str
    job_id: str
    folder: str


@dataclass(frozen=True)
class Submission:
    """One ``chexbench submit``: what it ran and its jobs, as recorded in ``jobs.json``."""

    grid: str
    grid_name: str
    only: tuple[str, ...]
    executor: Executor
    submitted_at: str
    jobs: tuple[JobEntry, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "grid": self.grid,
            "grid_name": self.grid_name,
            "only": list(self.only),
            "executor": str(self.executor),
            "submitted_at": self.submitted_at,
            "jobs": [asdict(j) for j in self.jobs],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Submission:
        jobs = tuple(JobEntry(str(j["shard"]), str(j["job_id"]), str(j["folder"])) for j in data["jobs"])
        return cls(
            str(data["grid"]),
            str(data["grid_name"]),
            tuple(str(o) for o in data.get("only") or ()),
            Executor(data["executor"]),
            str(data["submitted_at"]),
            jobs,
        )

    def cells(self) -> list[PlannedCell] | None:
        """The cells of the submitted grid (None when the grid can no longer be read)."""
        try:
            return load_grid(self.grid).cells(parse_only(list(self.only)))
        except ConfigError:
            return None


def shard_command(
    grid: str, results: Path, shard: str, gpus: int, device: str, only: Sequence[str]
) -> list[str]:
    """The ``chexbench run`` command line job ``shard`` executes."""
    cmd = [
        sys.executable,
        "-m",
        "chexbench",
        "run",
        "--grid",
        grid,
        "--results",
        str(results),
        "--shard",
        shard,
        "--device",
        device,
    ]
    if gpus > 1:
        cmd += ["--gpus", str(gpus)]
    for o in only:
        cmd += ["--only", o]
    return cmd


def run_shard_job(cmd: list[str]) -> int:
    """Body of one submitted job: run the shard; a failing shard fails the job (with its output tail)."""
    # lazy: submitit is optional (the slurm extra)
    import submitit

    env = submitit.JobEnvironment()
    state_file = Path(env.paths.folder) / state_file_name(str(env.job_id))
    _write_state(state_file, JobState.RUNNING)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    _write_state(
        state_file, JobState.FINISHED if proc.returncode == 0 else JobState.FAILED, returncode=proc.returncode
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd[2:])} exited with {proc.returncode}: {(proc.stdout + proc.stderr)[-2000:]}"
        )
    return 0


def state_file_name(job_id: str) -> str:
    """The JSON state file a job writes into its submitit folder."""
    return f"{job_id}_chexbench_state.json"


def _write_state(path: Path, state: JobState, **extra: Any) -> None:
    info = {
        "state": str(state),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        **extra,
        "updated_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(info))


# -- jobs.json ------------------------------------------------------------------------------
def read_jobs(results: Path) -> list[Submission]:
    """Every submission recorded in ``results/jobs.json`` (oldest first); refuses (ConfigError) a
    file that is not one, a job id that is not a scheduler's, a job folder outside ``results``."""
    path = Path(results) / JOBS_FILE
    if not path.exists():
        return []
    try:
        subs = [Submission.from_json(s) for s in json.loads(path.read_text())["submissions"]]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"{path}: not a chexbench jobs file ({e})") from None
    for sub in subs:
        for job in sub.jobs:
            _check_job_entry(path, Path(results), job)
    return subs


def _check_job_entry(path: Path, results: Path, job: JobEntry) -> None:
    folder = Path(job.folder)
    if not _JOB_ID.fullmatch(job.job_id):
        raise ConfigError(f"{path}: job id {job.job_id!r} is not a scheduler job id; refusing to read it")
    inside = folder if folder.is_absolute() else results / folder
    if not inside.resolve().is_relative_to(results.resolve()):
        raise ConfigError(
            f"{path}: job folder {folder} lies outside the results folder {results}; refusing to read it"
        )


def record_submission(results: Path, submission: Submission) -> Path:
    """Append ``submission`` to ``results/jobs.json`` (under a lock, atomically)."""
    results.mkdir(parents=True, exist_ok=True)
    with FileLock(results / f".{JOBS_FILE}.lck"):
        subs = read_jobs(results) + [submission]
        path = results / JOBS_FILE
        atomic_write_text(json.dumps({"submissions": [s.to_json() for s in subs]}, indent=2), path)
    return path


# -- a job's state --------------------------------------------------------------------------
def job_state(executor: Executor | str, folder: str, job_id: str) -> JobStatus:
    """The job's state from the JSON it writes (never from submitit's pickles); else SLURM's, or the local
    pid's.

    FINISHED / FAILED once the job ended; RUNNING while it runs (LOST if its process is gone);
    before the job started: SLURM's state from ``sacct``, or for a local job whether its pid lives.
    """
    if not _JOB_ID.fullmatch(job_id):
        raise ConfigError(f"job id {job_id!r} is not a scheduler job id")
    state = _read_state(Path(folder) / state_file_name(job_id))
    if state is not None:
        name = str(state.get("state", "UNKNOWN"))
        if (
            name == JobState.RUNNING
            and state.get("host") == socket.gethostname()
            and not pid_alive(state.get("pid"))
        ):
            return JobStatus(JobState.LOST, "ended without a result")
        return (
            JobStatus(JobState(name))
            if name in (JobState.RUNNING, JobState.FINISHED, JobState.FAILED)
            else JobStatus(JobState.UNKNOWN)
        )
    if Executor(executor) is Executor.SLURM:
        return JobStatus.from_slurm(sacct_state(job_id))
    pid = int(job_id.split("_")[0])
    return JobStatus(JobState.RUNNING) if pid_alive(pid) else JobStatus(JobState.LOST, "no state")


def _read_state(path: Path) -> dict[str, Any] | None:
    try:
        state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return state if isinstance(state, dict) else None


def sacct_state(job_id: str) -> str:
    """SLURM's state of ``job_id`` (``sacct``), or UNKNOWN when it cannot be asked."""
    try:
        out = subprocess.run(
            ["sacct", "-j", job_id, "-o", "JobID,State", "--parsable2", "--noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError) as e:
        return f"UNKNOWN ({type(e).__name__})"
    return parse_sacct(out.stdout, job_id)


def parse_sacct(text: str, job_id: str) -> str:
    """The state ``sacct -o JobID,State --parsable2 --noheader`` prints for ``job_id`` (its first word:
    "CANCELLED by 123" is CANCELLED); UNKNOWN when the job is not listed."""
    for line in text.splitlines():
        jid, _, state = line.partition("|")
        if jid == job_id and state:
            return state.split()[0]
    return "UNKNOWN"


# -- submitting and following ---------------------------------------------------------------
def job_parameters(
    executor: Executor,
    name: str,
    timeout_min: int,
    jobs: int,
    partition: str | None,
    gpus_per_job: int,
    cpus_per_job: int,
    mem_gb: int,
    local_gpus: int,
) -> dict[str, Any]:
    """submitit parameters shared by every shard job of one submission (``local_gpus``: GPUs a local
    job may use; 0 keeps local jobs on the CPU)."""
    params: dict[str, Any] = {"timeout_min": timeout_min, "name": name, "tasks_per_node": 1}
    if executor is Executor.SLURM:
        params.update(
            gpus_per_node=gpus_per_job,
            cpus_per_task=cpus_per_job,
            mem_gb=mem_gb,
            slurm_array_parallelism=jobs,
        )
        if partition:
            params["slurm_partition"] = partition
    elif local_gpus > 0:
        params["gpus_per_node"] = gpus_per_job  # the local executor hands each job its own GPUs
    return params


@dataclass(frozen=True)
class SubmittedJob:
    """A job submitit accepted: its shard and submitit's handle (for :func:`wait_for`)."""

    shard: str
    handle: Any

    @property
    def entry(self) -> JobEntry:
        return JobEntry(self.shard, str(self.handle.job_id), str(self.handle.paths.folder))


def submit_shards(
    executor: Executor, folder: Path, params: dict[str, Any], commands: dict[str, list[str]]
) -> list[SubmittedJob]:
    """Submit one array job per shard (``commands``: shard → its ``chexbench run`` command)."""
    # lazy: submitit is optional (the slurm extra)
    import submitit

    ex = submitit.AutoExecutor(folder=folder, cluster=str(executor))
    ex.update_parameters(**params)
    handles = ex.map_array(run_shard_job, list(commands.values()))
    return [SubmittedJob(s, h) for s, h in zip(commands, handles, strict=True)]


def new_submission(
    grid: str, grid_name: str, only: Sequence[str], executor: Executor, jobs: Sequence[SubmittedJob]
) -> Submission:
    return Submission(
        grid,
        grid_name,
        tuple(only),
        executor,
        _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        tuple(j.entry for j in jobs),
    )


def wait_for(executor: Executor, jobs: Sequence[SubmittedJob]) -> list[tuple[SubmittedJob, JobStatus]]:
    """Block until every job ends; each job with its state (its own JSON state, as ``status`` reads it)."""
    ended = []
    for job in jobs:
        while not job.handle.done():  # submitit's look at the scheduler / result file: nothing unpickled
            time.sleep(WAIT_POLL_S)
        ended.append((job, job_state(executor, str(job.handle.paths.folder), str(job.handle.job_id))))
    return ended


@dataclass(frozen=True)
class JobRow:
    """A job of a submission as ``chexbench status`` shows it: its state and its shard's stored cells."""

    shard: str
    job_id: str
    status: JobStatus
    stored: int | None  # cells of the shard with a record (None: the grid can no longer be read)
    cells: int | None


def job_rows(
    results: Path, sub: Submission, planned: list[PlannedCell] | None, costs: ShardCosts | None
) -> list[JobRow]:
    """Each job of ``sub``: its state and how many of its shard's runnable cells are stored (``costs``:
    the split ``run --shard`` makes of ``planned``). Reads only: nothing in ``results`` is moved."""
    store = ResultsView(results, cache=False)
    rows = []
    for job in sub.jobs:
        stored = total = None
        if planned is not None:
            mine = [
                p.cell.cell_id
                for p in shard_cells(planned, Shard.parse(job.shard), costs)
                if p.status == "run"
            ]
            stored, total = sum(store.has(c) for c in mine), len(mine)
        rows.append(
            JobRow(job.shard, job.job_id, job_state(sub.executor, job.folder, job.job_id), stored, total)
        )
    return rows
