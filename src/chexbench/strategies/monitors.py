"""Collapse monitors of self-supervised pretraining, as pure functions of a batch of embeddings.

A self-supervised objective can be minimized by mapping every image to the same output
("complete collapse"; BYOL and DINO avoid it only through the predictor / momentum target
and through centring). Recorded once per pretraining epoch on a fixed set of pool images:

- :func:`normalized_std`: the standard deviation across the batch of the L2-normalized
  embeddings, averaged over dimensions (SimSiam, Chen & He 2021, sec. 4.1). Collapse → 0;
  embeddings spread uniformly on the sphere give ``1/√d``. We record the ratio to ``1/√d``.
- :func:`effective_rank`: ``exp(H(p))`` with ``p`` the normalized singular values of the
  centred embedding matrix (Roy & Vetterli 2007): from 1 (one direction) to ``min(B, d)``.
  Dimensional collapse (Jing et al. 2022) lowers it while the std may stay healthy.
- :func:`mean_entropy`: DINO's teacher entropy (Caron et al. 2021, sec. 5.3, fig. 7): → 0 when
  one dimension dominates, → ``log K`` when the output is uniform.

**Collapse rule** (:func:`is_collapsed`): an epoch's embeddings have collapsed when their
std ratio ``std·√d`` is below :data:`COLLAPSE_STD_RATIO` = 0.01 — their mean pairwise
cosine similarity is then above ``1 − 0.01² = 0.9999``, all images sit in one point — or when
they are not finite; for DINO also when the teacher's entropy is above
:data:`UNIFORM_ENTROPY_FRACTION` = 0.99 of ``log K`` (uniform collapse: the centred teacher says
the same nothing about every image — its normalized outputs then still differ by rounding-size
amounts, so the std alone misses it). The threshold sits below every healthy value measured on CPU-size runs
(lowest 0.03: a BatchNorm projection head in eval mode after a few steps, whose running
statistics are still near their initial values) and above a collapsed run's (a constant
encoder gives 0; DINO without centring falls to one-hot teacher outputs). The run's record says "collapsed at
epoch N" for the first such epoch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: below this ``std·√d`` the embeddings are one point (mean pairwise cosine > 0.9999)
COLLAPSE_STD_RATIO = 0.01
#: a teacher entropy above this fraction of ``log K`` is uniform collapse (DINO)
UNIFORM_ENTROPY_FRACTION = 0.99


@torch.no_grad()
def normalized_std(z: torch.Tensor) -> float:
    """Mean over dimensions of the std across the batch of the L2-normalized rows of ``z`` (B, D)."""
    u = F.normalize(z.double(), dim=1)
    return float(u.std(dim=0, unbiased=False).mean())


@torch.no_grad()
def effective_rank(z: torch.Tensor) -> float:
    """Roy & Vetterli's effective rank of the centred ``z`` (B, D): ``exp(−Σ p_i log p_i)``, ``p = σ / Σσ``.
    1.0 when every row is the same point (no spread at all)."""
    c = z.double() - z.double().mean(dim=0, keepdim=True)
    s = torch.linalg.svdvals(c)
    total = float(s.sum())
    if not math.isfinite(total) or total <= 1e-12 * max(1.0, float(z.double().abs().max())):
        return 1.0
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


@torch.no_grad()
def mean_entropy(probs: torch.Tensor) -> float:
    """Mean over rows of the entropy (nats) of ``probs`` (B, K), rows summing to 1."""
    p = probs.double()
    return float(-(p * torch.log(p.clamp(min=1e-30))).sum(dim=1).mean())


def monitor_row(embedding: torch.Tensor, features: torch.Tensor) -> dict[str, float]:
    """The monitors of one epoch: of the objective's embedding (``embed_*``) and of the encoder's features."""
    d = embedding.shape[1]
    finite = bool(torch.isfinite(embedding).all()) and bool(torch.isfinite(features).all())
    nan = math.nan
    return {
        "embed_std_ratio": normalized_std(embedding) * math.sqrt(d) if finite else nan,
        "embed_rank": effective_rank(embedding) if finite else nan,
        "feature_std_ratio": normalized_std(features) * math.sqrt(features.shape[1]) if finite else nan,
        "feature_rank": effective_rank(features) if finite else nan,
    }


def is_collapsed(row: dict[str, float], max_entropy: float | None = None) -> bool:
    """The documented rule: std ratio below :data:`COLLAPSE_STD_RATIO`, or not finite; with ``max_entropy``
    (``log K`` of a DINO teacher), also a ``teacher_entropy`` above :data:`UNIFORM_ENTROPY_FRACTION` of it."""
    ratio = row.get("embed_std_ratio", math.nan)
    if not math.isfinite(ratio) or ratio < COLLAPSE_STD_RATIO:
        return True
    entropy = row.get("teacher_entropy", math.nan)
    return (
        max_entropy is not None
        and math.isfinite(entropy)
        and entropy > UNIFORM_ENTROPY_FRACTION * max_entropy
    )
