"""The protocol contract: train on the train split, select on validation, predict test.

Model selection uses the validation split only; the test split is touched once, after
selection, to produce the stored predictions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from chexbench.bench.cell_model import head_preflight

if TYPE_CHECKING:
    from chexbench.backbones.base import Backbone
    from chexbench.config import CellConfig
    from chexbench.core.context import RunContext
    from chexbench.datasets.celldata import CellData
    from chexbench.strategies.base import InitRecord


@dataclass
class ProtocolResult:
    valid_scores: np.ndarray  # (N_valid, L) probabilities of the selected model
    test_scores: np.ndarray  # (N_test, L)
    selected_epoch: int
    val_macro_auroc: float
    history: list[dict[str, Any]] = field(default_factory=list)  # one dict per epoch
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    images_per_second: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class Protocol:
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    options: ClassVar[dict[str, Any]] = {}

    def invalid_reason(self, cell: CellConfig) -> str | None:
        return None

    def preflight(self, cell: CellConfig) -> None:
        """Checks without training (the agreed pre-run hook): a top-K head whose scorer options
        differ from the ``*_topk`` pretraining's is refused with one line."""
        head_preflight(cell, self.name)

    def run(self, backbone: Backbone, data: CellData, cell: CellConfig, ctx: RunContext, init: InitRecord) -> ProtocolResult:
        raise NotImplementedError
