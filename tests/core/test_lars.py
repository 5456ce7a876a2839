"""LARS as MoCo v3's code release defines it, against a step computed by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from chexbench.core.optim import LARS, OptimizerChoice, build_optimizer, optimizer_record


def test_two_lars_steps_equal_the_hand_computed_update():
    w = nn.Parameter(torch.tensor([[3.0, 4.0]]))  # ‖w‖ = 5
    b = nn.Parameter(torch.tensor([1.0]))
    opt = LARS(
        [{"params": [b], "weight_decay": 0.0}, {"params": [w], "weight_decay": 0.1}],
        lr=0.5,
        momentum=0.9,
        trust_coefficient=0.01,
    )
    w.grad, b.grad = torch.tensor([[0.7, -0.1]]), torch.tensor([2.0])
    opt.step()
    u = torch.tensor([[0.7, -0.1]]) + 0.1 * torch.tensor([[3.0, 4.0]])  # g + wd·w = [1.0, 0.3]
    ratio = 0.01 * 5.0 / u.norm()
    w1 = torch.tensor([[3.0, 4.0]]) - 0.5 * ratio * u
    assert torch.allclose(w.detach(), w1) and b.item() == pytest.approx(
        1.0 - 0.5 * 2.0
    )  # 1-d: plain momentum SGD
    w.grad, b.grad = torch.tensor([[0.7, -0.1]]), torch.tensor([2.0])
    opt.step()
    u2 = torch.tensor([[0.7, -0.1]]) + 0.1 * w1
    mu = 0.9 * ratio * u + 0.01 * w1.norm() / u2.norm() * u2
    assert torch.allclose(w.detach(), w1 - 0.5 * mu)
    assert b.item() == pytest.approx(0.0 - 0.5 * (0.9 * 2.0 + 2.0))


def test_the_factory_builds_lars_and_the_record_states_its_momentum():
    model = nn.Linear(3, 2)
    opt = build_optimizer(
        model,
        torch.device("cpu"),
        name="lars",
        lr=0.3,
        weight_decay=1e-6,
        choice=OptimizerChoice(decay_norm_and_bias=False),
    )
    assert isinstance(opt, LARS) and [g["weight_decay"] for g in opt.param_groups] == [0.0, 1e-6]
    assert optimizer_record("lars", 0.3, 1e-6, OptimizerChoice()) == {
        "name": "lars",
        "lr": 0.3,
        "weight_decay": 1e-6,
        "momentum": 0.9,
        "decay_norm_and_bias": True,
    }
