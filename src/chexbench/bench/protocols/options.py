"""Typed options of the built-in protocols (``[protocol.linear]``, ``[protocol.finetune]``).

The defaults mirror :data:`chexbench.bench.cell_model.HEAD_OPTIONS` and each protocol's
``options`` dict (a test keeps them equal); types, choices and bounds are checked when a grid
is read, so a typo stops the grid before any cell runs.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from chexbench.spec.options import Options


class HeadOptions(Options):
    """The classification head, the saved model and the localization at the end of a cell."""

    head: Literal["linear", "topk", "topk_classwise"] = Field(
        "linear", description="pooled features → linear; a ViT's top-K patch pooling → linear; or per-class top-K patch logits"
    )
    topk: int | float = Field(0.25, gt=0, description="K of head = topk / topk_classwise: a count (int ≥ 1) or a fraction of the tokens")
    wildcat_alpha: float = Field(0.0, ge=0, description="head = topk_classwise: weight of each class's K lowest patch logits (WILDCAT)")
    classwise_source: Literal["tokens", "local"] = Field(
        "tokens", description="head = topk_classwise: per-class patch logits from the final tokens, or local (a local_kernel × local_kernel-token convolution of the patch embeddings; finetune only)"
    )
    local_hidden: int = Field(64, ge=1, description="head = topk_classwise, classwise_source = local: channels of the local convolution")
    local_kernel: int = Field(3, ge=1, description="head = topk_classwise, classwise_source = local: width of the local convolution in tokens (odd; 1 = each patch on its own)")
    local_offset: bool = Field(True, description="head = topk_classwise, classwise_source = local: add the class token's per-class offset (false: local evidence alone)")
    scorer_hidden: int = Field(0, ge=0, description="hidden width of the patch scorer, 0 = max(16, D // 4)")
    topk_temperature: float = Field(1.0, gt=0, description="softmax temperature over the kept tokens' scores")
    save_model: Literal["auto", "true", "false"] | bool = Field(
        "auto", description="write the selected model to <results>/models: auto (small models), true, false"
    )
    localize: bool = Field(True, description="pointing game and deletion AUC when the test split has boxes")
    localize_images: int = Field(64, ge=1, description="test images with boxes used for localization")
    deletion_steps: int = Field(10, ge=0, description="steps of the deletion curve, 0 = no deletion AUC")
    pointing_tolerance: Literal["standard"] | float = Field(
        "standard", description="tolerant pointing game: standard (15 px at 224 px, scaled) or pixels ≥ 0"
    )


class FinetuneOptions(HeadOptions):
    """End-to-end fine-tuning."""

    augment: bool = Field(True, description="light train-time augmentation (crop, rotation, intensity)")
    sync_bn: bool = Field(True, description="SyncBatchNorm across ranks under torchrun on CUDA")


class LinearOptions(HeadOptions):
    """Linear probe on frozen features."""

    lr_grid: list[float] = Field([1e-3, 1e-2], min_length=1, description="learning rates tried; the best on validation is kept")
    l2_grid: list[float] = Field(
        [0.0, 1e-4, 1e-3, 1e-2, 1e-1], min_length=1, description="L2 penalties tried; the best on validation is kept"
    )
