"""The loss of a classification step and the checks that stop a diverging one.

The other pieces of a training loop live beside this module in the foundation: seeding
(:mod:`~chexbench.core.seeding`), input conversion (:mod:`~chexbench.core.inputs`), autocast and
device memory (:mod:`~chexbench.core.devices`), the optimizer and schedule
(:mod:`~chexbench.core.optim`), prediction and feature extraction (:mod:`~chexbench.core.inference`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class DivergedError(RuntimeError):
    """The loss, or the model's outputs, became NaN or infinite; the cell is recorded as failed with this
    message."""


def masked_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean BCE-with-logits over the entries whose target is not NaN. Shapes (B, L)."""
    mask = ~torch.isnan(targets)
    safe = torch.where(mask, targets, torch.zeros_like(targets))
    loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), safe, reduction="none")
    return (loss * mask).sum() / mask.sum().clamp(min=1)


def masked_bce_share(
    logits: torch.Tensor, y_local: torch.Tensor, y_global: torch.Tensor, world: int
) -> torch.Tensor:
    """This rank's share of the global batch's masked BCE (logits, y_local: (b, L); y_global: (B, L)).

    ``masked_bce`` of the rank's rows, rescaled by (its unmasked count × world / the global
    unmasked count): DDP averages gradients over ranks, so the average equals the gradient
    of ``masked_bce`` over the whole global batch. ``world == 1``: plain ``masked_bce``.
    """
    loss = masked_bce(logits, y_local)
    if world == 1:
        return loss
    n_local = (~torch.isnan(y_local)).sum().clamp(min=1)
    n_global = (~torch.isnan(y_global)).sum().clamp(min=1).to(loss.device)
    return loss * n_local * world / n_global


#: steps between divergence checks of a training loop; each check waits for the device, so not every step
FINITE_CHECK_EVERY = 25


def check_finite(loss: torch.Tensor, where: str) -> None:
    if not torch.isfinite(loss).all():
        raise DivergedError(f"loss became {loss.item()} at {where}")


def check_finite_outputs(values: np.ndarray | torch.Tensor, what: str, where: str) -> None:
    """Raise :class:`DivergedError` if any model output in ``values`` is NaN or infinite.

    A model whose weights blew up (a learning rate far too high) can keep a finite loss for a
    while, or its outputs can overflow first; scoring them would fail later, far from the cause
    (scikit-learn's "Input contains NaN"), so the protocols check what they evaluate.
    """
    bad = ~np.isfinite(
        values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    )
    if bad.any():
        raise DivergedError(f"{what} became non-finite ({int(bad.sum())} of {bad.size} values) at {where}")
