"""Shared fixtures of the strategy tests: a synthetic labeled image set and a RunContext whose
pretraining pool / probe data come from it (the dataset layer is replaced, not the strategy code)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from chexbench.core.context import RunContext
from chexbench.datasets.celldata import CellData, SplitData
from chexbench.spec.cell import CellConfig
from chexbench.spec.settings import Settings

LABELS = ["Cardiomegaly", "Pleural Effusion", "Support Devices"]


def synth_images(n: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (n, size, size) and float32 (n, 3): a bright disk, a dark lower band and a
    vertical bar appear with their labels over a smooth random background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    y = (rng.random((n, 3)) < 0.4).astype(np.float32)
    imgs = np.empty((n, size, size), np.float32)
    for i in range(n):
        img = (
            0.4
            + 0.1 * np.sin(xx * rng.uniform(2, 6) + rng.uniform(0, 6))
            + 0.05 * rng.standard_normal((size, size))
        )
        if y[i, 0]:
            cx, cy = rng.uniform(0.3, 0.7, 2)
            r = rng.uniform(0.1, 0.2)
            img += 0.4 * (((xx - cx) ** 2 + (yy - cy) ** 2) < r * r)
        if y[i, 1]:
            img -= 0.3 * (yy > rng.uniform(0.6, 0.8))
        if y[i, 2]:
            img += 0.3 * (np.abs(xx - rng.uniform(0.2, 0.8)) < 0.06)
        imgs[i] = img
    return (np.clip(imgs, 0, 1) * 255).astype(np.uint8), y


def split_data(n: int, size: int, seed: int) -> SplitData:
    images, targets = synth_images(n, size, seed)
    ids = np.array([f"s{seed}_{i}" for i in range(n)])
    return SplitData(images, targets, ids, np.array([f"p{seed}_{i}" for i in range(n)]))


def cell_data(n_train: int = 96, n_eval: int = 64, size: int = 32) -> CellData:
    return CellData(
        list(LABELS),
        list(LABELS),
        split_data(n_train, size, 1),
        split_data(n_eval, size, 2),
        split_data(n_eval, size, 3),
        {},
    )


@pytest.fixture
def fake_source(monkeypatch):
    """Replace pretrain_pool / build_cell_data by synthetic data; returns a dict of call counts."""
    import chexbench.datasets.celldata as celldata

    calls = {"pool": 0, "data": 0}

    def pool(cell: CellConfig, max_images: int = 0):
        calls["pool"] += 1
        n = max_images or 64
        images, _ = synth_images(n, cell.settings.image_size, seed=100 + cell.effective_pretrain_seed)
        return images, np.array([f"u{i}" for i in range(n)])

    def data(cell: CellConfig):
        calls["data"] += 1
        return cell_data(48, 32, cell.settings.image_size)

    monkeypatch.setattr(celldata, "pretrain_pool", pool)
    monkeypatch.setattr(celldata, "build_cell_data", data)
    return calls


@pytest.fixture
def one_thread():
    """Small CPU models run fastest on one thread (no sync cost; decisive on a shared, busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def ctx(tmp_path: Path, one_thread) -> RunContext:
    return RunContext(
        device=torch.device("cpu"), results_dir=tmp_path / "results", cache_dir=tmp_path / "cache"
    )


def tiny_cell(strategy: str, backbone: str = "resnet_tiny", size: int = 32, **options) -> CellConfig:
    opts = {
        "pretrain_epochs": 2,
        "pretrain_batch_size": 16,
        "proj_dim": 16,
        "proj_hidden_dim": 32,
        "max_pretrain_images": 48,
        "probe_images": 32,
        "pretrain_warmup_epochs": (
            0.0
        ),  # the family recipes' 10 or 40 warmup epochs do not fit a tiny run (refused)
        **options,
    }
    if strategy.startswith("moco"):  # the queue of MoCo's strategies (the others have none)
        opts.setdefault("queue_size", 40)
    return CellConfig(
        strategy=strategy,
        backbone=backbone,
        dataset="phantom-chexpert",
        protocol="linear",
        label_fraction=1.0,
        seed=0,
        settings=Settings(image_size=size, pretrain_source="phantom-nih"),
        strategy_options=opts,
    )
