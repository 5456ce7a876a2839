"""DINO, BYOL and MAE losses against float64 references written from the papers' equations
(and DINO's against lightly's ``DINOLoss`` where lightly is installed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from chexbench.strategies.losses import byol_loss, dino_center_update, dino_loss, mae_loss


def _softmax(a: np.ndarray) -> np.ndarray:
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def dino_reference(
    student: list[np.ndarray], teacher: list[np.ndarray], center: np.ndarray, ts: float, tt: float
) -> float:
    """Caron et al. 2021 eq. 1-3 as loops: H(P_t(x_i), P_s(x_v)) over i global, v any crop, v ≠ i."""
    total, pairs = 0.0, 0
    for i, t in enumerate(teacher):
        for v, s in enumerate(student):
            if v == i:
                continue
            for b in range(t.shape[0]):
                pt = _softmax((t[b].astype(np.float64) - center.reshape(-1)) / tt)
                log_ps = s[b] / ts - math.log(np.exp(s[b].astype(np.float64) / ts).sum())
                total += -(pt * log_ps).sum() / t.shape[0]
            pairs += 1
    return total / pairs


@pytest.mark.parametrize(("n_global", "n_local", "batch", "k"), [(2, 0, 3, 7), (2, 4, 5, 16), (1, 2, 1, 4)])
def test_dino_loss_equals_the_float64_reference_over_multi_crop_pairs(n_global, n_local, batch, k) -> None:
    g = torch.Generator().manual_seed(n_local + batch)
    student = [torch.randn(batch, k, generator=g) * 3 for _ in range(n_global + n_local)]
    teacher = [torch.randn(batch, k, generator=g) * 3 for _ in range(n_global)]
    center = torch.randn(1, k, generator=g)
    got = dino_loss(student, teacher, center, student_temp=0.1, teacher_temp=0.04)
    want = dino_reference(
        [s.double().numpy() for s in student],
        [t.double().numpy() for t in teacher],
        center.double().numpy(),
        0.1,
        0.04,
    )
    assert float(got) == pytest.approx(want, rel=1e-5)


def test_dino_loss_excludes_same_view_pairs_and_gives_no_gradient_to_the_teacher() -> None:
    # student == teacher logits: with the same-view pair excluded the loss is a cross entropy between
    # two different views; including it would add the (lower) self term and change the value
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    t = [a.clone().requires_grad_(), b.clone().requires_grad_()]
    s = [a.clone().requires_grad_(), b.clone().requires_grad_()]
    loss = dino_loss(s, t, torch.zeros(8), 0.1, 0.1)
    want = dino_reference([a.numpy(), b.numpy()], [a.numpy(), b.numpy()], np.zeros(8), 0.1, 0.1)
    assert float(loss.detach()) == pytest.approx(want, rel=1e-5)
    assert float(loss.detach()) != pytest.approx(
        float(dino_loss([a, b, a], [a, b], torch.zeros(8), 0.1, 0.1)), rel=1e-3
    )
    with pytest.raises(ValueError, match="pair"):
        dino_loss([a], [a], torch.zeros(8))
    loss.backward()
    assert t[0].grad is None and t[1].grad is None
    assert s[0].grad is not None and float(s[0].grad.abs().sum()) > 0


def test_dino_center_is_an_ema_of_the_teacher_batch_mean() -> None:
    g = torch.Generator().manual_seed(1)
    teacher = [torch.randn(6, 5, generator=g) for _ in range(2)]
    c0 = torch.randn(1, 5, generator=g)
    want = 0.9 * c0.double().numpy() + 0.1 * np.concatenate([t.double().numpy() for t in teacher]).mean(
        axis=0, keepdims=True
    )
    np.testing.assert_allclose(dino_center_update(c0, teacher, 0.9).numpy(), want, rtol=1e-6)


def test_dino_loss_matches_lightly_dino_loss_and_its_center_update() -> None:
    lightly_loss = pytest.importorskip("lightly.loss")
    g = torch.Generator().manual_seed(2)
    k = 12
    student = [torch.randn(5, k, generator=g) for _ in range(6)]  # 2 global + 4 local
    teacher = [torch.randn(5, k, generator=g) for _ in range(2)]
    ref = lightly_loss.DINOLoss(output_dim=k, teacher_temp=0.07, student_temp=0.1, center_momentum=0.9)
    center = torch.randn(1, k, generator=g)
    ref.center.copy_(center.view(1, 1, k))
    want = ref(teacher, student, teacher_temp=0.07)
    assert float(dino_loss(student, teacher, center, 0.1, 0.07)) == pytest.approx(float(want), rel=1e-5)
    torch.testing.assert_close(dino_center_update(center, teacher, 0.9).view(-1), ref.center.view(-1))


def byol_reference(p1, p2, z1, z2) -> float:
    """Grill et al. 2020 eq. 2: ‖q̄ − z̄'‖² with unit vectors, symmetrized (L + L̃), mean over the batch."""

    def unit(a):
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    return float((((unit(p1) - unit(z2)) ** 2).sum(1) + ((unit(p2) - unit(z1)) ** 2).sum(1)).mean())


@pytest.mark.parametrize(("batch", "dim"), [(1, 3), (7, 16)])
def test_byol_loss_equals_the_normalized_mse_reference(batch, dim) -> None:
    g = torch.Generator().manual_seed(batch)
    p1, p2, z1, z2 = (torch.randn(batch, dim, generator=g) for _ in range(4))
    want = byol_reference(*(t.double().numpy() for t in (p1, p2, z1, z2)))
    assert float(byol_loss(p1, p2, z1, z2)) == pytest.approx(want, rel=1e-5)


def test_byol_loss_closed_forms() -> None:
    x = torch.randn(4, 8)
    assert float(byol_loss(x, x, 3 * x, 2 * x)) == pytest.approx(0.0, abs=1e-6)  # same directions: 0
    assert float(byol_loss(x, x, -x, -x)) == pytest.approx(8.0, rel=1e-6)  # opposite: 4 per term


def mae_reference(pred: np.ndarray, target: np.ndarray, mask: np.ndarray, norm_pix: bool) -> float:
    """He et al. 2022 sec. 3: per-patch normalized target, MSE per patch, mean over masked patches."""
    total, count = 0.0, 0
    for b in range(pred.shape[0]):
        for n in range(pred.shape[1]):
            if not mask[b, n]:
                continue
            t = target[b, n].astype(np.float64)
            if norm_pix:
                t = (t - t.mean()) / math.sqrt(t.var(ddof=1) + 1e-6)
            total += ((pred[b, n] - t) ** 2).mean()
            count += 1
    return total / count


@pytest.mark.parametrize("norm_pix", [True, False])
def test_mae_loss_equals_the_reference_on_masked_patches_only(norm_pix) -> None:
    g = torch.Generator().manual_seed(3)
    pred, target = torch.randn(3, 10, 16, generator=g), torch.rand(3, 10, 16, generator=g)
    mask = (torch.rand(3, 10, generator=g) < 0.75).float()
    mask[0, 0] = 1
    want = mae_reference(pred.double().numpy(), target.double().numpy(), mask.numpy().astype(bool), norm_pix)
    assert float(mae_loss(pred, target, mask, norm_pix)) == pytest.approx(want, rel=1e-5)
    # a visible patch's error does not count
    worse = pred.clone()
    worse[mask == 0] += 100.0
    assert float(mae_loss(worse, target, mask, norm_pix)) == pytest.approx(want, rel=1e-5)
