"""Data-parallel training across processes (``torchrun``): ranks, slices, gathers, DDP.

The design keeps a DDP run equal to a single-process run with the same *global* batch:

- every rank draws the same global index batch and the same augmentation parameters (all
  random streams are seeded identically), builds the global batch's inputs and keeps its
  **contiguous slice** (rank ``r`` of ``w`` keeps rows ``r·B/w … (r+1)·B/w``);
- losses are scaled so that DDP's gradient average equals the gradient of the global-batch
  loss (fine-tuning: masked BCE divided by the global count of unmasked targets);
- SimCLR's negatives come from every rank (:func:`gather_with_grad`: all-gather whose
  backward all-reduces, so each embedding also receives the gradient it gets as another
  rank's negative); MoCo's keys from every rank enter the queue in rank order, so all ranks
  keep identical queues, and keys are computed on a batch shuffled *across* ranks
  (shuffle-BN, He et al. 2020 sec. 3.3);
- evaluation predicts a slice of the images per rank and gathers them in order;
- rank 0 alone writes records, predictions, checkpoints and caches.

BatchNorm: fine-tuning and SimCLR convert BN to SyncBatchNorm on CUDA (SimCLR's global BN);
torch has no SyncBatchNorm on CPU, so gloo runs keep per-rank statistics. MoCo never uses
SyncBN (it would reopen the shortcut shuffle-BN closes).

Outside torchrun every helper degrades to the single-process identity. Starting the ranks (the
torchrun relaunch of ``run --gpus N``) is the harness's: :mod:`chexbench.bench.launch`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import gc
import os
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from chexbench.core.errors import SkipCell
from chexbench.core.lock import FileLock

#: minutes a collective may wait (data preparation by one rank can take a while)
DEFAULT_TIMEOUT_MIN = 60
#: minutes a collective inside a cell may wait for the other ranks (see :func:`cell_scope`)
DEFAULT_CELL_TIMEOUT_MIN = 10

#: the process group of the cell in flight (:func:`cell_scope`); None: the default group
_cell_group: Any = None
#: cells entered so far (the same count on every rank): names the cell's failure flag in the store
_cell_index = 0


def _group() -> Any:
    return _cell_group


# -- who am I ---------------------------------------------------------------------------
def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True on rank 0 (and in a single process): the one that writes files."""
    return rank() == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def job_id() -> str:
    """An id shared by the ranks of one torchrun job (and no other job)."""
    env = os.environ
    return f"{env.get('TORCHELASTIC_RUN_ID', '')}@{env.get('MASTER_ADDR', '')}:{env.get('MASTER_PORT', '')}"


def init_from_env(device: torch.device) -> torch.device:
    """Join the process group torchrun describes in the environment; returns this rank's device.

    NCCL on CUDA (one GPU per rank, ``LOCAL_RANK``), gloo on CPU. A no-op outside torchrun.
    """
    if not launched_by_torchrun() or is_distributed():
        return device
    timeout = _dt.timedelta(minutes=float(os.environ.get("CHEXBENCH_DDP_TIMEOUT_MIN", DEFAULT_TIMEOUT_MIN)))
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", timeout=timeout, device_id=device)
    else:
        dist.init_process_group("gloo", timeout=timeout)
    return device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier(group=_group())


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (a decision every rank must share)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, group=_group())
    return box[0]


def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Rank ``src``'s buffers (BatchNorm running statistics) on every rank, in place; every rank must call.

    Data-parallel training keeps BN statistics per rank (``broadcast_buffers=False``; no SyncBN on
    the CPU or when switched off): before an evaluation split over ranks, each rank would predict its
    rows with its own statistics — stored scores of several models, none of them the saved one."""
    if not is_distributed():
        return
    for buf in module.buffers():
        dist.broadcast(buf.data, src=src, group=_group())


def mean_over_ranks(x: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over ranks (a new tensor; ``x`` itself in a single process)."""
    if not is_distributed():
        return x
    y = x.detach().clone()
    dist.all_reduce(y, op=dist.ReduceOp.SUM, group=_group())
    return y / world_size()


