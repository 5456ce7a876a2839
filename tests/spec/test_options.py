"""Option schemas: every registered component's options are typed, documented and machine-readable."""

from __future__ import annotations

import pytest

from chexbench.core.errors import ConfigError
from chexbench.spec.options import option_schema, options_model, validate_table
from chexbench.spec.registry import BACKBONES, DATASETS, PROTOCOLS, STRATEGIES
from chexbench.spec.settings import Settings, settings_schema

REGISTRIES = {"strategy": STRATEGIES, "backbone": BACKBONES, "dataset": DATASETS, "protocol": PROTOCOLS}


@pytest.mark.parametrize("kind", list(REGISTRIES))
def test_every_component_schema_matches_the_options_it_reads(kind: str) -> None:
    registry = REGISTRIES[kind]
    for name in registry.names():
        component = registry.get(name)
        rows = option_schema(component)
        assert {r.name: r.default for r in rows} == dict(component.options), name
        for r in rows:
            d = r.to_dict()
            assert set(d) == {"name", "type", "default", "choices", "bounds", "meaning"}
            assert d["type"], (name, r.name)


def test_the_schema_says_choices_bounds_and_meaning() -> None:
    rows = {r.name: r for r in option_schema(STRATEGIES.get("mocov2"))}
    assert (
        rows["pretrain_optimizer"].choices == ("sgd", "adamw", "lars")
        and rows["pretrain_optimizer"].type == "choice"
    )
    assert rows["momentum"].bounds == ">= 0, <= 1" and rows["momentum"].meaning
    assert rows["pretrain_root"].type == "str | None"
    settings = {r.name: r for r in settings_schema()}
    assert set(settings) == {f for f in Settings.__dataclass_fields__}
    assert settings["uncertainty"].choices == ("ignore", "zeros", "ones", "mixed")
    assert settings["lr"].bounds == "> 0" and settings["epochs"].default == 10
    assert all(r.meaning for r in settings.values())


def test_a_plugin_with_a_plain_options_dict_gets_types_from_its_defaults() -> None:
    class Plugin:
        options = {"depth": 3, "scale": 0.5, "mode": "fast", "path": None}

    model = options_model(Plugin())
    assert validate_table(model, {"depth": 4, "scale": 2, "path": "/x"}, "[strategy.plugin]", "g.toml") == {
        "depth": 4,
        "scale": 2,
        "path": "/x",  # an int where the default is a float stays an int
    }
    with pytest.raises(ConfigError, match=r"g.toml: \[strategy.plugin\] 'depth' must be int, got 'deep'"):
        validate_table(model, {"depth": "deep"}, "[strategy.plugin]", "g.toml")
    with pytest.raises(ConfigError, match="unknown key 'dept' in .*did you mean 'depth'"):
        validate_table(model, {"dept": 1}, "[strategy.plugin]", "g.toml")


def test_a_subclass_that_adds_options_in_its_dict_keeps_the_declared_types() -> None:
    topk = options_model(STRATEGIES.get("mocov2_topk"))
    assert {"topk", "queue_size"} <= set(topk.model_fields)
    with pytest.raises(ConfigError, match="'pretrain_optimizer' must be one of"):
        validate_table(topk, {"pretrain_optimizer": "lamb"}, "[strategy.mocov2_topk]", "g.toml")


def test_every_packaged_grid_passes_the_typed_validation() -> None:
    from chexbench.spec.parse import load_grid
    from chexbench.spec.registry import GRIDS

    for name in GRIDS.names():
        assert load_grid(name).cells(), name


def test_a_component_declares_its_option_model_once_and_reads_options_from_it() -> None:
    from pydantic import Field

    from chexbench.spec.options import Options
    from chexbench.spec.reference import option_rows
    from chexbench.strategies.base import Strategy

    class GainOptions(Options):
        gain: float = Field(1.0, gt=0, description="scale of the weights")

    class Declared(Strategy):
        option_model = GainOptions

    class PlainDict(Strategy):
        options = {"gain": 1.0}

    assert Declared.options == Declared().options == {"gain": 1.0}
    Declared().options["gain"] = 5.0  # a copy: the declaration is not changed through it
    assert Declared.options == {"gain": 1.0}
    assert [(r.key, r.type, r.default, r.meaning) for r in option_rows(Declared())] == [
        ("gain", "float > 0", "1.0", "scale of the weights")
    ]
    # a plugin's plain dict still validates (typed from its default) but has no meaning to print
    assert [(r.key, r.meaning) for r in option_rows(PlainDict())] == [("gain", "")]
