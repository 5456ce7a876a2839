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
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from chexbench.bench.cell_model import (
    HEAD_OPTIONS,
    HEAD_OPTIONS_HELP,
    apply_head,
    finish_cell,
    head_invalid_reason,
    make_classifier,
)
from chexbench.bench.protocols.base import Protocol, ProtocolResult
from chexbench.bench.protocols.options import LinearOptions
from chexbench.core import training as T
from chexbench.core.context import FastPath, fast_path_for
from chexbench.core.metrics import macro_auroc
from chexbench.registry import PROTOCOLS
from chexbench.strategies.topk import classwise_topk_pool

if TYPE_CHECKING:
    from chexbench.backbones.base import Backbone
    from chexbench.config import CellConfig
    from chexbench.core.context import RunContext
    from chexbench.datasets.celldata import CellData
    from chexbench.strategies.base import InitRecord


@torch.no_grad()
def extract_features(
    backbone: Backbone, images: np.ndarray, batch_size: int, device: torch.device, normalize: tuple[float, float], amp: bool,
    fast: FastPath | None = None,
    tokens: bool = False,
) -> torch.Tensor:
    """Pooled features (N, D) float32 on CPU of uint8 images (N, S, S) — or, with ``tokens``, the
    patch tokens (N, T, D); backbone in eval mode.
    ``fast``: autocast dtype and memory format (default: the device's policy).

    Under torchrun each rank extracts a contiguous slice and the slices are gathered in order.
    """
    from chexbench.core import distributed as D

    fast = fast or fast_path_for(device)
    backbone.eval()
    lo, hi = D.rank_range(len(images))
    out = []
    for idx in T.batches(hi - lo, batch_size):
        x = T.to_input(images[idx + lo], device, normalize, channels_last=fast.channels_last)
        with T.autocast(device, amp, fast.amp_dtype):
            out.append((backbone.forward_tokens(x) if tokens else backbone(x)).float().cpu())
    if not out:
        shape = (0, int(np.prod(backbone.token_grid())), backbone.num_features) if tokens else (0, backbone.num_features)
        return D.gather_cpu_rows(torch.zeros(shape))
    return D.gather_cpu_rows(torch.cat(out))


class LinearHeads:
    """G independent linear heads ``(N, D) → (G, N, L)`` trained by one batched Adam
    (Kingma & Ba 2015) with a learning rate per head; plain tensors, no autograd graph
    beyond the logits."""

    def __init__(self, lrs: torch.Tensor, l2s: torch.Tensor, dim: int, num_labels: int, betas=(0.9, 0.999), eps=1e-8,
                 pool: Callable[[torch.Tensor], torch.Tensor] | None = None):
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
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, safe.expand_as(logits), reduction="none")
    return (loss * mask).sum(dim=(1, 2)) / mask.sum().clamp(min=1)


