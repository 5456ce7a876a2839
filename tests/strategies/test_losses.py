"""Contrastive losses against a plain NumPy reference and closed-form cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from chexbench.strategies.losses import info_nce, nt_xent


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def nt_xent_reference(z1: np.ndarray, z2: np.ndarray, t: float) -> float:
    """Loop form of SimCLR eq. 1, averaged over all 2B anchors."""
    z = _unit(np.concatenate([z1, z2]).astype(np.float64))
    n, b = len(z), len(z1)
    total = 0.0
    for i in range(n):
        j = (i + b) % n
        denom = sum(math.exp(z[i] @ z[k] / t) for k in range(n) if k != i)
        total += -math.log(math.exp(z[i] @ z[j] / t) / denom)
    return total / n


def info_nce_reference(q: np.ndarray, k: np.ndarray, queue: np.ndarray, t: float) -> float:
    q, k, queue = _unit(q.astype(np.float64)), _unit(k.astype(np.float64)), _unit(queue.astype(np.float64))
    total = 0.0
    for i in range(len(q)):
        pos = math.exp(q[i] @ k[i] / t)
        neg = sum(math.exp(q[i] @ n / t) for n in queue)
        total += -math.log(pos / (pos + neg))
    return total / len(q)


@pytest.mark.parametrize("batch", [1, 2, 5, 16])
@pytest.mark.parametrize("temperature", [0.05, 0.1, 0.5, 1.0])
def test_nt_xent_matches_numpy_reference(batch: int, temperature: float) -> None:
    rng = np.random.default_rng(batch * 100 + int(temperature * 100))
    z1, z2 = rng.normal(size=(batch, 8)), rng.normal(size=(batch, 8))
    got = nt_xent(torch.tensor(z1), torch.tensor(z2), temperature).item()
    assert got == pytest.approx(nt_xent_reference(z1, z2, temperature), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("batch,queue_size", [(1, 1), (3, 7), (8, 32), (16, 0)])
@pytest.mark.parametrize("temperature", [0.07, 0.2, 1.0])
def test_info_nce_matches_numpy_reference(batch: int, queue_size: int, temperature: float) -> None:
    rng = np.random.default_rng(batch + queue_size)
    q, k, queue = rng.normal(size=(batch, 6)), rng.normal(size=(batch, 6)), rng.normal(size=(queue_size, 6))
    got = info_nce(
        torch.tensor(q), torch.tensor(k), torch.tensor(queue).reshape(queue_size, 6), temperature
    ).item()
    assert got == pytest.approx(info_nce_reference(q, k, queue, temperature), rel=1e-5, abs=1e-6)


def test_closed_forms() -> None:
    # identical views, all orthogonal: each anchor sees exp(1/t) against 2B-2 terms of exp(0)
    b, t = 4, 0.5
    z = torch.eye(b, 8)
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2 * b - 2))
    assert nt_xent(z, z.clone(), t).item() == pytest.approx(expected, rel=1e-6)
    # a batch of one pair has no negatives: loss 0
    assert nt_xent(torch.randn(1, 4), torch.randn(1, 4), 0.1).item() == pytest.approx(0.0, abs=1e-7)
    # InfoNCE with every similarity equal is log(1 + K)
    q = torch.ones(3, 4)
    assert info_nce(q, q, torch.ones(9, 4), 0.2).item() == pytest.approx(math.log(10), rel=1e-6)
    # and it is invariant to the scale of its inputs (cosine similarity)
    qs, ks, qu = torch.randn(5, 4), torch.randn(5, 4), torch.randn(7, 4)
    assert info_nce(qs * 3, ks * 0.1, qu * 7, 0.2).item() == pytest.approx(
        info_nce(qs, ks, qu, 0.2).item(), rel=1e-5
    )


def test_gradients_flow_to_both_views_and_shapes_are_checked() -> None:
    z1 = torch.randn(4, 8, requires_grad=True)
    z2 = torch.randn(4, 8, requires_grad=True)
    nt_xent(z1, z2, 0.1).backward()
    assert z1.grad is not None and z2.grad is not None and z1.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="equal shape"):
        nt_xent(torch.randn(4, 8), torch.randn(3, 8))
    with pytest.raises(ValueError, match="queue"):
        info_nce(torch.randn(4, 8), torch.randn(4, 8), torch.randn(5, 7))


@pytest.mark.parametrize("batch,queue_size", [(1, 1), (4, 9), (6, 0)])
def test_info_nce_gradients_equal_cross_entropy_on_the_concatenated_logits(
    batch: int, queue_size: int
) -> None:
    """The fused queue loss has the value and the gradients (queries, keys, queue) of the textbook form."""
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(batch + queue_size)
    q0, k0, n0 = (
        torch.randn(batch, 5, generator=g),
        torch.randn(batch, 5, generator=g),
        torch.randn(queue_size, 5, generator=g),
    )
    q, k, n = (t.clone().double().requires_grad_(True) for t in (q0, k0, n0))
    got = info_nce(q, k, n, 0.2)
    got.backward()
    qr, kr, nr = (t.clone().double().requires_grad_(True) for t in (q0, k0, n0))
    qn, kn, nn_ = F.normalize(qr, dim=1), F.normalize(kr, dim=1), F.normalize(nr, dim=1)
    logits = torch.cat([(qn * kn).sum(1, keepdim=True), qn @ nn_.T], dim=1) / 0.2
    ref = F.cross_entropy(logits, torch.zeros(batch, dtype=torch.long))
    ref.backward()
    assert got.item() == pytest.approx(ref.item(), rel=1e-6)
    for a, b in ((q, qr), (k, kr), (n, nr)):
        torch.testing.assert_close(a.grad.double(), b.grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_losses_inside_bf16_autocast_are_computed_in_fp32(seed: int) -> None:
    # CPU autocast casts matrix products to bf16 as CUDA's does: the similarity products must not be
    from chexbench.strategies.losses import nt_xent_across_ranks

    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(16, 128, generator=g), torch.randn(16, 128, generator=g)
    queue = torch.nn.functional.normalize(torch.randn(4096, 128, generator=g), dim=1)
    for fn, args in (
        (nt_xent, (q, k, 0.1)),
        (nt_xent_across_ranks, (q, k, 0.1)),
        (info_nce, (q, k, queue, 0.2, True)),
    ):
        want = fn(*args)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = fn(*args)
            assert torch.is_autocast_enabled("cpu")  # the region is left as it was
        assert got.dtype == torch.float32 and torch.allclose(got, want, rtol=1e-6, atol=0), (
            fn.__name__,
            got,
            want,
        )
