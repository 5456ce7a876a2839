"""Pieces every training loop shares: seeding, input conversion, loss, divergence checks, autocast,
device memory (the optimizer and schedule: :mod:`chexbench.core.optim`; prediction and feature
extraction: :mod:`chexbench.core.inference`).

Images arrive as uint8 arrays ``(N, H, W)`` from the prepared cache; they become float
``(B, 1, H, W)`` tensors on the device only batch by batch.
"""

from __future__ import annotations

import contextlib
import os
import random
import resource
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from chexbench.core.context import fast_path_for

#: default input normalization for one-channel radiographs scaled to [0, 1]
DEFAULT_NORMALIZE: tuple[float, float] = (0.5, 0.25)


class DivergedError(RuntimeError):
    """The loss, or the model's outputs, became NaN or infinite; the cell is recorded as failed with this message."""


def seed_everything(seed: int, deterministic: bool = False) -> torch.Generator:
    """Seed python, numpy and torch; return a CPU generator for data order."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.use_deterministic_algorithms(False)
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def to_input(
    images: np.ndarray | torch.Tensor,
    device: torch.device,
    normalize: tuple[float, float] = DEFAULT_NORMALIZE,
    channels_last: bool = False,
) -> torch.Tensor:
    """uint8 ``(B, H, W)`` → normalized float ``(B, 1, H, W)`` on ``device``."""
    t = torch.as_tensor(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    if device.type == "cuda":
        t = t.pin_memory().to(device, non_blocking=True)
    else:
        t = t.to(device)
    x = t.unsqueeze(1).float().div_(255.0)
    mean, std = normalize
    x = (x - mean) / std
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def batches(n: int, batch_size: int, generator: torch.Generator | None = None, drop_last: bool = False) -> Iterator[np.ndarray]:
    """Index batches over ``range(n)``, shuffled when a generator is given."""
    order = torch.randperm(n, generator=generator).numpy() if generator is not None else np.arange(n)
    stop = n - (n % batch_size) if drop_last and n >= batch_size else n
    for i in range(0, stop, batch_size):
        yield np.sort(order[i : i + batch_size])  # sorted indices read a memmap faster


def masked_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean BCE-with-logits over the entries whose target is not NaN. Shapes (B, L)."""
    mask = ~torch.isnan(targets)
    safe = torch.where(mask, targets, torch.zeros_like(targets))
    loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), safe, reduction="none")
    return (loss * mask).sum() / mask.sum().clamp(min=1)


def masked_bce_share(logits: torch.Tensor, y_local: torch.Tensor, y_global: torch.Tensor, world: int) -> torch.Tensor:
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


def check_finite(loss: torch.Tensor, where: str) -> None:
    if not torch.isfinite(loss).all():
        raise DivergedError(f"loss became {loss.item()} at {where}")


def check_finite_outputs(values: np.ndarray | torch.Tensor, what: str, where: str) -> None:
    """Raise :class:`DivergedError` if any model output in ``values`` is NaN or infinite.

    A model whose weights blew up (a learning rate far too high) can keep a finite loss for a
    while, or its outputs can overflow first; scoring them would fail later, far from the cause
    (scikit-learn's "Input contains NaN"), so the protocols check what they evaluate.
    """
    bad = ~np.isfinite(values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values))
    if bad.any():
        raise DivergedError(f"{what} became non-finite ({int(bad.sum())} of {bad.size} values) at {where}")


def autocast(device: torch.device, enabled: bool = True, dtype: torch.dtype | None = None):
    """Autocast to ``dtype``; ``None``: the device's policy (bf16 on CUDA, a no-op elsewhere,
    see :func:`chexbench.core.context.fast_path_for`). ``enabled=False``: a no-op."""
    dtype = dtype if dtype is not None else fast_path_for(device).amp_dtype
    if not enabled or dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """Peak accelerator memory on CUDA; the process's peak resident set size on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
