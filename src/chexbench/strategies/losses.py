"""Contrastive losses as pure functions of tensors.

- :func:`nt_xent`: SimCLR's normalized-temperature cross entropy (Chen et al. 2020, eq. 1),
  two views per image, every other view in the batch is a negative.
- :func:`info_nce`: MoCo's InfoNCE (He et al. 2020, eq. 1; van den Oord et al. 2018) with
  one positive key per query and negatives from a queue.

Inputs need not be normalized; both functions L2-normalize (cosine similarity). Both compute
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
    """``fn`` with autocast switched off on its first argument's device (its inputs are cast to fp32 inside)."""

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
        raise ValueError(f"nt_xent expects two (B, D) tensors of equal shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    b = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)  # (2B, D)
    sim = z @ z.T / temperature  # (2B, 2B)
    sim = sim.masked_fill(torch.eye(2 * b, dtype=torch.bool, device=z.device), float("-inf"))
    partner = torch.cat([torch.arange(b, 2 * b, device=z.device), torch.arange(0, b, device=z.device)])  # no blocking copy
    return F.cross_entropy(sim, partner)


@in_fp32
def info_nce(
    q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float = 0.2, queue_normalized: bool = False
) -> torch.Tensor:
    """InfoNCE with a queue: ``q``, ``k`` (B, D) queries and their positive keys, ``queue`` (K, D) negatives.

    Logits are ``[q·k, q·queue_1 … q·queue_K] / τ`` (B, 1+K); the positive is index 0.
    Keys carry no gradient in MoCo; pass ``k.detach()`` (it is not detached here, so the
    function stays a plain loss). An empty queue (K = 0) leaves only the positive logit.
    ``queue_normalized``: the queue rows are unit vectors already (MoCo's queue is), so the
    (K, D) normalization is skipped — with K = 65536 it costs more than a small encoder.
    """
    if q.shape != k.shape or q.dim() != 2:
        raise ValueError(f"info_nce expects q and k of equal (B, D) shape, got {tuple(q.shape)} and {tuple(k.shape)}")
    if queue.dim() != 2 or queue.shape[1] != q.shape[1]:
        raise ValueError(f"info_nce expects a (K, {q.shape[1]}) queue, got {tuple(queue.shape)}")
    q = F.normalize(q.float(), dim=1) / temperature  # τ folded into the (B, D) queries, not the (B, 1+K) logits
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
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        l_pos = (q * k).sum(dim=1, keepdim=True)  # (B, 1)
        p_neg = (q @ neg.T).float() if neg.shape[0] else q.new_zeros(q.shape[0], 0)  # (B, K) logits, then softmax
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
