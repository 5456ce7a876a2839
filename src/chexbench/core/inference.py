"""Evaluation passes of a model over uint8 images, batch by batch: sigmoid probabilities of a
classifier and pooled features (or patch tokens) of an encoder. Both split the rows over the
ranks under torchrun and gather them in order, so every rank holds the whole result."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn

from chexbench.core import distributed as D
from chexbench.core.context import FastPath, fast_path_for
from chexbench.core.devices import autocast
from chexbench.core.inputs import DEFAULT_NORMALIZE, batches, to_input


def _eval_outputs(
    model: nn.Module,
    images: np.ndarray,
    rows: tuple[int, int],
    batch_size: int,
    device: torch.device,
    normalize: tuple[float, float],
    amp: bool,
    fast: FastPath,
    forward: Callable[[torch.Tensor], torch.Tensor],
) -> Iterator[torch.Tensor]:
    """``forward`` of each batch of ``images[lo:hi]`` (float32, still on the device), the model in
    eval mode under the fast path's autocast and memory format; its mode is restored after."""
    lo, hi = rows
    was_training = model.training
    model.eval()
    try:
        for idx in batches(hi - lo, batch_size):
            x = to_input(images[idx + lo], device, normalize, channels_last=fast.channels_last)
            with autocast(device, amp, fast.amp_dtype):
                yield forward(x).float()
    finally:
        model.train(was_training)


@torch.no_grad()
def predict_probs(
    model: nn.Module,
    images: np.ndarray,
    batch_size: int,
    device: torch.device,
    normalize: tuple[float, float] = DEFAULT_NORMALIZE,
    amp: bool = True,
    fast: FastPath | None = None,
) -> np.ndarray:
    """Sigmoid probabilities ``(N, L)`` of a multi-label model on uint8 images ``(N, H, W)``.

    ``fast``: autocast dtype and memory format of the inputs (default: the device's policy).
    """
    rows = D.rank_range(len(images))  # under torchrun each rank predicts its slice; gathered below
    D.broadcast_buffers(model)  # every slice by one model: rank 0's, the one that is saved
    out = [
        torch.sigmoid(logits).cpu().numpy()
        for logits in _eval_outputs(
            model, images, rows, batch_size, device, normalize, amp, fast or fast_path_for(device), model
        )
    ]
    if D.is_distributed():
        n_labels = D.broadcast_object(
            out[0].shape[1] if out else 0, src=D.world_size() - 1
        )  # the last rank has rows
        local = np.concatenate(out) if out else np.zeros((0, n_labels), dtype=np.float32)
        return D.gather_numpy_rows(local)
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    images: np.ndarray,
    batch_size: int,
    device: torch.device,
    normalize: tuple[float, float] = DEFAULT_NORMALIZE,
    amp: bool = True,
    fast: FastPath | None = None,
    tokens: bool = False,
    split_over_ranks: bool = True,
) -> torch.Tensor:
    """Pooled features ``(N, D)`` float32 on CPU of uint8 images ``(N, S, S)`` — or, with
    ``tokens``, the patch tokens ``(N, T, D)`` (``encoder.forward_tokens``). The encoder runs in
    eval mode (its mode is restored after); ``encoder.num_features`` sizes an empty result.

    ``fast``: autocast dtype and memory format of the inputs (default: the device's policy).
    ``split_over_ranks``: under torchrun each rank extracts a contiguous slice and the slices
    are gathered in order (every rank must call); ``False`` when one rank alone extracts.
    """
    rows = D.rank_range(len(images)) if split_over_ranks else (0, len(images))
    if split_over_ranks:
        D.broadcast_buffers(
            encoder
        )  # every slice by one model (rank 0's); a lone rank must not wait for the others
    forward = encoder.forward_tokens if tokens else encoder
    fast = fast or fast_path_for(device)
    out = [
        f.cpu()
        for f in _eval_outputs(encoder, images, rows, batch_size, device, normalize, amp, fast, forward)
    ]
    if out:
        local = torch.cat(out)
    else:
        dim = encoder.num_features
        local = torch.zeros((0, int(np.prod(encoder.token_grid())), dim) if tokens else (0, dim))
    return D.gather_cpu_rows(local) if split_over_ranks else local
