"""Protocol ``finetune``: train backbone and a linear multi-label head end to end.

BCE with logits over unmasked labels (missing and U-Ignore-uncertain entries carry no
loss), AdamW with linear warmup and cosine decay, one validation pass per epoch; the epoch
with the best validation macro AUROC over the evaluation labels is kept (ties: the
earlier epoch), and only that model predicts the test split. ``head = "topk"`` puts a
patch scorer with top-K pooling between a ViT and the linear layer; ``head = "topk_classwise"``
pools per-class patch logits from each class's own top-K patches (bench/cell_model.py).

Under torchrun the model is trained data-parallel with the same global batch
(:mod:`chexbench.core.distributed`): each rank keeps a contiguous slice of every batch,
BatchNorm is synchronized on CUDA (option ``sync_bn``), and evaluation is split over ranks
and gathered, so every rank selects the same epoch.
"""

from __future__ import annotations

import copy
import math
import time
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from chexbench.bench.cell_model import (
    apply_head,
    finish_cell,
    head_invalid_reason,
    make_classifier,
)
from chexbench.bench.protocols.base import CellSetup, EvaluationProtocol, ProtocolResult
from chexbench.bench.protocols.options import FinetuneOptions
from chexbench.core import distributed as D
from chexbench.core import training as T
from chexbench.core.devices import autocast
from chexbench.core.inference import predict_probs
from chexbench.core.inputs import batches, to_input
from chexbench.core.metrics import macro_auroc
from chexbench.core.optim import OptimizerChoice, build_optimizer, optimizer_record, warmup_cosine
from chexbench.strategies.augment import light_augment

if TYPE_CHECKING:
    from chexbench.backbones.base import Backbone
    from chexbench.core.context import RunContext
    from chexbench.datasets.celldata import CellData
    from chexbench.spec.cell import CellConfig
    from chexbench.strategies.base import InitRecord


FINITE_CHECK_EVERY = T.FINITE_CHECK_EVERY


