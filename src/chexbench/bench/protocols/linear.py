"""Protocol ``linear``: a linear probe on frozen features.

The backbone stays frozen in eval mode (BatchNorm uses its running statistics); each split's
pooled features ``(N, D)`` are extracted once per cell, standardized with the train split's
mean and standard deviation, and a linear multi-label head is trained on them with masked
BCE plus an L2 penalty ``λ‖W‖²/2``. A small grid of (learning rate, λ) heads is trained at
once (one batched einsum, independent gradients); the head and epoch with the best
validation macro AUROC over the evaluation labels is selected (ties: smaller λ, then
earlier epoch) and only it predicts the test split. This is the linear evaluation of
Kolesnikov et al. 2019 / SimCLR's appendix, with validation-selected regularization.
``head = "topk"`` pools a ViT's patch tokens with the frozen pretrained patch scorer of a
``*_topk`` strategy (bench/cell_model.py). ``head = "topk_classwise"`` keeps every patch token
``(N, T, D)`` instead and trains the heads as per-class patch classifiers whose image logit of
class c is pooled from c's own top-K patch logits (same selection grid).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from chexbench.bench.cell_model import (
    apply_head,
    finish_cell,
    head_invalid_reason,
    make_classifier,
)
from chexbench.bench.protocols.base import CellSetup, EvaluationProtocol, ProtocolResult
from chexbench.bench.protocols.options import LinearOptions
from chexbench.core import training as T
from chexbench.core.inference import extract_features
from chexbench.core.inputs import batches
from chexbench.core.metrics import macro_auroc, macro_auroc_per_head
from chexbench.core.optim import warmup_cosine_factor
from chexbench.strategies.topk import classwise_topk_pool

if TYPE_CHECKING:
    from chexbench.backbones.base import Backbone
    from chexbench.core.context import RunContext
    from chexbench.datasets.celldata import CellData
    from chexbench.spec.cell import CellConfig
    from chexbench.strategies.base import InitRecord


class LinearHeads:
    """G independent linear heads ``(N, D) → (G, N, L)`` trained by one batched Adam
    (Kingma & Ba 2015) with a learning rate per head; plain tensors, no autograd graph
    beyond the logits."""

    def __init__(
        self,
        lrs: torch.Tensor,
        l2s: torch.Tensor,
        dim: int,
        num_labels: int,
        betas=(0.9, 0.999),
        eps=1e-8,
        pool: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        g, dev = len(lrs), lrs.device
        self.pool = pool  # token features: (G, N, T, L) patch logits → (G, N, L)
        self.weight = torch.zeros(g, dim, num_labels, device=dev, requires_grad=True)
        self.bias = torch.zeros(g, 1, num_labels, device=dev, requires_grad=True)
        self.lrs, self.l2s, self.betas, self.eps = lrs.view(g, 1, 1), l2s, betas, eps
        self._moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in (self.weight, self.bias)]
        self._t = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D) → (G, N, L); token features (N, T, D) → patch logits (G, N, T, L) → ``pool`` → (G, N, L)."""
        if x.dim() == 3:
            return self.pool(torch.einsum("ntd,gdl->gntl", x, self.weight) + self.bias[:, :, None])
        return torch.einsum("nd,gdl->gnl", x, self.weight) + self.bias

    def loss(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per head (G,): masked BCE + λ‖W‖²/2 (biases not penalized)."""
        return masked_bce_per_head(self(x), targets) + 0.5 * self.l2s * self.weight.pow(2).sum(dim=(1, 2))

    @torch.no_grad()
    def step(self, lr_factor: float = 1.0) -> None:
        """One Adam step on every head from the current ``.grad``; then the grads are cleared."""
        self._t += 1
        b1, b2 = self.betas
        for p, (m, v) in zip((self.weight, self.bias), self._moments, strict=True):
            m.mul_(b1).add_(p.grad, alpha=1 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            m_hat = m / (1 - b1**self._t)
            v_hat = v / (1 - b2**self._t)
            p.sub_(self.lrs * lr_factor * m_hat / (v_hat.sqrt() + self.eps))
            p.grad = None


def masked_bce_per_head(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean BCE over unmasked targets, per head: logits (G, B, L), targets (B, L) NaN = masked → (G,)."""
    mask = ~torch.isnan(targets)
    safe = torch.where(mask, targets, torch.zeros_like(targets))
    loss = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, safe.expand_as(logits), reduction="none"
    )
    return (loss * mask).sum(dim=(1, 2)) / mask.sum().clamp(min=1)


