import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chexbench.core.errors import ConfigError
from chexbench.spec.cell import CellConfig
from chexbench.spec.grid import parse_only
from chexbench.spec.parse import load_grid, parse_grid
from chexbench.spec.settings import Settings

BASE = {
    "axes": {
        "strategy": ["scratch", "imagenet"],
        "backbone": ["resnet_tiny", "vit_tiny"],
        "dataset": ["chexpert"],
        "protocol": ["finetune"],
        "label_fraction": [0.1, 1.0],
        "seed": [0, 1],
    },
    "settings": {"epochs": 2, "lr": 1e-3},
}


def _cell(**kw) -> CellConfig:
    base = dict(
        strategy="scratch",
        backbone="resnet_tiny",
        dataset="chexpert",
        protocol="finetune",
        label_fraction=1.0,
        seed=0,
    )
    base.update(kw)
    return CellConfig(**base)


def test_grid_product_and_precedence():
    raw = {
        **BASE,
        "backbone": {"vit_tiny": {"lr": 5e-4}},
        "protocol": {"finetune": {"epochs": 3}},
        "override": [{"match": {"backbone": "vit_tiny", "seed": 1}, "lr": 1e-5}],
    }
    g = parse_grid(raw, "test.toml")
    cells = g.cells()
    assert len(cells) == 2 * 2 * 2 * 2
    by = {(p.cell.strategy, p.cell.backbone, p.cell.label_fraction, p.cell.seed): p.cell for p in cells}
    assert by[("scratch", "resnet_tiny", 1.0, 0)].settings.lr == 1e-3
    assert by[("scratch", "vit_tiny", 1.0, 0)].settings.lr == 5e-4
    assert by[("scratch", "vit_tiny", 1.0, 1)].settings.lr == 1e-5
    assert all(p.cell.settings.epochs == 3 for p in cells)


def test_only_filters():
    g = parse_grid(BASE, "t.toml")
    cells = g.cells(parse_only(["strategy=scratch", "seed=1", "label_fraction=0.1"]))
    assert len(cells) == 2
    assert {p.cell.backbone for p in cells} == {"resnet_tiny", "vit_tiny"}


def test_misspelled_keys_name_key_and_file():
    with pytest.raises(ConfigError, match=r"my.toml: unknown key 'lrr' in \[settings\]; did you mean 'lr'"):
        parse_grid({**BASE, "settings": {"lrr": 1}}, "my.toml")
    with pytest.raises(
        ConfigError, match=r"my.toml: unknown key 'stratgy' in \[axes\]; did you mean 'strategy'"
    ):
        parse_grid({"axes": {**BASE["axes"], "stratgy": ["x"]}}, "my.toml")
    with pytest.raises(
        ConfigError, match=r"unknown key 'weigths' in \[strategy.imagenet\]; did you mean 'weights'"
    ):
        parse_grid({**BASE, "strategy": {"imagenet": {"weigths": "x"}}}, "my.toml")
    with pytest.raises(ConfigError, match="unknown strategy 'simclrr'"):
        parse_grid({"axes": {**BASE["axes"], "strategy": ["simclrr"]}}, "my.toml")
    with pytest.raises(ConfigError, match="must be int"):
        parse_grid({**BASE, "settings": {"epochs": "ten"}}, "my.toml")
    with pytest.raises(ConfigError, match="--only: unknown axis 'strat'"):
        parse_only(["strat=scratch"])


def test_grid_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="grid file not found"):
        load_grid(str(tmp_path / "nope.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text("[axes\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_grid(str(bad))
    with pytest.raises(ConfigError, match="unknown grid 'smok'.*did you mean 'smoke'"):
        load_grid("smok")


def test_imagenet_without_weights_is_skipped_not_failed(tmp_path, monkeypatch):
    monkeypatch.setenv("CHEXBENCH_CACHE", str(tmp_path))
    cells = parse_grid(
        {**BASE, "axes": {**BASE["axes"], "backbone": ["resnet50", "vit_b16"]}}, "t.toml"
    ).cells()
    skipped = [p for p in cells if p.status == "skipped"]
    assert skipped and all(p.cell.strategy == "imagenet" for p in skipped)
    assert all("no ImageNet weights" in p.reason and str(tmp_path / "weights") in p.reason for p in skipped)


def test_packaged_smoke_grid_loads():
    g = load_grid("smoke")
    assert g.name == "smoke" and g.cells()


def test_cell_id_is_deterministic_and_short():
    a, b = _cell(), _cell()
    assert a.cell_id == b.cell_id and len(a.cell_id) == 12
    assert _cell(grid="other").cell_id == a.cell_id  # the grid's name does not change the computation


_fields = {
    "strategy": st.sampled_from(["scratch", "imagenet", "simclr"]),
    "backbone": st.sampled_from(["resnet_tiny", "vit_tiny", "resnet50"]),
    "dataset": st.sampled_from(["chexpert", "nih"]),
    "protocol": st.sampled_from(["finetune", "linear"]),
    "label_fraction": st.sampled_from([0.01, 0.1, 1.0]),
    "seed": st.integers(0, 5),
    "epochs": st.integers(1, 50),
    "lr": st.floats(1e-6, 1.0),
    "temperature": st.floats(0.01, 1.0),
}


@settings(max_examples=200, deadline=None)
@given(st.fixed_dictionaries(_fields), st.fixed_dictionaries(_fields))
def test_cell_id_changes_when_any_field_changes(a, b):
    def make(d):
        return _cell(
            strategy=d["strategy"],
            backbone=d["backbone"],
            dataset=d["dataset"],
            protocol=d["protocol"],
            label_fraction=d["label_fraction"],
            seed=d["seed"],
            settings=Settings(epochs=d["epochs"], lr=d["lr"]),
            strategy_options={"temperature": d["temperature"]},
        )

    ca, cb = make(a), make(b)
    assert (ca.cell_id == cb.cell_id) == (a == b)
    assert CellConfig.from_dict(dataclasses.asdict(ca)).cell_id == ca.cell_id


def test_only_filters_on_an_option_axis_and_names_an_axis_the_grid_lacks():
    raw = {
        **BASE,
        "axes": {**BASE["axes"], "backbone": ["vit_tiny"], "protocol.head": ["linear", "topk_classwise"]},
    }
    g = parse_grid(raw, "t.toml")
    cells = g.cells(parse_only(["protocol.head=topk_classwise", "seed=0"]))
    assert len(cells) == 2 * 2  # strategy × label_fraction
    assert {p.cell.protocol_options["head"] for p in cells} == {"topk_classwise"}
    with pytest.raises(
        ConfigError, match=r"--only protocol.head=topk: not a protocol.head of grid .*linear, topk_classwise"
    ):
        g.cells(parse_only(["protocol.head=topk"]))
    with pytest.raises(ConfigError, match=r"--only protocol.topk: grid '.*' has no axis protocol.topk"):
        parse_grid(BASE, "t.toml").cells(parse_only(["protocol.topk=4"]))
    with pytest.raises(ConfigError, match="unknown axis 'heads'"):
        parse_only(["heads=topk"])
