"""Weights & Biases: one W&B run per cell / pretraining run, offline unless ``WANDB_MODE=online``.

Offline runs are written to RESULTS/wandb and uploaded later with ``wandb sync`` if wanted.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class WandbTracker:
    def __init__(self, results_dir: Path):
        self.dir = Path(results_dir) / "wandb"

    @contextmanager
    def run(self, name: str, kind: str, params: Mapping[str, Any], fresh: bool = True) -> Iterator[_Run]:
        import wandb

        self.dir.mkdir(parents=True, exist_ok=True)
        run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "chexbench"),
            name=name,
            group=kind,
            job_type=kind,
            config=dict(params),
            dir=str(self.dir),
            mode=os.environ.get("WANDB_MODE", "offline"),
            reinit=True,
        )
        exit_code = 1
        try:
            yield _Run(run)
            exit_code = 0
        finally:
            run.finish(exit_code=exit_code)

    def close(self) -> None:
        pass


class _Run:
    def __init__(self, run):
        self.run = run

    def log_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        self.run.log(dict(scalars), step=int(step))
