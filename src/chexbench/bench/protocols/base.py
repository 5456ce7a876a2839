"""The evaluation protocol contract: train on the train split, select on validation, predict test.

Model selection uses the validation split only; the test split is touched once, after
selection, to produce the stored predictions. :meth:`EvaluationProtocol.open_cell` is the
opening every protocol shares (options, fast path, normalization, labels, schedule length).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from chexbench.bench.cell_model import head_preflight
from chexbench.core.errors import DataError
from chexbench.core.inputs import DEFAULT_NORMALIZE
from chexbench.core.optim import Schedule, check_warmup_fits, fit_schedule
from chexbench.spec.options import OptionDefaults, Options

if TYPE_CHECKING:
    from chexbench.backbones.base import Backbone
    from chexbench.core.context import FastPath, RunContext
    from chexbench.datasets.celldata import CellData
    from chexbench.spec.cell import CellConfig
    from chexbench.spec.settings import Settings
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
    #: the selected model as one module, (B, 1, H, W) → logits (B, L) (``settings.evaluate_on`` predicts other
    #: datasets with it); None for a protocol that does not hand it out
    model: torch.nn.Module | None = None


@dataclass
class CellSetup:
    """What every protocol derives from a cell before it trains."""

    opts: dict[str, Any]  # the protocol's options, the cell's over the defaults
    settings: Settings
    ctx: RunContext  # ``compile`` set when the run or the cell's settings ask for it
    normalize: tuple[float, float]  # input normalization of the strategy's weights
    eval_labels: list[str]  # the evaluation labels the model predicts
    n_train: int
    steps_per_epoch: int
    total_steps: int
    generator: torch.Generator  # data order and augmentation draws, seeded by the cell's seed
    #: the learning-rate schedule in steps (warmup, cosine decay); the record stores it
    schedule: Schedule | None = None
    #: the training batches are full ones only (the remainder batch of an epoch is dropped)
    drop_last: bool = False

    @property
    def device(self) -> torch.device:
        return self.ctx.device

    @property
    def fast(self) -> FastPath:
        return self.ctx.fast_path

    @property
    def warmup_steps(self) -> int:
        if self.schedule is not None:
            return self.schedule.warmup_steps
        return round(self.settings.warmup_epochs * self.steps_per_epoch)


class EvaluationProtocol:
    """Base of the evaluation protocols (``finetune``, ``linear``, plugins): how a cell's
    initialized backbone becomes validation-selected test predictions."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: the options a grid may set under [protocol.<name>], each a pydantic field (type, bounds, default,
    #: meaning)
    option_model: ClassVar[type[Options]] = Options
    #: ``{option: default}``, derived from ``option_model``
    options = OptionDefaults()
    #: the protocol trains a head on frozen features (its saved model is a ``ProbeClassifier``)
    freezes_backbone: ClassVar[bool] = False
    #: train on full batches only: an epoch's remainder batch is dropped (``finetune``: a batch of one
    #: or two images would otherwise set BatchNorm's running statistics right before validation)
    drop_last: ClassVar[bool] = False

    def invalid_reason(self, cell: CellConfig) -> str | None:
        return None

    def preflight(self, cell: CellConfig) -> None:
        """Checks without training (the agreed pre-run hook): a warmup not shorter than the run
        (``warmup_epochs`` ≥ ``epochs``), and a top-K head whose scorer options differ from the
        ``*_topk`` pretraining's, are refused with one line."""
        check_warmup_fits(
            cell.settings.warmup_epochs, cell.settings.epochs, warmup_key="warmup_epochs", epochs_key="epochs"
        )
        head_preflight(cell, self.name)

    def steps_per_epoch(self, n_train: int, batch_size: int) -> int:
        """Optimizer steps per epoch over ``n_train`` images. With :attr:`drop_last`, full batches
        only; a train split smaller than one batch is one batch of the whole split per epoch
        (:func:`chexbench.core.inputs.batches`), and a split of one image is refused (a one-image
        batch would set BatchNorm's statistics)."""
        if not self.drop_last:
            return math.ceil(n_train / batch_size)
        if n_train < 2:
            raise DataError(
                f"protocol {self.name}: the train split has {n_train} image after label-fraction sampling; "
                "need at least 2 (a one-image batch would set BatchNorm's statistics)"
            )
        return max(n_train // batch_size, 1)

    def open_cell(self, data: CellData, cell: CellConfig, ctx: RunContext, init: InitRecord) -> CellSetup:
        """The shared opening: options, run context, normalization, labels and schedule length.

        ``settings.compile`` (part of the cell's config, so of its id) and ``run --compile``
        (an execution option) both end in the run context's ``compile`` field.
        """
        s = cell.settings
        n_train = len(data.train.images)
        if n_train == 0:
            raise ValueError("the train split is empty after label-fraction sampling")
        steps_per_epoch = self.steps_per_epoch(n_train, s.batch_size)
        schedule = fit_schedule(
            s.warmup_epochs, s.epochs, steps_per_epoch, warmup_key="warmup_epochs", epochs_key="epochs"
        )
        return CellSetup(
            opts={**self.options, **cell.protocol_options},
            settings=s,
            ctx=dataclasses.replace(ctx, compile=ctx.compile or s.compile),
            normalize=tuple(init.extra.get("normalize", DEFAULT_NORMALIZE)),
            eval_labels=[lbl for lbl in data.eval_labels if lbl in data.labels],
            n_train=n_train,
            steps_per_epoch=steps_per_epoch,
            total_steps=steps_per_epoch * s.epochs,
            generator=torch.Generator().manual_seed(cell.seed),
            schedule=schedule,
            drop_last=self.drop_last,
        )

    def run(
        self, backbone: Backbone, data: CellData, cell: CellConfig, ctx: RunContext, init: InitRecord
    ) -> ProtocolResult:
        raise NotImplementedError
