"""The one optimizer and learning-rate schedule factory of every training loop.

Fine-tuning and pretraining differ only in the arguments they pass, and each states them as
attributes of the component (:class:`~chexbench.bench.protocols.finetune.Finetune`,
:class:`~chexbench.strategies.pretrain.PretrainStrategy`): Nesterov momentum or not, and
whether biases and normalization parameters (1-d tensors) are decayed. Weight-decay groups are
those of ``timm.optim.param_groups_weight_decay`` as of timm 1.0.27 (biases and 1-d tensors
without decay when asked, as in timm, MoCo-v3 and DeiT recipes), built here: timm's function
took ``weight_decay_exclude_1d`` only from 1.0.27 on (a TypeError on the timm of many GPU
images) and returned empty groups before, which changes an optimizer state dict's layout with
the installed timm. ``tests/core/test_optim.py`` compares with timm's where it has the argument.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
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

    Parameter groups: :func:`weight_decay_groups` (the undecayed group first); with
    ``choice.decay_norm_and_bias`` every parameter is decayed.
    """
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer '{name}' ({' or '.join(OPTIMIZERS)})")
    groups = weight_decay_groups(model, weight_decay, exclude_1d=not choice.decay_norm_and_bias)
    impl = optimizer_implementation(device)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, **impl)
    return torch.optim.SGD(groups, lr=lr, momentum=choice.momentum, weight_decay=weight_decay, nesterov=choice.nesterov, **impl)


def weight_decay_groups(model: nn.Module, weight_decay: float, exclude_1d: bool) -> list[dict[str, Any]]:
    """timm's weight-decay parameter groups (``param_groups_weight_decay``, timm ≥ 1.0.27):
    trainable parameters only; with ``exclude_1d`` biases and 1-d tensors get no decay; with no
    decay at all, one undecayed group. The undecayed group comes first, an empty group is left out."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if not weight_decay or (exclude_1d and (param.ndim <= 1 or name.endswith(".bias"))):
            no_decay.append(param)
        else:
            decay.append(param)
    groups = [{"params": no_decay, "weight_decay": 0.0}] if no_decay else []
    return groups + ([{"params": decay, "weight_decay": weight_decay}] if decay else [])


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
