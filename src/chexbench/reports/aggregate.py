"""From a results directory to scored cells: records, predictions, shared resamples.

Cells whose test split holds the same images (same dataset, same test image ids) form one
test set and share one set of patient resamples, drawn from (its patient set, ``seed``):
every per-label and paired statistic of the report is computed on those shared resamples.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from chexbench.bench.store import ResultStore
from chexbench.errors import DataError
from chexbench.reports.bootstrap import (
    CellScores,
    PatientResamples,
    check_prediction_frame,
    draw_patient_resamples,
    patient_set_key,
    score_predictions,
)
from chexbench.reports.calibration import cell_calibration

SKIPPED_COLUMNS = ("cell_id", "grid", "strategy", "backbone", "dataset", "protocol", "label_fraction", "seed", "reason")
PRETRAIN_COLUMNS = ("run_id", "strategy", "backbone", "epoch", "step", "loss", "probe_auroc")
CONFIG_AXES = ("dataset", "protocol", "label_fraction", "backbone", "strategy")


@dataclass
class TestSet:
    """The test split shared by a group of cells of one dataset."""

    key: str
    dataset: str
    resamples: PatientResamples
    n_images: int
    n_patients: int
    cell_ids: list[str] = field(default_factory=list)

    @property
    def images_per_patient(self) -> float:
        return self.n_images / self.n_patients if self.n_patients else float("nan")


@dataclass
class LoadedResults:
    """Everything the report needs, read once from a results directory."""

    root: Path
    records: pd.DataFrame  # every record, RECORD_COLUMNS plus decoded ``eval_labels`` (list)
    ok: pd.DataFrame  # status ok and predictions present
    failed: pd.DataFrame  # status failed, plus ok records whose predictions are missing
    skipped: pd.DataFrame  # SKIPPED_COLUMNS
    pretrain: pd.DataFrame  # PRETRAIN_COLUMNS (may be empty)
    scores: dict[str, CellScores]  # cell_id → test scores
    calibration: dict[str, pd.DataFrame]  # cell_id → per-label ECE / operating point (calibration.py)
    test_sets: dict[str, TestSet]  # key → test set
    test_set_of: dict[str, str]  # cell_id → test set key
    n_boot: int
    seed: int

    def predictions(self, cell_id: str) -> pd.DataFrame:
        return ResultStore(self.root).predictions(cell_id)


def _eval_labels(value: Any) -> list[str]:
    if isinstance(value, str) and value:
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            return []
        return [str(x) for x in parsed] if isinstance(parsed, list) else []
    return []


def read_skipped(root: Path) -> pd.DataFrame:
    path = root / "skipped.parquet"
    if not path.exists():
        return pd.DataFrame(columns=list(SKIPPED_COLUMNS))
    df = pd.read_parquet(path)
    missing = [c for c in SKIPPED_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
    return df[list(SKIPPED_COLUMNS)].drop_duplicates("cell_id").reset_index(drop=True)


def read_pretrain(root: Path) -> pd.DataFrame:
    files = sorted((root / "pretrain").glob("*.parquet")) if (root / "pretrain").exists() else []
    frames = []
    for f in files:
        df = pd.read_parquet(f)
        missing = [c for c in PRETRAIN_COLUMNS if c not in df.columns]
        if missing:
            raise DataError(f"{f}: missing column(s) {', '.join(missing)}")
        frames.append(df[list(PRETRAIN_COLUMNS)])
    if not frames:
        return pd.DataFrame(columns=list(PRETRAIN_COLUMNS))
    return pd.concat(frames, ignore_index=True)


def _read_predictions(path: Path) -> pd.DataFrame | str:
    """A predictions file with at least one test row, or the reason it cannot be used."""
    if not path.exists():
        return f"status ok but predictions file missing: {path}"
    preds = pd.read_parquet(path)
    check_prediction_frame(preds, str(path))
    if "split" not in preds.columns:
        preds = preds.assign(split="test")
    if not (preds["split"] == "test").any():
        return f"predictions have no test rows: {path}"
    return preds


def load_results(results_dir: str | Path, n_boot: int, seed: int) -> LoadedResults:
    """Read records, skipped cells, pretraining logs; score every ok cell's test predictions."""
    root = Path(results_dir)
    if not root.is_dir():
        raise DataError(f"results directory not found: {root}")
    store = ResultStore(root)
    records = store.records()
    skipped = read_skipped(root)
    if records.empty and skipped.empty:
        raise DataError(f"{root}: no cell records and no skipped.parquet (run `chexbench run` first)")
    records = records.sort_values(list(CONFIG_AXES) + ["seed", "cell_id"]).reset_index(drop=True)
    skipped = skipped[~skipped["cell_id"].isin(records["cell_id"])].reset_index(drop=True)  # ran since
    records["eval_labels"] = records["eval_labels_json"].map(_eval_labels)

    failed_rows, ok_ids = [], []
    test_sets: dict[str, TestSet] = {}
    test_set_of: dict[str, str] = {}
    scores: dict[str, CellScores] = {}
    calibration: dict[str, pd.DataFrame] = {}
    for rec in records.itertuples(index=False):
        if rec.status != "ok":
            failed_rows.append(rec._asdict())
            continue
        path = store.predictions_path(rec.cell_id)
        preds = _read_predictions(path)
        if isinstance(preds, str):
            row = rec._asdict()
            row["failure_reason"] = preds
            failed_rows.append(row)
            continue
        test = preds[preds["split"] == "test"]
        # cells are paired only on the same test images; resamples depend on the patient set
        # alone, so two image sets of the same patients still get identical resamples
        key = f"{rec.dataset}:{patient_set_key(test['image_id'])}"
        if key not in test_sets:
            test_sets[key] = TestSet(
                key=key,
                dataset=rec.dataset,
                resamples=draw_patient_resamples(test["patient_id"], n_boot, seed),
                n_images=int(test["image_id"].nunique()),
                n_patients=int(test["patient_id"].nunique()),
            )
        test_sets[key].cell_ids.append(rec.cell_id)
        test_set_of[rec.cell_id] = key
        scores[rec.cell_id] = score_predictions(test, test_sets[key].resamples, rec.eval_labels or None, name=rec.cell_id)
        calibration[rec.cell_id] = cell_calibration(preds, list(scores[rec.cell_id].labels))
        ok_ids.append(rec.cell_id)

    ok = records[records["cell_id"].isin(ok_ids)].reset_index(drop=True)
    failed = pd.DataFrame(failed_rows, columns=list(records.columns))

    return LoadedResults(
        root=root,
        records=records,
        ok=ok,
        failed=failed,
        skipped=skipped,
        pretrain=read_pretrain(root),
        scores=scores,
        calibration=calibration,
        test_sets=test_sets,
        test_set_of=test_set_of,
        n_boot=n_boot,
        seed=seed,
    )
