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

OPTIMIZERS = ("adamw", "sgd", "lars")


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
    """AdamW (decoupled decay), SGD with momentum or :class:`LARS` over ``model``'s trainable parameters.

    Parameter groups: :func:`weight_decay_groups` (the undecayed group first); with
    ``choice.decay_norm_and_bias`` every parameter is decayed.
    """
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer '{name}' ({' or '.join(OPTIMIZERS)})")
    groups = weight_decay_groups(model, weight_decay, exclude_1d=not choice.decay_norm_and_bias)
    impl = optimizer_implementation(device)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, **impl)
    if name == "lars":
        return LARS(groups, lr=lr, weight_decay=weight_decay, momentum=choice.momentum)
    return torch.optim.SGD(
        groups, lr=lr, momentum=choice.momentum, weight_decay=weight_decay, nesterov=choice.nesterov, **impl
    )


class LARS(torch.optim.Optimizer):
    """LARS (You, Gitman & Ginsburg 2017) as MoCo v3's code release uses it: SGD with momentum whose
    update of each matrix/kernel (``ndim > 1``) is ``g + wd·p`` scaled by the trust ratio
    ``η·‖p‖ / ‖g + wd·p‖`` (1 where either norm is 0); biases and norm parameters (1-d) get the
    plain gradient, no decay and no scaling. ``v ← μ·v + update``, ``p ← p − lr·v``."""

    def __init__(
        self,
        params,
        lr: float,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        trust_coefficient: float = 0.001,
    ):
        super().__init__(
            params,
            {
                "lr": lr,
                "weight_decay": weight_decay,
                "momentum": momentum,
                "trust_coefficient": trust_coefficient,
            },
        )

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = p.grad
                if p.ndim > 1:
                    update = update.add(p, alpha=group["weight_decay"])
                    p_norm, u_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(update)
                    ratio = torch.where(
                        (p_norm > 0) & (u_norm > 0),
                        group["trust_coefficient"] * p_norm / u_norm,
                        torch.ones_like(p_norm),
                    )
                    update = update.mul(ratio)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                state["mu"].mul_(group["momentum"]).add_(update)
                p.add_(state["mu"], alpha=-group["lr"])
        return loss


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
        record.pop("nesterov")
    if name not in ("sgd", "lars"):
        record.pop("momentum")
    return record


def warmup_cosine(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup to the base lr, then cosine decay to zero (Loshchilov & Hutter 2017)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine_factor(total_steps, warmup_steps))


def warmup_cosine_factor(total_steps: int, warmup_steps: int):
    """The factor on the base lr at each step of :func:`warmup_cosine` (a function of the step).

    A warmup must leave at least one step of the run to the cosine phase: ``warmup_steps ≥
    total_steps`` (with a warmup at all) is a ``ValueError``, never clamped to the run (a clamped
    warmup runs a different recipe than the one stated). Callers check it first with the grid's
    key names (:func:`check_warmup_fits`, :func:`fit_schedule`)."""
    total_steps = max(total_steps, 1)
    if warmup_steps < 0 or (warmup_steps > 0 and warmup_steps >= total_steps):
        raise ValueError(f"a warmup of {warmup_steps} steps does not fit a run of {total_steps} steps")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def check_warmup_fits(
    warmup_epochs: float, epochs: float, *, warmup_key: str, epochs_key: str, where: str = "", hint: str = ""
) -> None:
    """Refuse, with one line naming both keys and values, a warmup that is not shorter than its run
    (checked at plan time by the components' ``preflight`` hooks). ``where`` prefixes the keys (the
    grid table), ``hint`` ends the line (where to set the warmup)."""
    if warmup_epochs > 0 and warmup_epochs >= epochs:
        raise ConfigError(
            f"{where}{warmup_key} = {warmup_epochs:g} does not fit {epochs_key} = {epochs:g}: the whole run"
            f" would be warmup, with no cosine decay (a warmup is never clamped to the run); set {warmup_key}"
            f" below {epochs:g}{hint}"
        )


@dataclass(frozen=True)
class Schedule:
    """The learning-rate schedule a run follows, in steps: linear warmup over ``warmup_steps``, then
    cosine decay to zero over the remaining ``total_steps − warmup_steps`` (:func:`warmup_cosine`)."""

    steps_per_epoch: int
    total_steps: int
    warmup_steps: int

    def record(self) -> dict[str, Any]:
        """The effective schedule as a record states it (what ran, after rounding epochs to steps)."""
        return {
            "warmup_steps": self.warmup_steps,
            "warmup_epochs": self.warmup_steps / self.steps_per_epoch if self.steps_per_epoch else 0.0,
            "total_steps": self.total_steps,
            "steps_per_epoch": self.steps_per_epoch,
            "decay": "cosine to 0",
            "decay_steps": self.total_steps - self.warmup_steps,
        }


def fit_schedule(
    warmup_epochs: float, epochs: int, steps_per_epoch: int, *, warmup_key: str, epochs_key: str
) -> Schedule:
    """The run's schedule in steps (warmup rounded to whole steps), or a one-line
    :class:`ConfigError` when the warmup leaves no step to the cosine phase — in epochs
    (:func:`check_warmup_fits`) or, after rounding, in steps."""
    check_warmup_fits(warmup_epochs, epochs, warmup_key=warmup_key, epochs_key=epochs_key)
    total = steps_per_epoch * epochs
    warmup = round(warmup_epochs * steps_per_epoch)
    if warmup > 0 and warmup >= total:
        raise ConfigError(
            f"{warmup_key} = {warmup_epochs:g} is {warmup} warmup steps of a run of {total} steps"
            f" ({epochs_key} = {epochs} × {steps_per_epoch} steps per epoch): no step is left for the cosine"
            f" decay (a warmup is never clamped to the run); lower {warmup_key}"
        )
    return Schedule(steps_per_epoch=steps_per_epoch, total_steps=total, warmup_steps=warmup)