@contextlib.contextmanager
def exclusive_across_jobs(path: str | Path, poll_s: float = 0.2) -> Iterator[None]:
    """A :class:`~chexbench.core.lock.FileLock` on ``path`` held by the whole torchrun job.

    Rank 0 takes the lock (waiting for other jobs, e.g. other shards); the other ranks poll
    until the lock names their job, so nobody waits inside a collective (which would time
    out during a long wait). Everyone leaves together. In one process: just the lock.
    """
    if not is_distributed():
        with FileLock(path):
            yield
        return
    me = job_id()
    lock = FileLock(path, info={"job": me}) if is_main() else None
    if lock is not None:
        lock.acquire()
    else:
        watcher = FileLock(path)
        while (watcher.owner() or {}).get("job") != me:
            if peer_failed():  # rank 0 will never take the lock: it failed (cell_scope)
                raise CellFailedOnRank(f"another rank failed while this one waited for {path}")
            time.sleep(poll_s)
    try:
        barrier()
        yield
    finally:
        barrier()
        if lock is not None:
            lock.release()


# -- slices of a global batch -------------------------------------------------------------
def rank_range(n: int, r: int | None = None, w: int | None = None) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of ``n`` global rows that rank ``r`` of ``w`` owns (contiguous, sizes differ by ≤
    1)."""
    r = rank() if r is None else r
    w = world_size() if w is None else w
    return r * n // w, (r + 1) * n // w


def local_rows(x: Any) -> Any:
    """This rank's contiguous slice of a global batch (array or tensor, first dimension)."""
    if not is_distributed():
        return x
    lo, hi = rank_range(len(x))
    return x[lo:hi]


def all_gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's ``x`` (n_r, ...) in rank order (n_r may differ); no gradient."""
    if not is_distributed():
        return x
    sizes = [torch.zeros((), dtype=torch.long, device=x.device) for _ in range(world_size())]
    dist.all_gather(sizes, torch.tensor(x.shape[0], device=x.device), group=_group())
    n_max = int(max(s.item() for s in sizes))
    padded = torch.zeros((n_max, *x.shape[1:]), dtype=x.dtype, device=x.device)
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous(), group=_group())
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes, strict=True)])


def _backend_device() -> torch.device:
    return (
        torch.device("cuda", torch.cuda.current_device())
        if dist.get_backend() == "nccl"
        else torch.device("cpu")
    )


def gather_cpu_rows(x: torch.Tensor) -> torch.Tensor:
    """:func:`all_gather_rows` of a CPU tensor (through the backend's device), back on the CPU."""
    if not is_distributed():
        return x
    return all_gather_rows(x.to(_backend_device())).cpu()


def gather_numpy_rows(x: np.ndarray) -> np.ndarray:
    """:func:`all_gather_rows` for NumPy arrays (evaluation predictions)."""
    if not is_distributed():
        return x
    return gather_cpu_rows(torch.as_tensor(x)).numpy()


class _GatherWithGrad(torch.autograd.Function):
    """All-gather (equal shapes) whose backward sums the incoming gradients over ranks and
    returns this rank's slice — the gradient every rank's loss puts on this rank's rows."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous(), group=_group())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=_group())
        n = grad.shape[0] // dist.get_world_size()
        r = dist.get_rank()
        return grad[r * n : (r + 1) * n]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Every rank's ``x`` (b, D) concatenated in rank order (w·b, D), differentiable w.r.t. the local part."""
    if not is_distributed():
        return x
    return _GatherWithGrad.apply(x)


@torch.no_grad()
def all_gather_keys(k: torch.Tensor) -> torch.Tensor:
    """MoCo: every rank's keys (b, D) in rank order (w·b, D), for one queue shared by all ranks."""
    return all_gather_rows(k.contiguous())


# -- models ---------------------------------------------------------------------------------
def has_batch_norm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def wrap_ddp(module: nn.Module, device: torch.device, sync_bn: bool = True) -> nn.Module:
    """``DistributedDataParallel(module)`` under torchrun (SyncBN on CUDA if asked); else ``module``.

    Buffers are not broadcast each step (MoCo's queue is identical on every rank by
    construction; BN running statistics stay per rank and rank 0's are saved).
    """
    if not is_distributed():
        return module
    if sync_bn and device.type == "cuda" and has_batch_norm(module):
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module, process_group=_group())
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        module, device_ids=ids, broadcast_buffers=False, process_group=_group()
    )


