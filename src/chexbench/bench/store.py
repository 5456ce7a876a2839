"""The result store: one Parquet record and one Parquet of predictions per cell.

Layout of a results directory::

    records/<cell_id>.parquet       one row, columns RECORD_COLUMNS (schema version in each row)
    predictions/<cell_id>.parquet   long form, PREDICTION_COLUMNS; valid and test splits
    pretrain/<run_id>.parquet       loss curve / probe history of a shared pretraining run
    report.md, figures/, leaderboard.parquet   written by ``chexbench report``

Every write goes to a temporary file in the same folder and is renamed into place, so a
killed run never leaves a half-written file under a final name. Predictions are written
before the record, so a record with status ``ok`` always has its predictions.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from chexbench.atomic import atomic_path
from chexbench.config import RESULTS_SCHEMA_VERSION, configuration_hash

#: Columns of a cell record, in order. ``*_json`` columns hold JSON strings.
RECORD_COLUMNS: tuple[str, ...] = (
    "schema_version",  # int
    "cell_id",  # str, 12 hex chars
    "grid",  # str, the grid the cell was run from
    "strategy",
    "backbone",
    "dataset",
    "protocol",
    "label_fraction",  # float
    "seed",  # int
    "config_json",  # resolved CellConfig as canonical JSON
    "config_hash",  # sha256 of config_json
    "configuration_hash",  # sha256 of config_json without the seed (config.configuration_hash): seeds of one configuration share it
    "status",  # "ok" | "failed"
    "failure_reason",  # str, "" when ok
    "eval_labels_json",  # list of the dataset's evaluation labels
    "macro_auroc",  # float, mean over evaluation labels with a defined AUROC on test (NaN if none)
    "macro_auprc",  # float
    "metrics_json",  # {label: {"auroc", "auprc", "n_pos", "n_neg", "defined"}} on test
    "val_macro_auroc",  # float, the selection metric at the selected epoch
    "selected_epoch",  # int
    "init_json",  # InitRecord.to_dict()
    "data_json",  # split manifest: sizes, patient counts, hashes, uncertainty policy, leakage override
    "history_json",  # per-epoch train loss / val macro AUROC
    "train_seconds",
    "eval_seconds",
    "images_per_second",  # training throughput
    "peak_memory_mb",
    "device_name",
    "torch_version",
    "timm_version",
    "chexbench_version",
    "git_sha",
    "created_at",  # ISO 8601 UTC
)

#: Columns of a predictions file: one row per (image, label).
PREDICTION_COLUMNS: tuple[str, ...] = (
    "image_id",  # str
    "patient_id",  # str
    "label",  # str, harmonized label name
    "y_true",  # float: 1 / 0, NaN where the label is masked (not mentioned, or uncertain under U-Ignore)
    "y_score",  # float: predicted probability
    "split",  # "valid" | "test"
)


def atomic_write_parquet(df: pd.DataFrame, path: Path) -> None:
    """Write ``df`` to ``path`` through a temporary file and an atomic rename."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` through a temporary file in the same folder and an atomic rename."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def atomic_write_text(text: str, path: Path) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


class ResultStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def record_path(self, cell_id: str) -> Path:
        return self.root / "records" / f"{cell_id}.parquet"

    def predictions_path(self, cell_id: str) -> Path:
        return self.root / "predictions" / f"{cell_id}.parquet"

    # -- writing --------------------------------------------------------------------------
    def write(self, record: dict[str, Any], predictions: pd.DataFrame | None) -> None:
        """Store one finished (or failed) cell: predictions first, then the record.

        ``configuration_hash`` may be left out: it is derived from ``config_json``."""
        if "configuration_hash" not in record and isinstance(record.get("config_json"), str):
            record = {**record, "configuration_hash": record_configuration_hash(record["config_json"])}
        missing = [c for c in RECORD_COLUMNS if c not in record]
        if missing:
            raise ValueError(f"record lacks columns: {missing}")
        record = {c: record[c] for c in RECORD_COLUMNS}
        record["schema_version"] = RESULTS_SCHEMA_VERSION
        cell_id = record["cell_id"]
        if predictions is not None:
            missing = [c for c in PREDICTION_COLUMNS if c not in predictions.columns]
            if missing:
                raise ValueError(f"predictions lack columns: {missing}")
            atomic_write_parquet(predictions[list(PREDICTION_COLUMNS)].reset_index(drop=True), self.predictions_path(cell_id))
        atomic_write_parquet(pd.DataFrame([record]), self.record_path(cell_id))

    # -- reading --------------------------------------------------------------------------
    def has(self, cell_id: str) -> bool:
        """True if the cell finished successfully (failed cells are retried on rerun)."""
        path = self.record_path(cell_id)
        if not path.exists():
            return False
        rec = pd.read_parquet(path, columns=["status"])
        return bool((rec["status"] == "ok").all())

    def status_of(self, cell_id: str) -> str:
        path = self.record_path(cell_id)
        if not path.exists():
            return "pending"
        return str(pd.read_parquet(path, columns=["status"])["status"].iloc[0])

    def cell_ids(self) -> list[str]:
        d = self.root / "records"
        return sorted(p.stem for p in d.glob("*.parquet")) if d.exists() else []

    def records(self, cell_ids: Iterable[str] | None = None) -> pd.DataFrame:
        ids = list(cell_ids) if cell_ids is not None else self.cell_ids()
        frames = [pd.read_parquet(self.record_path(i)) for i in ids if self.record_path(i).exists()]
        if not frames:
            return pd.DataFrame(columns=list(RECORD_COLUMNS))
        return pd.concat(frames, ignore_index=True)

    def predictions(self, cell_id: str) -> pd.DataFrame:
        return pd.read_parquet(self.predictions_path(cell_id))

    def remove(self, cell_id: str) -> None:
        self.record_path(cell_id).unlink(missing_ok=True)
        self.predictions_path(cell_id).unlink(missing_ok=True)


def record_configuration_hash(config_json: str) -> str:
    """The configuration hash of a stored record, from its ``config_json`` (records written
    before the ``configuration_hash`` column existed get theirs this way)."""
    return configuration_hash(json.loads(config_json))


def decode_json_columns(records: pd.DataFrame) -> list[dict[str, Any]]:
    """Records as dicts with every ``*_json`` column parsed (key without the suffix)."""
    out = []
    for row in records.to_dict("records"):
        for k in list(row):
            if k.endswith("_json") and isinstance(row[k], str):
                row[k[: -len("_json")]] = json.loads(row[k])
        out.append(row)
    return out