class Finetune(EvaluationProtocol):
    name = "finetune"
    option_model = FinetuneOptions
    #: ``settings.optimizer = "sgd"`` is Nesterov SGD (momentum 0.9); weight decay on every parameter
    optimizer_choice: ClassVar[OptimizerChoice] = OptimizerChoice(
        momentum=0.9, nesterov=True, decay_norm_and_bias=True
    )
    #: full batches only: the remainder batch of an epoch (as small as one image) would set a CNN's
    #: BatchNorm running statistics, which validation then uses; a train split smaller than one
    #: batch trains on the whole split as one batch per epoch, a split of one image is refused
    drop_last: ClassVar[bool] = True

    def invalid_reason(self, cell: CellConfig) -> str | None:
        return head_invalid_reason(cell, self.name)

    def run(
        self, backbone: Backbone, data: CellData, cell: CellConfig, ctx: RunContext, init: InitRecord
    ) -> ProtocolResult:
        setup = self.open_cell(data, cell, ctx, init)
        s, device, fast = (
            setup.settings,
            setup.device,
            setup.fast,
        )  # bf16 autocast + channels_last on CUDA (see RunContext)
        features, head_notes = apply_head(backbone, setup.opts, init)
        model = make_classifier(features, len(data.labels), setup.opts, self.name).to(device)
        if fast.channels_last:
            model = model.to(memory_format=torch.channels_last)
        # data-parallel under torchrun (SyncBN on CUDA), then optionally compiled; eval uses `model`
        step_model = D.wrap_ddp(model, device, sync_bn=bool(setup.opts["sync_bn"]))
        if fast.compile:
            step_model = torch.compile(step_model)
        opt = build_optimizer(
            model,
            device,
            name=s.optimizer,
            lr=s.lr,
            weight_decay=s.weight_decay,
            choice=self.optimizer_choice,
        )
        sched = warmup_cosine(opt, setup.total_steps, setup.warmup_steps)

        best_auroc, best_epoch, best_state = -math.inf, -1, None
        history: list[dict[str, Any]] = []
        train_seconds = 0.0
        ctx.progress.start("finetune", setup.total_steps)
        for epoch in range(s.epochs):
            t0 = time.perf_counter()
            train_loss, where = self._train_epoch(model, step_model, opt, sched, data, setup, epoch)
            epoch_seconds = time.perf_counter() - t0
            train_seconds += epoch_seconds
            val_scores = predict_probs(
                model, data.valid.images, s.eval_batch_size, device, setup.normalize, s.amp, fast
            )
            T.check_finite_outputs(val_scores, "validation outputs", where)
            val_auroc = macro_auroc(data.valid.targets, val_scores, data.labels, setup.eval_labels)
            history.append({"epoch": epoch, "train_loss": train_loss, "val_macro_auroc": val_auroc})
            ctx.progress.message(f"epoch {epoch}: loss {train_loss:.4f}, val macro AUROC {val_auroc:.3f}")
            ctx.run_log.log_scalars(
                epoch,
                {
                    "train/loss": train_loss,
                    "train/lr": opt.param_groups[0]["lr"],
                    "val/macro_auroc": val_auroc,
                    "train/images_per_second": setup.n_train / max(epoch_seconds, 1e-9),
                },
            )
            score = val_auroc if not math.isnan(val_auroc) else -1.0
            if score > best_auroc:
                best_auroc, best_epoch = score, epoch
                best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        assert best_state is not None
        model.load_state_dict(best_state)
        result = self._predict_selected(model, data, cell, setup, best_epoch, history)
        result.train_seconds = train_seconds
        result.images_per_second = setup.n_train * s.epochs / max(train_seconds, 1e-9)
        result.extra["head_notes"] = head_notes
        return result

    def _train_epoch(
        self,
        model: nn.Module,
        step_model: nn.Module,
        opt: torch.optim.Optimizer,
        sched: torch.optim.lr_scheduler.LRScheduler,
        data: CellData,
        setup: CellSetup,
        epoch: int,
    ) -> tuple[float, str]:
        """One pass over the train split; returns the mean train loss and where the epoch ended ("epoch E step
        S")."""
        s, device, fast, opts = setup.settings, setup.device, setup.fast, setup.opts
        world = D.world_size()
        targets = torch.as_tensor(data.train.targets, dtype=torch.float32)
        model.train()
        loss_sum, n_steps = torch.zeros((), device=device), 0  # summed on the device: no host sync per step
        for step, idx in enumerate(
            batches(setup.n_train, s.batch_size, setup.generator, drop_last=setup.drop_last)
        ):
            if world > 1 and len(idx) < 2 * world:
                continue  # every rank needs ≥ 2 rows (BatchNorm); all ranks skip the same tail batch
            # every rank builds the global batch (same indices, same augmentation draws) and keeps its slice
            x = to_input(data.train.images[idx], device, setup.normalize, channels_last=fast.channels_last)
            if opts["augment"]:
                x = light_augment(x, setup.generator)
                if fast.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)  # the warp returns NCHW-contiguous
            y = targets[idx]
            x, y_local = D.local_rows(x), D.local_rows(y).to(device, non_blocking=True)
            with autocast(device, s.amp, fast.amp_dtype):
                logits = step_model(x)
            loss = T.masked_bce_share(
                logits, y_local, y, world
            )  # DDP's average = the global batch's gradient
            loss_sum += D.mean_over_ranks(loss.detach()).float()  # every rank sees a divergence together
            n_steps += 1
            if n_steps % FINITE_CHECK_EVERY == 0:
                T.check_finite(loss_sum, f"epoch {epoch} step {step}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            setup.ctx.progress.advance()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        where = f"epoch {epoch} step {step}"
        T.check_finite(loss_sum, where)
        return float(loss_sum.item() / max(n_steps, 1)), where

    def _predict_selected(
        self,
        model: nn.Module,
        data: CellData,
        cell: CellConfig,
        setup: CellSetup,
        best_epoch: int,
        history: list[dict[str, Any]],
    ) -> ProtocolResult:
        """The selected model's validation and test predictions, saved model and localization."""
        s = setup.settings
        t1 = time.perf_counter()
        predict = [
            predict_probs(
                model, split.images, s.eval_batch_size, setup.device, setup.normalize, s.amp, setup.fast
            )
            for split in (data.valid, data.test)
        ]
        valid_scores, test_scores = predict
        T.check_finite_outputs(test_scores, "test outputs of the selected model", f"epoch {best_epoch}")
        eval_seconds = time.perf_counter() - t1
        extra = finish_cell(model, data, cell, setup.ctx, setup.opts, setup.normalize)
        extra["optimizer"] = optimizer_record(s.optimizer, s.lr, s.weight_decay, self.optimizer_choice)
        extra["schedule"] = (
            {**setup.schedule.record(), "drop_last": setup.drop_last} if setup.schedule else None
        )
        return ProtocolResult(
            valid_scores=valid_scores,
            test_scores=test_scores,
            selected_epoch=best_epoch,
            val_macro_auroc=float(history[best_epoch]["val_macro_auroc"]),
            history=history,
            eval_seconds=eval_seconds,
            extra=extra,
            model=model,
        )
