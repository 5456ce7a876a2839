"""Shards of a tiny phantom grid, one after another, concurrently and killed mid-run:
every runnable cell is stored exactly once and a killed shard resumes."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from e2e_grid import run_command, tiny_grid, worker_env

from chexbench.bench.runner import run_grid
from chexbench.bench.shard import Shard, shard_cells
from chexbench.bench.store import ResultStore
from chexbench.core.context import RunContext
from chexbench.spec.parse import load_grid

pytestmark = pytest.mark.slow


@pytest.fixture()
def grid_file(tmp_path) -> Path:
    return tiny_grid(tmp_path, "tiny-shards", strategies=("scratch", "imagenet"))


def _assert_exactly_once(results: Path, grid_file: Path) -> None:
    planned = load_grid(str(grid_file)).cells()
    runnable = sorted(p.cell.cell_id for p in planned if p.status == "run")
    store = ResultStore(results)
    recs = store.records()
    assert sorted(recs["cell_id"]) == runnable  # no duplicates, none missing
    assert set(recs["status"]) == {"ok"}
    assert sorted(store.cell_ids()) == runnable
    assert sorted(p.stem for p in (results / "predictions").glob("*.parquet")) == runnable
    assert not list(results.rglob("*.tmp"))  # nothing half-written
    skipped = pd.read_parquet(results / "skipped.parquet")
    assert sorted(skipped["cell_id"]) == sorted(p.cell.cell_id for p in planned if p.status != "run")


def test_sequential_shards_with_a_killed_one_cover_the_grid_once(tmp_path, cache, grid_file):
    torch.set_num_threads(1)
    results = tmp_path / "results"
    grid = load_grid(str(grid_file))
    ctx = RunContext(torch.device("cpu"), results, cache)
    for i in (0, 1):
        summary = run_grid(grid, results, ctx, shard=Shard(i, 3))
        assert summary.count("ok") == len(
            [p for p in shard_cells(grid.cells(), Shard(i, 3)) if p.status == "run"]
        )
    mine = [p.cell.cell_id for p in shard_cells(grid.cells(), Shard(2, 3))]
    assert len(mine) == 2
    # shard 2/3 in its own process, killed as soon as its first cell is stored
    proc = subprocess.Popen(
        run_command(grid_file, results, "--shard", "2/3"),
        env=worker_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    store = ResultStore(results)
    deadline = time.monotonic() + 300
    while (
        not any(store.record_path(c).exists() for c in mine)
        and proc.poll() is None
        and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = [c for c in mine if store.has(c)]
    assert len(done_before) == 1, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
    # rerunning the shard trains only what the kill lost
    resumed = run_grid(grid, results, ctx, shard=Shard(2, 3))
    assert resumed.count("done-before") == 1 and resumed.count("ok") == 1
    assert [o.cell.cell_id for o in resumed.outcomes if o.status == "ok"] == [
        c for c in mine if c not in done_before
    ]
    _assert_exactly_once(results, grid_file)


def test_concurrent_shards_cover_the_grid_once(tmp_path, cache, grid_file):
    results = tmp_path / "results"
    procs = [
        subprocess.Popen(
            run_command(grid_file, results, "--shard", f"{i}/3"),
            env=worker_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for i in range(3)
    ]
    outputs = [p.communicate(timeout=600)[0].decode() for p in procs]
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out[-3000:]
    assert sum(out.count(" ok ") for out in outputs) == 4  # each cell trained by exactly one shard
    _assert_exactly_once(results, grid_file)
