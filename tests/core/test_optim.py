"""The one optimizer factory: fine-tuning's and pretraining's choices train bit-identically to the
two builders it replaced (kept here verbatim as the reference), and its groups are timm's."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from chexbench.bench.protocols.finetune import Finetune
from chexbench.core.errors import ConfigError
from chexbench.core.optim import OptimizerChoice, build_optimizer, optimizer_record
from chexbench.strategies.pretrain import PretrainStrategy

CPU = torch.device("cpu")
LR, WD = 0.05, 0.1  # a decay large enough that decaying a norm parameter or not shows in three steps


def _old_finetune_optimizer(model: nn.Module, name: str) -> torch.optim.Optimizer:
    """core.training.build_optimizer before the factory: every parameter decayed, Nesterov SGD."""
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WD, foreach=True)
    return torch.optim.SGD(
        model.parameters(), lr=LR, momentum=0.9, weight_decay=WD, nesterov=True, foreach=True
    )


def _old_pretrain_optimizer(model: nn.Module, name: str) -> torch.optim.Optimizer:
    """strategies.pretrain._make_optimizer before the factory: no decay on 1-d tensors, plain momentum."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() <= 1]
    groups = [{"params": decay, "weight_decay": WD}, {"params": no_decay, "weight_decay": 0.0}]
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=LR, foreach=True)
    return torch.optim.SGD(groups, lr=LR, momentum=0.9, foreach=True)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.LayerNorm(4 * 6 * 6),
        nn.Linear(4 * 6 * 6, 3),
    )


def _train_three_steps(make_optimizer) -> list[torch.Tensor]:
    model = _model()
    opt = make_optimizer(model)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        x, y = torch.randn(5, 1, 8, 8, generator=g), torch.randn(5, 3, generator=g)
        loss = (model(x) - y).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("name", ["adamw", "sgd"])
@pytest.mark.parametrize(
    ("choice", "old"),
    [
        (Finetune.optimizer_choice, _old_finetune_optimizer),
        (PretrainStrategy.optimizer_choice, _old_pretrain_optimizer),
    ],
    ids=["finetune", "pretrain"],
)
def test_three_steps_with_the_factory_give_the_same_weights_bit_for_bit_as_the_old_builder(name, choice, old):
    new = _train_three_steps(
        lambda m: build_optimizer(m, CPU, name=name, lr=LR, weight_decay=WD, choice=choice)
    )
    ref = _train_three_steps(lambda m: old(m, name))
    assert len(new) == len(ref)
    for i, (a, b) in enumerate(zip(new, ref, strict=True)):
        assert torch.equal(a, b), f"parameter {i} differs by {(a - b).abs().max().item():.3g}"


def test_the_other_components_choice_trains_differently():
    """The comparison above can fail: swapping the two choices changes the weights."""
    for name in ("adamw", "sgd"):
        swapped = _train_three_steps(
            lambda m, n=name: build_optimizer(
                m, CPU, name=n, lr=LR, weight_decay=WD, choice=PretrainStrategy.optimizer_choice
            )
        )
        ref = _train_three_steps(lambda m, n=name: _old_finetune_optimizer(m, n))
        assert not all(torch.equal(a, b) for a, b in zip(swapped, ref, strict=True)), name


def test_groups_leave_exactly_biases_and_norm_parameters_undecayed_when_asked():
    model = _model()
    opt = build_optimizer(
        model, CPU, name="sgd", lr=LR, weight_decay=WD, choice=OptimizerChoice(decay_norm_and_bias=False)
    )
    undecayed = {id(p) for grp in opt.param_groups if grp["weight_decay"] == 0.0 for p in grp["params"]}
    assert undecayed == {id(p) for p in model.parameters() if p.dim() <= 1}
    assert sum(len(grp["params"]) for grp in opt.param_groups) == len(list(model.parameters()))
    everything = build_optimizer(
        model, CPU, name="adamw", lr=LR, weight_decay=WD, choice=OptimizerChoice(decay_norm_and_bias=True)
    )
    assert [grp["weight_decay"] for grp in everything.param_groups] == [WD]


def test_frozen_parameters_are_left_out():
    model = _model()
    model[0].weight.requires_grad_(False)
    opt = build_optimizer(model, CPU, name="adamw", lr=LR, weight_decay=WD, choice=Finetune.optimizer_choice)
    assert all(p is not model[0].weight for grp in opt.param_groups for p in grp["params"])


