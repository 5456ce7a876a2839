"""Schedules as stated: a warmup that does not fit its run is refused with one line, never clamped;
the effective schedule is what the record stores."""

from __future__ import annotations

import pytest
import torch

from chexbench.core.errors import ConfigError
from chexbench.core.optim import (
    Schedule,
    check_warmup_fits,
    fit_schedule,
    warmup_cosine,
    warmup_cosine_factor,
)
from chexbench.spec.cell import CellConfig
from chexbench.spec.parse import parse_grid
from chexbench.spec.registry import PROTOCOLS, STRATEGIES
from chexbench.spec.settings import Settings


def test_a_warmup_as_long_as_the_run_is_a_value_error_not_a_clamp():
    with pytest.raises(ValueError, match="warmup of 40 steps does not fit a run of 12 steps"):
        warmup_cosine_factor(12, 40)
    with pytest.raises(ValueError):
        warmup_cosine_factor(12, 12)
    f = warmup_cosine_factor(12, 11)  # one step of cosine left: fits
    assert f(10) == pytest.approx(11 / 12) and f(11) == pytest.approx(1.0)
    g = warmup_cosine_factor(1, 0)  # a one-step run without warmup
    assert g(0) == 1.0


def test_the_schedule_in_steps_warms_up_then_decays_to_zero():
    sched = fit_schedule(1.0, 4, 12, warmup_key="w", epochs_key="e")
    assert sched == Schedule(steps_per_epoch=12, total_steps=48, warmup_steps=12)
    rec = sched.record()
    assert (
        rec["warmup_steps"] == 12
        and rec["warmup_epochs"] == 1.0
        and rec["total_steps"] == 48
        and rec["decay_steps"] == 36
    )
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    lr = warmup_cosine(opt, sched.total_steps, sched.warmup_steps)
    seen = []
    for _ in range(sched.total_steps):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        lr.step()
    assert seen[:12] == sorted(seen[:12]) and seen[11] < 1.0 and seen[12] == pytest.approx(1.0)
    assert seen[12:] == sorted(seen[12:], reverse=True) and seen[-1] < 0.01


@pytest.mark.parametrize("warmup, epochs", [(40, 4), (4, 4), (10.0, 3)])
def test_a_warmup_not_shorter_than_the_run_is_refused_with_one_line_naming_key_and_values(warmup, epochs):
    with pytest.raises(ConfigError) as e:
        check_warmup_fits(warmup, epochs, warmup_key="pretrain_warmup_epochs", epochs_key="pretrain_epochs")
    msg = str(e.value)
    assert (
        "\n" not in msg
        and f"pretrain_warmup_epochs = {warmup:g}" in msg
        and f"pretrain_epochs = {epochs:g}" in msg
    )
    check_warmup_fits(0.0, 1, warmup_key="w", epochs_key="e")  # no warmup fits any run
    check_warmup_fits(3.5, 4, warmup_key="w", epochs_key="e")


def test_a_warmup_that_rounds_to_the_whole_run_in_steps_is_refused():
    # 0.9 of a 1-epoch run of 2 steps rounds to 2 warmup steps: nothing left to decay
    with pytest.raises(ConfigError, match=r"warmup_epochs = 0.9 is 2 warmup steps of a run of 2 steps"):
        fit_schedule(0.9, 1, 2, warmup_key="warmup_epochs", epochs_key="epochs")
    assert fit_schedule(0.9, 1, 20, warmup_key="warmup_epochs", epochs_key="epochs").warmup_steps == 18


GRID = """
[axes]
strategy = ["simclr", "mocov2", "moco_convstem"]
backbone = ["resnet_tiny", "vit_convstem_tiny"]
dataset = ["phantom-chexpert"]
protocol = ["linear"]
[strategy.simclr]
pretrain_epochs = 4
[strategy.mocov2]
pretrain_epochs = 4
[strategy.mocov2.recipe.vit]
pretrain_warmup_epochs = 1.0
"""


def test_the_recipes_warmups_that_do_not_fit_a_short_run_are_refused_at_plan_time():
    import tomllib

    cells = {
        (p.cell.strategy, p.cell.backbone): p.cell
        for p in parse_grid(tomllib.loads(GRID), "g.toml").cells()
        if p.status == "run"
    }
    # SimCLR's ResNet recipe warms up 10 epochs, its ViT recipe 40: neither fits 4 epochs
    for backbone, warmup, family in (("resnet_tiny", 10, "cnn"), ("vit_convstem_tiny", 40, "vit")):
        with pytest.raises(ConfigError) as e:
            STRATEGIES.get("simclr").preflight(cells[("simclr", backbone)])
        msg = str(e.value)
        assert msg.startswith(
            f"[strategy.simclr] on {backbone}: pretrain_warmup_epochs = {warmup} does not fit"
            " pretrain_epochs = 4"
        )
        assert msg.endswith(
            "set pretrain_warmup_epochs below 4 (for this backbone family:"
            f" [strategy.simclr.recipe.{family}])"
        )
    # the grid's own ViT warmup fits; MoCo-v2's ResNet recipe has none
    STRATEGIES.get("moco_convstem").preflight(cells[("moco_convstem", "vit_convstem_tiny")])
    STRATEGIES.get("mocov2").preflight(cells[("mocov2", "resnet_tiny")])


def test_the_protocols_warmup_must_fit_its_epochs():
    cell = CellConfig(
        "scratch",
        "resnet_tiny",
        "phantom-chexpert",
        "finetune",
        1.0,
        0,
        settings=Settings(epochs=2, warmup_epochs=2.0),
    )
    for protocol in ("finetune", "linear"):
        with pytest.raises(ConfigError, match=r"^warmup_epochs = 2 does not fit epochs = 2"):
            PROTOCOLS.get(protocol).preflight(cell)
