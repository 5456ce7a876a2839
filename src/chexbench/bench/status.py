"""Where every cell of a results directory (and, optionally, of a grid) stands."""

from __future__ import annotations

from dataclasses import dataclass

from chexbench.bench.store import ResultStore
from chexbench.config import PlannedCell

#: order of the statuses in listings
STATUS_ORDER = ("failed", "pending", "skipped", "done")


@dataclass(frozen=True)
class CellStatus:
    cell_id: str
    grid: str
    status: str  # done | failed | pending | skipped
    strategy: str
    backbone: str
    dataset: str
    protocol: str
    label_fraction: float
    seed: int
    reason: str = ""


def cell_statuses(store: ResultStore, planned: list[PlannedCell] | None = None, grid_name: str | None = None) -> list[CellStatus]:
    """Every stored cell (done or failed), plus the grid's pending and skipped cells when ``planned`` is given.

    Sorted by status (failed first), then grid, strategy, backbone, dataset, protocol, fraction, seed.
    """
    out: dict[str, CellStatus] = {}
    recs = store.records()
    for r in recs.itertuples():
        out[str(r.cell_id)] = CellStatus(
            str(r.cell_id), str(r.grid), "done" if r.status == "ok" else "failed", str(r.strategy), str(r.backbone),
            str(r.dataset), str(r.protocol), float(r.label_fraction), int(r.seed), str(r.failure_reason or ""),
        )
    for p in planned or []:
        c = p.cell
        if c.cell_id in out:
            continue
        status = "skipped" if p.status == "skipped" else "pending"
        out[c.cell_id] = CellStatus(c.cell_id, grid_name or c.grid, status, c.strategy, c.backbone, c.dataset, c.protocol,
                                    c.label_fraction, c.seed, p.reason)

    def key(c: CellStatus):
        return (STATUS_ORDER.index(c.status), c.grid, c.strategy, c.backbone, c.dataset, c.protocol, c.label_fraction, c.seed)

    return sorted(out.values(), key=key)
