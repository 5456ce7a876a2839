"""Experiment trackers: TensorBoard (default), MLflow, Weights & Biases; one module each.

``chexbench run --log tensorboard,mlflow,wandb`` (or ``[settings] log = "…"`` in the grid; ``none``
turns logging off) chooses them. Each is a class with ``package`` (the import it needs),
``run(name, kind, params, fresh)`` → a run with ``log_scalars(step, scalars)``, and ``close()``;
adding a tracker is one module plus a line in ``TRACKERS``. None of them is a dependency of
chexbench: each is an extra (``pip install 'chexbench[tensorboard]'``, ``[mlflow]``, ``[wandb]``).

What "TensorBoard by default" means without the ``tensorboard`` package: a default is not a
request, so the run goes on without it after one warning naming the extra; a tracker asked for
by name (``--log`` or the grid) that is not installed stops the run before any cell starts.

Where they write (inside the results folder unless the user points them elsewhere):
    tensorboard   RESULTS/tensorboard/cells/<cell id>/, RESULTS/tensorboard/pretrain/<run id>/
    mlflow        a local file store, RESULTS/mlruns (``MLFLOW_TRACKING_URI`` overrides), experiment
                  ``chexbench`` (``MLFLOW_EXPERIMENT_NAME`` overrides); one MLflow run per cell / pretraining
                  run
    wandb         offline, RESULTS/wandb (``WANDB_MODE=online`` to upload; ``WANDB_PROJECT``, default
    chexbench)
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from chexbench.core.errors import ConfigError
from chexbench.core.tracking import NullTracker, RunLog, Tracker

#: name → "module:class" (imported only when chosen, so an absent package costs nothing)
TRACKERS: dict[str, str] = {
    "tensorboard": "chexbench.tracking.tensorboard_log:TensorBoardTracker",
    "mlflow": "chexbench.tracking.mlflow_log:MlflowTracker",
    "wandb": "chexbench.tracking.wandb_log:WandbTracker",
}
#: the import each tracker needs, and the extra that installs it
PACKAGES: dict[str, tuple[str, str]] = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "mlflow": ("mlflow", "mlflow"),
    "wandb": ("wandb", "wandb"),
}
DEFAULT: tuple[str, ...] = ("tensorboard",)
OFF = "none"


def parse_log(spec: str | Sequence[str] | None, where: str = "--log") -> list[str] | None:
    """``"tensorboard,mlflow"`` / ``["mlflow"]`` → names; ``"none"`` or ``""`` → []; None → None (not set)."""
    if spec is None:
        return None
    if isinstance(spec, str):
        items = [s.strip() for s in spec.split(",")]
    elif isinstance(spec, (list, tuple)) and all(isinstance(s, str) for s in spec):
        items = [s.strip() for s in spec]
    else:
        raise ConfigError(f"{where}: expected a comma-separated string of trackers, got {spec!r}")
    items = [s for s in items if s]
    if items == [OFF] or not items:
        return []
    for name in items:
        if name not in TRACKERS:
            choices = ", ".join([*TRACKERS, OFF])
            raise ConfigError(f"{where}: unknown tracker '{name}' (choose from {choices}, comma-separated)")
    return list(dict.fromkeys(items))


def missing_package(name: str) -> str | None:
    """Why tracker ``name`` cannot run here ("" → it can): the package it needs is not installed."""
    module, extra = PACKAGES[name]
    if importlib.util.find_spec(module) is None:
        return f"the '{module}' package is not installed (pip install 'chexbench[{extra}]')"
    return None


class MultiTracker:
    """Several trackers as one: each run is opened in all of them, each scalar goes to all."""

    def __init__(self, trackers: Sequence[Tracker]):
        self.trackers = list(trackers)

    @contextmanager
    def run(self, name: str, kind: str, params: Mapping[str, Any], fresh: bool = True) -> Iterator[RunLog]:
        with ExitStack() as stack:
            logs = [stack.enter_context(t.run(name, kind, params, fresh)) for t in self.trackers]
            yield _Fanout(logs)

    def close(self) -> None:
        for t in self.trackers:
            t.close()


class _Fanout:
    def __init__(self, logs: list[RunLog]):
        self.logs = logs

    def log_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        clean = {k: float(v) for k, v in scalars.items() if v is not None}
        for log in self.logs:
            log.log_scalars(step, clean)


def build_tracker(
    names: Sequence[str] | None, results_dir: Path, warn: Callable[[str], None], extra: Sequence[Tracker] = ()
) -> Tracker:
    """The trackers ``names`` (None: the default) writing under ``results_dir``, plus ``extra``.

    A tracker asked for by name whose package is missing is a ConfigError; the default one is
    dropped with one warning."""
    explicit = names is not None
    chosen: list[Tracker] = list(extra)
    for name in names if explicit else DEFAULT:
        why = missing_package(name)
        if why:
            if explicit:
                raise ConfigError(f"--log {name}: {why}")
            warn(f"{name} logging is off: {why}; --log none silences this")
            continue
        module, cls = TRACKERS[name].split(":")
        chosen.append(getattr(importlib.import_module(module), cls)(Path(results_dir)))
    if not chosen:
        return NullTracker()
    return chosen[0] if len(chosen) == 1 else MultiTracker(chosen)
