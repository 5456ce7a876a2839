"""The result store: one Parquet record and one Parquet of predictions per cell.

Layout of a results directory::

    records/<cell_id>.parquet       one row, a :class:`~chexbench.bench.record.CellRecord` (schema version in
    each row)
    predictions/<cell_id>.parquet   long form, PREDICTION_COLUMNS; valid and test splits
    pretrain/<run_id>.parquet       loss curve / probe history of a shared pretraining run
    external/<cell_id>/<target>.parquet   ``settings.evaluate_on``: the cell's selected model on another
                                    dataset's test split (PREDICTION_COLUMNS, shared labels only); its
                                    record (target identity, label lists, metrics) in the footer
    report.md, figures/, leaderboard.parquet   written by ``chexbench report``

Every write goes to a temporary file in the same folder and is renamed into place, so a
killed run never leaves a half-written file under a final name. Predictions are written
before the record, so a record with status ``ok`` always has its predictions.

Each write pairs the two files: both carry, in their Parquet footer's key-value metadata, the
cell id, a write id and the predictions' row count and labels. A cell is *done* only when
its record reads back with status ``ok`` and its predictions' footer agrees with it
(:meth:`ResultsView.check`; footers only, no full read). A file that cannot be read, or a
pair that disagrees, is *damaged*. Readers (:class:`ResultsView`: ``report``, ``status``) report
it once and leave it out, moving nothing; ``run`` (:meth:`ResultStore.quarantine_damaged`) moves
it to ``quarantine/`` (never deleted, logged in ``quarantine/log.jsonl``) and the cell counts as
pending, so the run recomputes it.

Concurrent workers on one folder split the cells through per-cell claims
(``claims/<cell_id>.lock``, a :class:`~chexbench.core.lock.FileLock` with heartbeat): a
worker trains and writes a cell only while it holds the cell's claim; files of a cell that
another live worker has claimed are never judged damaged or moved.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import sys
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from chexbench.bench.record import RECORD_COLUMNS, CellRecord, RecordStatus
from chexbench.core.atomic import atomic_path, atomic_write_parquet
from chexbench.core.errors import DataError
from chexbench.core.lock import FileLock
from chexbench.datasets.base import SUBGROUP_COLUMNS
from chexbench.spec.cell import RESULTS_SCHEMA_VERSION, configuration_hash

#: Columns of a predictions file: one row per (image, label).
PREDICTION_COLUMNS: tuple[str, ...] = (
    "image_id",  # str
    "patient_id",  # str
    "label",  # str, harmonized label name
    "y_true",  # float: 1 / 0, NaN where the label is masked (not mentioned, or uncertain under U-Ignore)
    "y_score",  # float: predicted probability
    "split",  # "valid" | "test"
)
#: then, where the dataset's index has them, each image's subgroup attributes
#: (``datasets.base.SUBGROUP_COLUMNS``:
#: sex str, age float years, view str, site str), read by ``chexbench score --by`` and the report's subgroup
#: section


def prediction_columns(predictions: pd.DataFrame) -> list[str]:
    """The columns a stored predictions file keeps: ``PREDICTION_COLUMNS``, then the subgroup attributes it
    has."""
    return [*PREDICTION_COLUMNS, *(c for c in SUBGROUP_COLUMNS if c in predictions.columns)]


#: key of chexbench's entry in a record's / predictions file's Parquet key-value metadata
PAIR_KEY = b"chexbench.pair"
#: key of an external predictions file's record (``bench.external``) in its Parquet footer
EXTERNAL_KEY = b"chexbench.external"


class DamagedResultError(DataError):
    """A stored record or predictions file cannot be read."""


class CellState(StrEnum):
    """Where a cell stands in the store (:meth:`ResultsView.check`)."""

    PENDING = "pending"  # no record
    OK = "ok"  # record ok, predictions' footer agrees with it
    FAILED = "failed"  # record of a failed cell
    DAMAGED = "damaged"  # a file cannot be read, or the pair disagrees
    RUNNING = "running"  # damaged-looking, claimed by a live worker (being written right now)


@dataclass
class CellCheck:
    """What :meth:`ResultsView.check` found for one cell."""

    state: CellState
    problems: list[tuple[Path, str]] = field(default_factory=list)  # (file, reason) when damaged
    record: pd.DataFrame | None = None  # the record's one row, when it reads back


def _report_to_stderr(message: str) -> None:
    sys.stderr.write(f"chexbench: {message}\n")


class ResultsView:
    """A read-only look at a results directory (``chexbench report``, ``status``): it never moves,
    writes or quarantines anything. A damaged file it meets is told once to ``report`` and left
    out (its cell is not read); the next ``chexbench run`` quarantines it and recomputes the cell.

    ``cache``: each record, footer and predictions file is read once per view (a report reads
    every cell's predictions several times); a writer (:class:`ResultStore`) does not cache.
    """

    def __init__(self, root: str | Path, report: Callable[[str], None] | None = None, cache: bool = True):
        self.root = Path(root)
        self.report = report or _report_to_stderr  # told once about every damaged file
        self._cache = cache
        self._checks: dict[tuple[str, bool], CellCheck] = {}
        self._predictions: dict[str, pd.DataFrame] = {}
        self._told: set[tuple[Path, str]] = set()  # (damaged file, what was said) already reported

    def record_path(self, cell_id: str) -> Path:
        return self.root / "records" / f"{cell_id}.parquet"

    def predictions_path(self, cell_id: str) -> Path:
        return self.root / "predictions" / f"{cell_id}.parquet"

    def external_path(self, cell_id: str, target: str) -> Path:
        return self.root / "external" / cell_id / f"{target}.parquet"

    # -- checking -------------------------------------------------------------------------
    def check(self, cell_id: str, full_record: bool = False) -> CellCheck:
        """Is the cell pending, ok, failed, or damaged? (record read; predictions' footer only)

        ``full_record``: read every record column (else only those the check needs).
        """
        if self._cache:
            for key in ((cell_id, True), (cell_id, full_record)):
                if key in self._checks:
                    return self._checks[key]
        found = _check_files(self.record_path(cell_id), self.predictions_path(cell_id), cell_id, full_record)
        if self._cache:
            self._checks[(cell_id, full_record)] = found
        return found

    def has(self, cell_id: str) -> bool:
        """True if the cell finished successfully and its files agree (failed and damaged cells are rerun)."""
        return self.check(cell_id).state == CellState.OK

    def status_of(self, cell_id: str) -> CellState:
        """pending | ok | failed | damaged, as found (nothing is moved)."""
        return self.check(cell_id).state

    def cell_ids(self) -> list[str]:
        d = self.root / "records"
        return sorted(p.stem for p in d.glob("*.parquet")) if d.exists() else []

    # -- reading --------------------------------------------------------------------------
    def records(self, cell_ids: Iterable[str] | None = None) -> pd.DataFrame:
        """Records of the ok and failed cells; a damaged cell is told once and left out."""
        ids = list(cell_ids) if cell_ids is not None else self.cell_ids()
        frames = []
        for i in ids:
            found = self.check(i, full_record=True)
            if found.state == CellState.DAMAGED:
                for path, reason in found.problems:
                    self._tell_left_in_place(path, reason)
            elif found.state in (CellState.OK, CellState.FAILED) and found.record is not None:
                frames.append(found.record)
        if not frames:
            return pd.DataFrame(columns=list(RECORD_COLUMNS))
        return pd.concat(frames, ignore_index=True)

    def predictions(self, cell_id: str) -> pd.DataFrame:
        """The cell's predictions (full read, page checksums verified; once per view when caching).
        A damaged file is told once and raises :class:`DamagedResultError`; it is left in place."""
        if cell_id in self._predictions:
            return self._predictions[cell_id]
        path = self.predictions_path(cell_id)
        try:
            frame = pq.read_table(path, page_checksum_verification=True).to_pandas()
        except FileNotFoundError:
            raise DataError(f"{path}: no predictions stored for cell {cell_id}") from None
        except Exception as e:  # noqa: BLE001
            reason = _reason(e)
            self._tell(
                path,
                "full read",
                f"damaged {path} ({reason}); left in place, its cell left out. A run checks "
                "only the footer, which reads: move the file out of the folder (or rerun the cell with "
                "--overwrite) to recompute it",
            )
            raise DamagedResultError(
                f"{path}: damaged ({reason}); move it away or rerun its cell with `chexbench run --overwrite`"
            ) from None
        if self._cache:
            self._predictions[cell_id] = frame
        return frame

    def read_side_file(self, path: Path) -> pd.DataFrame | None:
        """A Parquet file the run rebuilds (``skipped.parquet``, a pretraining log); None if missing or
        damaged (then told once and left in place)."""
        found = _read_side(path)
        if isinstance(found, str):
            self._tell(path, "side file", f"damaged {path} ({found}); left in place and left out")
            return None
        return found

    # -- external validation (``settings.evaluate_on``) -----------------------------------
    def cell_write_id(self, cell_id: str) -> str | None:
        """The write id of the cell's stored record (its footer), None without one."""
        try:
            # type: ignore[union-attr]
            return _pair(pq.read_metadata(self.record_path(cell_id)).metadata).get("write_id")
        except Exception:  # noqa: BLE001 - missing, unreadable or unpaired: no write to tie to
            return None

    def external_record(self, cell_id: str, target: str) -> dict[str, Any] | None:
        """The record of the cell's external file for ``target`` (footer only); None if missing or
        unreadable."""
        path = self.external_path(cell_id, target)
        if not path.is_file():
            return None
        try:
            return json.loads(pq.read_metadata(path).metadata[EXTERNAL_KEY])
        except Exception:  # noqa: BLE001 - unreadable or written by something else: as good as missing
            return None

    def external_records(self) -> list[dict[str, Any]]:
        """Records of every readable external predictions file of the folder (``path`` added)."""
        out = []
        for path in sorted((self.root / "external").glob("*/*.parquet")):
            rec = self.external_record(path.parent.name, path.stem)
            if rec is not None:
                out.append({**rec, "path": str(path)})
        return out

    def external_predictions(self, cell_id: str, target: str) -> pd.DataFrame:
        path = self.external_path(cell_id, target)
        try:
            return pq.read_table(path, page_checksum_verification=True).to_pandas()
        except Exception as e:  # noqa: BLE001
            raise DataError(
                f"{path}: cannot read external predictions ({_reason(e)}); rerun `chexbench run` to redo them"
            ) from None

    # -- telling --------------------------------------------------------------------------
    def _tell(self, path: Path, kind: str, message: str) -> None:
        """``report(message)``, once per file and kind of message."""
        if (path, kind) not in self._told:
            self._told.add((path, kind))
            self.report(message)

    def _tell_left_in_place(self, path: Path, reason: str) -> None:
        self._tell(
            path,
            "left in place",
            f"damaged {path} ({reason}); left in place: the next `chexbench run` moves it to "
            "quarantine/ and recomputes its cell",
        )


class ResultStore(ResultsView):
    """The writer: stores cells, claims them, and moves damaged files to quarantine — each only
    through a method named for it (:meth:`write`, :meth:`claim`, :meth:`quarantine_damaged`,
    :meth:`read_side_file_or_quarantine`). Its readers are the view's, uncached and read-only.
    A reader that must never move anything (``report``, ``status``) uses :class:`ResultsView`.
    """

    def __init__(self, root: str | Path, report: Callable[[str], None] | None = None):
        super().__init__(root, report, cache=False)
        self.quarantined: list[tuple[Path, Path, str]] = []  # (file, moved to, reason) in this process
        self._claims: dict[str, FileLock] = {}

    def claim(self, cell_id: str) -> FileLock:
        """The cell's claim (one instance per cell and store, re-entrant); not acquired here."""
        if cell_id not in self._claims:
            self._claims[cell_id] = FileLock(self.root / "claims" / f"{cell_id}.lock")
        return self._claims[cell_id]

    def scan(self, cell_ids: Iterable[str]) -> dict[str, CellState]:
        """Each cell's state, looked at once (nothing moved): what a run decides from."""
        return {i: self.check(i).state for i in cell_ids}

    # -- writing --------------------------------------------------------------------------
    def write(self, record: CellRecord | Mapping[str, Any], predictions: pd.DataFrame | None) -> str:
        """Store one finished (or failed) cell: predictions first, then the record.

        An ``ok`` record must come with its predictions (only a failed one may have none): a
        lone ``ok`` record would be judged damaged by the next :meth:`check`, so it is refused here.

        ``record``: a :class:`CellRecord`, or a dict of its columns (``configuration_hash`` may be left
        out: it is derived from ``config_json``); it is stored in the current schema version. Returns
        the write id that pairs the two files (an external predictions file names the write of the model it
        used).
        """
        if not isinstance(record, CellRecord):
            record = CellRecord.from_mapping(record)
        record = record.replace(schema_version=RESULTS_SCHEMA_VERSION)
        cell_id = record.cell_id
        if (
            record.status == RecordStatus.OK and predictions is None
        ):  # it would read back damaged and be quarantined
            raise ValueError(
                f"cell {cell_id}: a record with status ok needs its predictions (got none); nothing written"
            )
        pair: dict[str, Any] = {
            "cell_id": cell_id,
            "write_id": uuid.uuid4().hex,
            "rows": None,
            "labels": None,
            "eval_labels": _labels_of(record.eval_labels_json),
        }  # `chexbench score` reads them
        if predictions is not None:
            missing = [c for c in PREDICTION_COLUMNS if c not in predictions.columns]
            if missing:
                raise ValueError(f"predictions lack columns: {missing}")
            pair.update(rows=len(predictions), labels=sorted(map(str, predictions["label"].unique())))
            atomic_write_parquet(
                predictions[prediction_columns(predictions)].reset_index(drop=True),
                self.predictions_path(cell_id),
                footer={PAIR_KEY: json.dumps(pair).encode()},
            )
        table = record.to_table()
        table = table.replace_schema_metadata(
            {**(table.schema.metadata or {}), PAIR_KEY: json.dumps(pair).encode()}
        )
        with atomic_path(self.record_path(cell_id)) as tmp:
            pq.write_table(table, tmp, write_page_checksum=True)
        return str(pair["write_id"])

    def write_external(self, record: dict[str, Any], predictions: pd.DataFrame) -> Path:
        """One external predictions file, its record in the footer, in one atomic write: a killed run
        leaves the file whole or absent, never a file without its record."""
        missing = [c for c in PREDICTION_COLUMNS if c not in predictions.columns]
        if missing:
            raise ValueError(f"external predictions lack columns: {missing}")
        path = self.external_path(record["cell_id"], record["target"])
        extra = [c for c in predictions.columns if c not in PREDICTION_COLUMNS]  # e.g. subgroup columns
        atomic_write_parquet(
            predictions[[*PREDICTION_COLUMNS, *extra]].reset_index(drop=True),
            path,
            footer={EXTERNAL_KEY: json.dumps(record, default=str, allow_nan=True).encode()},
        )
        return path

    def remove(self, cell_id: str) -> None:
        self.record_path(cell_id).unlink(missing_ok=True)
        self.predictions_path(cell_id).unlink(missing_ok=True)

    # -- quarantine -----------------------------------------------------------------------
    def quarantine_damaged(self, cell_id: str, full_record: bool = False) -> CellCheck:
        """:meth:`check`, then move a damaged cell's files to quarantine (the cell is then pending).

        A damaged-looking cell that a live worker has claimed is being written right now: it
        is left alone and reported as ``running``.
        """
        found = self.check(cell_id, full_record)
        if found.state != CellState.DAMAGED:
            return found
        claim = self.claim(cell_id)
        try:
            claimed = claim.try_acquire()
        except OSError as e:  # a folder we may not write to: report, move nothing
            for path, reason in found.problems:
                self._report_unmovable(path, reason, e)
            return found
        if not claimed:
            return CellCheck(CellState.RUNNING, found.problems)
        try:
            found = self.check(cell_id, full_record)  # again, now that nobody can be writing it
            if found.state != CellState.DAMAGED:
                return found
            for path, reason in found.problems:
                self._quarantine(path, reason)
            return CellCheck(CellState.PENDING, found.problems)
        finally:
            claim.release()

    def read_side_file_or_quarantine(self, path: Path) -> pd.DataFrame | None:
        """A Parquet file the run rebuilds (e.g. ``skipped.parquet``); None if missing or damaged (then
        quarantined)."""
        found = _read_side(path)
        if isinstance(found, str):
            self._quarantine(path, found)
            return None
        return found

    def _quarantine(self, path: Path, reason: str) -> None:
        """Move ``path`` to ``quarantine/<its folder's name>/`` under a free name; log and report it."""
        if not path.exists():
            return
        folder = (
            self.root / "quarantine" / path.parent.relative_to(self.root)
        )  # records/, predictions/, or the top
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for n in range(10_000):
                target = folder / (path.name if n == 0 else f"{path.stem}.{n}{path.suffix}")
                try:
                    _move_without_replacing(path, target)
                except FileExistsError:
                    continue
                break
            else:
                raise DataError(f"{folder}: no free name to quarantine {path.name}")
            entry = {
                "file": str(path.relative_to(self.root)),
                "moved_to": str(target.relative_to(self.root)),
                "reason": reason,
                "at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            }
            with open(self.root / "quarantine" / "log.jsonl", "a") as log:
                log.write(json.dumps(entry) + "\n")
        except OSError as e:  # e.g. a read-only folder that is not ours: the cell stays damaged
            self._report_unmovable(path, reason, e)
            return
        self.quarantined.append((path, target, reason))
        self.report(
            f"damaged {path} ({reason}): moved to {target}; its cell will be recomputed by the next run"
        )

    def _report_unmovable(self, path: Path, reason: str, error: OSError) -> None:
        self._tell(
            path,
            "unmovable",
            f"damaged {path} ({reason}); could not move it to quarantine: {error.strerror or error}",
        )


def _check_files(rec_path: Path, pred_path: Path, cell_id: str, full_record: bool) -> CellCheck:
    """The check of one cell's pair of files (record read; predictions' footer only)."""
    if not rec_path.exists():
        return CellCheck(CellState.PENDING)
    try:
        table = pq.read_table(rec_path, columns=None if full_record else list(_CHECKED_COLUMNS))
        record = table.to_pandas()
    except Exception as e:  # noqa: BLE001 - any reader error means the file is damaged
        return CellCheck(CellState.DAMAGED, [(rec_path, _reason(e))])
    problem = _record_problem(record, cell_id)
    if problem:
        return CellCheck(CellState.DAMAGED, [(rec_path, problem)])
    if str(record["status"].iloc[0]) != RecordStatus.OK:
        return CellCheck(CellState.FAILED, record=record)
    if not pred_path.exists():
        return CellCheck(CellState.DAMAGED, [(rec_path, "status ok but its predictions file is missing")])
    try:
        footer = pq.read_metadata(pred_path)
    except Exception as e:  # noqa: BLE001
        return CellCheck(
            CellState.DAMAGED, [(pred_path, _reason(e)), (rec_path, "its predictions file is damaged")]
        )
    problem = _pair_problem(table.schema.metadata, footer, cell_id, _eval_labels(record))
    if problem:
        return CellCheck(
            CellState.DAMAGED, [(pred_path, problem), (rec_path, "does not match its predictions file")]
        )
    return CellCheck(CellState.OK, record=record)


def _read_side(path: Path) -> pd.DataFrame | str | None:
    """A side file's frame, None if missing, or why it cannot be read."""
    if not path.exists():
        return None
    try:
        return pq.read_table(path).to_pandas()
    except Exception as e:  # noqa: BLE001
        return _reason(e)


def record_configuration_hash(config_json: str) -> str:
    """The configuration hash of a stored record, from its ``config_json`` (records written
    before the ``configuration_hash`` column existed get theirs this way)."""
    return configuration_hash(json.loads(config_json))


def _move_without_replacing(path: Path, target: Path) -> None:
    """Move ``path`` to ``target``; FileExistsError if ``target`` exists (a rename would replace it)."""
    try:
        os.link(path, target)
    except FileExistsError:
        raise
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        if target.exists():  # a filesystem without hard links: check, then rename
            raise FileExistsError(target) from None
        os.rename(path, target)
        return
    path.unlink()


def _reason(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    return f"unreadable: {type(e).__name__}: {text}"[:300]


#: record columns :meth:`ResultStore.check` reads
_CHECKED_COLUMNS = ("cell_id", "status", "eval_labels_json")


def _record_problem(record: pd.DataFrame, cell_id: str) -> str:
    missing = [c for c in _CHECKED_COLUMNS if c not in record.columns]
    if missing:
        return f"lacks columns {missing}"
    if len(record) != 1:
        return f"holds {len(record)} rows, not one"
    if str(record["cell_id"].iloc[0]) != cell_id:
        return f"holds cell {record['cell_id'].iloc[0]!r}, not {cell_id!r}"
    return ""


def _eval_labels(record: pd.DataFrame) -> list[str]:
    return _labels_of(record["eval_labels_json"].iloc[0])


def _labels_of(eval_labels_json: Any) -> list[str]:
    try:
        return [str(x) for x in json.loads(str(eval_labels_json))]
    except (json.JSONDecodeError, TypeError):
        return []


def recorded_eval_labels(predictions_path: str | Path) -> tuple[list[str], str] | None:
    """The evaluation labels recorded with a cell's predictions file, and where they were found:
    its footer (written since the footer carries them) or the cell's record beside it
    (``<results>/records/<cell_id>.parquet``). None for a file chexbench did not store."""
    path = Path(predictions_path)
    try:
        pair = _pair(pq.read_metadata(path).metadata)
    except Exception:  # noqa: BLE001 - not a Parquet file of ours: nothing recorded
        pair = None
    if pair and pair.get("eval_labels"):
        return [str(x) for x in pair["eval_labels"]], f"recorded in {path.name}"
    record_path = path.parent.parent / "records" / path.name
    if path.parent.name != "predictions" or not record_path.is_file():
        return None
    try:
        record = pq.read_table(record_path, columns=["cell_id", "eval_labels_json"]).to_pandas()
    except Exception:  # noqa: BLE001
        return None
    if len(record) != 1 or str(record["cell_id"].iloc[0]) != path.stem:
        return None
    labels = _eval_labels(record)
    return (labels, f"recorded in {record_path}") if labels else None


def _pair(metadata: dict[bytes, bytes] | None) -> dict[str, Any] | None:
    try:
        return json.loads((metadata or {})[PAIR_KEY])
    except (KeyError, json.JSONDecodeError, TypeError):
        return None


def _pair_problem(
    record_meta: dict[bytes, bytes] | None, footer: pq.FileMetaData, cell_id: str, eval_labels: list[str]
) -> str:
    """Why a predictions file's footer does not belong to its record ("" if it does)."""
    columns = set(footer.schema.names)
    if missing := [c for c in PREDICTION_COLUMNS if c not in columns]:
        return f"lacks columns {missing}"
    if footer.num_rows == 0:
        return "holds no rows"
    theirs, ours = _pair(footer.metadata), _pair(record_meta)
    if ours is None:  # written before records and predictions were paired: the footer is all we can check
        return ""
    if theirs is None:
        return "carries no pairing metadata (not written with its record)"
    if theirs.get("cell_id") != cell_id:
        return f"belongs to cell {theirs.get('cell_id')!r}, not {cell_id!r}"
    if theirs.get("write_id") != ours.get("write_id"):
        return "comes from another write than its record (write ids differ)"
    if footer.num_rows != ours.get("rows") or theirs.get("rows") != footer.num_rows:
        return f"holds {footer.num_rows} rows, its record says {ours.get('rows')}"
    labels = set(theirs.get("labels") or [])
    if labels != set(ours.get("labels") or []) or not set(eval_labels) <= labels:
        return f"labels {sorted(labels)} do not cover the record's {eval_labels}"
    return ""


def decode_json_columns(records: pd.DataFrame) -> list[dict[str, Any]]:
    """Records as dicts with every ``*_json`` column parsed (key without the suffix)."""
    out = []
    for row in records.to_dict("records"):
        for k in list(row):
            if k.endswith("_json") and isinstance(row[k], str):
                row[k[: -len("_json")]] = json.loads(row[k])
        out.append(row)
    return out
