"""Grid sharding (exact cover, balance, determinism) and the stale-recovering file lock."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chexbench.bench.shard import Shard, pretrain_group, shard_cells, shard_of
from chexbench.core.errors import ConfigError
from chexbench.core.lock import FileLock, LockTimeout
from chexbench.spec.grid import PlannedCell
from chexbench.spec.parse import load_grid, parse_grid


def test_parse_shard():
    assert Shard.parse("0/3") == Shard(0, 3) and Shard.parse(" 2 / 3 ") == Shard(2, 3)
    assert str(Shard(1, 4)) == "1/4"
    for bad in ("3/3", "1", "-1/3", "a/b", "0/0", ""):
        with pytest.raises(ConfigError, match="--shard"):
            Shard.parse(bad)


@pytest.mark.parametrize("grid_name", ["smoke", "full"])
@pytest.mark.parametrize("n", [2, 3, 7])
def test_shards_cover_packaged_grids_exactly_once(grid_name, n):
    planned = load_grid(grid_name).cells()
    runnable = [p.cell.cell_id for p in planned if p.status == "run"]
    parts = [shard_cells(planned, Shard(i, n)) for i in range(n)]
    got = Counter(p.cell.cell_id for part in parts for p in part if p.status == "run")
    assert sorted(got) == sorted(runnable) and set(got.values()) <= {1}
    sizes = [sum(p.status == "run" for p in part) for part in parts]
    assert max(sizes) - min(sizes) <= 1
    # skipped cells are listed by shard 0 only
    skipped = [p.cell.cell_id for p in planned if p.status != "run"]
    assert [p.cell.cell_id for p in parts[0] if p.status != "run"] == skipped
    assert all(p.status == "run" for part in parts[1:] for p in part)
    # deterministic: a fresh plan of the same grid assigns every cell to the same shard
    assert shard_of(load_grid(grid_name).cells(), n) == shard_of(planned, n)


def test_cells_sharing_a_pretraining_run_stay_together():
    planned = load_grid("full").cells()
    n = 4
    owner = shard_of(planned, n)
    groups: dict[str, set[int]] = {}
    for p in planned:
        if p.status == "run" and pretrain_group(p):
            groups.setdefault(pretrain_group(p), set()).add(owner[p.cell.cell_id])
    assert groups, "the full grid has self-supervised cells"
    # contiguous blocks of the group-ordered list: at most n - 1 groups straddle a shard boundary
    assert sum(len(s) > 1 for s in groups.values()) <= n - 1


def _tiny_planned(n_cells: int) -> list[PlannedCell]:
    raw = {
        "axes": {
            "strategy": ["scratch"],
            "backbone": ["resnet_tiny"],
            "dataset": ["phantom-chexpert"],
            "protocol": ["finetune"],
            "seed": list(range(n_cells)),
        },
        "settings": {"image_size": 32},
    }
    return parse_grid(raw, "t.toml").cells()


@settings(max_examples=25, deadline=None)
@given(n_cells=st.integers(1, 30), n=st.integers(1, 9))
def test_any_grid_size_is_partitioned(n_cells, n):
    planned = _tiny_planned(n_cells)
    ids = [p.cell.cell_id for i in range(n) for p in shard_cells(planned, Shard(i, n))]
    assert sorted(ids) == sorted(p.cell.cell_id for p in planned)


# -- the lock -------------------------------------------------------------------------------
def test_lock_excludes_threads_and_releases(tmp_path):
    path = tmp_path / "x.lck"
    inside, overlaps = [], []

    def work(k: int) -> None:
        with FileLock(path, poll_s=0.01):
            inside.append(k)
            if len(inside) > 1:
                overlaps.append(list(inside))
            time.sleep(0.05)
            inside.remove(k)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == [] and not path.exists()


def test_lock_times_out_on_a_live_owner(tmp_path):
    path = tmp_path / "x.lck"
    with FileLock(path):
        owner = json.loads(path.read_text())
        assert owner["pid"] == os.getpid() and owner["host"]
        with pytest.raises(LockTimeout, match="x.lck"):
            FileLock(path, poll_s=0.01, timeout_s=0.2).acquire()
    assert not path.exists()


def test_lock_of_a_dead_process_is_broken(tmp_path):
    path = tmp_path / "x.lck"
    code = (
        "import sys, os; from chexbench.core.lock import FileLock; "
        f"l = FileLock({str(path)!r}); l.acquire(); os._exit(0)"  # dies holding the lock
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    dead = json.loads(path.read_text())
    lock = FileLock(path, poll_s=0.01, timeout_s=5)
    with lock:
        assert lock.held()
    assert [o["pid"] for o in lock.broken_stale] == [dead["pid"]]


def test_lock_without_heartbeat_goes_stale_with_age(tmp_path):
    path = tmp_path / "x.lck"
    path.write_text(json.dumps({"host": "another-node", "pid": 1, "token": "t"}))  # a node we cannot ask
    lock = FileLock(path, heartbeat_s=0.05, stale_after_s=0.5, poll_s=0.01, timeout_s=0.2)
    with pytest.raises(LockTimeout):  # fresh: it is respected
        lock.acquire()
    old = time.time() - 10
    os.utime(path, (old, old))
    with lock:
        assert lock.held() and lock.broken_stale[0]["host"] == "another-node"


def test_heartbeat_keeps_a_long_held_lock_fresh(tmp_path):
    path = tmp_path / "x.lck"
    holder = FileLock(path, heartbeat_s=0.05, stale_after_s=0.3)
    with holder:
        waiter = FileLock(path, heartbeat_s=0.05, stale_after_s=0.3, poll_s=0.02, timeout_s=1.0)
        with pytest.raises(LockTimeout):  # 1 s > stale_after: only the heartbeat keeps it alive
            waiter.acquire()
        assert holder.held() and waiter.broken_stale == []


def test_plan_prints_gpu_hours_and_the_shard_split():
    from typer.testing import CliRunner

    from chexbench.cli import app

    res = CliRunner().invoke(
        app, ["plan", "--grid", "smoke", "--shards", "3", "--no-check"], env={"COLUMNS": "200"}
    )
    assert res.exit_code == 0, res.output
    assert "GPU-hours" in res.output and "--shard i/3" in res.output
    from chexbench.cli.run import shard_costs

    planned = load_grid("smoke").cells()
    costs = shard_costs(planned)  # the split `run --shard` makes
    sizes = [sum(p.status == "run" for p in shard_cells(planned, Shard(i, 3), costs)) for i in range(3)]
    for i, n in enumerate(sizes):  # each shard's row: "i/3 │ n │ …"
        assert re.search(rf"{i}/3\W+{n}\W", res.output), (i, n)


def test_a_pretraining_run_needed_by_two_shards_runs_once(tmp_path, monkeypatch):
    """Two shards (threads here) need the same pretraining run: one trains, the other waits and
    reuses it; a lock left by a killed owner is broken instead of blocking forever."""
    import pandas as pd
    import torch

    from chexbench.core.context import RunContext
    from chexbench.spec.cell import CellConfig
    from chexbench.spec.registry import STRATEGIES
    from chexbench.strategies import pretrain as P

    calls: list[str] = []

    def fake_pretrain(strategy, cell, ctx, key, run_id, run_dir) -> None:
        calls.append(run_id)
        time.sleep(0.5)  # long enough for the other shard to arrive and wait
        torch.save({}, run_dir / "encoder.pt")
        (run_dir / "meta.json").write_text(json.dumps({"run_id": run_id}))
        pd.DataFrame(columns=list(P.HISTORY_COLUMNS)).to_parquet(run_dir / "history.parquet")
        (run_dir / "done").write_text("now\n")

    monkeypatch.setattr(P, "_pretrain", fake_pretrain)
    strategy = STRATEGIES.get("simclr")
    cell = CellConfig("simclr", "resnet_tiny", "phantom-chexpert", "linear", 1.0, 0)
    run_dir = tmp_path / "cache" / "pretrain" / P.run_id_of(strategy.pretrain_key(cell))
    run_dir.mkdir(parents=True)
    # a lock left behind by a shard that was killed (a pid that no longer exists on this host)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    (run_dir / "pretrain.lck").write_text(
        json.dumps({"host": __import__("socket").gethostname(), "pid": int(dead), "token": "old"})
    )

    got: list[str] = []

    def shard(k: int) -> None:
        ctx = RunContext(torch.device("cpu"), tmp_path / f"results{k}", tmp_path / "cache")
        got.append(P.ensure_pretrained(strategy, cell, ctx)[0])

    threads = [threading.Thread(target=shard, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and got == calls * 2
    assert not (run_dir / "pretrain.lck").exists()
