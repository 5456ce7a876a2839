"""Split files: export what cells use, read it back identically, refuse bad files with one line."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from chexbench.bench.runner import run_grid
from chexbench.bench.store import ResultStore
from chexbench.cli import app
from chexbench.core.context import RunContext
from chexbench.core.errors import ChexbenchError, ConfigError, DataError, LeakageError
from chexbench.datasets import split_files
from chexbench.datasets.celldata import select_rows, split_exports
from chexbench.datasets.leakage import indexed_root
from chexbench.spec.cell import CellConfig
from chexbench.spec.parse import parse_grid
from chexbench.spec.settings import Settings

PHANTOM = {"patients": 60, "size": 32}
SEEDS = (0, 1, 2)
FRACTIONS = (0.1, 0.5, 1.0)


@pytest.fixture()
def cache(tmp_path_factory, monkeypatch):
    """One cache per session: the tiny phantom is generated and prepared once."""
    path = tmp_path_factory.getbasetemp() / "split-files-cache"
    monkeypatch.setenv("CHEXBENCH_CACHE", str(path))
    return path


def _cell(seed=0, fraction=1.0, options=None, **settings):
    st = {"image_size": 32, **settings}
    return CellConfig(
        strategy="scratch",
        backbone="resnet_tiny",
        dataset="phantom-chexpert",
        protocol="linear",
        label_fraction=fraction,
        seed=seed,
        settings=Settings(**st),
        dataset_options=dict(options or PHANTOM),
    )


def _export(tmp_path, cells):
    (export,) = split_exports(cells)
    return split_files.write(export.rows, "phantom-chexpert", tmp_path / "splits")


def _chosen(cell):
    sel = select_rows(cell)
    return {name: set(sel.index["image_id"].to_numpy()[m]) for name, m in sel.masks.items()}


@pytest.mark.parametrize("settings", [{}, {"max_train_images": 40, "max_eval_images": 30, "views": "all"}])
def test_exported_split_file_reads_back_the_same_images_for_every_seed_and_fraction(
    tmp_path, cache, settings
):
    cells = [_cell(s, f, **settings) for s in SEEDS for f in FRACTIONS]
    path = _export(tmp_path, cells)
    assert path.name == f"phantom-chexpert-splits-{hashlib.sha256(path.read_bytes()).hexdigest()[:12]}.csv"
    options = split_files.identity("phantom-chexpert", {**PHANTOM, "splits": str(path.parent)})
    samples = set()
    for cell in cells:
        derived = _chosen(cell)
        read = _chosen(dataclasses.replace(cell, dataset_options=options))
        assert read == derived and all(derived.values())
        samples.add(frozenset(derived["train"]))
    assert len(samples) >= 2 * len(SEEDS)  # seeds and fractions really select different patients


def test_a_cell_reading_an_exported_file_predicts_identically_and_records_its_hash(tmp_path, cache):
    grid = {
        "name": "tiny-splits",
        "axes": {
            "strategy": ["scratch"],
            "backbone": ["resnet_tiny"],
            "dataset": ["phantom-chexpert"],
            "protocol": ["finetune"],
            "label_fraction": [0.5],
            "seed": [1],
        },
        "settings": {
            "image_size": 32,
            "epochs": 1,
            "warmup_epochs": 0.0,
            "batch_size": 16,
            "max_eval_images": 40,
        },
        "dataset": {"phantom-chexpert": dict(PHANTOM)},
    }
    out = tmp_path / "splits"
    toml = tmp_path / "grid.toml"
    toml.write_text(_toml(grid))
    r = CliRunner().invoke(
        app, ["data", "splits", "phantom-chexpert", "--out", str(out), "--grid", str(toml)]
    )
    assert r.exit_code == 0, r.output
    (path,) = out.glob("*.csv")
    sha = hashlib.sha256(path.read_bytes()).hexdigest()

    derived = parse_grid(grid, "derived.toml")
    read = parse_grid({**grid, "dataset": {"phantom-chexpert": {**PHANTOM, "splits": str(out)}}}, "read.toml")
    (a,), (b,) = [p.cell for p in derived.cells()], [p.cell for p in read.cells()]
    assert "splits_sha256" not in a.dataset_options and b.dataset_options["splits_sha256"] == sha
    assert a.cell_id != b.cell_id
    for g, name in ((derived, "a"), (read, "b")):
        results = tmp_path / name
        assert run_grid(g, results, RunContext(torch.device("cpu"), results, cache)).count("ok") == 1
    pa = ResultStore(tmp_path / "a").predictions(a.cell_id)
    pb = ResultStore(tmp_path / "b").predictions(b.cell_id)
    pd.testing.assert_frame_equal(pa, pb)
    record = ResultStore(tmp_path / "b").records().iloc[0]
    assert json.loads(record["data_json"])["split_file"]["sha256"] == sha
    assert json.loads(record["data_json"])["split_file"]["column"] == "fraction_0.5_seed_1"
    assert json.loads(record["config_json"])["dataset_options"]["splits_sha256"] == sha
    assert json.loads(ResultStore(tmp_path / "a").records().iloc[0]["data_json"])["split_file"] is None


def _toml(grid):
    lines = [f'name = "{grid["name"]}"', "[axes]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in grid["axes"].items()]
    lines += ["[settings]"] + [f"{k} = {json.dumps(v)}" for k, v in grid["settings"].items()]
    for name, table in grid["dataset"].items():
        lines += [f'[dataset."{name}"]'] + [f"{k} = {json.dumps(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def test_the_cell_id_follows_the_file_content_and_is_unchanged_without_a_file(tmp_path, cache):
    path = tmp_path / "external.csv"
    path.write_text("patient_id,split\npatient00001,train\npatient00002,valid\npatient00003,test\n")
    grid = {
        "axes": {
            "strategy": ["scratch"],
            "backbone": ["resnet_tiny"],
            "dataset": ["phantom-chexpert"],
            "protocol": ["linear"],
        },
        "dataset": {"phantom-chexpert": dict(PHANTOM)},
    }
    plain = parse_grid(grid, "g.toml").cells()[0].cell
    # nothing of a split file added (the phantom names its default dependencies, as every generated phantom
    # cell does)
    assert plain.dataset_options == {**PHANTOM, "dependencies": "published"}
    with_file = {**grid, "dataset": {"phantom-chexpert": {**PHANTOM, "splits": str(path)}}}
    first = parse_grid(with_file, "g.toml").cells()[0].cell
    path.write_text("patient_id,split\npatient00001,train\npatient00002,test\npatient00003,valid\n")
    second = parse_grid(with_file, "g.toml").cells()[0].cell
    assert len({plain.cell_id, first.cell_id, second.cell_id}) == 3
    # a cell planned before the file changed refuses to run on the changed file
    with pytest.raises(DataError, match="changed since the grid was read"):
        split_files.for_options("phantom-chexpert", first.dataset_options)


def test_a_missing_split_file_is_one_config_line_naming_grid_and_path(tmp_path):
    grid = {
        "axes": {
            "strategy": ["scratch"],
            "backbone": ["resnet_tiny"],
            "dataset": ["phantom-chexpert"],
            "protocol": ["linear"],
        },
        "dataset": {"phantom-chexpert": {"splits": str(tmp_path / "nope.csv")}},
    }
    with pytest.raises(ConfigError) as e:
        parse_grid(grid, "g.toml").cells()
    assert str(e.value).startswith(
        "g.toml: [dataset.phantom-chexpert] split file not found"
    ) and "nope.csv" in str(e.value)
    assert "\n" not in str(e.value)


HEADER = "patient_id,split,fraction_0.5_seed_0\n"
GOOD = "p1,train,1\np2,train,0\np3,valid,0\np4,test,\n"


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        (
            HEADER + GOOD + "p2,test,0\n",
            LeakageError,
            "patient 'p2' is in two splits (train on line 3, test on line 6)",
        ),
        (HEADER + GOOD + "p2,train,0\n", DataError, "patient 'p2' is listed twice (lines 3 and 6)"),
        (HEADER + "p1,train,1\np4,test,0\n", DataError, "no patient in the valid split"),
        (
            HEADER + "p1,training,1\np3,valid,0\np4,test,0\n",
            DataError,
            "line 2: split 'training' is not train",
        ),
        (
            HEADER + "p1,train,yes\np3,valid,0\np4,test,0\n",
            DataError,
            "line 2: column fraction_0.5_seed_0 has 'yes'",
        ),
        (
            HEADER + "p1,train,1\np3,valid,1\np4,test,0\n",
            DataError,
            "patient 'p3' is in the valid split but marked 1",
        ),
        (
            HEADER + "p1,train,0\np3,valid,0\np4,test,0\n",
            DataError,
            "column fraction_0.5_seed_0 marks no patient",
        ),
        ("patient,split\np1,train\n", DataError, "no 'patient_id' column"),
        ("patient_id,split,frac_0.1\np1,train,1\n", DataError, "unknown column 'frac_0.1'"),
        ("patient_id,split,fraction_1.5\np1,train,1\n", DataError, "unknown column 'fraction_1.5'"),
        ("patient_id,split,fraction_0.1,fraction_0.1_seed_0\np1,train,1,1\n", DataError, "use one kind"),
        (
            "patient_id,split,fraction_0.1,fraction_0.10\np1,train,1,1\n",
            DataError,
            "name the same fraction and seed",
        ),
        ("patient_id,split,split\np1,train,train\n", DataError, "column 'split' appears twice"),
        ("patient_id,split\np1,train,1,2\n", DataError, "line 2: 4 fields, the header has 2"),
        ("patient_id,split\n", DataError, "lists no patient"),
        ("patient_id,split\n,train\n", DataError, "line 2: empty patient_id"),
    ],
)
def test_a_bad_split_file_is_one_line_naming_the_file_and_the_value(tmp_path, text, error, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(error) as e:
        split_files.read(path)
    assert (
        str(e.value).startswith(f"split file {path}") and message in str(e.value) and "\n" not in str(e.value)
    )


def test_fractions_need_not_be_nested_and_each_column_is_read_as_it_stands(tmp_path):
    path = tmp_path / "f.csv"
    path.write_text(
        "patient_id,split,fraction_0.1,fraction_0.5\np1,train,1,0\np2,train,0,1\np3,valid,,\np4,test,,\n"
    )
    f = split_files.read(path)
    assert f.train_members(0.1, 7) == ("fraction_0.1", {"p1"})  # a column without a seed serves every seed
    assert f.train_members(0.5, 0) == ("fraction_0.5", {"p2"})
    assert f.train_members(1.0, 0) == (
        "",
        None,
    )  # no fraction-1 column: every train patient, sampled as usual
    with pytest.raises(
        DataError, match=r"no column for label fraction 0.25 \(fraction columns: fraction_0.1, fraction_0.5\)"
    ):
        f.train_members(0.25, 0)
    rows = pd.read_csv(path, dtype={"patient_id": str}).fillna(0)
    assert split_files.nesting_notes(rows) == [
        "every seed: 1 patients of fraction_0.1 are not in fraction_0.5"
    ]


def test_a_seeded_column_is_required_for_a_seed_the_file_lacks(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("patient_id,split,fraction_0.5_seed_0\np1,train,1\np3,valid,0\np4,test,0\n")
    with pytest.raises(DataError, match="no column for label fraction 0.5 and seed 1"):
        split_files.read(path).train_members(0.5, 1)


def test_an_edited_exported_file_whose_name_no_longer_matches_is_refused(tmp_path):
    path = tmp_path / "phantom-chexpert-splits-000000000000.csv"
    path.write_text("patient_id,split\np1,train\np3,valid\np4,test\n")
    with pytest.raises(DataError, match="its name says 000000000000"):
        split_files.read(path)


def test_a_patient_the_index_lacks_is_refused_by_the_cell_and_the_preflight(tmp_path, cache):
    ids = sorted(indexed_root("phantom-chexpert", PHANTOM).index["patient_id"].unique())
    path = tmp_path / "ext.csv"
    path.write_text(f"patient_id,split\n{ids[0]},train\n{ids[1]},valid\n{ids[2]},test\nghost7,test\n")
    options = split_files.identity("phantom-chexpert", {**PHANTOM, "splits": str(path)})
    for read in (
        lambda: select_rows(_cell(options=options)),
        lambda: indexed_root("phantom-chexpert", options),
    ):
        with pytest.raises(DataError) as e:
            read()
        assert f"split file {path}: 1 patients are not in the index of 'phantom-chexpert'" in str(e.value)
        assert "(first: 'ghost7' on line 5)" in str(e.value)


def test_a_hand_written_external_split_uses_only_the_patients_it_lists(tmp_path, cache):
    index = indexed_root("phantom-chexpert", PHANTOM).index
    ids = sorted(index["patient_id"].unique())
    train, valid, test = ids[:20], ids[20:26], ids[26:34]  # ignores the index's own split rule
    lines = ["patient_id,split,fraction_0.5"]
    lines += [f"{p},train,{int(i % 2 == 0)}" for i, p in enumerate(train)]
    lines += [f"{p},val,0" for p in valid] + [f"{p},test,0" for p in test]
    path = tmp_path / "moco_cxr_style.csv"
    path.write_text("\n".join(lines) + "\n")
    options = split_files.identity("phantom-chexpert", {**PHANTOM, "splits": str(path)})
    for fraction, expect in ((0.5, set(train[::2])), (1.0, set(train))):
        sel = select_rows(_cell(seed=3, fraction=fraction, options=options, views="all"))
        got = {name: set(sel.patients[m]) for name, m in sel.masks.items()}
        assert got == {"train": expect, "valid": set(valid), "test": set(test)}


def test_the_cli_writes_nothing_when_a_grid_option_conflicts_or_the_dataset_is_unknown(tmp_path):
    out = tmp_path / "out"
    for args in (
        ["phantom-chexpert", "--out", str(out), "--grid", "smoke", "--seed", "1"],
        ["phantom-chexpurt", "--out", str(out)],
        ["phantom-chexpert", "--out", str(out), "--fraction", "0"],
    ):
        r = CliRunner().invoke(app, ["data", "splits", *args])
        assert r.exit_code != 0 and len(r.output.strip().splitlines()) == 1, r.output
    assert not out.exists()


def test_an_index_with_a_patient_in_two_splits_cannot_be_exported():
    index = pd.DataFrame({"patient_id": ["a", "a", "b"], "split": ["train", "test", "valid"]})
    with pytest.raises(ChexbenchError, match="patient 'a' has images in 2 splits"):
        split_files.patient_splits(index, "x")
    assert np.array_equal(split_files.patient_splits(index.iloc[1:], "x")["patient_id"], ["a", "b"])