def test_the_record_states_the_components_choices():
    assert optimizer_record("sgd", 0.1, 1e-4, Finetune.optimizer_choice) == {
        "name": "sgd",
        "lr": 0.1,
        "weight_decay": 1e-4,
        "momentum": 0.9,
        "nesterov": True,
        "decay_norm_and_bias": True,
    }
    assert optimizer_record("adamw", 1e-3, 1e-6, PretrainStrategy.optimizer_choice) == {
        "name": "adamw",
        "lr": 1e-3,
        "weight_decay": 1e-6,
        "decay_norm_and_bias": False,
    }


def test_an_unknown_optimizer_is_one_clear_error():
    with pytest.raises(ConfigError, match="unknown optimizer 'lamb'"):
        build_optimizer(_model(), CPU, name="lamb", lr=LR, weight_decay=WD, choice=OptimizerChoice())


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_a_pretraining_checkpoint_of_the_old_builder_resumes_to_the_same_weights(name, tmp_path):
    """Optimizer state saved with the old group order (decayed group first) resumes bit-identically."""
    from chexbench.strategies.pretrain import _fit_group_order

    def steps(model, opt, seed, n):
        g = torch.Generator().manual_seed(seed)
        for _ in range(n):
            x, y = torch.randn(5, 1, 8, 8, generator=g), torch.randn(5, 3, generator=g)
            opt.zero_grad(set_to_none=True)
            (model(x) - y).pow(2).mean().backward()
            opt.step()

    ref_model = _model()
    ref_opt = _old_pretrain_optimizer(ref_model, name)
    steps(ref_model, ref_opt, 1, 2)
    saved_model, saved_opt = (
        copy.deepcopy(ref_model.state_dict()),
        copy.deepcopy(ref_opt.state_dict()),
    )  # as torch.save would
    steps(ref_model, ref_opt, 2, 2)

    model = _model()
    model.load_state_dict(saved_model)
    opt = PretrainStrategy().build_optimizer(
        model, {"pretrain_optimizer": name, "pretrain_lr": LR, "pretrain_weight_decay": WD}, CPU
    )
    opt.load_state_dict(_fit_group_order(saved_opt, opt, tmp_path / "checkpoint.pt"))
    steps(model, opt, 2, 2)
    for a, b in zip(model.parameters(), ref_model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, WD]


def test_a_checkpoint_whose_groups_do_not_fit_is_one_clear_error(tmp_path):
    from chexbench.strategies.pretrain import _fit_group_order

    model = _model()
    saved = torch.optim.SGD(model.parameters(), lr=LR, weight_decay=WD).state_dict()  # one group
    opt = build_optimizer(
        model, CPU, name="sgd", lr=LR, weight_decay=WD, choice=PretrainStrategy.optimizer_choice
    )
    with pytest.raises(ConfigError, match="parameter groups .* do not fit"):
        _fit_group_order(saved, opt, tmp_path / "checkpoint.pt")


def _timm_groups_with_exclude_arg():
    import inspect

    from timm.optim import param_groups_weight_decay

    if "weight_decay_exclude_1d" not in inspect.signature(param_groups_weight_decay).parameters:
        pytest.skip("this timm predates weight_decay_exclude_1d (1.0.27)")
    return param_groups_weight_decay


@pytest.mark.parametrize("weight_decay", [0.0, WD])
@pytest.mark.parametrize("exclude_1d", [True, False])
def test_decay_groups_are_timms_for_every_choice(weight_decay, exclude_1d):
    from chexbench.core.optim import weight_decay_groups
    from chexbench.spec.registry import BACKBONES

    timm_groups = _timm_groups_with_exclude_arg()
    for model in (
        _model(),
        BACKBONES.get("vit_tiny").build(32, {}),
        BACKBONES.get("resnet_tiny").build(32, {}),
    ):
        model.requires_grad_(True)
        next(model.parameters()).requires_grad_(False)  # a frozen parameter is left out by both
        ours = weight_decay_groups(model, weight_decay, exclude_1d)
        ref = timm_groups(model, weight_decay=weight_decay, weight_decay_exclude_1d=exclude_1d)
        assert [g["weight_decay"] for g in ours] == [g["weight_decay"] for g in ref]
        assert [[id(p) for p in g["params"]] for g in ours] == [[id(p) for p in g["params"]] for g in ref]
