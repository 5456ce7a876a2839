"""The pretraining source of a self-supervised cell is read with the grid's options for that
source (``[dataset.<source>]``), whatever the cell's target: one pretraining run per source data."""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest

from chexbench.datasets.celldata import pretrain_pool, resolve_prepared
from chexbench.datasets.fixtures import real_label_file, write_chexpert_layout, write_nih_layout
from chexbench.spec.grid import _has_pretraining_run
from chexbench.spec.parse import parse_grid
from chexbench.spec.registry import STRATEGIES
from chexbench.strategies.base import Strategy
from chexbench.strategies.pretrain import run_id_of

PHANTOM_SOURCE = {"patients": 120, "size": 16, "seed": 3}
# as a cell stores a generated phantom's options: the default dependencies written out (they identify the
# data)
STORED_SOURCE = {**PHANTOM_SOURCE, "dependencies": "published"}


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("CHEXBENCH_CACHE", str(tmp_path / "cache"))


def _grid(datasets, dataset_tables, strategies=("simclr", "mocov2"), **settings):
    raw = {
        "axes": {
            "strategy": list(strategies),
            "backbone": ["resnet_tiny"],
            "dataset": list(datasets),
            "protocol": ["linear"],
            "label_fraction": [1.0],
            "seed": [0],
        },
        "settings": {"image_size": 16, "views": "all", **settings},
        "dataset": dataset_tables,
    }
    return [p.cell for p in parse_grid(raw, "t.toml").cells()]


def _id_under_schema_1(cell) -> str:
    """The id the cell had under results schema 1: schema 2 changed every id (fine-tuning's dropped
    remainder batch), not the resolved config, and these checks are about the canonical config."""
    return hashlib.sha256(f"v1:{cell.canonical_json()}".encode()).hexdigest()[:12]


def test_one_pretraining_run_per_strategy_and_backbone_from_the_configured_phantom_source():
    cells = _grid(
        ["phantom-nih", "phantom-chexpert"],
        {"phantom-chexpert": PHANTOM_SOURCE, "phantom-nih": {"patients": 40, "size": 16}},
        pretrain_source="phantom-chexpert",
    )
    assert len(cells) == 4
    runs: dict[str, set[str]] = {}
    for c in cells:
        key = STRATEGIES.get(c.strategy).pretrain_key(c)
        assert key["pretrain_source_options"] == STORED_SOURCE, c.dataset
        runs.setdefault(run_id_of(key), set()).add(c.dataset)
    # simclr and mocov2 each pretrain once, and that run serves both targets
    assert sorted(runs.values(), key=sorted) == [{"phantom-chexpert", "phantom-nih"}] * 2


def test_the_nih_cells_pool_is_the_configured_phantom():
    (nih,) = [
        c
        for c in _grid(
            ["phantom-nih"],
            {"phantom-chexpert": PHANTOM_SOURCE, "phantom-nih": {"patients": 40, "size": 16}},
            strategies=("simclr",),
            pretrain_source="phantom-chexpert",
        )
    ]
    assert nih.pretrain_source_options == STORED_SOURCE
    _, patients = pretrain_pool(nih)
    index = resolve_prepared("phantom-chexpert", PHANTOM_SOURCE, 16)[2].index
    configured = set(index["patient_id"].astype(str)[index["split"].astype(str) == "train"])
    assert set(patients) == configured  # the default phantom (500 patients, seed 0) is another set
    assert 0 < len(set(patients)) <= PHANTOM_SOURCE["patients"]


def test_a_real_sources_dataset_table_root_reaches_the_nih_cells_pool(tmp_path):
    rows = pd.read_csv(real_label_file("chexpert"), nrows=80)
    chexpert_root = write_chexpert_layout(tmp_path / "cx", rows.iloc[:60], rows.iloc[60:])
    nih_rows = pd.read_csv(real_label_file("nih"), nrows=60)
    nih_root = write_nih_layout(tmp_path / "nih", nih_rows, set(nih_rows["Patient ID"].unique()[-3:]))
    (nih,) = _grid(
        ["nih"],
        {"chexpert": {"root": str(chexpert_root)}, "nih": {"root": str(nih_root)}},
        strategies=("simclr",),
        pretrain_source="chexpert",
    )
    assert nih.pretrain_source_options == {"root": str(chexpert_root)}
    _, patients = pretrain_pool(nih)
    index = resolve_prepared("chexpert", {"root": str(chexpert_root)}, 16)[2].index
    assert set(patients) == set(index["patient_id"].astype(str)[index["split"].astype(str) == "train"])
    # pretrain_root under the strategy overrides the table's root
    other = tmp_path / "elsewhere"
    raw = {
        "axes": {
            "strategy": ["simclr"],
            "backbone": ["resnet_tiny"],
            "dataset": ["nih"],
            "protocol": ["linear"],
            "label_fraction": [1.0],
            "seed": [0],
        },
        "settings": {"pretrain_source": "chexpert"},
        "dataset": {"chexpert": {"root": str(chexpert_root)}, "nih": {"root": str(nih_root)}},
        "strategy": {"simclr": {"pretrain_root": str(other)}},
    }
    overridden = parse_grid(raw, "t.toml").cells()[0].cell
    assert overridden.pretrain_source_options == {"root": str(other)}
    assert nih.cell_id != overridden.cell_id


