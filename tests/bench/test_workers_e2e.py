"""Workers sharing one results folder split the cells; damaged files and a killed writer's
leftovers are repaired by the next run."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from e2e_grid import run_command, tiny_grid, worker_env

from chexbench.bench.store import ResultStore
from chexbench.spec.parse import load_grid

pytestmark = pytest.mark.slow


@pytest.fixture()
def grid_file(tmp_path) -> Path:
    return tiny_grid(tmp_path, "tiny-workers")


def _trained(output: str) -> list[str]:
    """Cell ids this worker trained and stored (its "ok <cell>" lines)."""
    return [line.split()[1] for line in output.splitlines() if line.strip().startswith("ok ")]


def test_two_workers_on_one_folder_train_each_cell_once(tmp_path, cache, grid_file):
    results = tmp_path / "results"
    procs = [
        subprocess.Popen(
            run_command(grid_file, results),
            env=worker_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=900)[0].decode() for p in procs]
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out[-3000:]
    runnable = sorted(p.cell.cell_id for p in load_grid(str(grid_file)).cells() if p.status == "run")
    trained = sorted(_trained(outputs[0]) + _trained(outputs[1]))
    assert trained == runnable, outputs  # each cell trained by exactly one worker
    store = ResultStore(results)
    assert all(store.check(c).state == "ok" for c in runnable)  # record and predictions of one write
    assert not list((results / "claims").glob("*.lock"))  # every claim released


def test_a_rerun_recomputes_damaged_cells_takes_over_dead_claims_and_cleans_temporaries(
    tmp_path, cache, grid_file
):
    results = tmp_path / "results"
    first = subprocess.run(
        run_command(grid_file, results), env=worker_env(), capture_output=True, text=True, timeout=900
    )
    assert first.returncode == 0, first.stdout[-3000:]
    store = ResultStore(results)
    ids = store.cell_ids()
    bad_record, bad_predictions = store.record_path(ids[0]), store.predictions_path(ids[1])
    for path in (bad_record, bad_predictions):
        path.write_bytes(path.read_bytes()[:200])
    code = (
        "import os; from chexbench.core.atomic import atomic_path\ntmp ="
        f" atomic_path({str(store.record_path(ids[2]))!r}).__enter__(); open(tmp, 'w').write('half');"
        " os._exit(9)"
    )
    subprocess.run([sys.executable, "-c", code], check=False)
    assert len(list((results / "records").glob(".*.tmp"))) == 1
    # the damaged cell's claim was left by a worker killed while holding it: taken over, not waited for
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    (results / "claims").mkdir(exist_ok=True)
    (results / "claims" / f"{ids[0]}.lock").write_text(
        json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout), "token": "killed", "since": 0})
    )

    again = subprocess.run(
        run_command(grid_file, results), env=worker_env(), capture_output=True, text=True, timeout=900
    )
    assert again.returncode == 0, again.stdout[-3000:]
    assert "Traceback" not in again.stdout + again.stderr
    assert sorted(_trained(again.stdout)) == sorted(ids[:2])  # only the damaged cells are recomputed
    assert (
        again.stderr.count("moved to") == 3
    )  # the truncated record, the truncated predictions and their record
    assert all(store.check(c).state == "ok" for c in ids)
    assert not list(results.rglob(".*.tmp"))
    assert len(list((results / "quarantine").rglob("*.parquet"))) == 3
