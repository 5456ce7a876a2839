"""From a results directory to scored cells: records, predictions, shared resamples.

A *configuration* is a cell's full resolved config without its seed (and grid name),
identified by ``configuration_hash``; only the cells of one configuration are pooled over
seeds. Two ok cells of the same configuration and seed (e.g. written under two results-schema
versions) are not averaged: the newer one (``created_at``) is kept, the other is listed as
superseded in the report.

Cells whose test split holds the same images *with the same truth* (``y_true``) form one test
set: only they are paired. Patient resamples are drawn from (patient set, ``seed``) alone, so
every per-label and paired statistic uses the same resampled patients, whatever else is in the
results folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chexbench.bench.record import SKIPPED_COLUMNS, SKIPPED_FILE, RecordStatus
from chexbench.bench.store import DamagedResultError, ResultsView, record_configuration_hash
from chexbench.core.errors import DataError
from chexbench.reports.bootstrap import (
    CellScores,
    PatientResamples,
    check_prediction_frame,
    draw_patient_resamples,
    patient_set_key,
    score_predictions,
    truth_key,
)
from chexbench.reports.calibration import cell_calibration, cell_ece_replicates
from chexbench.spec.cell import AXES, configuration_keys

PRETRAIN_COLUMNS = ("run_id", "strategy", "backbone", "epoch", "step", "loss", "probe_auroc")
#: the collapse monitors (chexbench.strategies.pretrain.MONITOR_COLUMNS): NaN in logs written before them
PRETRAIN_MONITOR_COLUMNS = (
    "embed_std_ratio",
    "embed_rank",
    "feature_std_ratio",
    "feature_rank",
    "teacher_entropy",
    "collapsed",
)
CONFIG_AXES = ("dataset", "protocol", "label_fraction", "backbone", "strategy")
SUPERSEDED_COLUMNS = ("cell_id", "kept_cell_id", "configuration_hash", *AXES, "created_at", "kept_created_at")


@dataclass
class TestSet:
    """The test split shared by a group of cells of one dataset."""

    key: str
    dataset: str
    images_key: str  # hash of the test image ids
    truth_key: str  # hash of the (image, label, y_true) rows
    resamples: PatientResamples
    n_images: int
    n_patients: int
    cell_ids: list[str] = field(default_factory=list)

    @property
    def images_per_patient(self) -> float:
        return self.n_images / self.n_patients if self.n_patients else float("nan")


@dataclass
class LoadedResults:
    """Everything the report needs, read once from a results directory (through ``view``: each record
    and each predictions file is read once per report, and nothing in the folder is moved)."""

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
    configurations: dict[str, dict[str, Any]] = field(
        default_factory=dict
    )  # configuration_hash → its grid keys
    superseded: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(SUPERSEDED_COLUMNS)))
    ece_boot: dict[str, dict[str, np.ndarray]] = field(
        default_factory=dict
    )  # cell_id → label → (B,) test ECE per resample
    view: ResultsView | None = None  # the read-only view the results were read through (its reads are cached)

    def __post_init__(self) -> None:
        if self.view is None:
            self.view = ResultsView(self.root)

    def predictions(self, cell_id: str) -> pd.DataFrame:
        """The cell's stored predictions (read once per report; do not modify the frame)."""
        view = self.view if self.view is not None else ResultsView(self.root)
        return view.predictions(cell_id)


def _eval_labels(value: Any) -> list[str]:
    if isinstance(value, str) and value:
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            return []
        return [str(x) for x in parsed] if isinstance(parsed, list) else []
    return []


