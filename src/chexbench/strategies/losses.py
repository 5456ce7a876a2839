"""Self-supervised losses as pure functions of tensors.

- :func:`nt_xent`: SimCLR's normalized-temperature cross entropy (Chen et al. 2020, eq. 1),
  two views per image, every other view in the batch is a negative.
- :func:`info_nce`: MoCo's InfoNCE (He et al. 2020, eq. 1; van den Oord et al. 2018) with
  one positive key per query and negatives from a queue.
- :func:`dino_loss` / :func:`dino_center_update`: DINO's self-distillation over multi-crop
  pairs with a centred, sharpened teacher (Caron et al. 2021).
- :func:`byol_loss`: BYOL's symmetric normalized regression, ``2 − 2 cos`` (Grill et al. 2020).
- :func:`mae_loss`: MAE's normalized-pixel MSE over the masked patches (He et al. 2022).

Inputs of the contrastive losses need not be normalized; both L2-normalize (cosine similarity). All compute
in fp32 even inside an autocast region: CUDA autocast would run the similarity products in
bf16 (8-bit mantissa: a logit of 10 off by up to 0.03, and with MoCo the positive logit in
fp32 beside 65,536 rounded negatives); the encoders stay in bf16, the loss costs little.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.nn.functional as F

from chexbench.core import distributed as D

_F = TypeVar("_F", bound=Callable[..., torch.Tensor])


def in_fp32(fn: _F) -> _F:
    """``fn`` with autocast switched off on its first argument's device (its inputs are cast to fp32
    inside)."""

    @functools.wraps(fn)
    def wrapper(first: torch.Tensor, *args, **kwargs):
        with torch.autocast(first.device.type, enabled=False):
            return fn(first, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


@in_fp32
def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """NT-Xent over ``2B`` views: ``z1``, ``z2`` (B, D), row i of each is the same image.

    For view i the positive is its partner and the ``2B − 2`` other views are negatives;
    the loss is the mean over all ``2B`` views of ``−log softmax(sim/τ)[positive]``,
    with the self-similarity excluded from the denominator.
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(
            f"nt_xent expects two (B, D) tensors of equal shape, got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    b = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)  # (2B, D)
    sim = z @ z.T / temperature  # (2B, 2B)
    sim = sim.masked_fill(torch.eye(2 * b, dtype=torch.bool, device=z.device), float("-inf"))
    partner = torch.cat(
        [torch.arange(b, 2 * b, device=z.device), torch.arange(0, b, device=z.device)]
    )  # no blocking copy
    return F.cross_entropy(sim, partner)


@in_fp32
def info_nce(
    q: torch.Tensor,
    k: torch.Tensor,
    queue: torch.Tensor,
    temperature: float = 0.2,
    queue_normalized: bool = False,
) -> torch.Tensor:
    """InfoNCE with a queue: ``q``, ``k`` (B, D) queries and their positive keys, ``queue`` (K, D) negatives.

    Logits are ``[q·k, q·queue_1 … q·queue_K] / τ`` (B, 1+K); the positive is index 0.
    Keys carry no gradient in MoCo; pass ``k.detach()`` (it is not detached here, so the
    function stays a plain loss). An empty queue (K = 0) leaves only the positive logit.
    ``queue_normalized``: the queue rows are unit vectors already (MoCo's queue is), so the
    (K, D) normalization is skipped — with K = 65536 it costs more than a small encoder.
    """
    if q.shape != k.shape or q.dim() != 2:
        raise ValueError(
            f"info_nce expects q and k of equal (B, D) shape, got {tuple(q.shape)} and {tuple(k.shape)}"
        )
    if queue.dim() != 2 or queue.shape[1] != q.shape[1]:
        raise ValueError(f"info_nce expects a (K, {q.shape[1]}) queue, got {tuple(queue.shape)}")
    q = (
        F.normalize(q.float(), dim=1) / temperature
    )  # τ folded into the (B, D) queries, not the (B, 1+K) logits
    k = F.normalize(k.float(), dim=1)
    neg = queue.float() if queue_normalized else F.normalize(queue.float(), dim=1)
    return _QueueCrossEntropy.apply(q, k, neg)


class _QueueCrossEntropy(torch.autograd.Function):
    """``mean_i −log softmax([q_i·k_i, q_i·n_1 … q_i·n_K])[0]`` for scaled queries ``q`` (B, D),
    keys ``k`` (B, D) and negatives ``n`` (K, D), without building the (B, 1+K) logits twice.

    Equal to ``F.cross_entropy(cat([l_pos, l_neg]), 0)``; it keeps one (B, K) buffer (turned into
    the softmax in place) instead of the concatenated logits, their log-softmax and its gradient:
    with MoCo's K = 65536 those passes cost more than a small encoder. The gradient of the mean
    loss: ``∂/∂q_i = ((p_i0 − 1)·k_i + Σ_j p_ij·n_j) / B``, ``∂/∂k_i = (p_i0 − 1)·q_i / B``,
    ``∂/∂n_j = Σ_i p_ij·q_i / B``.
    """

    @staticmethod
    # type: ignore[override]
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        l_pos = (q * k).sum(dim=1, keepdim=True)  # (B, 1)
        p_neg = (
            (q @ neg.T).float() if neg.shape[0] else q.new_zeros(q.shape[0], 0)
        )  # (B, K) logits, then softmax
        top = torch.maximum(l_pos, p_neg.amax(dim=1, keepdim=True)) if neg.shape[0] else l_pos
        p_neg.sub_(top).exp_()
        p_pos = (l_pos - top).exp()
        z = p_pos + p_neg.sum(dim=1, keepdim=True)  # (B, 1)
        loss = (z.log() + top - l_pos).mean()
        p_neg.div_(z)
        ctx.save_for_backward(q, k, neg, p_pos / z, p_neg)
        return loss

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        q, k, neg, p_pos, p_neg = ctx.saved_tensors
        scale = grad / q.shape[0]
        grad_q = grad_k = grad_neg = None
        if ctx.needs_input_grad[0]:
            grad_q = ((p_pos - 1) * k + (p_neg @ neg.to(p_neg.dtype) if neg.shape[0] else 0)) * scale
        if ctx.needs_input_grad[1]:
            grad_k = (p_pos - 1) * q * scale
        if ctx.needs_input_grad[2]:
            grad_neg = p_neg.T @ q.to(p_neg.dtype) * scale
        return grad_q, grad_k, grad_neg


@in_fp32
def nt_xent_across_ranks(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """SimCLR's NT-Xent for this rank's ``b`` pairs against the ``2·w·b − 2`` views of all ranks.

    ``z1``, ``z2`` (b, D) are this rank's two views (equal b on every rank). The mean of the
    ranks' values (and, through DDP's gradient average, the gradient) equals
    :func:`nt_xent` on the concatenated global batch.
    """
    if not D.is_distributed():
        return nt_xent(z1, z2, temperature)
    b, w, r = z1.shape[0], D.world_size(), D.rank()
    z1_all = F.normalize(D.gather_with_grad(z1.float().contiguous()), dim=1)  # (B, D), B = w·b
    z2_all = F.normalize(D.gather_with_grad(z2.float().contiguous()), dim=1)
    n = w * b
    everyone = torch.cat([z1_all, z2_all])  # (2B, D), the candidate set of every anchor
    rows = torch.arange(r * b, (r + 1) * b, device=z1.device)
    mine = torch.cat([rows, n + rows])  # (2b,)
    sim = everyone[mine] @ everyone.T / temperature  # (2b, 2B)
    sim = sim.masked_fill(F.one_hot(mine, 2 * n).bool(), float("-inf"))  # no self-similarity
    partner = torch.where(mine < n, mine + n, mine - n)
    return F.cross_entropy(sim, partner)


# -- negative-free and reconstruction losses ------------------------------------------------
def dino_loss(
    student: list[torch.Tensor],
    teacher: list[torch.Tensor],
    center: torch.Tensor,
    student_temp: float = 0.1,
    teacher_temp: float = 0.04,
) -> torch.Tensor:
    """DINO's self-distillation cross entropy (Caron et al. 2021, eq. 1-3 and Algorithm 1).

    ``student``: the student head's logits of every crop, ``V`` tensors (B, K), the global
    crops first; ``teacher``: the teacher's logits of the ``G`` global crops, (B, K) each;
    ``center`` (1, K) or (K,). With ``P_t = softmax((g_t − c)/τ_t)`` (centring, then sharpening
    with the small τ_t) and ``log P_s = log_softmax(g_s/τ_s)``, the loss is the mean over the
    pairs (teacher crop i, student crop v), ``v ≠ i`` (a crop is never its own target), of
    ``mean_b Σ_k −P_t[b, k] · log P_s[b, k]``. The teacher's probabilities carry no gradient.
    """
    if not student or not teacher or len(teacher) > len(student):
        raise ValueError(
            "dino_loss expects ≥ 1 teacher (global) crops and at least as many student crops, got"
            f" {len(teacher)} and {len(student)}"
        )
    with torch.autocast(student[0].device.type, enabled=False):
        return _dino_loss(student, teacher, center, student_temp, teacher_temp)


def _dino_loss(
    student: list[torch.Tensor],
    teacher: list[torch.Tensor],
    center: torch.Tensor,
    student_temp: float,
    teacher_temp: float,
) -> torch.Tensor:
    c = center.float().reshape(1, -1)
    targets = [F.softmax((t.float().detach() - c) / teacher_temp, dim=-1) for t in teacher]  # G × (B, K)
    log_p = [F.log_softmax(s.float() / student_temp, dim=-1) for s in student]  # V × (B, K)
    total, pairs = student[0].new_zeros((), dtype=torch.float32), 0
    for i, q in enumerate(targets):
        for v, lp in enumerate(log_p):
            if v == i:
                continue
            total = total + (-q * lp).sum(dim=-1).mean()
            pairs += 1
    if pairs == 0:
        raise ValueError(
            "dino_loss needs at least one pair of different crops (one global crop and no other crop gives"
            " none)"
        )
    return total / pairs


@torch.no_grad()
def dino_center_update(
    center: torch.Tensor, teacher: list[torch.Tensor], momentum: float = 0.9
) -> torch.Tensor:
    """DINO's centre: ``c ← m·c + (1 − m)·mean of the teacher logits`` over the batch and its global crops
    (eq. 4).

    ``center`` (1, K); ``teacher`` G × (B, K). Returns the new centre (fp32); the caller keeps it.
    Under torchrun the batch mean must be the global one: the caller averages over ranks.
    """
    batch_mean = torch.cat([t.float() for t in teacher]).mean(dim=0, keepdim=True)  # (1, K)
    return center.float() * momentum + batch_mean * (1.0 - momentum)


@in_fp32
def byol_loss(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """BYOL's symmetric loss (Grill et al. 2020, eq. 2 and the symmetrized ``L + L̃``).

    ``p1``, ``p2`` (B, D): the online predictions of views 1 and 2; ``z1``, ``z2`` (B, D): the
    target projections of the same views (no gradient: pass them detached). Each view's
    prediction regresses the *other* view's target, ``‖p̄ − z̄‖² = 2 − 2·cos(p, z)`` for L2-normalized
    vectors; the result is ``mean_b [(2 − 2 cos(p1, z2)) + (2 − 2 cos(p2, z1))]``, in [0, 8].
    """
    if not (p1.shape == p2.shape == z1.shape == z2.shape) or p1.dim() != 2:
        raise ValueError(
            "byol_loss expects four (B, D) tensors of equal shape, got"
            f" {[tuple(t.shape) for t in (p1, p2, z1, z2)]}"
        )

    def regress(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return 2.0 - 2.0 * (F.normalize(p.float(), dim=-1) * F.normalize(z.float(), dim=-1)).sum(dim=-1)

    return (regress(p1, z2) + regress(p2, z1)).mean()


@in_fp32
def mae_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, norm_pix: bool = True
) -> torch.Tensor:
    """MAE's reconstruction loss (He et al. 2022, sec. 3 "Reconstruction target").

    ``pred``, ``target`` (B, N, P): the decoder's pixels and the image's pixels per patch
    (P = patch² × channels); ``mask`` (B, N): 1 where the patch was masked (hidden from the
    encoder), 0 where visible. With ``norm_pix`` each target patch is normalized by its own
    mean and (unbiased) variance, ``(x − μ)/√(σ² + 1e-6)`` (the paper's better-performing
    variant). The loss is the per-patch mean squared error averaged over the **masked**
    patches only: ``Σ_{b,n} mask·mean_p (pred − target)² / Σ mask``.
    """
    if pred.shape != target.shape or pred.dim() != 3 or mask.shape != pred.shape[:2]:
        raise ValueError(
            f"mae_loss expects pred and target (B, N, P) and mask (B, N), got {tuple(pred.shape)},"
            f" {tuple(target.shape)}, {tuple(mask.shape)}"
        )
    target = target.float()
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1e-6) ** 0.5
    per_patch = ((pred.float() - target) ** 2).mean(dim=-1)  # (B, N)
    mask = mask.float()
    return (per_patch * mask).sum() / mask.sum().clamp(min=1.0)
