"""What is running now: the live file a worker keeps, `chexbench status` / `status --watch`, and the
grid's time left from measured cell times."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

from typer.testing import CliRunner

from chexbench.bench.status import STALE_S, grid_eta, running_workers
from chexbench.bench.store import ResultStore
from chexbench.cli import app
from chexbench.tracking.live import FOLDER, LiveStatus


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_worker_s_live_file_follows_its_cell_run_epoch_and_loss_and_goes_with_it(tmp_path):
    live = LiveStatus(tmp_path, "NVIDIA H100 80GB HBM3", "g")
    live.cell_started("abc123 simclr/resnet_tiny/…", 2, 5)
    with live.run("pretrain/r1", "pretrain", {"epochs": 4}) as log:
        log.log_scalars(0, {"pretrain/loss": 5.0})
        log.log_scalars(1, {"pretrain/loss": 4.25, "pretrain/lr": 0.1})
        (w,) = running_workers(tmp_path)
    assert (w.host, w.pid, w.device) == (socket.gethostname(), os.getpid(), "NVIDIA H100 80GB HBM3")
    assert (w.cell, w.cell_index, w.cells_total, w.run, w.epoch, w.epochs, w.loss) == (
        "abc123 simclr/resnet_tiny/…",
        2,
        5,
        "pretrain/r1",
        1,
        4,
        4.25,
    )
    live.cell_ended(30.0)
    assert running_workers(tmp_path)[0].cell_seconds == (30.0,)
    live.close()
    assert running_workers(tmp_path) == []


def test_a_dead_worker_is_left_out_and_a_silent_one_elsewhere_is_stale(tmp_path):
    folder = tmp_path / FOLDER
    folder.mkdir()
    now = time.time()
    base = {
        "device": "cpu",
        "cell": "c",
        "cell_index": 1,
        "cells_total": 1,
        "run": "cells/c",
        "epoch": 0,
        "epochs": 1,
        "scalars": {},
        "cell_seconds": [],
    }
    (folder / "a.json").write_text(
        json.dumps({**base, "host": socket.gethostname(), "pid": _dead_pid(), "updated_at": now})
    )
    (folder / "b.json").write_text(
        json.dumps({**base, "host": "node-7", "pid": 12, "updated_at": now - STALE_S - 5})
    )
    (folder / "c.json").write_text(json.dumps({**base, "host": "node-8", "pid": 13, "updated_at": now - 10}))
    workers = {w.host: w for w in running_workers(tmp_path, now=now)}
    assert sorted(workers) == ["node-7", "node-8"]
    assert workers["node-7"].stale and not workers["node-8"].stale


def test_time_left_uses_measured_cell_times_shared_by_the_live_workers(tmp_path):
    a = LiveStatus(tmp_path, "cpu")
    a.cell_started("x", 3, 5)  # running its 3rd of 5: 3 left in its queue
    a.state["cell_seconds"] = [10.0, 20.0]
    a._write()
    store = ResultStore(tmp_path)
    eta = grid_eta(running_workers(tmp_path), store)
    assert (eta.cells_left, eta.per_cell_s, eta.seconds) == (3, 15.0, 45.0)
    eta = grid_eta(running_workers(tmp_path), store, pending=10)
    assert eta.seconds == 150.0
    a.close()
    nothing = grid_eta([], store, pending=4)
    assert nothing.seconds is None and nothing.basis == "no cell measured yet"


def test_status_shows_the_running_worker_and_watch_redraws_until_ctrl_c(tmp_path, monkeypatch):
    live = LiveStatus(tmp_path, "cuda:0 NVIDIA A100", "g")
    live.cell_started("abc123 scratch/resnet_tiny/phantom-chexpert/finetune/f=1/s=0", 1, 4)
    live.state["cell_seconds"] = [60.0]
    with live.run("cells/abc123", "cell", {"epochs": 10}) as log:
        log.log_scalars(6, {"train/loss": 0.4321})
        res = CliRunner().invoke(app, ["status", "--results", str(tmp_path)], env={"COLUMNS": "250"})
        assert res.exit_code == 0, res.output
        for text in (
            "running now",
            socket.gethostname(),
            str(os.getpid()),
            "cuda:0 NVIDIA A100",
            "abc123",
            "7/10",
            "0.4321",
            "time left: about 4m00s for 4 cell(s)",
        ):
            assert text in res.output, text

        def interrupt(_):
            raise KeyboardInterrupt

        monkeypatch.setattr(time, "sleep", interrupt)
        res = CliRunner().invoke(
            app, ["status", "--results", str(tmp_path), "--watch"], env={"COLUMNS": "250"}
        )
        assert res.exit_code == 0, res.output
        assert "0.4321" in res.output and "time left" in res.output
    live.close()
    res = CliRunner().invoke(app, ["status", "--results", str(tmp_path)], env={"COLUMNS": "250"})
    assert "running now" not in res.output