def macro_auroc_per_head(targets: np.ndarray, scores: np.ndarray, label_cols: list[int]) -> np.ndarray:
    """Macro AUROC (G,) of scores (G, N, L) against targets (N, L) (NaN = masked) over ``label_cols``.

    Mann–Whitney form with average ranks for ties (equal to scikit-learn's ``roc_auc_score``),
    vectorized over heads; labels with one class only are left out; NaN if none is defined.
    """
    from scipy.stats import rankdata

    per_label = []
    for j in label_cols:
        keep = ~np.isnan(targets[:, j])
        t = targets[keep, j] == 1
        n_pos, n_neg = int(t.sum()), int((~t).sum())
        if n_pos == 0 or n_neg == 0:
            continue
        ranks = rankdata(scores[:, keep, j], axis=1)  # (G, n)
        per_label.append((ranks[:, t].sum(1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return np.mean(per_label, axis=0) if per_label else np.full(scores.shape[0], np.nan)


@PROTOCOLS.register
class Linear(Protocol):
    name = "linear"
    description = "linear probe on frozen features, (lr, L2) selected on validation macro AUROC"
    option_model = LinearOptions
    options: dict[str, Any] = {"lr_grid": [1e-3, 1e-2], "l2_grid": [0.0, 1e-4, 1e-3, 1e-2, 1e-1], **HEAD_OPTIONS}
    option_help: dict[str, str] = {
        "lr_grid": "learning rates of the linear probe, chosen on validation macro AUROC",
        "l2_grid": "L2 penalties of the linear probe, chosen on validation macro AUROC",
        **HEAD_OPTIONS_HELP,
    }

    def invalid_reason(self, cell: CellConfig) -> str | None:
        return head_invalid_reason(cell, self.name)

    def run(self, backbone: Backbone, data: CellData, cell: CellConfig, ctx: RunContext, init: InitRecord) -> ProtocolResult:
        s = cell.settings
        opts = {**self.options, **cell.protocol_options}
        device = ctx.device
        normalize = tuple(init.extra.get("normalize", T.DEFAULT_NORMALIZE))
        eval_labels = [lbl for lbl in data.eval_labels if lbl in data.labels]
        n_train = len(data.train.images)
        if n_train == 0:
            raise ValueError("the train split is empty after label-fraction sampling")
        backbone, head_notes = apply_head(backbone, opts, init)
        backbone = backbone.to(device)
        if ctx.fast_path.channels_last:
            backbone = backbone.to(memory_format=torch.channels_last)
        for p in backbone.parameters():
            p.requires_grad_(False)
        classwise = opts["head"] == "topk_classwise"
        selected = make_classifier(backbone, len(data.labels), opts, self.name).to(device)
        pool = (lambda z: classwise_topk_pool(z, selected.k, selected.alpha, dim=-2)) if classwise else None

        t0 = time.perf_counter()
        feats = {
            name: extract_features(backbone, data.split(name).images, s.eval_batch_size, device, normalize, s.amp, ctx.fast_path, tokens=classwise)
            for name in ("train", "valid", "test")
        }
        extract_seconds = time.perf_counter() - t0
        for name, f in feats.items():
            T.check_finite_outputs(f, f"{name} features of the frozen backbone", "feature extraction (before the probe's first step)")
        flat_train = feats["train"].reshape(-1, feats["train"].shape[-1])  # tokens: standardized per channel over all patches
        mean = flat_train.mean(0, keepdim=True)
        std = flat_train.std(0, keepdim=True).clamp(min=1e-6) if len(flat_train) > 1 else torch.ones_like(mean)
        feats = {k: ((v - mean) / std).to(device) for k, v in feats.items()}

        grid = [(float(lr), float(l2)) for l2 in opts["l2_grid"] for lr in opts["lr_grid"]]
        heads = LinearHeads(
            torch.tensor([lr for lr, _ in grid], device=device),
            torch.tensor([l2 for _, l2 in grid], device=device),
            backbone.num_features,
            len(data.labels),
            pool=pool,
        )
        steps_per_epoch = math.ceil(n_train / s.batch_size)
        total = steps_per_epoch * s.epochs
        # the shared warmup-cosine schedule, read as a factor on every head's lr
        lr_factor = T.warmup_cosine(
            torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), total, round(s.warmup_epochs * steps_per_epoch)
        ).lr_lambdas[0]
        gen = torch.Generator().manual_seed(cell.seed)
        targets = torch.as_tensor(data.train.targets, dtype=torch.float32, device=device)
        eval_cols = [data.labels.index(lbl) for lbl in eval_labels]

        val_auroc = np.full((s.epochs, len(grid)), np.nan)  # (epochs, G)
        train_loss = np.zeros((s.epochs, len(grid)))
        best_score = np.full(len(grid), -np.inf)
        best_state: list[tuple[torch.Tensor, torch.Tensor]] = [(heads.weight[g], heads.bias[g]) for g in range(len(grid))]
        step = 0
        ctx.progress.start("linear probe", total)
        t1 = time.perf_counter()
        with _single_thread_on_cpu(device):  # many tiny matmuls
            for epoch in range(s.epochs):
                losses = []
                for idx in T.batches(n_train, s.batch_size, gen):
                    idx_t = torch.as_tensor(idx, device=device)
                    per_head = heads.loss(feats["train"][idx_t], targets[idx_t])  # (G,)
                    T.check_finite(per_head.sum(), f"linear probe epoch {epoch} step {step}")
                    per_head.sum().backward()  # heads are independent: each gets its own gradient
                    heads.step(lr_factor(step))
                    step += 1
                    losses.append(per_head.detach().cpu().numpy())
                    ctx.progress.advance()
                train_loss[epoch] = np.mean(losses, axis=0)
                with torch.no_grad():
                    val_probs = torch.sigmoid(heads(feats["valid"])).cpu().numpy()  # (G, N_valid, L)
                for g in np.flatnonzero(~np.isfinite(val_probs).all(axis=(1, 2))):  # the first head that blew up
                    lr, l2 = grid[g]
                    T.check_finite_outputs(val_probs[g], f"validation outputs of the probe head lr={lr:g}, l2={l2:g}",
                                           f"linear probe epoch {epoch} step {step}")
                val_auroc[epoch] = macro_auroc_per_head(data.valid.targets, val_probs, eval_cols)
                for g in np.flatnonzero(np.nan_to_num(val_auroc[epoch], nan=-1.0) > best_score):  # strictly better: ties keep the earlier epoch
                    best_score[g] = np.nan_to_num(val_auroc[epoch, g], nan=-1.0)
                    best_state[g] = (heads.weight[g].detach().clone(), heads.bias[g].detach().clone())
        train_seconds = time.perf_counter() - t1 + extract_seconds
        best_epoch_per_head = np.nan_to_num(val_auroc, nan=-1.0).argmax(axis=0)  # first epoch reaching the maximum
        chosen = max(range(len(grid)), key=lambda g: (best_score[g], -grid[g][1]))  # ties: the smaller λ
        best_epoch = int(best_epoch_per_head[chosen])
        w, b = best_state[chosen]

        t2 = time.perf_counter()
        with torch.no_grad():
            def probs(f: torch.Tensor) -> np.ndarray:
                z = f @ w + b  # (N, L), or patch logits (N, T, L)
                return torch.sigmoid(pool(z) if classwise else z).cpu().numpy()

            valid_scores, test_scores = probs(feats["valid"]), probs(feats["test"])
        eval_seconds = time.perf_counter() - t2
        history = [
            {"epoch": e, "train_loss": float(train_loss[e, chosen]), "val_macro_auroc": float(val_auroc[e, chosen])}
            for e in range(s.epochs)
        ]
        lr, l2 = grid[chosen]
        selected.set_head(mean, std, w, b)
        extra = {**finish_cell(selected, data, cell, ctx, opts, normalize), "head_notes": head_notes}
        return ProtocolResult(
            valid_scores=valid_scores,
            test_scores=test_scores,
            selected_epoch=best_epoch,
            val_macro_auroc=macro_auroc(data.valid.targets, valid_scores, data.labels, eval_labels),
            history=history,
            train_seconds=train_seconds,
            eval_seconds=eval_seconds,
            images_per_second=n_train / max(extract_seconds, 1e-9),
            extra={
                "selected_lr": lr,
                "selected_l2": l2,
                "feature_dim": backbone.num_features,
                **extra,
                "grid_val_macro_auroc": {f"lr={lr:g},l2={l2:g}": float(np.nanmax(val_auroc[:, g], initial=np.nan)) if not np.isnan(val_auroc[:, g]).all() else None for g, (lr, l2) in enumerate(grid)},
            },
        )


@contextlib.contextmanager
def _single_thread_on_cpu(device: torch.device):
    """Head training is many tiny matmuls: on CPU one thread beats several (no sync cost; 15× on a busy machine)."""
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
