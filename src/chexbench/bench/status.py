"""Where every cell of a results directory (and, optionally, of a grid) stands, and what is running now."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from chexbench.bench.record import RecordStatus
from chexbench.bench.store import ResultsView
from chexbench.core.atomic import pid_alive
from chexbench.spec.grid import PlannedCell, PlanStatus
from chexbench.tracking.live import read_live


class ListedStatus(StrEnum):
    """A cell's line in ``chexbench status``."""

    DONE = "done"
    FAILED = "failed"
    PENDING = "pending"
    SKIPPED = "skipped"


#: order of the statuses in listings
STATUS_ORDER = (ListedStatus.FAILED, ListedStatus.PENDING, ListedStatus.SKIPPED, ListedStatus.DONE)


@dataclass(frozen=True)
class CellStatus:
    cell_id: str
    grid: str
    status: ListedStatus
    strategy: str
    backbone: str
    dataset: str
    protocol: str
    label_fraction: float
    seed: int
    reason: str = ""


def cell_statuses(
    store: ResultsView, planned: list[PlannedCell] | None = None, grid_name: str | None = None
) -> list[CellStatus]:
    """Every stored cell (done or failed), plus the grid's pending and skipped cells when ``planned`` is
    given.

    Sorted by status (failed first), then grid, strategy, backbone, dataset, protocol, fraction, seed.
    """
    out: dict[str, CellStatus] = {}
    recs = store.records()
    for r in recs.itertuples():
        out[str(r.cell_id)] = CellStatus(
            str(r.cell_id),
            str(r.grid),
            ListedStatus.DONE if r.status == RecordStatus.OK else ListedStatus.FAILED,
            str(r.strategy),
            str(r.backbone),
            str(r.dataset),
            str(r.protocol),
            float(r.label_fraction),
            int(r.seed),
            str(r.failure_reason or ""),
        )
    for p in planned or []:
        c = p.cell
        if c.cell_id in out:
            continue
        status = ListedStatus.SKIPPED if p.status == PlanStatus.SKIPPED else ListedStatus.PENDING
        out[c.cell_id] = CellStatus(
            c.cell_id,
            grid_name or c.grid,
            status,
            c.strategy,
            c.backbone,
            c.dataset,
            c.protocol,
            c.label_fraction,
            c.seed,
            p.reason,
        )

    def key(c: CellStatus):
        return (
            STATUS_ORDER.index(c.status),
            c.grid,
            c.strategy,
            c.backbone,
            c.dataset,
            c.protocol,
            c.label_fraction,
            c.seed,
        )

    return sorted(out.values(), key=key)


# -- what is running now (``chexbench status`` / ``--watch``) ----------------------------------------
#: a worker file on another host not updated for this long is shown as stale (its pid cannot be checked from
#: here)
STALE_S = 3600.0


@dataclass(frozen=True)
class Worker:
    """One running ``chexbench run`` worker, from its live file (``tracking/live.py``)."""

    host: str
    pid: int
    device: str
    cell: str  # "<cell id> <label>", "" between cells
    cell_index: int  # its place in the worker's queue (1-based) and the queue's length
    cells_total: int
    run: str  # "cells/<id>" or "pretrain/<run id>": what is training now
    epoch: int | None  # 0-based epoch of the latest logged point
    epochs: int | None
    loss: float | None
    cell_seconds: tuple[float, ...]  # wall-clock seconds of the cells this worker finished
    since_update_s: float
    stale: bool


def running_workers(results_dir: Path, now: float | None = None) -> list[Worker]:
    """The live workers of ``results_dir``: a file whose worker died on this host is left out, one on
    another host that has not changed for ``STALE_S`` is marked stale."""
    now = time.time() if now is None else now
    here = socket.gethostname()
    out = []
    for s in read_live(results_dir):
        if s.get("host") == here and not pid_alive(s.get("pid")):
            continue
        since = max(0.0, now - float(s.get("updated_at") or now))
        scalars = s.get("scalars") or {}
        loss = next((scalars[k] for k in ("train/loss", "pretrain/loss") if k in scalars), None)
        epoch = s.get("epoch")
        out.append(
            Worker(
                str(s.get("host")),
                int(s.get("pid") or 0),
                str(s.get("device") or ""),
                str(s.get("cell") or ""),
                int(s.get("cell_index") or 0),
                int(s.get("cells_total") or 0),
                str(s.get("run") or ""),
                None if epoch is None else int(epoch),
                s.get("epochs"),
                loss,
                tuple(float(x) for x in s.get("cell_seconds") or ()),
                since,
                s.get("host") != here and since > STALE_S,
            )
        )
    return out


@dataclass(frozen=True)
class Eta:
    seconds: float | None  # None: nothing measured yet
    cells_left: int
    per_cell_s: float | None
    basis: str  # how per_cell_s was measured


def grid_eta(workers: list[Worker], store: ResultsView, pending: int | None = None) -> Eta:
    """Time left for the grid from measured cell times.

    Per cell: the mean wall-clock time of the cells the running workers finished (everything a
    cell costs: data, pretraining when it ran one, training, prediction); before any has
    finished, the median training + prediction time of the stored cells (a lower bound: data
    preparation and pretraining are not in it). Cells left: ``pending`` (the grid's cells without
    a record, with ``--grid``), else what is left in the running workers' queues. The cells left
    are shared by the live workers (never fewer than one)."""
    live = [w for w in workers if not w.stale]
    walls = [s for w in live for s in w.cell_seconds]
    if walls:
        per_cell, basis = (
            sum(walls) / len(walls),
            f"mean wall-clock time of the {len(walls)} cell(s) the running workers finished",
        )
    else:
        recs = store.records()
        ok = recs[recs["status"] == RecordStatus.OK] if len(recs) else recs
        if len(ok):
            per_cell = float((ok["train_seconds"].astype(float) + ok["eval_seconds"].astype(float)).median())
            basis = (
                f"median training + prediction time of {len(ok)} stored cell(s) (data preparation and"
                " pretraining not included)"
            )
        else:
            per_cell, basis = None, "no cell measured yet"
    if pending is None:
        left = sum(max(0, w.cells_total - w.cell_index + (1 if w.cell else 0)) for w in live)
    else:
        left = pending
    seconds = None if per_cell is None else left * per_cell / max(1, len(live))
    return Eta(seconds, left, per_cell, basis)
