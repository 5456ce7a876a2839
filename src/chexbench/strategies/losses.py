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
    l_pos = (q * k).sum(dim=1, keepdim=True)  # (B, 1)
    l_neg = q @ neg.T  # (B, K)
    logits = torch.cat([l_pos, l_neg], dim=1)
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))
