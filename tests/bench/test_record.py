"""The typed cell record: its schema is derived from its fields, it round-trips through the store,
records written before it read back unchanged, and every status is an enum whose values are the
strings on disk."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from chexbench.bench.record import RECORD_COLUMNS, RECORD_SCHEMA, CellRecord, RecordStatus
from chexbench.bench.runner import OutcomeStatus, base_record, run_grid
from chexbench.bench.status import ListedStatus, cell_statuses
from chexbench.bench.store import PAIR_KEY, CellState, ResultStore, ResultsView
from chexbench.core.context import RunContext
from chexbench.spec.cell import RESULTS_SCHEMA_VERSION, CellConfig
from chexbench.spec.grid import PlanStatus
from chexbench.spec.parse import load_grid

GRID = (
    '[axes]\nstrategy=["scratch"]\nbackbone=["resnet_tiny"]\ndataset=["phantom-chexpert"]\nprotocol=["linear"]\nseed=[0,1]\n[dataset.phantom-chexpert]\npatients'
    " = 20\nsize = 32\n"
)


def _cell(seed: int = 0) -> CellConfig:
    return CellConfig("scratch", "resnet_tiny", "chexpert", "finetune", 1.0, seed)


def _preds() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_id": ["i0", "i1"],
            "patient_id": ["p0", "p1"],
            "label": "edema",
            "y_true": [1.0, 0.0],
            "y_score": [0.7, 0.2],
            "split": "test",
        }
    )


def test_the_schema_is_the_record_fields_in_order_with_their_types():
    names = [f.name for f in dataclasses.fields(CellRecord)]
    assert list(RECORD_SCHEMA.names) == names == list(RECORD_COLUMNS)
    kinds = {f.name: f.type for f in dataclasses.fields(CellRecord)}
    for field in RECORD_SCHEMA:
        expected = {"int": pa.int64(), "float": pa.float64(), "str": pa.large_string()}[kinds[field.name]]
        assert field.type == expected, field.name


def test_a_new_record_carries_the_current_schema_version_from_the_start():
    rec = base_record(_cell(), torch.device("cpu"))
    assert isinstance(rec, CellRecord) and rec.schema_version == RESULTS_SCHEMA_VERSION  # not a placeholder 0
    assert rec.status is RecordStatus.FAILED and rec.configuration_hash == _cell().configuration_hash


def test_a_record_round_trips_through_the_store_with_the_schema_types(tmp_path):
    store = ResultStore(tmp_path)
    rec = base_record(_cell(), torch.device("cpu")).replace(
        status=RecordStatus.OK, macro_auroc=0.8, selected_epoch=3, train_seconds=2
    )  # an int where a float belongs is cast
    store.write(rec, _preds())
    table = pq.read_table(store.record_path(rec.cell_id))
    assert table.schema.remove_metadata() == RECORD_SCHEMA
    back = CellRecord.from_mapping(table.to_pandas().iloc[0].to_dict()).as_dict()
    expected = rec.replace(status="ok", train_seconds=2.0).as_dict()
    for column, value in expected.items():  # NaN (no AUPRC yet) reads back as NaN
        assert back[column] == value or (
            isinstance(value, float) and np.isnan(value) and np.isnan(back[column])
        ), column
        assert isinstance(
            back[column],
            {"int": (int, np.integer), "float": (float, np.floating), "str": str}[
                {f.name: f.type for f in dataclasses.fields(CellRecord)}[column]
            ],
        ), column
    assert (
        type(table.column("status")[0].as_py()) is str and table.column("status")[0].as_py() == "ok"
    )  # the same string on disk


def test_a_record_written_before_the_typed_record_reads_back_identically(tmp_path):
    """The previous store wrote ``pd.DataFrame([record_dict])`` with its pairing footer: the same record
    written that way and through the schema reads back as the same frame."""
    rec = base_record(_cell(), torch.device("cpu")).replace(status=RecordStatus.OK, macro_auroc=0.75)
    new_store, old_store = ResultStore(tmp_path / "new"), ResultStore(tmp_path / "old")
    new_store.write(rec, _preds())
    old_store.write(rec, _preds())  # predictions and footer as a write makes them ...
    path = old_store.record_path(rec.cell_id)
    footer = pq.read_metadata(path).metadata[PAIR_KEY]
    old_frame = pd.DataFrame(
        [{**rec.as_dict(), "status": "ok"}]
    )  # ... then the record as the previous store wrote it
    table = pa.Table.from_pandas(old_frame, preserve_index=False)
    pq.write_table(table.replace_schema_metadata({**table.schema.metadata, PAIR_KEY: footer}), path)
    assert (
        pq.read_table(path).schema.remove_metadata() == RECORD_SCHEMA
    )  # what pandas inferred is what the schema says
    old, new = ResultsView(tmp_path / "old").records(), ResultsView(tmp_path / "new").records()
    pd.testing.assert_frame_equal(old, new)
    assert list(new.columns) == list(RECORD_COLUMNS) and ResultsView(tmp_path / "old").has(rec.cell_id)


def test_a_dict_record_missing_a_column_is_refused_naming_it():
    d = base_record(_cell(), torch.device("cpu")).as_dict()
    del d["peak_memory_mb"]
    with pytest.raises(ValueError, match="peak_memory_mb"):
        CellRecord.from_mapping(d)


def test_every_status_is_an_enum_and_equals_its_stored_string(tmp_path, cache, monkeypatch):
    from chexbench.bench import runner as bench_runner

    grid_file = tmp_path / "g.toml"
    grid_file.write_text(GRID)
    grid = load_grid(str(grid_file))
    planned = grid.cells()
    assert all(type(p.status) is PlanStatus for p in planned) and {p.status for p in planned} == {"run"}

    def fake_cell(cell, ctx):
        rec = base_record(cell, ctx.device)
        if cell.seed == 1:
            raise RuntimeError("planted failure")
        return rec.replace(status=RecordStatus.OK, eval_labels_json=json.dumps(["edema"])), _preds()

    monkeypatch.setattr(bench_runner, "run_cell", fake_cell)
    results = tmp_path / "results"
    summary = run_grid(grid, results, RunContext(torch.device("cpu"), results, cache))
    assert [type(o.status) for o in summary.outcomes] == [OutcomeStatus, OutcomeStatus]
    assert sorted(o.status for o in summary.outcomes) == ["failed", "ok"]
    view = ResultsView(results)
    states = {p.cell.seed: view.check(p.cell.cell_id).state for p in planned}
    assert states == {0: CellState.OK, 1: CellState.FAILED} and all(
        type(s) is CellState for s in states.values()
    )
    listed = cell_statuses(view, planned)
    assert all(type(c.status) is ListedStatus for c in listed) and sorted(c.status for c in listed) == [
        "done",
        "failed",
    ]
    stored = sorted(
        pq.read_table(view.record_path(p.cell.cell_id)).column("status")[0].as_py() for p in planned
    )
    assert stored == ["failed", "ok"] and np.all([type(s) is str for s in stored])


def test_a_value_of_the_wrong_type_is_refused_naming_its_column_and_nothing_is_written(tmp_path):
    rec = base_record(_cell(), torch.device("cpu")).replace(status=RecordStatus.FAILED, macro_auprc="")
    with pytest.raises(ValueError, match="macro_auprc"):
        ResultStore(tmp_path).write(rec, None)
    assert not ResultStore(tmp_path).record_path(rec.cell_id).exists()
