"""TensorBoard event files: one folder per run under RESULTS/tensorboard (``tensorboard --logdir
RESULTS/tensorboard``)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class TensorBoardTracker:
    def __init__(self, results_dir: Path):
        self.root = Path(results_dir) / "tensorboard"

    @contextmanager
    def run(self, name: str, kind: str, params: Mapping[str, Any], fresh: bool = True) -> Iterator[_Writer]:
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        folder = self.root / name
        if (
            fresh and folder.exists()
        ):  # a rerun (--overwrite, a failed cell retried): its old curves are stale
            shutil.rmtree(folder)
        writer = SummaryWriter(log_dir=str(folder))
        if fresh:
            writer.add_text(
                "config", "```\n" + json.dumps(dict(params), indent=1, sort_keys=True, default=str) + "\n```"
            )
        try:
            yield _Writer(writer)
        finally:
            writer.close()

    def close(self) -> None:
        pass


class _Writer:
    def __init__(self, writer):
        self.writer = writer

    def log_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, global_step=step)
        self.writer.flush()  # a grid runs for days: the curves are readable while it runs
