"""The runner: plan a grid, run the cells not yet finished, store each one as it ends.

A cell runs as: seed → data (prepared cache, splits, label fraction) → backbone → strategy
init (scratch / weights / shared pretraining) → protocol (train, select on validation,
predict test) → metrics → atomic write. A failing cell is stored as failed with its reason
and the grid goes on; a cell that cannot run here (e.g. no ImageNet weights) is listed as
skipped. Rerunning the same command skips every finished cell.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import subprocess
import time
import traceback
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import timm
import torch

import chexbench
from chexbench.bench import external as X
from chexbench.bench.cell_model import load_cell_model, model_path
from chexbench.bench.preflight import preflight  # the pre-run checks (plan, run, submit)
from chexbench.bench.record import SKIPPED_COLUMNS, SKIPPED_FILE, CellRecord, RecordStatus, new_record
from chexbench.bench.shard import Shard, shard_cells
from chexbench.bench.store import CellState, ResultStore
from chexbench.core import distributed as D
from chexbench.core.atomic import atomic_write_parquet, clean_stale_temporaries
from chexbench.core.context import RunContext
from chexbench.core.devices import device_name, peak_memory_mb, reset_peak_memory
from chexbench.core.errors import ENVIRONMENT_ERRNOS, SkipCell
from chexbench.core.inference import predict_probs
from chexbench.core.inputs import DEFAULT_NORMALIZE
from chexbench.core.lock import FileLock
from chexbench.core.metrics import macro, per_label_metrics
from chexbench.core.seeding import seed_everything
from chexbench.core.tracking import CountingRunLog, RunLog
from chexbench.datasets import celldata  # called as celldata.build_cell_data: tests substitute it
from chexbench.spec.cell import CellConfig
from chexbench.spec.grid import Grid, PlannedCell, PlanStatus
from chexbench.spec.registry import BACKBONES, PROTOCOLS, STRATEGIES


class OutcomeStatus(StrEnum):
    """What became of a cell in one run."""

    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"
    DONE_BEFORE = "done-before"
    ELSEWHERE = "elsewhere"  # stored by another worker meanwhile


class Decision(StrEnum):
    """What this worker does with a queued cell (:func:`_decide`)."""

    DONE = "done"
    ELSEWHERE = "elsewhere"
    BUSY = "busy"
    RUN = "run"


@dataclass
class CellOutcome:
    cell: CellConfig
    status: OutcomeStatus
    seconds: float = 0.0
    macro_auroc: float = float("nan")
    reason: str = ""


@dataclass
class RunSummary:
    outcomes: list[CellOutcome] = field(default_factory=list)

    def count(self, status: OutcomeStatus) -> int:
        return sum(o.status == status for o in self.outcomes)


def _git_sha() -> str:
    try:
        root = Path(chexbench.__file__).resolve().parents[2]
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def _versions() -> dict[str, str]:
    return {
        "torch_version": torch.__version__,
        "timm_version": timm.__version__,
        "chexbench_version": chexbench.__version__,
    }


def base_record(cell: CellConfig, device: torch.device) -> CellRecord:
    """The record of ``cell`` before it has run: status failed, no metrics, this machine's provenance."""
    return new_record(
        **{
            "cell_id": cell.cell_id,
            "grid": cell.grid,
            **cell.axis_values(),
            "config_json": cell.canonical_json(),
            "config_hash": cell.config_hash,
            "configuration_hash": cell.configuration_hash,
            "status": RecordStatus.FAILED,
            "failure_reason": "",
            "eval_labels_json": "[]",
            "macro_auroc": float("nan"),
            "macro_auprc": float("nan"),
            "metrics_json": "{}",
            "val_macro_auroc": float("nan"),
            "selected_epoch": -1,
            "init_json": "{}",
            "data_json": "{}",
            "history_json": "[]",
            "train_seconds": 0.0,
            "eval_seconds": 0.0,
            "images_per_second": 0.0,
            "peak_memory_mb": 0.0,
            "device_name": device_name(device),
            **_versions(),
            "git_sha": _git_sha(),
            "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        }
    )


def _long_predictions(split: str, data_split: Any, scores: np.ndarray, labels: list[str]) -> pd.DataFrame:
    """One row per (image, label) of ``data_split`` (``store.PREDICTION_COLUMNS``), then each image's
    subgroup attributes that the split carries (``SplitData.attributes``: sex, age, view, site)."""
    n, n_labels = scores.shape
    attributes = getattr(data_split, "attributes", None) or {}
    return pd.DataFrame(
        {
            "image_id": np.repeat(np.asarray(data_split.image_ids, dtype=str), n_labels),
            "patient_id": np.repeat(np.asarray(data_split.patient_ids, dtype=str), n_labels),
            "label": np.tile(np.asarray(labels, dtype=str), n),
            "y_true": np.asarray(data_split.targets, dtype=np.float64).reshape(-1),
            "y_score": scores.astype(np.float64).reshape(-1),
            "split": split,
            **{col: np.repeat(np.asarray(values), n_labels) for col, values in attributes.items()},
        }
    )


@dataclass
class ExternalRun:
    """``settings.evaluate_on`` of one cell: its targets, and (after :func:`run_cell`) each target's
    (record, predictions), or why there are none."""

    targets: list[X.ExternalTarget]
    results: list[tuple[dict[str, Any], pd.DataFrame]] = field(default_factory=list)
    note: str = ""


def run_cell(
    cell: CellConfig, ctx: RunContext, external: ExternalRun | None = None
) -> tuple[CellRecord, pd.DataFrame]:
    """Run one cell; returns (record, predictions). Raises on failure (the caller records it).
    ``external``: also predict these targets' test splits with the selected model (into ``external.results``).
    """
    record = base_record(cell, ctx.device)
    seed_everything(cell.seed, cell.settings.deterministic)
    reset_peak_memory(ctx.device)
    ctx.progress.message("preparing data")
    data = celldata.build_cell_data(cell)
    spec = BACKBONES.get(cell.backbone)
    backbone = spec.build(cell.settings.image_size, cell.backbone_options)
    strategy = STRATEGIES.get(cell.strategy)
    init = strategy.init_backbone(backbone, cell, ctx)
    seed_everything(
        cell.seed, cell.settings.deterministic
    )  # the protocol's randomness does not depend on pretraining
    protocol = PROTOCOLS.get(cell.protocol)
    with ctx.tracker.run(f"cells/{cell.cell_id}", "cell", tracking_params(cell)) as log:
        counted = CountingRunLog(log)
        result = protocol.run(backbone, data, cell, dataclasses.replace(ctx, run_log=counted), init)
        if (
            not counted.calls
        ):  # a protocol that does not log live (the linear probe selects its head at the end)
            log_history(log, result.history, result.images_per_second)

    eval_labels = [lbl for lbl in data.eval_labels if lbl in data.labels]
    metrics = per_label_metrics(data.test.targets, result.test_scores, data.labels)
    predictions = pd.concat(
        [
            _long_predictions("valid", data.valid, result.valid_scores, data.labels),
            _long_predictions("test", data.test, result.test_scores, data.labels),
        ],
        ignore_index=True,
    )
    record = record.replace(
        status=RecordStatus.OK,
        eval_labels_json=json.dumps(eval_labels),
        macro_auroc=macro(metrics, eval_labels, "auroc"),
        macro_auprc=macro(metrics, eval_labels, "auprc"),
        metrics_json=json.dumps(metrics, allow_nan=True),
        val_macro_auroc=result.val_macro_auroc,
        selected_epoch=result.selected_epoch,
        init_json=json.dumps(init.to_dict(), default=str),
        data_json=json.dumps({**data.manifest, "protocol_extra": result.extra}, default=str),
        history_json=json.dumps(result.history, allow_nan=True),
        train_seconds=result.train_seconds,
        eval_seconds=result.eval_seconds,
        images_per_second=result.images_per_second,
        peak_memory_mb=peak_memory_mb(ctx.device),
    )
    if external is not None and external.targets:
        model = getattr(result, "model", None)
        if model is None:
            external.note = f"protocol {cell.protocol} returns no model: no external predictions"
        else:
            normalize = tuple(init.extra.get("normalize", DEFAULT_NORMALIZE))
            failed = []
            for t in external.targets:
                try:
                    external.results.append(
                        predict_external(
                            model, normalize, cell, data.labels, data.eval_labels, t, ctx, "cell"
                        )
                    )
                except (
                    Exception
                ) as e:  # the cell's own result stands: a target that fails is noted, and a rerun retries it
                    if isinstance(e, OSError) and e.errno in ENVIRONMENT_ERRNOS:
                        raise
                    failed.append(
                        f"external predictions on {t.name} failed ({type(e).__name__}: {e}); a rerun retries"
                        " them"
                    )
            external.note = "; ".join(failed)
    return record, predictions


def _external_summary(external: ExternalRun | None) -> str:
    """What a cell's ``evaluate_on`` wrote (the scores are the report's), and what failed: for the run's
    output."""
    if external is None:
        return ""
    written = ", ".join(
        f"{r['target']} ({r['target_data']['test_images']} test images, {len(r['shared_labels'])} shared"
        " labels)"
        for r, _ in external.results
    )
    return "; ".join(x for x in (f"external predictions: {written}" if written else "", external.note) if x)


def predict_external(
    model: torch.nn.Module,
    normalize: tuple[float, float],
    cell: CellConfig,
    labels: list[str],
    eval_labels: list[str],
    target: X.ExternalTarget,
    ctx: RunContext,
    origin: str,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """The selected model (outputs ``labels``) on ``target``'s test split, shared labels only: (record,
    predictions)."""
    leakage = X.check_leakage(
        cell, target
    )  # again at run time (plan checked it): the data may have changed since
    data = celldata.build_cell_data(target.data_cell)
    sets = X.label_sets(labels, eval_labels, data.labels, data.eval_labels)
    st = cell.settings
    scores = predict_probs(
        model, data.test.images, st.eval_batch_size, ctx.device, normalize, st.amp, ctx.fast_path
    )
    scores = scores[:, [labels.index(lab) for lab in sets.shared]]
    test = dataclasses.replace(
        data.test, targets=data.test.targets[:, [data.labels.index(lab) for lab in sets.shared]]
    )
    record = X.external_record(cell, target, sets, data.manifest, test.targets, scores, leakage, origin)
    return record, _long_predictions("test", test, scores, sets.shared)


def complete_external(
    cell: CellConfig, targets: list[X.ExternalTarget], ctx: RunContext, store: ResultStore
) -> str:
    """A finished cell's missing or stale external predictions, made from its saved model (no retraining).
    Returns a note for the run's output ("" when every file was current)."""
    pending = D.broadcast_object(X.pending_targets(store, cell.cell_id, targets) if D.is_main() else None)
    if not pending:
        return ""
    names = ", ".join(f"{t.name} ({why})" for t, why in pending)
    if not model_path(ctx.results_dir, cell.cell_id).is_file():
        return (
            f"external predictions not made for {names}: the cell's model was not saved"
            f" ([protocol.{cell.protocol}] save_model), so only retraining can make them: rerun with"
            " --overwrite --only for this cell"
        )
    model, meta = load_cell_model(ctx.results_dir, cell)
    stored = store.check(cell.cell_id, full_record=True).record
    eval_labels = (
        json.loads(str(stored["eval_labels_json"].iloc[0])) if stored is not None else list(meta["labels"])
    )
    model = model.to(ctx.device)
    write_id = store.cell_write_id(cell.cell_id)
    for t, _ in pending:
        rec, preds = predict_external(
            model, tuple(meta["normalize"]), cell, list(meta["labels"]), eval_labels, t, ctx, "saved model"
        )
        if D.is_main():
            store.write_external({**rec, "cell_write_id": write_id}, preds)
    return f"external predictions made from the saved model: {names}"


def tracking_params(cell: CellConfig) -> dict[str, Any]:
    """What a tracker shows beside a cell's curves: its id, label, axes and resolved config."""
    return {
        "cell_id": cell.cell_id,
        "label": cell.label(),
        **cell.axis_values(),
        "epochs": cell.settings.epochs,
        "config": cell.canonical_json(),
    }


def log_history(log: RunLog, history: list[dict[str, Any]], images_per_second: float) -> None:
    """A protocol's per-epoch history (``train_loss``, ``val_macro_auroc``) as curves, after the fact;
    throughput, measured over the whole training, is logged once at the last epoch."""
    for i, row in enumerate(history):
        scalars = {"train/loss": row.get("train_loss"), "val/macro_auroc": row.get("val_macro_auroc")}
        if i == len(history) - 1:
            scalars["train/images_per_second"] = images_per_second
        log.log_scalars(int(row.get("epoch", i)), {k: float(v) for k, v in scalars.items() if v is not None})


def write_skipped(
    store: ResultStore, planned: list[PlannedCell], runtime_skips: dict[str, str] | None = None
) -> None:
    """Merge this plan's skipped cells into ``skipped.parquet`` (cells that now run are removed).

    Concurrent shards share the file: the read-merge-write runs under a lock; only rank 0 writes.
    """
    if not D.is_main():
        return
    store.root.mkdir(parents=True, exist_ok=True)
    with FileLock(store.root / ".skipped.lock"):
        _merge_skipped(store, planned, runtime_skips)


def _merge_skipped(
    store: ResultStore, planned: list[PlannedCell], runtime_skips: dict[str, str] | None
) -> None:
    path = store.root / SKIPPED_FILE
    old = store.read_side_file_or_quarantine(path)  # a damaged one is quarantined and rebuilt from this plan
    if old is None:
        old = pd.DataFrame(columns=list(SKIPPED_COLUMNS))
    runtime_skips = runtime_skips or {}
    planned_ids = {p.cell.cell_id for p in planned}
    rows = []
    for p in planned:
        reason = p.reason if p.status == PlanStatus.SKIPPED else runtime_skips.get(p.cell.cell_id)
        if reason:
            rows.append(
                {"cell_id": p.cell.cell_id, "grid": p.cell.grid, **p.cell.axis_values(), "reason": reason}
            )
    keep = old[~old["cell_id"].isin(planned_ids)]
    new = pd.concat([keep, pd.DataFrame(rows, columns=list(SKIPPED_COLUMNS))], ignore_index=True)
    atomic_write_parquet(new.astype({"label_fraction": float, "seed": int}), path)


#: seconds between looks at cells another worker has claimed
CLAIM_POLL_S = 2.0


def run_grid(
    grid: Grid,
    results_dir: Path,
    ctx: RunContext,
    only: dict[str, list[str]] | None = None,
    overwrite: bool = False,
    on_cell_start=None,
    on_cell_end=None,
    cells: list[PlannedCell] | None = None,
    shard: Shard | None = None,
    checked: bool = False,
    scan: dict[str, CellState] | None = None,
) -> RunSummary:
    """Run every runnable, unfinished cell of ``grid`` (of this ``shard``); store each as it ends.

    Under torchrun every rank runs every cell together (data-parallel); rank 0 decides what
    is finished and alone writes results. Workers sharing the results folder split the cells
    through per-cell claims: a cell claimed by another live worker is looked at again later
    (every ``CLAIM_POLL_S``), and taken over if that worker dies.

    ``checked``: the caller has run :func:`preflight` on these cells (else it runs here). ``scan``:
    the caller's :meth:`ResultStore.scan` of the runnable cells (else the store is scanned here,
    once); a cell it found finished is not looked at again.
    """
    store = ResultStore(results_dir)
    planned = cells if cells is not None else grid.cells(only)
    if shard is not None:
        planned = shard_cells(planned, shard)
    if not checked:
        preflight(planned)
    results_dir.mkdir(parents=True, exist_ok=True)
    if D.is_main():  # leftovers of writers killed mid-write (a killed pretraining checkpoint can be large)
        for folder in (results_dir, ctx.pretrain_dir, ctx.cache_dir / "cells"):
            clean_stale_temporaries(folder)
    summary = RunSummary()
    runtime_skips: dict[str, str] = {}
    summary.outcomes.extend(
        CellOutcome(p.cell, OutcomeStatus.SKIPPED, reason=p.reason)
        for p in planned
        if p.status == PlanStatus.SKIPPED
    )
    write_skipped(store, planned)
    queue = deque(p for p in planned if p.status == PlanStatus.RUN)
    if scan is None and not overwrite and D.is_main():
        scan = store.scan(p.cell.cell_id for p in queue)
    finished = {i for i, state in (scan or {}).items() if state == CellState.OK}
    waited: dict[
        str, tuple[int, int] | None
    ] = {}  # cells found claimed by another worker → their record then
    busy_in_a_row, i = 0, 0
    while queue:
        p = queue.popleft()
        cell = p.cell
        claim = store.claim(cell.cell_id)
        decision = D.broadcast_object(
            _decide(store, claim, cell.cell_id, overwrite, waited, finished) if D.is_main() else None
        )
        if decision == Decision.BUSY:
            queue.append(p)
            busy_in_a_row += 1
            if busy_in_a_row >= len(queue):  # every cell left is another worker's: wait a little
                time.sleep(CLAIM_POLL_S)
                busy_in_a_row = 0
            continue
        busy_in_a_row = 0
        targets = X.external_targets(cell, p.external)
        if decision in (Decision.DONE, Decision.ELSEWHERE):
            outcome = CellOutcome(
                cell, OutcomeStatus.DONE_BEFORE if decision == Decision.DONE else OutcomeStatus.ELSEWHERE
            )
            if (
                decision == Decision.DONE and targets
            ):  # evaluate_on gained a target, or a run was killed before writing one
                try:
                    outcome.reason = complete_external(cell, targets, ctx, store)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as e:  # the finished cell stays as it is; the grid goes on
                    if isinstance(e, OSError) and e.errno in ENVIRONMENT_ERRNOS:
                        raise
                    outcome.reason = f"external predictions failed: {type(e).__name__}: {e}"
        else:
            outcome = _run_claimed(cell, ctx, store, claim, planned, runtime_skips, on_cell_start, i, targets)
        summary.outcomes.append(outcome)
        if on_cell_end:
            on_cell_end(i, cell, outcome)
        i += 1
    return summary


def _run_claimed(
    cell: CellConfig,
    ctx: RunContext,
    store: ResultStore,
    claim: FileLock,
    planned: list[PlannedCell],
    runtime_skips: dict[str, str],
    on_cell_start: Callable[[int, CellConfig], Any] | None,
    i: int,
    targets: list[X.ExternalTarget] | None = None,
) -> CellOutcome:
    """Run one cell this worker has claimed and store its record (a failure's too); the claim
    is released whatever happens (``on_cell_start(i, cell)`` runs under that guarantee too).
    A cell that skips itself joins ``runtime_skips``."""
    t0 = time.perf_counter()
    try:
        if on_cell_start:
            on_cell_start(i, cell)
        external = ExternalRun(targets) if targets else None
        with (
            D.cell_scope()
        ):  # under torchrun: a failure on one rank fails the cell on every rank, nobody hangs
            record, predictions = run_cell(cell, ctx, external) if external else run_cell(cell, ctx)
        stored = _write_claimed(store, claim, record, predictions) if D.is_main() else True
        if external is not None and stored and D.is_main():  # after the cell's record: they name its write
            write_id = store.cell_write_id(cell.cell_id)
            for rec, preds in external.results:
                store.write_external({**rec, "cell_write_id": write_id}, preds)
        outcome = CellOutcome(
            cell,
            OutcomeStatus.OK,
            time.perf_counter() - t0,
            record.macro_auroc,
            reason=_external_summary(external),
        )
        if not stored:
            outcome = CellOutcome(
                cell,
                OutcomeStatus.FAILED,
                outcome.seconds,
                reason=f"claim {claim.path} taken over by {claim.owner()}; not stored",
            )
    except SkipCell as e:
        runtime_skips[cell.cell_id] = str(e)
        write_skipped(store, planned, runtime_skips)
        outcome = CellOutcome(cell, OutcomeStatus.SKIPPED, time.perf_counter() - t0, reason=str(e))
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:  # the cell failed; record why and go on with the grid
        if isinstance(e, OSError) and e.errno in ENVIRONMENT_ERRNOS:
            # full disk, read-only, permission: every next cell would fail alike (and so would
            # its record): stop
            raise
        reason = f"{type(e).__name__}: {e}"
        record = base_record(cell, ctx.device).replace(
            failure_reason=reason, data_json=json.dumps({"traceback": traceback.format_exc(limit=8)})
        )
        if D.is_main():
            _write_claimed(store, claim, record, None)
        outcome = CellOutcome(cell, OutcomeStatus.FAILED, time.perf_counter() - t0, reason=reason)
    finally:
        if D.is_main():
            claim.release()
    return outcome


def _decide(
    store: ResultStore,
    claim: FileLock,
    cell_id: str,
    overwrite: bool,
    waited: dict,
    finished: Collection[str] = (),
) -> Decision:
    """What this worker does with a cell (then, for RUN, it holds the claim):

    ========================================  =========
    found                                     decision
    ========================================  =========
    ok in the run's scan (``finished``)       DONE
    claimed by another worker                 BUSY (``waited`` notes its record's stamp)
    under our claim: stored since BUSY        ELSEWHERE (ok or failed: a failure is retried by a rerun)
    under our claim: ok (not ``overwrite``)   DONE
    otherwise (damaged: quarantined first)    RUN
    ========================================  =========

    ``waited`` maps each cell found claimed to its record file's (mtime, size) at that moment.
    """
    if (
        not overwrite and cell_id in finished and cell_id not in waited
    ):  # the run's one scan: the common resume case
        return Decision.DONE
    if not claim.try_acquire():
        waited.setdefault(cell_id, _record_stamp(store, cell_id))
        return Decision.BUSY
    stored_since = cell_id in waited and _record_stamp(store, cell_id) != waited[cell_id]
    state = store.quarantine_damaged(
        cell_id
    ).state  # under the claim (a damaged cell is quarantined: pending)
    if stored_since and state in (CellState.OK, CellState.FAILED):
        claim.release()
        return Decision.ELSEWHERE
    if not overwrite and state == CellState.OK:
        claim.release()
        return Decision.DONE
    return Decision.RUN


def _record_stamp(store: ResultStore, cell_id: str) -> tuple[int, int] | None:
    try:
        st = store.record_path(cell_id).stat()
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size


def _write_claimed(
    store: ResultStore, claim: FileLock, record: CellRecord, predictions: pd.DataFrame | None
) -> bool:
    """Store a cell only if this worker still holds its claim (else another one took it over): True if
    stored."""
    if not claim.held():
        return False
    store.write(record, predictions)
    return True
