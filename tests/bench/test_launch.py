"""How ``chexbench run`` starts its ranks (bench/launch.py): the torchrun relaunch of ``--gpus N``,
the shard's cells, SIGTERM as Ctrl-C; and that core/distributed.py no longer starts processes."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

from chexbench.bench import launch as L
from chexbench.bench.shard import Shard, shard_cells
from chexbench.core import distributed as D
from chexbench.spec.parse import load_grid


def test_torchrun_command_and_gpus_option_stripping():
    cmd = L.torchrun_command(4, ["run", "--grid", "smoke"])
    assert cmd[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4", "-m"]
    assert cmd[6:] == ["chexbench", "run", "--grid", "smoke"]
    assert L.strip_option(["run", "--gpus", "2", "--grid", "g", "--gpus=3"], "--gpus") == [
        "run",
        "--grid",
        "g",
    ]


def test_core_keeps_only_primitives():
    for name in ("torchrun_command", "strip_option", "relaunch_under_torchrun"):
        assert not hasattr(D, name), name
    assert "subprocess" not in Path(D.__file__).read_text()


def _launch(**kw) -> L.GridLaunch:
    g = load_grid("smoke")
    return L.GridLaunch(g, g.cells(), Path("r"), torch.device("cpu"), **kw)


def test_a_launch_relaunches_only_for_several_gpus_outside_torchrun(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not _launch().needs_relaunch and _launch(gpus=2).needs_relaunch
    calls = []
    monkeypatch.setattr(L.subprocess, "call", lambda cmd: calls.append(cmd) or 7)
    assert _launch(gpus=2, argv=("run", "--gpus", "2", "--grid", "smoke")).relaunch() == 7
    assert calls[0][-4:] == ["chexbench", "run", "--grid", "smoke"] and "--nproc-per-node=2" in calls[0]
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert not _launch(gpus=2).needs_relaunch  # already a rank


def test_a_launch_runs_its_shards_cells():
    whole = _launch()
    assert whole.cells() == whole.planned
    part = _launch(shard=Shard(1, 3))
    assert part.cells() == shard_cells(part.planned, Shard(1, 3)) and len(part.cells()) < len(part.planned)


def test_sigterm_ends_a_single_process_run_as_ctrl_c_and_the_handler_is_restored():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), L.sigterm_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) == before
