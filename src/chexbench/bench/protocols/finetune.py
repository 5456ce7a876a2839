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
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from chexbench.bench.cell_model import (
    HEAD_OPTIONS,
    HEAD_OPTIONS_HELP,
    apply_head,
    finish_cell,
    head_invalid_reason,
    make_classifier,
)
from chexbench.bench.protocols.base import Protocol, ProtocolResult
from chexbench.bench.protocols.options import FinetuneOptions
from chexbench.core import distributed as D
from chexbench.core import training as T
from chexbench.core.metrics import macro_auroc
from chexbench.registry import PROTOCOLS

if TYPE_CHECKING:
    from chexbench.backbones.base import Backbone
    from chexbench.config import CellConfig
    from chexbench.core.context import RunContext
    from chexbench.datasets.celldata import CellData
    from chexbench.strategies.base import InitRecord


#: steps between divergence checks; each check waits for the device, so not every step
FINITE_CHECK_EVERY = 25


class Classifier(nn.Module):
    """Backbone (or a top-K wrapped ViT) + linear head: (B, 1, H, W) → logits (B, L)."""

    def __init__(self, backbone: Backbone, num_labels: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.num_features, num_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


@PROTOCOLS.register
class Finetune(Protocol):
    name = "finetune"
    description = "end-to-end fine-tuning, AdamW + warmup-cosine, selection on validation macro AUROC"
    option_model = FinetuneOptions
    options: dict[str, Any] = {"augment": True, "sync_bn": True, **HEAD_OPTIONS}
    option_help: dict[str, str] = {
        "augment": "light augmentation (crop, small rotation, intensity) of the training images",
        "sync_bn": "synchronize batch-norm statistics across ranks under --gpus N",
        **HEAD_OPTIONS_HELP,
    }

    def invalid_reason(self, cell: CellConfig) -> str | None:
        return head_invalid_reason(cell, self.name)

    def run(self, backbone: Backbone, data: CellData, cell: CellConfig, ctx: RunContext, init: InitRecord) -> ProtocolResult:
        from chexbench.strategies.augment import light_augment

        s = cell.settings
        opts = {**self.options, **cell.protocol_options}
        device = ctx.device
        fast = ctx.fast_path  # bf16 autocast + channels_last on CUDA (see RunContext)
        normalize = tuple(init.extra.get("normalize", T.DEFAULT_NORMALIZE))
        features, head_notes = apply_head(backbone, opts, init)
        model = make_classifier(features, len(data.labels), opts, self.name).to(device)
        if fast.channels_last:
            model = model.to(memory_format=torch.channels_last)
        # data-parallel under torchrun (SyncBN on CUDA), then optionally compiled; eval uses `model`
        step_model = D.wrap_ddp(model, device, sync_bn=bool(opts["sync_bn"]))
        if s.compile or T.compile_requested() or fast.compile:
            step_model = torch.compile(step_model)
        world = D.world_size()
        eval_labels = [lbl for lbl in data.eval_labels if lbl in data.labels]
        n_train = len(data.train.images)
        if n_train == 0:
            raise ValueError("the train split is empty after label-fraction sampling")
        steps_per_epoch = math.ceil(n_train / s.batch_size)
        total = steps_per_epoch * s.epochs
        opt = T.build_optimizer(model.parameters(), s, device)
        sched = T.warmup_cosine(opt, total, round(s.warmup_epochs * steps_per_epoch))
        gen = torch.Generator().manual_seed(cell.seed)
        targets = torch.as_tensor(data.train.targets, dtype=torch.float32)

        best_auroc, best_epoch, best_state = -math.inf, -1, None
        history: list[dict[str, Any]] = []
        train_seconds = 0.0
        ctx.progress.start("finetune", total)
        for epoch in range(s.epochs):
            model.train()
            t0 = time.perf_counter()
            loss_sum, n_steps = torch.zeros((), device=device), 0  # summed on the device: no host sync per step
            for step, idx in enumerate(T.batches(n_train, s.batch_size, gen)):
                if world > 1 and len(idx) < 2 * world:
                    continue  # every rank needs ≥ 2 rows (BatchNorm); all ranks skip the same tail batch
                # every rank builds the global batch (same indices, same augmentation draws) and keeps its slice
                x = T.to_input(data.train.images[idx], device, normalize, channels_last=fast.channels_last)
                if opts["augment"]:
                    x = light_augment(x, gen)
                    if fast.channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)  # the warp returns NCHW-contiguous
                y = targets[idx]
                x, y_local = D.local_rows(x), D.local_rows(y).to(device, non_blocking=True)
                with T.autocast(device, s.amp, fast.amp_dtype):
                    logits = step_model(x)
                loss = T.masked_bce_share(logits, y_local, y, world)  # DDP's average = the global batch's gradient
                loss_sum += D.mean_over_ranks(loss.detach()).float()  # every rank sees a divergence together
                n_steps += 1
                if n_steps % FINITE_CHECK_EVERY == 0:
                    T.check_finite(loss_sum, f"epoch {epoch} step {step}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                ctx.progress.advance()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            train_seconds += time.perf_counter() - t0
            T.check_finite(loss_sum, f"epoch {epoch} step {step}")
            val_scores = T.predict_probs(model, data.valid.images, s.eval_batch_size, device, normalize, s.amp, fast)
            T.check_finite_outputs(val_scores, "validation outputs", f"epoch {epoch} step {step}")
            val_auroc = macro_auroc(data.valid.targets, val_scores, data.labels, eval_labels)
            train_loss = float(loss_sum.item() / max(n_steps, 1))
            history.append({"epoch": epoch, "train_loss": train_loss, "val_macro_auroc": val_auroc})
            ctx.progress.message(f"epoch {epoch}: loss {train_loss:.4f}, val macro AUROC {val_auroc:.3f}")
            score = val_auroc if not math.isnan(val_auroc) else -1.0
            if score > best_auroc:
                best_auroc, best_epoch = score, epoch
                best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        assert best_state is not None
        model.load_state_dict(best_state)
        t1 = time.perf_counter()
        valid_scores = T.predict_probs(model, data.valid.images, s.eval_batch_size, device, normalize, s.amp, fast)
        test_scores = T.predict_probs(model, data.test.images, s.eval_batch_size, device, normalize, s.amp, fast)
        T.check_finite_outputs(test_scores, "test outputs of the selected model", f"epoch {best_epoch}")
        eval_seconds = time.perf_counter() - t1
        extra = {**finish_cell(model, data, cell, ctx, opts, normalize), "head_notes": head_notes}
        return ProtocolResult(
            valid_scores=valid_scores,
            test_scores=test_scores,
            selected_epoch=best_epoch,
            val_macro_auroc=float(history[best_epoch]["val_macro_auroc"]),
            history=history,
            train_seconds=train_seconds,
            eval_seconds=eval_seconds,
            images_per_second=n_train * s.epochs / max(train_seconds, 1e-9),
            extra=extra,
        )
