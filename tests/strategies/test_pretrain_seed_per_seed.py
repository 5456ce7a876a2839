"""``pretrain_seed = "per_seed"``: each fine-tuning seed gets its own pretraining run inside one
configuration, so seed-pooled intervals include pretraining variance; the default stays shared."""

from __future__ import annotations

import dataclasses
import tomllib

import pytest
from ssl_fixtures import tiny_cell

from chexbench.core.errors import ConfigError
from chexbench.spec.parse import parse_grid
from chexbench.spec.registry import BACKBONES, STRATEGIES
from chexbench.spec.settings import Settings
from chexbench.strategies.pretrain import run_id_of

GRID = """
[axes]
strategy = ["mocov2"]
backbone = ["resnet_tiny"]
dataset = ["phantom-chexpert"]
protocol = ["linear"]
seed = [0, 1]
[settings]
pretrain_seed = {seed}
"""


def _cells(seed: str):
    return [p.cell for p in parse_grid(tomllib.loads(GRID.format(seed=seed)), "g.toml").cells()]


def test_per_seed_gives_each_seed_its_own_pretraining_run_in_one_configuration():
    a, b = _cells('"per_seed"')
    s = STRATEGIES.get("mocov2")
    assert a.configuration_hash == b.configuration_hash  # pooled over seeds by the report
    assert run_id_of(s.pretrain_key(a)) != run_id_of(s.pretrain_key(b))
    assert (s.pretrain_key(a)["pretrain_seed"], s.pretrain_key(b)["pretrain_seed"]) == (0, 1)
    assert (
        a.to_dict()["settings"]["pretrain_seed"] == "per_seed"
    )  # the record's config says which is the case


def test_the_default_shares_one_pretraining_run_and_keeps_its_cell_ids():
    a, b = _cells("0")
    s = STRATEGIES.get("mocov2")
    assert a.configuration_hash == b.configuration_hash and run_id_of(s.pretrain_key(a)) == run_id_of(
        s.pretrain_key(b)
    )
    assert Settings().pretrain_seed == 0
    default = [
        p.cell
        for p in parse_grid(
            tomllib.loads(GRID.replace("[settings]\npretrain_seed = {seed}\n", "")), "g.toml"
        ).cells()
    ]
    assert [c.cell_id for c in default] == [a.cell_id, b.cell_id]  # an unset pretrain_seed is 0, as before
    # per_seed with seed 0 computes exactly the run of pretrain_seed = 0 (the cache serves both)
    per_seed = _cells('"per_seed"')
    assert run_id_of(s.pretrain_key(per_seed[0])) == run_id_of(s.pretrain_key(a))


@pytest.mark.parametrize("bad", ['"each"', "-1", "1.5"])
def test_another_value_is_one_clear_error(bad):
    with pytest.raises(ConfigError, match=r"g.toml: \[settings\] 'pretrain_seed'"):
        _cells(bad)


def test_two_seeds_of_a_per_seed_configuration_pretrain_twice_and_record_it(fake_source, ctx):
    base = tiny_cell("mocov2", pretrain_epochs=1, probe_every=0)
    base = dataclasses.replace(base, settings=dataclasses.replace(base.settings, pretrain_seed="per_seed"))
    recs = []
    for seed in (0, 1):
        cell = dataclasses.replace(base, seed=seed)
        recs.append(STRATEGIES.get("mocov2").init_backbone(BACKBONES.get("resnet_tiny").build(32), cell, ctx))
    assert recs[0].pretrain_run != recs[1].pretrain_run and fake_source["pool"] == 2
    assert [r.extra["pretrain_seed"] for r in recs] == [0, 1]
    assert {r.extra["pretrain_seed_mode"] for r in recs} == {"per_seed"}
    shared = STRATEGIES.get("mocov2").init_backbone(
        BACKBONES.get("resnet_tiny").build(32),
        dataclasses.replace(tiny_cell("mocov2", pretrain_epochs=1, probe_every=0), seed=1),
        ctx,
    )
    assert (
        shared.extra["pretrain_seed_mode"] == "shared" and shared.pretrain_run == recs[0].pretrain_run
    )  # pretrain seed 0
