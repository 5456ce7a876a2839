"""``chexbench submit --executor local``: submitit runs a 2-job array of shard jobs of a tiny
grid; the jobs file lets ``chexbench status`` follow them; bad options are one-line errors."""

from __future__ import annotations

import json
import pickle
import shutil
import socket
import subprocess
import sys

import pytest
from e2e_grid import tiny_grid
from typer.testing import CliRunner

from chexbench.bench.slurm import (
    JobState,
    JobStatus,
    job_state,
    parse_sacct,
    read_jobs,
    shard_command,
    state_file_name,
)
from chexbench.bench.store import ResultStore
from chexbench.cli import app
from chexbench.spec.parse import load_grid


@pytest.fixture()
def cache(cache, monkeypatch):
    """The shared end-to-end cache (tests/bench/conftest.py), with one OpenMP thread per job."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return cache


@pytest.mark.slow
def test_local_executor_runs_a_two_job_array_and_status_follows_it(tmp_path, cache):
    grid_file = tiny_grid(tmp_path, "tiny-submit", seeds=(0, 1))
    results = tmp_path / "results"
    runner = CliRunner()
    out = runner.invoke(
        app,
        [
            "submit",
            "--grid",
            str(grid_file),
            "--results",
            str(results),
            "--jobs",
            "2",
            "--executor",
            "local",
            "--device",
            "cpu",
            "--wait",
        ],
    )
    assert out.exit_code == 0, out.output
    assert "2/2 jobs finished" in out.output

    subs = read_jobs(results)
    assert len(subs) == 1 and [j.shard for j in subs[0].jobs] == ["0/2", "1/2"]
    assert len({j.job_id for j in subs[0].jobs}) == 2
    for job in subs[0].jobs:
        assert job_state("local", job.folder, job.job_id).state is JobState.FINISHED

    runnable = sorted(p.cell.cell_id for p in load_grid(str(grid_file)).cells() if p.status == "run")
    recs = ResultStore(results).records()
    assert sorted(recs["cell_id"]) == runnable and set(recs["status"]) == {
        "ok"
    }  # each cell once, by its shard's job

    status = runner.invoke(app, ["status", "--results", str(results)], env={"COLUMNS": "200"})
    assert status.exit_code == 0, status.output
    assert status.output.count("FINISHED") == 2 and status.output.count("1/1") == 2


def test_shard_command_and_option_errors(tmp_path):
    cmd = shard_command("smoke", tmp_path, "1/4", 2, "cuda", ["seed=0"])
    assert cmd[1:4] == ["-m", "chexbench", "run"]
    assert cmd[cmd.index("--shard") + 1] == "1/4" and cmd[cmd.index("--gpus") + 1] == "2"
    assert cmd[-2:] == ["--only", "seed=0"]
    assert "--gpus" not in shard_command("smoke", tmp_path, "0/1", 1, "cpu", [])
    runner = CliRunner()
    bad = runner.invoke(app, ["submit", "--executor", "pbs", "--results", str(tmp_path)])
    assert bad.exit_code == 2 and "--executor must be slurm or local" in bad.output
    if shutil.which("sbatch") is None:
        bad = runner.invoke(app, ["submit", "--executor", "slurm", "--results", str(tmp_path)])
        assert bad.exit_code == 2 and "no SLURM here" in bad.output
    bad = runner.invoke(app, ["submit", "--jobs", "0", "--results", str(tmp_path)])
    assert bad.exit_code == 2 and "--jobs" in bad.output
    (tmp_path / "jobs.json").write_text(json.dumps({"nope": 1}))
    bad = runner.invoke(app, ["status", "--results", str(tmp_path)])
    assert bad.exit_code == 2 and "not a chexbench jobs file" in bad.output


def test_job_state_comes_from_the_jobs_own_json_never_from_a_pickle(tmp_path):
    assert str(job_state("local", str(tmp_path), "999999999")) == "LOST (no state)"
    (tmp_path / "7_0_result.pkl").write_bytes(pickle.dumps(("success", 0)))  # submitit's: ignored
    assert not job_state("local", str(tmp_path), "7").finished
    (tmp_path / state_file_name("8")).write_text(json.dumps({"state": "FAILED", "host": "n1", "pid": 1}))
    assert job_state("slurm", str(tmp_path), "8") == JobStatus(JobState.FAILED)
    (tmp_path / state_file_name("9_1")).write_text(json.dumps({"state": "FINISHED", "host": "n1", "pid": 1}))
    assert job_state("slurm", str(tmp_path), "9_1") == JobStatus(JobState.FINISHED)
    # a job that said RUNNING on this host and whose process is gone was lost
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    (tmp_path / state_file_name("10")).write_text(
        json.dumps({"state": "RUNNING", "host": socket.gethostname(), "pid": int(gone.stdout)})
    )
    assert job_state("local", str(tmp_path), "10") == JobStatus(JobState.LOST, "ended without a result")


def test_sacct_lines_become_a_state_and_slurm_s_word_is_what_status_shows():
    """``sacct --parsable2`` lists the job and its steps; only the job's own line counts, by its first
    word."""
    text = "123_4|CANCELLED by 1000\n123_4.batch|CANCELLED\n123_5|PENDING\n"
    assert parse_sacct(text, "123_4") == "CANCELLED" and parse_sacct(text, "123_5") == "PENDING"
    assert parse_sacct(text, "123_6") == "UNKNOWN" and parse_sacct("", "1") == "UNKNOWN"
    assert JobStatus.from_slurm("PENDING").state is JobState.QUEUED
    assert JobStatus.from_slurm("COMPLETING").state is JobState.RUNNING
    for ended in (
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "COMPLETED",
    ):  # over, and no state file written
        status = JobStatus.from_slurm(ended)
        assert status.state is JobState.LOST and not status.finished and str(status) == ended
    assert JobStatus.from_slurm("UNKNOWN (OSError)").state is JobState.UNKNOWN


def test_a_job_writes_a_state_file_without_a_cluster(tmp_path, monkeypatch):
    """run_shard_job's state files (RUNNING, then FAILED with the exit code) are what job_state reads."""
    import submitit

    from chexbench.bench import slurm

    class _Env:
        job_id = "42"
        paths = type("P", (), {"folder": tmp_path})()

    monkeypatch.setattr(submitit, "JobEnvironment", _Env)
    with pytest.raises(RuntimeError, match="exited with 3"):
        slurm.run_shard_job([sys.executable, "-c", "import sys; sys.exit(3)"])
    state = json.loads((tmp_path / state_file_name("42")).read_text())
    assert state["state"] == "FAILED" and state["returncode"] == 3
    assert job_state("slurm", str(tmp_path), "42") == JobStatus(JobState.FAILED)
    slurm.run_shard_job([sys.executable, "-c", "pass"])
    assert job_state("local", str(tmp_path), "42").finished


