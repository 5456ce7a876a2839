"""The tiny grid and the `chexbench run` command line of the multi-process end-to-end tests
(workers sharing a folder, shards, submitted job arrays)."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def tiny_grid(
    folder: Path, name: str, strategies: tuple[str, ...] = ("scratch",), seeds: tuple[int, ...] = (0, 1, 2, 3)
) -> Path:
    """``folder/<name>.toml``: fine-tuning of resnet_tiny on a small CheXpert phantom, one cell per strategy ×
    seed."""
    path = folder / f"{name}.toml"
    path.write_text(
        f"""name = "{name}"
[axes]
strategy = {list(strategies)!r}
backbone = ["resnet_tiny"]
dataset = ["phantom-chexpert"]
protocol = ["finetune"]
seed = {list(seeds)!r}
[settings]
image_size = 32
epochs = 1
warmup_epochs = 0.5  # a warmup as long as the run is refused
batch_size = 16
max_train_images = 48
max_eval_images = 48
[dataset.phantom-chexpert]
patients = 120
size = 64
""".replace("'", '"')
    )
    return path


def run_command(grid: Path, results: Path, *extra: str) -> list[str]:
    """``python -m chexbench run`` of ``grid`` into ``results`` on the CPU (``extra``: e.g. ``--shard
    1/3``)."""
    return [
        sys.executable,
        "-m",
        "chexbench",
        "run",
        "--grid",
        str(grid),
        "--results",
        str(results),
        "--device",
        "cpu",
        *extra,
    ]


def worker_env() -> dict[str, str]:
    """One OpenMP thread per process (several run at once on two cores); wide output lines."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
