"""Cell identity: plugin components are versioned in the config and the id, built-in ids do not move;
``settings.pretrain_seed`` works as a grid axis (one pretraining run per pretraining seed)."""

from __future__ import annotations

import dataclasses
import hashlib

from typer.testing import CliRunner

from chexbench.cli import app
from chexbench.spec.parse import parse_grid
from chexbench.spec.registry import STRATEGIES
from chexbench.strategies.pretrain import run_id_of

RAW = {
    "axes": {
        "strategy": ["simclr"],
        "backbone": ["resnet_tiny"],
        "dataset": ["phantom-chexpert"],
        "protocol": ["linear"],
        "label_fraction": [0.1],
        "seed": [1],
    },
    "settings": {"epochs": 2},
    "strategy": {"simclr": {"temperature": 0.5}},
}


def _id_under_schema_1(cell) -> str:
    """The id the cell had under results schema 1: schema 2 changed every id (fine-tuning's dropped
    remainder batch), not the resolved config, and these checks are about the canonical config."""
    return hashlib.sha256(f"v1:{cell.canonical_json()}".encode()).hexdigest()[:12]


def test_a_built_in_cell_keeps_the_id_it_had_before_plugins_were_versioned():
    # 66a8c26a28bd: this cell's id computed by the code before plugin versions entered the config (the parent
    # of 19b5c12). A real dataset's cell: a default phantom's cell id moved with generator version 6, whose
    # default dependencies the cell now names (tests/spec/test_pretrain_source_options.py)
    raw = {**RAW, "axes": {**RAW["axes"], "dataset": ["chexpert"]}}
    cell = parse_grid(raw, "t.toml").cells()[0].cell
    assert cell.plugins == {}
    assert "plugins" not in cell.to_dict()
    assert _id_under_schema_1(cell) == "66a8c26a28bd" and cell.cell_id != "66a8c26a28bd"


def test_a_plugin_version_is_in_the_config_and_a_new_version_is_a_new_cell(monkeypatch):
    entry = STRATEGIES.entry("simclr")
    builtin = parse_grid(RAW, "t.toml").cells()[0].cell.cell_id
    ids = []
    for version in ("1.0.0", "1.1.0"):
        fake = dataclasses.replace(
            entry, source="plugin x:register", distribution="cxr-plugin", version=version
        )
        monkeypatch.setitem(STRATEGIES._entries, "simclr", fake)
        cell = parse_grid(RAW, "t.toml").cells()[0].cell
        assert cell.plugins == {"strategy": f"cxr-plugin=={version}"}
        assert f'"plugins":{{"strategy":"cxr-plugin=={version}"}}' in cell.canonical_json()
        ids.append(cell.cell_id)
    assert ids[0] != ids[1] and builtin not in ids


def test_pretrain_seed_is_a_grid_axis_with_one_pretraining_run_per_pretraining_seed(tmp_path, monkeypatch):
    monkeypatch.setenv("CHEXBENCH_CACHE", str(tmp_path / "cache"))
    raw = {**RAW, "axes": {**RAW["axes"], "seed": [0, 1, 2], "settings.pretrain_seed": [0, 1]}}
    cells = [p.cell for p in parse_grid(raw, "t.toml").cells()]
    assert len(cells) == 6 and len({c.cell_id for c in cells}) == 6
    assert sorted({c.settings.pretrain_seed for c in cells}) == [0, 1]
    runs = {}
    for c in cells:
        runs.setdefault(run_id_of(STRATEGIES.get("simclr").pretrain_key(c)), set()).add(
            (c.settings.pretrain_seed, c.seed)
        )
    # two runs, one per pretraining seed, each serving all three fine-tuning seeds
    assert sorted(runs.values(), key=sorted) == [{(0, 0), (0, 1), (0, 2)}, {(1, 0), (1, 1), (1, 2)}]

    grid = tmp_path / "g.toml"
    grid.write_text(
        '[axes]\nstrategy=["simclr"]\nbackbone=["resnet_tiny"]\ndataset=["phantom-chexpert"]\nprotocol=["linear"]\n'
        'seed=[0,1,2]\n"settings.pretrain_seed"=[0,1]\n'
    )
    # --no-check: the CheXpert pretraining source has no root here (plan's checks would refuse, as run does)
    result = CliRunner().invoke(
        app, ["plan", "--grid", str(grid), "--results", str(tmp_path / "r"), "--no-check"]
    )
    assert result.exit_code == 0, result.output
    assert "2 shared pretraining runs" in result.output
    assert (
        "seed0" in result.output and "seed1" in result.output and result.output.count("serves 3 cells") == 2
    )