class LossForward(nn.Module):
    """Routes ``forward(*args)`` to ``model.loss(*args)``, so DDP's hooks see the loss computation."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *args: Any) -> torch.Tensor:
        return self.model.loss(*args)


# -- one cell, agreed by every rank ---------------------------------------------------------
class CellFailedOnRank(RuntimeError):
    """The cell failed on some rank; raised on every rank with that rank's reason."""


def _is_collective_error(e: BaseException) -> bool:
    """An error a rank gets because *another* rank left a collective (not the cause)."""
    text = str(e)
    return isinstance(e, (CellFailedOnRank, getattr(dist, "DistError", ()))) or any(
        m in text
        for m in (
            "Connection closed by peer",
            "Connection reset by peer",
            "Timed out waiting",
            "gloo",
            "NCCL",
        )
    )


@contextlib.contextmanager
def cell_scope() -> Iterator[None]:
    """Run one cell so that no rank can hang the others; every rank leaves with the same outcome.

    The cell's collectives (everything in this module, DDP, SyncBN) run on a fresh process group
    with a short timeout (``CHEXBENCH_CELL_TIMEOUT_MIN``, default :data:`DEFAULT_CELL_TIMEOUT_MIN`).
    A rank that raises drops its references to that group and destroys it: with gloo its peers'
    pending collectives fail at once ("connection closed"); with NCCL the group is aborted and the
    peers' collectives end at the short timeout, not the hour of the default group. Then, on the
    default group (idle during cells), the ranks gather every rank's outcome: if any rank failed,
    every rank raises :class:`CellFailedOnRank` naming the first cause (errors that are only a
    consequence of a peer leaving, like "connection closed", are not taken as the cause), or
    :class:`~chexbench.core.errors.SkipCell` if that cause was a skip. Rank 0 then records the cell
    once and every rank goes on with the next cell. Outside torchrun: a no-op.
    """
    if not is_distributed():
        yield
        return
    global _cell_group, _cell_index
    _cell_index += 1
    minutes = float(os.environ.get("CHEXBENCH_CELL_TIMEOUT_MIN", DEFAULT_CELL_TIMEOUT_MIN))
    _cell_group = dist.new_group(timeout=_dt.timedelta(minutes=minutes))
    mine: dict[str, Any] | None = None
    try:
        yield
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # noqa: BLE001 - every failure is agreed on, then re-raised on all ranks
        mine = {
            "type": type(e).__name__,
            "message": str(e).splitlines()[0] if str(e) else "",
            "skip": isinstance(e, SkipCell),
            "consequence": _is_collective_error(e),
            "time": time.time(),
            "traceback": traceback.format_exc(limit=8),
        }
        traceback.clear_frames(e.__traceback__)  # the frames hold the DDP model, which holds the group
        del e
        dist.distributed_c10d._get_default_store().set(
            _failure_key(), "1"
        )  # for ranks polling outside collectives
    finally:
        group, _cell_group = _cell_group, None
        _close_group(group, failed=mine is not None)
        del group
    outcomes: list[dict[str, Any] | None] = [None] * world_size()
    dist.all_gather_object(outcomes, mine)  # the default group: no rank is inside a cell collective now
    failures = [(r, o) for r, o in enumerate(outcomes) if o is not None]
    if not failures:
        return
    r, cause = min(failures, key=lambda ro: (ro[1]["consequence"], ro[1]["time"]))
    if cause["skip"]:
        raise SkipCell(cause["message"])
    raise CellFailedOnRank(f"rank {r} of {world_size()}: {cause['type']}: {cause['message']}")


def _failure_key() -> str:
    return f"chexbench/cell/{_cell_index}/failed"


def peer_failed() -> bool:
    """Inside :func:`cell_scope`: whether another rank has already failed this cell (for loops
    that wait outside a collective, such as :func:`exclusive_across_jobs`'s polling)."""
    if not is_distributed() or _cell_group is None:
        return False
    return dist.distributed_c10d._get_default_store().check([_failure_key()])


def _close_group(group: Any, failed: bool) -> None:
    """Destroy the cell's group; after a failure make sure its connections close (peers unblock)."""
    if group is None:
        return
    if failed:
        gc.collect()  # objects of the failed cell (DDP reducer, buckets) may still reference the group
        if dist.get_backend(group) == "nccl":
            dist.distributed_c10d._abort_process_group(group)
            return
    dist.destroy_process_group(group)
