"""The cell record: one typed row per cell, and the Parquet schema derived from it.

:class:`CellRecord` is the one place that says which columns a record has, in which order and of
which type; :data:`RECORD_SCHEMA` (what the store writes) and :data:`RECORD_COLUMNS` are derived
from its fields. ``*_json`` columns hold JSON strings. Records written before this class existed
hold the same columns and types, and read back unchanged (the store reads files, not classes).
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import pandas as pd
import pyarrow as pa

from chexbench.spec.cell import AXES, RESULTS_SCHEMA_VERSION, configuration_hash


class RecordStatus(StrEnum):
    """A stored cell's ``status`` column (the strings on disk are these values)."""

    OK = "ok"
    FAILED = "failed"


@dataclass(frozen=True)
class CellRecord:
    """One cell's record, one field per stored column, in column order."""

    schema_version: int
    cell_id: str  # 12 hex chars
    grid: str  # the grid the cell was run from
    strategy: str
    backbone: str
    dataset: str
    protocol: str
    label_fraction: float
    seed: int
    config_json: str  # resolved CellConfig as canonical JSON
    config_hash: str  # sha256 of config_json
    configuration_hash: str  # sha256 of config_json without the seed: seeds of one configuration share it
    status: str  # RecordStatus
    failure_reason: str  # "" when ok
    eval_labels_json: str  # list of the dataset's evaluation labels
    macro_auroc: float  # mean over evaluation labels with a defined AUROC on test (NaN if none)
    macro_auprc: float
    metrics_json: str  # {label: {"auroc", "auprc", "n_pos", "n_neg", "defined"}} on test
    val_macro_auroc: float  # the selection metric at the selected epoch
    selected_epoch: int
    init_json: str  # InitRecord.to_dict()
    data_json: str  # split manifest: sizes, patient counts, hashes, uncertainty policy, leakage override
    history_json: str  # per-epoch train loss / val macro AUROC
    train_seconds: float
    eval_seconds: float
    images_per_second: float  # training throughput
    peak_memory_mb: float
    device_name: str
    torch_version: str
    timm_version: str
    chexbench_version: str
    git_sha: str
    created_at: str  # ISO 8601 UTC

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> CellRecord:
        """A record from a dict of its columns (extra keys ignored). ``configuration_hash`` may be
        left out: it is derived from ``config_json``. ValueError naming the missing columns."""
        values = dict(values)
        if "configuration_hash" not in values and isinstance(values.get("config_json"), str):
            values["configuration_hash"] = configuration_hash(json.loads(values["config_json"]))
        missing = [c for c in RECORD_COLUMNS if c not in values]
        if missing:
            raise ValueError(f"record lacks columns: {missing}")
        return cls(**{c: values[c] for c in RECORD_COLUMNS})

    def replace(self, **changes: Any) -> CellRecord:
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """The columns in order (values as held, not converted)."""
        return {c: getattr(self, c) for c in RECORD_COLUMNS}

    def to_table(self) -> pa.Table:
        """The record as a one-row table of :data:`RECORD_SCHEMA` (status written as its plain string)."""
        row = {**self.as_dict(), "status": str(self.status)}  # through pandas, as records were always written
        try:
            return pa.Table.from_pandas(pd.DataFrame([row]), schema=RECORD_SCHEMA, preserve_index=False)
        except (
            pa.ArrowInvalid,
            pa.ArrowTypeError,
        ) as e:  # e.g. "" where a number belongs: refused, nothing written
            raise ValueError(
                f"record of cell {self.cell_id}: a value does not fit its column's type ({e})"
            ) from None


_ARROW_TYPES: dict[type, pa.DataType] = {int: pa.int64(), float: pa.float64(), str: pa.large_string()}
#: columns of a cell record, in order
RECORD_COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(CellRecord))
#: the Parquet schema of a record file (the types pandas gave the same columns before it was written down)
RECORD_SCHEMA: pa.Schema = pa.schema(
    [(name, _ARROW_TYPES[hint]) for name, hint in typing.get_type_hints(CellRecord).items()]
)

#: the file of a results folder that lists the cells a grid excludes or a component finds invalid, with the
#: reason, and its columns: written by the runner, read by the report and the GPU check
SKIPPED_FILE = "skipped.parquet"
SKIPPED_COLUMNS: tuple[str, ...] = ("cell_id", "grid", *AXES, "reason")


def new_record(**values: Any) -> CellRecord:
    """A record of the current results-schema version (``schema_version`` set here, never a placeholder)."""
    return CellRecord.from_mapping({**values, "schema_version": RESULTS_SCHEMA_VERSION})
