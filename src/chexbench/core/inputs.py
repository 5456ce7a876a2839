"""Input conversion: uint8 arrays ``(N, H, W)`` from the prepared cache become normalized float
``(B, 1, H, W)`` tensors on the device, batch by batch, in the order :func:`batches` draws."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

#: default input normalization for one-channel radiographs scaled to [0, 1]
DEFAULT_NORMALIZE: tuple[float, float] = (0.5, 0.25)


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


def batches(
    n: int, batch_size: int, generator: torch.Generator | None = None, drop_last: bool = False
) -> Iterator[np.ndarray]:
    """Index batches over ``range(n)``, shuffled when a generator is given."""
    order = torch.randperm(n, generator=generator).numpy() if generator is not None else np.arange(n)
    stop = n - (n % batch_size) if drop_last and n >= batch_size else n
    for i in range(0, stop, batch_size):
        yield np.sort(order[i : i + batch_size])  # sorted indices read a memmap faster
