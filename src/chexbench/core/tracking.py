"""Experiment tracking as a training loop sees it: a run to log scalars to, and nothing else.

A loop logs with ``ctx.run_log.log_scalars(step, {"train/loss": …, "train/lr": …})``; which
trackers receive it (TensorBoard, MLflow, W&B, the live status file) is the business of
``chexbench.tracking``, chosen by ``chexbench run --log`` or ``[settings] log``. Logging only
reads numbers that are already computed: it draws no random number and changes no cell's
config, so no result and no cell id depends on it.

Scalar names are ``section/name``; the built-in ones:

    train/loss, train/lr, train/images_per_second, val/macro_auroc      every cell, per epoch
    pretrain/loss, pretrain/lr, pretrain/images_per_second,             every pretraining run,
    pretrain/probe_auroc (epochs with a kNN probe)                      per epoch
    monitor/embed_std_ratio, monitor/embed_rank, monitor/feature_*,     every pretraining run,
    monitor/teacher_entropy (DINO)                                      per epoch (collapse monitors)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol


class RunLog(Protocol):
    """One run's curves (a cell or a pretraining run): a point per scalar name and step."""

    def log_scalars(self, step: int, scalars: Mapping[str, float]) -> None: ...


class Tracker(Protocol):
    """Opens runs. ``name``: ``cells/<cell id>`` or ``pretrain/<run id>``; ``kind``: ``cell`` | ``pretrain``;
    ``params``: what the run is (shown beside its curves); ``fresh``: False when the run resumes an
    earlier one (its curves continue), True when earlier curves of the same name are stale."""

    def run(self, name: str, kind: str, params: Mapping[str, Any], fresh: bool = True): ...

    def close(self) -> None: ...


class NullRunLog:
    def log_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        pass


class NullTracker:
    """Logs nothing (the default of a bare RunContext, and of every rank but rank 0)."""

    @contextmanager
    def run(self, name: str, kind: str, params: Mapping[str, Any], fresh: bool = True) -> Iterator[RunLog]:
        yield NullRunLog()

    def close(self) -> None:
        pass


class CountingRunLog:
    """Passes scalars on and counts the calls (the runner replays a protocol's history when it logged
    none)."""

    def __init__(self, inner: RunLog):
        self.inner = inner
        self.calls = 0

    def log_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        self.calls += 1
        self.inner.log_scalars(step, scalars)
