"""Grid sharding: ``--shard i/n`` gives job ``i`` of ``n`` a deterministic part of the grid.

The CLI (``run``, ``plan --shards``, ``submit``) balances shards by estimated cost
(:class:`ShardCosts`, from the GPU-hours estimate at fixed target rates): a shared pretraining
run and the cells it serves stay together, and the units go costliest first to the least
loaded shard. Without costs, the runnable cells are ordered by (shared pretraining run, cell
id) and cut into ``n`` contiguous blocks whose sizes differ by at most one. Either way the ``n``
shards cover every runnable cell exactly once and each cell's shard depends only on the grid
(and ``--only`` filters), never on what has already run or on this machine; a run needed by two
shards (contiguous blocks only) is trained by whichever gets there first while the other waits
on its lock and then reuses it (:mod:`chexbench.core.lock`). Skipped cells belong to shard 0,
which lists them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass

from chexbench.core.errors import ConfigError
from chexbench.spec.grid import PlannedCell, PlanStatus
from chexbench.spec.registry import STRATEGIES


@dataclass(frozen=True)
class Shard:
    index: int  # 0-based
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"1/3"`` → ``Shard(1, 3)``; indices are 0-based (0/3, 1/3, 2/3)."""
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
        if not m:
            raise ConfigError(f"--shard expects i/n with 0 ≤ i < n (e.g. 0/3), got '{text}'")
        i, n = int(m.group(1)), int(m.group(2))
        if n < 1 or not 0 <= i < n:
            raise ConfigError(f"--shard {text}: need 0 ≤ i < n and n ≥ 1 (shards are numbered 0 … n-1)")
        return cls(i, n)


ALL = Shard(0, 1)


def pretrain_group(planned: PlannedCell) -> str:
    """Hash of the cell's shared pretraining run ("" for strategies that do not pretrain)."""
    if planned.status != PlanStatus.RUN:
        return ""
    key_of = getattr(STRATEGIES.get(planned.cell.strategy), "pretrain_key", None)
    key = key_of(planned.cell) if key_of is not None else None
    if key is None:
        return ""
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class ShardCosts:
    """Estimated seconds of each runnable cell and of each shared pretraining run (by
    :func:`pretrain_group`), for balancing shards; the CLI builds it from the GPU-hours estimate
    at fixed target rates, so it depends on the grid alone."""

    cell: Callable[[PlannedCell], float]
    run: dict[str, float]


def shard_cells(
    planned: list[PlannedCell], shard: Shard, costs: ShardCosts | None = None
) -> list[PlannedCell]:
    """The cells of ``planned`` that shard ``shard`` runs (plus, for shard 0, the skipped ones).

    With ``costs``: balanced by estimated cost (:func:`_balanced`); without: contiguous blocks of
    equal cell counts."""
    if shard.count == 1:
        return list(planned)
    return (_balanced(planned, shard.count, costs) if costs is not None else _blocks(planned, shard.count))[
        shard.index
    ]


def _blocks(planned: list[PlannedCell], count: int) -> list[list[PlannedCell]]:
    runnable = sorted(
        (p for p in planned if p.status == PlanStatus.RUN), key=lambda p: (pretrain_group(p), p.cell.cell_id)
    )
    n = len(runnable)
    blocks = [runnable[i * n // count : (i + 1) * n // count] for i in range(count)]
    blocks[0] = [p for p in planned if p.status != PlanStatus.RUN] + blocks[0]
    return blocks


def _balanced(planned: list[PlannedCell], count: int, costs: ShardCosts) -> list[list[PlannedCell]]:
    """Shards of about equal estimated cost: a pretraining run and every cell it serves form one
    unit (the run is trained once, by the shard that holds them), a cell without pretraining is a
    unit alone; the units, costliest first, each go to the shard with the least cost so far
    (longest-processing-time first; ties: the lower index). Deterministic from the grid alone."""
    units: dict[str, list[PlannedCell]] = {}
    for p in sorted(
        (p for p in planned if p.status == PlanStatus.RUN), key=lambda p: (pretrain_group(p), p.cell.cell_id)
    ):
        group = pretrain_group(p)
        units.setdefault(group or f"cell:{p.cell.cell_id}", []).append(p)
    cost = {u: costs.run.get(u, 0.0) + sum(costs.cell(p) for p in ps) for u, ps in units.items()}
    load = [0.0] * count
    blocks: list[list[PlannedCell]] = [[] for _ in range(count)]
    for u in sorted(units, key=lambda u: (-cost[u], u)):
        i = min(range(count), key=lambda k: (load[k], k))
        load[i] += cost[u]
        blocks[i].extend(units[u])
    for block in blocks:
        block.sort(key=lambda p: (pretrain_group(p), p.cell.cell_id))
    blocks[0] = [p for p in planned if p.status != PlanStatus.RUN] + blocks[0]
    return blocks


def shard_of(planned: list[PlannedCell], count: int, costs: ShardCosts | None = None) -> dict[str, int]:
    """``cell_id → shard index`` for every runnable cell."""
    blocks = _balanced(planned, count, costs) if costs is not None else _blocks(planned, count)
    return {p.cell.cell_id: i for i, block in enumerate(blocks) for p in block if p.status == PlanStatus.RUN}