def read_skipped(root: Path, view: ResultsView | None = None) -> pd.DataFrame:
    path = root / SKIPPED_FILE
    df = (view or ResultsView(root)).read_side_file(
        path
    )  # a damaged one is told and left out (the next run rebuilds it)
    if df is None:
        return pd.DataFrame(columns=list(SKIPPED_COLUMNS))
    missing = [c for c in SKIPPED_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
    return df[list(SKIPPED_COLUMNS)].drop_duplicates("cell_id").reset_index(drop=True)


def read_pretrain(root: Path, view: ResultsView | None = None) -> pd.DataFrame:
    files = sorted((root / "pretrain").glob("*.parquet")) if (root / "pretrain").exists() else []
    frames = []
    view = view or ResultsView(root)
    for f in files:
        df = view.read_side_file(f)  # a damaged log is told and left out, the report goes on without it
        if df is None:
            continue
        missing = [c for c in PRETRAIN_COLUMNS if c not in df.columns]
        if missing:
            raise DataError(f"{f}: missing column(s) {', '.join(missing)}")
        frames.append(df.reindex(columns=[*PRETRAIN_COLUMNS, *PRETRAIN_MONITOR_COLUMNS]))
    if not frames:
        return pd.DataFrame(columns=[*PRETRAIN_COLUMNS, *PRETRAIN_MONITOR_COLUMNS])
    return pd.concat(frames, ignore_index=True)


def _read_predictions(view: ResultsView, cell_id: str) -> pd.DataFrame | str:
    """A predictions file with at least one test row, or the reason it cannot be used."""
    path = view.predictions_path(cell_id)
    if not path.exists():
        return f"status ok but predictions file missing: {path}"
    try:
        preds = view.predictions(cell_id)
    except DamagedResultError as e:  # told once by the view; the cell is listed with the failed ones
        return str(e)
    check_prediction_frame(preds, str(path))
    if "split" not in preds.columns:
        preds = preds.assign(split="test")
    if not (preds["split"] == "test").any():
        return f"predictions have no test rows: {path}"
    return preds


def _configurations(records: pd.DataFrame, root: Path) -> tuple[pd.Series, dict[str, dict[str, Any]]]:
    """Each record's configuration hash (derived from ``config_json``, so records written before
    the column existed work too) and each configuration's grid keys."""
    hashes, configs = [], {}
    for rec in records.itertuples(index=False):
        try:
            config = json.loads(rec.config_json)
            if not isinstance(config, dict):
                raise ValueError("not a JSON object")
        except (TypeError, ValueError) as e:
            raise DataError(
                f"{root / 'records' / (str(rec.cell_id) + '.parquet')}: column 'config_json' is not a config"
                f" ({e})"
            ) from None
        h = record_configuration_hash(rec.config_json)
        hashes.append(h)
        configs.setdefault(h, configuration_keys(config))
    return pd.Series(hashes, index=records.index, dtype=object), configs


def _drop_duplicate_seeds(candidates: pd.DataFrame) -> tuple[list[str], pd.DataFrame]:
    """Among ok records, one per (configuration, seed): the newest by ``created_at`` (then
    schema version, then cell id). Returns the kept cell ids and the superseded rows."""
    order = candidates.sort_values(["created_at", "schema_version", "cell_id"], kind="stable")
    kept: list[str] = []
    dropped = []
    for _, g in order.groupby(["configuration_hash", "seed"], sort=False):
        winner = g.iloc[-1]
        kept.append(str(winner["cell_id"]))
        for _, r in g.iloc[:-1].iterrows():
            dropped.append(
                {
                    **{c: r[c] for c in SUPERSEDED_COLUMNS if c in r.index and c != "kept_cell_id"},
                    "kept_cell_id": winner["cell_id"],
                    "kept_created_at": winner["created_at"],
                }
            )
    superseded = pd.DataFrame(dropped, columns=list(SUPERSEDED_COLUMNS))
    return kept, superseded.sort_values("cell_id").reset_index(drop=True)


def mixed_code_versions(ok: pd.DataFrame) -> pd.DataFrame:
    """The configurations whose pooled seeds were written by different code: one row per
    configuration_hash whose ok cells differ in ``git_sha`` or ``chexbench_version`` (a blank value
    counts as a value of its own), with ``seeds`` ("0,1") and ``versions`` ("0.1.0 aaaaaaaaaa: seed 0;
    0.1.0 bbbbbbbbbb: seed 1"). Seeds of one configuration are pooled whatever code wrote them; a
    change of code between seeds can change the numbers, so the report says so."""
    columns = [
        "configuration_hash",
        "strategy",
        "backbone",
        "dataset",
        "protocol",
        "label_fraction",
        "seeds",
        "versions",
    ]
    if ok.empty or not {"git_sha", "chexbench_version"} <= set(ok.columns):
        return pd.DataFrame(columns=columns)
    rows = []
    for h, g in ok.groupby("configuration_hash", sort=False):
        code = [
            (str(v or "").strip() or "?", str(sha or "").strip()[:10] or "no git sha")
            for v, sha in zip(g["chexbench_version"], g["git_sha"], strict=True)
        ]
        if len(set(code)) < 2:
            continue
        by_code: dict[tuple[str, str], list[str]] = {}
        for c, seed in zip(code, g["seed"], strict=True):
            by_code.setdefault(c, []).append(str(seed))
        versions = "; ".join(
            f"{v} {sha}: seed {','.join(sorted(seeds, key=_seed_order))}"
            for (v, sha), seeds in sorted(by_code.items())
        )
        first = g.iloc[0]
        rows.append(
            {
                "configuration_hash": h,
                **{k: first[k] for k in CONFIG_AXES},
                "versions": versions,
                "seeds": ",".join(sorted(map(str, g["seed"]), key=_seed_order)),
            }
        )
    return pd.DataFrame(rows, columns=columns)


def _seed_order(seed: str) -> tuple[int, str]:
    return (int(seed), "") if seed.lstrip("-").isdigit() else (0, seed)


def load_results(
    results_dir: str | Path, n_boot: int, seed: int, view: ResultsView | None = None
) -> LoadedResults:
    """Read records, skipped cells, pretraining logs; score every ok cell's test predictions.

    ``view``: the read-only view to read through (a report passes its own, so that what it read
    before is not read again); nothing in the folder is written or moved."""
    root = Path(results_dir)
    if not root.is_dir():
        raise DataError(f"results directory not found: {root}")
    store = view if view is not None else ResultsView(root)
    records, skipped, configurations = _read_records(store, root)
    ok_records = records[records["status"] == RecordStatus.OK]
    has_predictions = ok_records["cell_id"].map(lambda c: store.predictions_path(c).exists())
    kept, superseded = _drop_duplicate_seeds(ok_records[has_predictions.astype(bool)])
    superseded_ids = set(superseded["cell_id"])

    failed_rows, ok_ids = [], []
    test_sets: dict[str, TestSet] = {}
    test_set_of: dict[str, str] = {}
    scores: dict[str, CellScores] = {}
    calibration: dict[str, pd.DataFrame] = {}
    ece_boot: dict[str, dict[str, np.ndarray]] = {}
    resamples: dict[str, PatientResamples] = {}
    for rec in records.itertuples(index=False):
        if rec.status != RecordStatus.OK:
            failed_rows.append(rec._asdict())
            continue
        if rec.cell_id in superseded_ids:
            continue
        preds = _read_predictions(store, rec.cell_id)
        if isinstance(preds, str):
            failed_rows.append({**rec._asdict(), "failure_reason": preds})
            continue
        test = preds[preds["split"] == "test"]
        ts = _test_set(rec.dataset, test, test_sets, resamples, n_boot, seed)
        ts.cell_ids.append(rec.cell_id)
        test_set_of[rec.cell_id] = ts.key
        scores[rec.cell_id] = score_predictions(test, ts.resamples, rec.eval_labels or None, name=rec.cell_id)
        calibration[rec.cell_id] = cell_calibration(preds, list(scores[rec.cell_id].labels))
        ece_boot[rec.cell_id] = cell_ece_replicates(test, ts.resamples, list(scores[rec.cell_id].labels))
        ok_ids.append(rec.cell_id)

    ok = records[records["cell_id"].isin(ok_ids)].reset_index(drop=True)
    return LoadedResults(
        root=root,
        records=records,
        ok=ok,
        failed=pd.DataFrame(failed_rows, columns=list(records.columns)),
        skipped=skipped,
        pretrain=read_pretrain(root, store),
        scores=scores,
        calibration=calibration,
        test_sets=test_sets,
        test_set_of=test_set_of,
        n_boot=n_boot,
        seed=seed,
        configurations={h: c for h, c in configurations.items() if h in set(ok["configuration_hash"])},
        superseded=superseded,
        ece_boot=ece_boot,
        view=store,
    )


def _read_records(
    store: ResultsView, root: Path
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, dict[str, Any]]]:
    """Cell records in configuration order (with eval labels and configuration hash), the
    skipped cells that have not run since, and the configurations by hash."""
    records = store.records()
    skipped = read_skipped(root, store)
    if records.empty and skipped.empty:
        raise DataError(f"{root}: no cell records and no {SKIPPED_FILE} (run `chexbench run` first)")
    records = records.sort_values(list(CONFIG_AXES) + ["seed", "cell_id"]).reset_index(drop=True)
    skipped = skipped[~skipped["cell_id"].isin(records["cell_id"])].reset_index(drop=True)  # ran since
    records["eval_labels"] = records["eval_labels_json"].map(_eval_labels)
    records["configuration_hash"], configurations = _configurations(records, root)
    return records, skipped, configurations


def _test_set(
    dataset: str,
    test: pd.DataFrame,
    test_sets: dict[str, TestSet],
    resamples: dict[str, PatientResamples],
    n_boot: int,
    seed: int,
) -> TestSet:
    """The test set of these test predictions, registered in ``test_sets`` on first sight.

    Cells are paired only on the same test images with the same truth; resamples depend on
    the patient set alone, so every test set of the same patients gets identical resamples."""
    images, truth = patient_set_key(test["image_id"]), truth_key(test)
    key = f"{dataset}:{images}:{truth}"
    if key not in test_sets:
        patients = patient_set_key(test["patient_id"])
        if patients not in resamples:
            resamples[patients] = draw_patient_resamples(test["patient_id"], n_boot, seed)
        test_sets[key] = TestSet(
            key=key,
            dataset=dataset,
            images_key=images,
            truth_key=truth,
            resamples=resamples[patients],
            n_images=int(test["image_id"].nunique()),
            n_patients=int(test["patient_id"].nunique()),
        )
    return test_sets[key]