class _Planted:
    """Unpickling this creates ``marker``: proof that code from the results folder ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _plant(results, folder, job_id, marker):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{job_id}_0_result.pkl").write_bytes(pickle.dumps(("success", _Planted(marker))))
    sub = {
        "grid": "smoke",
        "grid_name": "smoke",
        "only": [],
        "executor": "local",
        "submitted_at": "2026-01-01T00:00:00+00:00",
        "jobs": [{"shard": "0/1", "job_id": job_id, "folder": str(folder)}],
    }
    (results / "jobs.json").write_text(json.dumps({"submissions": [sub]}))


def test_status_never_executes_a_pickle_planted_in_the_results_folder(tmp_path):
    results, marker = tmp_path / "results", tmp_path / "pwned"
    _plant(results, results / "jobs" / "999999999", "999999999", marker)
    out = CliRunner().invoke(app, ["status", "--results", str(results)], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert not marker.exists()
    assert "LOST (no state)" in out.output


@pytest.mark.parametrize("where", ["outside", "dotdot", "symlink"])
def test_status_refuses_job_folders_outside_the_results_folder(tmp_path, where):
    results, marker = tmp_path / "results", tmp_path / "pwned"
    results.mkdir()
    elsewhere = tmp_path / "elsewhere" / "999999999"
    folder = {
        "outside": elsewhere,
        "dotdot": results / ".." / "elsewhere" / "999999999",
        "symlink": results / "jobs" / "link",
    }[where]
    _plant(results, elsewhere, "999999999", marker)
    if where == "symlink":
        folder.parent.mkdir()
        folder.symlink_to(elsewhere)
    sub = json.loads((results / "jobs.json").read_text())
    sub["submissions"][0]["jobs"][0]["folder"] = str(folder)
    (results / "jobs.json").write_text(json.dumps(sub))
    out = CliRunner().invoke(app, ["status", "--results", str(results)], env={"COLUMNS": "200"})
    assert out.exit_code == 2, out.output
    assert "outside the results folder" in out.output and "Traceback" not in out.output
    assert not marker.exists()


def test_status_refuses_a_job_id_that_is_a_path(tmp_path):
    results = tmp_path / "results"
    _plant(results, results / "jobs" / "1", "1", tmp_path / "pwned")
    sub = json.loads((results / "jobs.json").read_text())
    sub["submissions"][0]["jobs"][0]["job_id"] = "../../x"
    (results / "jobs.json").write_text(json.dumps(sub))
    out = CliRunner().invoke(app, ["status", "--results", str(results)])
    assert out.exit_code == 2 and "not a scheduler job id" in out.output