def test_cells_whose_source_options_they_already_hold_keep_their_ids():
    raw = {
        "axes": {
            "strategy": ["simclr", "scratch"],
            "backbone": ["resnet_tiny"],
            "dataset": ["chexpert", "nih"],
            "protocol": ["linear"],
            "label_fraction": [1.0],
            "seed": [0],
        },
        "settings": {"pretrain_source": "chexpert"},
        "dataset": {"chexpert": {"root": "/data/chexpert"}},
    }
    ids = {(p.cell.strategy, p.cell.dataset): p.cell for p in parse_grid(raw, "t.toml").cells()}
    # ids computed by the code before pretrain_source_options entered the cell: the chexpert-target
    # cells (source = target) and scratch (no pretraining pool) are unchanged; only the nih cell's
    # pretraining data changed (from chexpert's default root to /data/chexpert), and so its id
    assert _id_under_schema_1(ids["simclr", "chexpert"]) == "aa946823c4f4"
    assert _id_under_schema_1(ids["scratch", "chexpert"]) == "1accb07eed20"
    assert _id_under_schema_1(ids["scratch", "nih"]) == "3a77e9ac46dd"
    assert ids["simclr", "nih"].cell_id != "05928b6a8cde"
    assert ids["simclr", "nih"].to_dict()["pretrain_source_options"] == {"root": "/data/chexpert"}
    for key in [("simclr", "chexpert"), ("scratch", "chexpert"), ("scratch", "nih")]:
        assert "pretrain_source_options" not in ids[key].to_dict()
    # the source-is-target cell and the nih cell pretrain on the same data: one run
    simclr = STRATEGIES.get("simclr")
    assert run_id_of(simclr.pretrain_key(ids["simclr", "chexpert"])) == run_id_of(
        simclr.pretrain_key(ids["simclr", "nih"])
    )


def test_the_grid_asks_the_strategy_object_whether_it_pretrains():
    """config decides without importing strategies: a class that overrides the contract's
    ``pretrain_key`` pretrains, one that inherits it does not (whatever its name)."""

    class Plain(Strategy):
        name = "plain_pretrain_in_name"

    class Pretrains(Plain):
        def pretrain_key(self, cell):
            return {"run": 1}

    assert not _has_pretraining_run(Plain())
    assert _has_pretraining_run(Pretrains())
    assert [n for n in STRATEGIES.names() if _has_pretraining_run(STRATEGIES.get(n))] == [
        n for n in STRATEGIES.names() if type(STRATEGIES.get(n)).pretrain_key is not Strategy.pretrain_key
    ]


def test_a_default_phantom_cell_and_its_pretraining_run_name_the_phantoms_dependencies():
    # generator version 6 changed the default phantom ("published" dependencies); a cell or pretraining run
    # made
    # on version-5 files (now dependencies = "none") must not be found as finished under the new default
    def cells(table, source_table=None):
        tables = {
            "phantom-nih": table,
            **({"phantom-chexpert": source_table} if source_table is not None else {}),
        }
        return _grid(["phantom-nih"], tables, strategies=("simclr",), pretrain_source="phantom-chexpert")[0]

    default, published, none = (
        cells({}),
        cells({"dependencies": "published"}),
        cells({"dependencies": "none"}),
    )
    assert default.dataset_options["dependencies"] == "published"
    assert default.cell_id == published.cell_id != none.cell_id
    # the source without a table of its own: its default dependencies still enter the run's key
    keys = {
        dep: STRATEGIES.get("simclr").pretrain_key(cells({}, {"dependencies": dep} if dep else None))
        for dep in (None, "published", "none")
    }
    assert keys[None]["pretrain_source_options"]["dependencies"] == "published"
    assert run_id_of(keys[None]) == run_id_of(keys["published"]) != run_id_of(keys["none"])
    # a phantom read from a folder is identified by the folder, as any dataset
    assert "dependencies" not in cells({"root": "/somewhere"}).dataset_options
