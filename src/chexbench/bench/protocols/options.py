"""Typed options of the built-in protocols (``[protocol.linear]``, ``[protocol.finetune]``): the
head options every protocol shares (:class:`~chexbench.bench.cell_model.HeadOptions`) plus each
protocol's own. Each protocol's ``options`` are these models' defaults; types, choices and bounds
are checked when a grid is read, so a typo stops the grid before any cell runs.
"""

from __future__ import annotations

from pydantic import Field

from chexbench.bench.cell_model import HeadOptions


class FinetuneOptions(HeadOptions):
    """End-to-end fine-tuning."""

    augment: bool = Field(
        True, description="light augmentation (crop, small rotation, intensity) of the training images"
    )
    sync_bn: bool = Field(
        True,
        description=(
            "synchronize batch-norm statistics across ranks (SyncBatchNorm) under --gpus N / torchrun on CUDA"
        ),
    )


class LinearOptions(HeadOptions):
    """Linear probe on frozen features."""

    lr_grid: list[float] = Field(
        [1e-3, 1e-2],
        min_length=1,
        description="learning rates of the linear probe; the best on validation macro AUROC is kept",
    )
    l2_grid: list[float] = Field(
        [0.0, 1e-4, 1e-3, 1e-2, 1e-1],
        min_length=1,
        description="L2 penalties of the linear probe; the best on validation macro AUROC is kept",
    )
