"""Contrastive losses as pure functions of tensors.

- :func:`nt_xent`: SimCLR's normalized-temperature cross entropy (Chen et al. 2020, eq. 1),
  two views per image, every other view in the batch is a negative.
- :func:`info_nce`: MoCo's InfoNCE (He et al. 2020, eq. 1; van den Oord et al. 2018) with
  one positive key per query and negatives from a queue.

Inputs need not be normalized; both functions L2-normalize (cosine similarity).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from chexbench.core import distributed as D


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
    partner = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
    return F.cross_entropy(sim, partner)


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


def queue_softmax(q: torch.Tensor, neg: torch.Tensor, fused: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``lse_i = log Σ_j exp(q_i·n_j)`` (B,) and ``o_i = Σ_j softmax_j(q_i·n)·n_j`` (B, D) for queries
    ``q`` (B, D) against negatives ``neg`` (K, D), both in float32.

    This is attention with the queue as keys and values, so on the CPU (``fused``, the default
    there) it is PyTorch's flash-attention kernel: one pass over the queue in cache-sized blocks
    with an online softmax, never holding the (B, K) logits. Elsewhere (``fused=False``) two
    matrix products around the (B, K) softmax. Under autocast the products run in the autocast
    dtype, the softmax and the results in float32. An empty queue gives ``lse = −inf``, ``o = 0``.
    """
    b, k = q.shape[0], neg.shape[0]
    if k == 0:  # (the fused kernel cannot take an empty sequence)
        return q.new_full((b,), float("-inf"), dtype=torch.float32), q.new_zeros(q.shape, dtype=torch.float32)
    if torch.is_autocast_enabled(q.device.type):
        dtype = torch.get_autocast_dtype(q.device.type)
        q, neg = q.to(dtype), neg.to(dtype)
    if fused is None:
        fused = q.device.type == "cpu"
    if fused:
        o, lse = torch._scaled_dot_product_flash_attention_for_cpu(q[None, None], neg[None, None], neg[None, None], scale=1.0)
        return lse.reshape(b).float(), o.reshape(q.shape).float()
    logits = (q @ neg.T).float()  # (B, K)
    lse = torch.logsumexp(logits, dim=1)
    p = logits.sub_(lse[:, None]).exp_()  # the softmax, in place
    return lse, (p.to(neg.dtype) @ neg).float()


class _QueueCrossEntropy(torch.autograd.Function):
    """``mean_i −log softmax([q_i·k_i, q_i·n_1 … q_i·n_K])[0]`` for scaled queries ``q`` (B, D),
    keys ``k`` (B, D) and negatives ``n`` (K, D), reading the queue once (in the forward pass).

    Equal to ``F.cross_entropy(cat([l_pos, l_neg]), 0)``. With ``lse_i`` the log-sum-exp of the
    negative logits and ``o_i`` their softmax-weighted mean of the negatives (:func:`queue_softmax`),
    ``d_i = lse_i − q_i·k_i``: the loss is ``softplus(d_i)`` and ``w_i = sigmoid(d_i)`` is the
    negatives' share of the softmax (1 − p_pos), so the gradient of the mean loss is
    ``∂/∂q_i = w_i·(o_i − k_i) / B``, ``∂/∂k_i = −w_i·q_i / B`` — no second pass over the
    queue. ``∂/∂n_j = Σ_i w_i·softmax_j(q_i·n)·q_i / B`` is computed (again) only when asked
    for (MoCo's queue is a buffer).
    """

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        l_pos = (q * k).sum(dim=1)  # (B,)
        lse_neg, o_neg = queue_softmax(q, neg)  # (B,), (B, D)
        d = lse_neg - l_pos
        w = torch.sigmoid(d)
        ctx.save_for_backward(q, k, neg, w, o_neg)
        return F.softplus(d).mean()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        q, k, neg, w, o_neg = ctx.saved_tensors
        scale = grad / q.shape[0]
        w = w[:, None]
        grad_q = grad_k = grad_neg = None
        if ctx.needs_input_grad[0]:
            grad_q = w * (o_neg - k) * scale
        if ctx.needs_input_grad[1]:
            grad_k = -w * q * scale
        if ctx.needs_input_grad[2]:
            p_neg = torch.softmax(q @ neg.T.to(q.dtype), dim=1) * w  # (B, K)
            grad_neg = p_neg.T @ q * scale
        return grad_q, grad_k, grad_neg


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
    mine = torch.cat([torch.arange(r * b, (r + 1) * b), n + torch.arange(r * b, (r + 1) * b)]).to(z1.device)  # (2b,)
    sim = everyone[mine] @ everyone.T / temperature  # (2b, 2B)
    sim = sim.masked_fill(F.one_hot(mine, 2 * n).bool(), float("-inf"))  # no self-similarity
    partner = torch.where(mine < n, mine + n, mine - n)
    return F.cross_entropy(sim, partner)
