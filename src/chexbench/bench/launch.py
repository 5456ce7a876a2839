"""How one ``chexbench run`` starts its ranks: relaunched under torchrun for ``--gpus N``, the
process group joined and left, this shard's cells, and SLURM's SIGTERM ending the run as Ctrl-C.

:mod:`chexbench.core.distributed` keeps the primitives (who am I, barriers, gathers, DDP, one
cell agreed by every rank); starting processes is the harness's.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from chexbench.bench.shard import Shard, ShardCosts, shard_cells
from chexbench.core import distributed as D
from chexbench.spec.grid import Grid, PlannedCell


def torchrun_command(nproc: int, chexbench_args: Sequence[str]) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc-per-node N -m chexbench ARGS``."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "chexbench",
        *chexbench_args,
    ]


def strip_option(argv: Sequence[str], name: str) -> list[str]:
    """``argv`` without ``--name VALUE`` / ``--name=VALUE`` (to relaunch without ``--gpus``)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == name:
            skip = True
            continue
        if a.startswith(name + "="):
            continue
        out.append(a)
    return out


def relaunch_under_torchrun(nproc: int, argv: Sequence[str]) -> int:
    """Run this same ``chexbench`` command as ``nproc`` ranks; returns torchrun's exit code."""
    if shutil.which(sys.executable) is None:  # pragma: no cover - defensive
        raise RuntimeError("cannot find the Python interpreter to start torchrun")
    return subprocess.call(torchrun_command(nproc, list(argv)))


@dataclass(frozen=True)
class GridLaunch:
    """One ``chexbench run``: the grid's planned cells, where results go, the device, the ranks per
    cell (``gpus`` > 1: data-parallel under torchrun), and the shard this process runs."""

    grid: Grid
    planned: list[PlannedCell]
    results: Path
    device: torch.device
    argv: tuple[str, ...] = ()  # the command's own arguments, to relaunch it under torchrun
    gpus: int = 1
    shard: Shard | None = None
    costs: ShardCosts | None = None  # what shards are balanced by (None: contiguous blocks)
    overwrite: bool = False
    compile: bool = False  # torch.compile the training step: an execution option, never part of a cell id
    trackers: tuple[str, ...] | None = None  # experiment trackers by name (None: the default ones)

    @property
    def needs_relaunch(self) -> bool:
        """``--gpus N`` asked for ranks and this process is not one of them yet."""
        return self.gpus > 1 and not D.launched_by_torchrun()

    def relaunch(self) -> int:
        """This same command as ``gpus`` torchrun ranks (without ``--gpus``); torchrun's exit code."""
        return relaunch_under_torchrun(self.gpus, strip_option(self.argv, "--gpus"))

    def cells(self) -> list[PlannedCell]:
        """The cells this process runs: its shard's (``--shard i/n``), else the whole plan."""
        return self.planned if self.shard is None else shard_cells(self.planned, self.shard, self.costs)


@contextlib.contextmanager
def ranks(device: torch.device) -> Iterator[torch.device]:
    """Join the process group torchrun describes (a no-op in one process), yield this rank's device,
    leave the group at the end whatever happens."""
    try:
        yield D.init_from_env(device)
    finally:
        D.shutdown()


def _terminated(signum, frame):
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SLURM's time limit and ``scancel`` send SIGTERM: in a single process it ends the run as Ctrl-C
    does (KeyboardInterrupt: what was stored is said, the run resumes later). Under torchrun the
    launcher's own handling stays."""
    previous = signal.signal(signal.SIGTERM, _terminated) if not D.is_distributed() else None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
