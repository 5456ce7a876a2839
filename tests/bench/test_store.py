import os

import numpy as np
import pandas as pd
import pytest

from chexbench.bench.runner import base_record
from chexbench.bench.store import PREDICTION_COLUMNS, RECORD_COLUMNS, ResultStore, atomic_write_parquet
from chexbench.config import CellConfig


def _record(cell_id_seed: int = 0, status: str = "ok"):
    import torch

    cell = CellConfig("scratch", "resnet_tiny", "chexpert", "finetune", 1.0, cell_id_seed)
    rec = base_record(cell, torch.device("cpu"))
    rec.update(status=status, macro_auroc=0.8)
    return cell, rec


def _preds(n=6):
    return pd.DataFrame(
        {
            "image_id": [f"i{i}" for i in range(n)],
            "patient_id": [f"p{i // 2}" for i in range(n)],
            "label": "edema",
            "y_true": np.r_[np.ones(n // 2), np.zeros(n - n // 2)],
            "y_score": np.linspace(0, 1, n),
            "split": "test",
        }
    )


def test_round_trip(tmp_path):
    store = ResultStore(tmp_path)
    cell, rec = _record()
    assert not store.has(cell.cell_id)
    store.write(rec, _preds())
    assert store.has(cell.cell_id)
    back = store.records()
    assert list(back.columns) == list(RECORD_COLUMNS)
    assert back.loc[0, "cell_id"] == cell.cell_id and back.loc[0, "macro_auroc"] == 0.8
    assert back.loc[0, "schema_version"] >= 1
    preds = store.predictions(cell.cell_id)
    assert list(preds.columns) == list(PREDICTION_COLUMNS)
    pd.testing.assert_frame_equal(preds, _preds())


def test_failed_cells_are_not_finished(tmp_path):
    store = ResultStore(tmp_path)
    cell, rec = _record(status="failed")
    store.write(rec, None)
    assert not store.has(cell.cell_id)
    assert store.status_of(cell.cell_id) == "failed"


def test_atomic_write_leaves_old_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "x.parquet"
    atomic_write_parquet(pd.DataFrame({"a": [1]}), path)

    def boom(self, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, "to_parquet", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_parquet(pd.DataFrame({"a": [2]}), path)
    monkeypatch.undo()
    assert pd.read_parquet(path)["a"].tolist() == [1]
    assert os.listdir(tmp_path) == ["x.parquet"]  # no temp file left behind


def test_record_schema_is_enforced(tmp_path):
    _, rec = _record()
    del rec["macro_auroc"]
    with pytest.raises(ValueError, match="macro_auroc"):
        ResultStore(tmp_path).write(rec, None)
    assert not (tmp_path / "records").exists() or not list((tmp_path / "records").iterdir())
