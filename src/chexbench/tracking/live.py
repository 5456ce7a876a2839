"""RESULTS/live/<host>-<pid>.json: what one worker runs now, for ``chexbench status --watch``.

Always on (it is not a tracker a user chooses, and it writes no curves): the worker's host,
pid and device, the cell it runs (its place in the worker's queue), the run being trained
(the cell or its pretraining run), the latest epoch and scalars, and the wall-clock seconds of
the cells it finished. Written atomically at each change; removed when the worker ends. A file
left by a killed worker is recognised by its dead pid (same host) or its age.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from chexbench.core.atomic import atomic_write_text

FOLDER = "live"


def live_path(results_dir: Path) -> Path:
    return Path(results_dir) / FOLDER / f"{socket.gethostname()}-{os.getpid()}.json"


class LiveStatus:
    def __init__(self, results_dir: Path, device: str, grid: str = ""):
        self.path = live_path(results_dir)
        self.state: dict[str, Any] = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "device": device,
            "grid": grid,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
            "started_at": time.time(),
            "cell": None,
            "cell_index": 0,
            "cells_total": 0,
            "cell_started_at": None,
            "cell_seconds": [],
            "run": None,
            "kind": None,
            "epoch": None,
            "epochs": None,
            "scalars": {},
            "updated_at": time.time(),
        }
        self._write()

    def _write(self) -> None:
        self.state["updated_at"] = time.time()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(json.dumps(self.state, default=str), self.path)

    def cell_started(self, label: str, index: int, total: int) -> None:
        self.state.update(
            cell=label,
            cell_index=index,
            cells_total=total,
            cell_started_at=time.time(),
            run=None,
            kind=None,
            epoch=None,
            epochs=None,
            scalars={},
        )
        self._write()

    def cell_ended(self, seconds: float) -> None:
        self.state["cell_seconds"] = [*self.state["cell_seconds"], round(float(seconds), 3)]
        self.state.update(
            cell=None, cell_started_at=None, run=None, kind=None, epoch=None, epochs=None, scalars={}
        )
        self._write()

    @contextmanager
    def run(self, name: str, kind: str, params: Mapping[str, Any], fresh: bool = True) -> Iterator[_Live]:
        self.state.update(run=name, kind=kind, epoch=None, epochs=params.get("epochs"), scalars={})
        self._write()
        yield _Live(self)

    def close(self) -> None:
        self.path.unlink(missing_ok=True)
        try:
            self.path.parent.rmdir()  # the last worker out leaves no empty folder
        except OSError:
            pass


class _Live:
    def __init__(self, owner: LiveStatus):
        self.owner = owner

    def log_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        self.owner.state.update(
            epoch=int(step),
            scalars={**self.owner.state["scalars"], **{k: float(v) for k, v in scalars.items()}},
        )
        self.owner._write()


def read_live(results_dir: Path) -> list[dict[str, Any]]:
    """Every worker file of ``results_dir`` (unreadable ones skipped: a writer replaces them atomically)."""
    folder = Path(results_dir) / FOLDER
    out = []
    for p in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            out.append(json.loads(p.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    return out
