"""The device side of a step: autocast by the device's policy, peak memory, the device's name."""

from __future__ import annotations

import contextlib
import os
import resource

import torch

from chexbench.core.context import fast_path_for


def autocast(device: torch.device, enabled: bool = True, dtype: torch.dtype | None = None):
    """Autocast to ``dtype``; ``None``: the device's policy (bf16 on CUDA, a no-op elsewhere,
    see :func:`chexbench.core.context.fast_path_for`). ``enabled=False``: a no-op."""
    dtype = dtype if dtype is not None else fast_path_for(device).amp_dtype
    if not enabled or dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        # the reset does not start CUDA itself: "did you call init?" for cuda:0 before any use
        torch.cuda.init()
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