@dataclass
class HeadGridResult:
    """The probe's (lr, λ) grid after training: per-epoch validation AUROC and train loss (epochs, G),
    each head's best score and its weights at that epoch."""

    grid: list[tuple[float, float]]
    val_auroc: np.ndarray
    train_loss: np.ndarray
    best_score: np.ndarray
    best_state: list[tuple[torch.Tensor, torch.Tensor]]

    def chosen(self) -> int:
        """The head with the best validation macro AUROC; ties: the smaller λ."""
        return max(range(len(self.grid)), key=lambda g: (self.best_score[g], -self.grid[g][1]))

    def best_epoch(self, g: int) -> int:
        """The first epoch at which head ``g`` reached its maximum."""
        return int(np.nan_to_num(self.val_auroc, nan=-1.0).argmax(axis=0)[g])


class Linear(EvaluationProtocol):
    name = "linear"
    option_model = LinearOptions
    freezes_backbone = True

    def invalid_reason(self, cell: CellConfig) -> str | None:
        return head_invalid_reason(cell, self.name)

    def run(
        self, backbone: Backbone, data: CellData, cell: CellConfig, ctx: RunContext, init: InitRecord
    ) -> ProtocolResult:
        setup = self.open_cell(data, cell, ctx, init)
        opts = setup.opts
        backbone, head_notes = apply_head(backbone, opts, init)
        backbone = backbone.to(setup.device)
        if setup.fast.channels_last:
            backbone = backbone.to(memory_format=torch.channels_last)
        backbone.eval()  # frozen: BatchNorm keeps its running statistics, here and in the saved model
        for p in backbone.parameters():
            p.requires_grad_(False)
        classwise = opts["head"] == "topk_classwise"
        selected = make_classifier(backbone, len(data.labels), opts, self.name).to(setup.device)
        pool = (lambda z: classwise_topk_pool(z, selected.k, selected.alpha, dim=-2)) if classwise else None

        t0 = time.perf_counter()
        feats, mean, std = self._standardized_features(backbone, data, setup, tokens=classwise)
        extract_seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        trained = self._train_heads(feats, data, setup, backbone.num_features, pool)
        train_seconds = time.perf_counter() - t1 + extract_seconds
        chosen = trained.chosen()
        w, b = trained.best_state[chosen]

        t2 = time.perf_counter()
        with torch.no_grad():

            def probs(f: torch.Tensor) -> np.ndarray:
                z = f @ w + b  # (N, L), or patch logits (N, T, L)
                return torch.sigmoid(pool(z) if classwise else z).cpu().numpy()

            valid_scores, test_scores = probs(feats["valid"]), probs(feats["test"])
        eval_seconds = time.perf_counter() - t2
        history = [
            {
                "epoch": e,
                "train_loss": float(trained.train_loss[e, chosen]),
                "val_macro_auroc": float(trained.val_auroc[e, chosen]),
            }
            for e in range(setup.settings.epochs)
        ]
        lr, l2 = trained.grid[chosen]
        selected.set_head(mean, std, w, b)
        extra = {
            **finish_cell(selected, data, cell, setup.ctx, opts, setup.normalize),
            "head_notes": head_notes,
            "schedule": setup.schedule.record() if setup.schedule else None,
        }
        return ProtocolResult(
            valid_scores=valid_scores,
            test_scores=test_scores,
            selected_epoch=trained.best_epoch(chosen),
            val_macro_auroc=macro_auroc(data.valid.targets, valid_scores, data.labels, setup.eval_labels),
            history=history,
            train_seconds=train_seconds,
            eval_seconds=eval_seconds,
            images_per_second=setup.n_train / max(extract_seconds, 1e-9),
            extra={
                "selected_lr": lr,
                "selected_l2": l2,
                "feature_dim": backbone.num_features,
                **extra,
                "grid_val_macro_auroc": _grid_summary(trained),
            },
            model=selected,
        )

    def _standardized_features(
        self, backbone: Backbone, data: CellData, setup: CellSetup, tokens: bool
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """Each split's features on the device, standardized with the train split's mean and std (1, D)."""
        s = setup.settings
        feats = {
            name: extract_features(
                backbone,
                data.split(name).images,
                s.eval_batch_size,
                setup.device,
                setup.normalize,
                s.amp,
                setup.fast,
                tokens=tokens,
            )
            for name in ("train", "valid", "test")
        }
        for name, f in feats.items():
            T.check_finite_outputs(
                f,
                f"{name} features of the frozen backbone",
                "feature extraction (before the probe's first step)",
            )
        flat_train = feats["train"].reshape(
            -1, feats["train"].shape[-1]
        )  # tokens: standardized per channel over all patches
        mean = flat_train.mean(0, keepdim=True)
        std = (
            flat_train.std(0, keepdim=True).clamp(min=1e-6) if len(flat_train) > 1 else torch.ones_like(mean)
        )
        return {k: ((v - mean) / std).to(setup.device) for k, v in feats.items()}, mean, std

    def _train_heads(
        self,
        feats: dict[str, torch.Tensor],
        data: CellData,
        setup: CellSetup,
        dim: int,
        pool: Callable[[torch.Tensor], torch.Tensor] | None,
    ) -> HeadGridResult:
        """Train every (lr, λ) head of the grid at once; keep each head's best epoch on validation."""
        s, device, opts = setup.settings, setup.device, setup.opts
        grid = [(float(lr), float(l2)) for l2 in opts["l2_grid"] for lr in opts["lr_grid"]]
        heads = LinearHeads(
            torch.tensor([lr for lr, _ in grid], device=device),
            torch.tensor([l2 for _, l2 in grid], device=device),
            dim,
            len(data.labels),
            pool=pool,
        )
        lr_factor = warmup_cosine_factor(
            setup.total_steps, setup.warmup_steps
        )  # the shared schedule, a factor on every head's lr
        targets = torch.as_tensor(data.train.targets, dtype=torch.float32, device=device)
        eval_cols = [data.labels.index(lbl) for lbl in setup.eval_labels]
        result = HeadGridResult(
            grid,
            np.full((s.epochs, len(grid)), np.nan),
            np.zeros((s.epochs, len(grid))),
            np.full(len(grid), -np.inf),
            [(heads.weight[g], heads.bias[g]) for g in range(len(grid))],
        )
        step = 0
        setup.ctx.progress.start("linear probe", setup.total_steps)
        with _single_thread_on_cpu(device):  # many tiny matmuls
            for epoch in range(s.epochs):
                losses = []
                for idx in batches(setup.n_train, s.batch_size, setup.generator):
                    idx_t = torch.as_tensor(idx, device=device)
                    per_head = heads.loss(feats["train"][idx_t], targets[idx_t])  # (G,)
                    T.check_finite(per_head.sum(), f"linear probe epoch {epoch} step {step}")
                    per_head.sum().backward()  # heads are independent: each gets its own gradient
                    heads.step(lr_factor(step))
                    step += 1
                    losses.append(per_head.detach().cpu().numpy())
                    setup.ctx.progress.advance()
                result.train_loss[epoch] = np.mean(losses, axis=0)
                self._validate_heads(
                    heads,
                    feats["valid"],
                    data,
                    eval_cols,
                    result,
                    epoch,
                    f"linear probe epoch {epoch} step {step}",
                )
        return result

    @staticmethod
    def _validate_heads(
        heads: LinearHeads,
        valid: torch.Tensor,
        data: CellData,
        eval_cols: list[int],
        result: HeadGridResult,
        epoch: int,
        where: str,
    ) -> None:
        """Validation macro AUROC of every head after ``epoch``; a head strictly better than before keeps its
        weights."""
        with torch.no_grad():
            val_probs = torch.sigmoid(heads(valid)).cpu().numpy()  # (G, N_valid, L)
        for g in np.flatnonzero(~np.isfinite(val_probs).all(axis=(1, 2))):  # the first head that blew up
            lr, l2 = result.grid[g]
            T.check_finite_outputs(
                val_probs[g], f"validation outputs of the probe head lr={lr:g}, l2={l2:g}", where
            )
        result.val_auroc[epoch] = macro_auroc_per_head(data.valid.targets, val_probs, eval_cols)
        for g in np.flatnonzero(
            np.nan_to_num(result.val_auroc[epoch], nan=-1.0) > result.best_score
        ):  # ties keep the earlier epoch
            result.best_score[g] = np.nan_to_num(result.val_auroc[epoch, g], nan=-1.0)
            result.best_state[g] = (heads.weight[g].detach().clone(), heads.bias[g].detach().clone())


def _grid_summary(trained: HeadGridResult) -> dict[str, float | None]:
    """Each head's best validation macro AUROC over the epochs (None when it never had one)."""
    return {
        f"lr={lr:g},l2={l2:g}": (
            float(np.nanmax(trained.val_auroc[:, g], initial=np.nan))
            if not np.isnan(trained.val_auroc[:, g]).all()
            else None
        )
        for g, (lr, l2) in enumerate(trained.grid)
    }


@contextlib.contextmanager
def _single_thread_on_cpu(device: torch.device):
    """Head training is many tiny matmuls: on CPU one thread beats several (no sync cost; 15× on a busy
    machine)."""
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
