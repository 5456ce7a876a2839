"""The one optimizer and learning-rate schedule factory of every training loop.

Fine-tuning and pretraining differ only in the arguments they pass, and each states them as
attributes of the component (:class:`~chexbench.bench.protocols.finetune.Finetune`,
:class:`~chexbench.strategies.pretrain.PretrainStrategy`): Nesterov momentum or not, and
whether biases and normalization parameters (1-d tensors) are decayed. Weight-decay groups are
built by ``timm.optim.param_groups_weight_decay`` (biases and 1-d tensors without decay when
asked, as in timm, MoCo-v3 and DeiT recipes).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from timm.optim import param_groups_weight_decay
from torch import nn

from chexbench.core.errors import ConfigError

OPTIMIZERS = ("adamw", "sgd")


@dataclass(frozen=True)
class OptimizerChoice:
    """What a component asks of :func:`build_optimizer` beyond name, learning rate and decay.

    ``nesterov`` and ``momentum``: SGD only. ``decay_norm_and_bias``: ``False`` leaves biases and
    every 1-d parameter (norm scales and shifts) without weight decay.
    """

    momentum: float = 0.9
    nesterov: bool = False
    decay_norm_and_bias: bool = True


def optimizer_implementation(device: torch.device) -> dict[str, bool]:
    """``fused`` kernels on CUDA (one kernel for every parameter's update); ``foreach``
    (multi-tensor) elsewhere, where torch has no fused AdamW/SGD for every dtype."""
    return {"fused": True} if device.type == "cuda" else {"foreach": True}


def build_optimizer(
    model: nn.Module,
    device: torch.device,
    *,
    name: str,
    lr: float,
    weight_decay: float,
    choice: OptimizerChoice,
) -> torch.optim.Optimizer:
    """AdamW (decoupled decay) or SGD with momentum over ``model``'s trainable parameters.

    Parameter groups come from ``timm.optim.param_groups_weight_decay`` (its order: the
    undecayed group first); with ``choice.decay_norm_and_bias`` every parameter is decayed.
    """
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer '{name}' ({' or '.join(OPTIMIZERS)})")
    groups = param_groups_weight_decay(model, weight_decay=weight_decay, weight_decay_exclude_1d=not choice.decay_norm_and_bias)
    impl = optimizer_implementation(device)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, **impl)
    return torch.optim.SGD(groups, lr=lr, momentum=choice.momentum, weight_decay=weight_decay, nesterov=choice.nesterov, **impl)


def optimizer_record(name: str, lr: float, weight_decay: float, choice: OptimizerChoice) -> dict[str, Any]:
    """The optimizer as a cell's record states it (name, lr, decay and the component's choices)."""
    record: dict[str, Any] = {"name": name, "lr": lr, "weight_decay": weight_decay, **asdict(choice)}
    if name != "sgd":
        record.pop("momentum")
        record.pop("nesterov")
    return record


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup to the base lr, then cosine decay to zero (Loshchilov & Hutter 2017)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine_factor(total_steps, warmup_steps))


def warmup_cosine_factor(total_steps: int, warmup_steps: int):
    """The factor on the base lr at each step of :func:`warmup_cosine` (a function of the step)."""
    total_steps = max(total_steps, 1)
    warmup_steps = min(max(warmup_steps, 0), total_steps - 1) if total_steps > 1 else 0

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor
