"""Split files: the patient-level splits of a dataset as a CSV others can cite and reuse.

``chexbench data splits`` writes what a grid's cells train, select and test on; a grid reads
one back with ``[dataset.NAME] splits = "FILE or DIR"`` instead of deriving the splits
(docs/DATASETS.md, "Split files", is the format's reference). One row per patient::

    patient_id,split,fraction_0.1_seed_0,fraction_0.1_seed_1,fraction_1_seed_0,...
    patient00001,train,1,0,1
    patient00002,valid,0,0,0

``split`` is ``train`` / ``valid`` (or ``val``) / ``test``. A column ``fraction_<f>_seed_<s>``
marks (1) the train patients the cell of label fraction ``f`` and seed ``s`` trains on;
``fraction_<f>`` (no seed) serves every seed. Without a column for fraction 1, that fraction
trains on every train patient. Fractions need not be nested: the harness's own stratified
samples are not always (a positive patient swapped in at a small fraction can be left out of a
larger one), so each column is read as it stands.

The file's identity is the sha256 of its bytes (``sha256sum`` verifies it): its first 12 hex
digits are in an exported file's name, and the whole digest is in the id and record of every
cell that reads it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chexbench.core.atomic import atomic_path
from chexbench.core.errors import DataError, LeakageError
from chexbench.datasets.splits import SPLITS

#: the dataset option that names a split file or a folder holding one
OPTION = "splits"
#: the key the grid adds next to it: the file's sha256, so the cell id names the file's content
HASH_KEY = "splits_sha256"
#: split names a file may use, and the index's name for each
SPLIT_NAMES: dict[str, str] = {"train": "train", "valid": "valid", "val": "valid", "test": "test"}
_COLUMN = re.compile(r"^fraction_(?P<fraction>[0-9][0-9.eE+-]*)(?:_seed_(?P<seed>[0-9]+))?$")
_HASHED_NAME = re.compile(r"-splits-(?P<digest>[0-9a-f]{12})\.csv$")
_ONE = frozenset({"1", "1.0", "true"})
_ZERO = frozenset({"0", "0.0", "false", ""})


def file_name(dataset: str, sha256: str) -> str:
    """``<dataset>-splits-<first 12 hex digits of the content's sha256>.csv``."""
    return f"{dataset}-splits-{sha256[:12]}.csv"


def column_name(fraction: float, seed: int | None) -> str:
    """``fraction_0.1_seed_0`` (``fraction_0.1`` when the column serves every seed)."""
    return f"fraction_{fraction:g}" + ("" if seed is None else f"_seed_{seed}")


def locate(dataset: str, value: str | Path) -> Path:
    """The split file named by a ``splits`` option: the file itself, or the one
    ``<dataset>-splits-*.csv`` in a folder (none or several: DataError)."""
    path = Path(value).expanduser()
    if path.is_dir():
        found = sorted(path.glob(f"{dataset}-splits-*.csv"))
        if len(found) == 1:
            return found[0]
        if not found:
            raise DataError(
                f"split folder {path} holds no split file of '{dataset}' ({dataset}-splits-<hash>.csv); "
                f"write one with: chexbench data splits {dataset} --out {path}, or name a file"
            )
        names = ", ".join(p.name for p in found)
        raise DataError(
            f"split folder {path} holds {len(found)} split files of '{dataset}' ({names}); name one file"
        )
    if not path.is_file():
        raise DataError(f"split file not found: {path}")
    return path


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(f"split file {path}: cannot be read: {e.strerror or e}") from None


def identity(dataset: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` with the split file's sha256 added (:data:`HASH_KEY`) when they set ``splits``
    (the file's format is checked here: :func:`read`); unchanged otherwise, so cells without a
    split file keep their ids."""
    if not options.get(OPTION):
        return dict(options)
    path = locate(dataset, str(options[OPTION]))
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:  # a grid resolves many cells of one dataset: the file is read and checked once
        _HASHES[key] = read(path).sha256  # a malformed file fails when the grid is read, before any cell
    return {**options, HASH_KEY: _HASHES[key]}


_HASHES: dict[tuple[str, int, int], str] = {}


@dataclass(frozen=True)
class SplitFile:
    """A parsed, checked split file (the checks that need no index)."""

    path: Path
    sha256: str
    patients: np.ndarray  # str (P,), as listed
    split: np.ndarray  # str (P,): "train" | "valid" | "test"
    lines: np.ndarray  # int (P,): the CSV line of each patient (the header is line 1)
    members: dict[tuple[float, int | None], np.ndarray]  # (fraction, seed or None) → bool (P,)

    def split_of(self) -> dict[str, str]:
        return dict(zip(self.patients.tolist(), self.split.tolist(), strict=True))

    def train_members(self, fraction: float, seed: int) -> tuple[str, set[str] | None]:
        """(column used, the train patients of the cell with this fraction and seed); ``None``
        patients when the file has no column for fraction 1: every train patient, sampled as usual."""
        have = [key for key in self.members if math.isclose(key[0], fraction)]
        for key in ((k for k in have if k[1] == seed), (k for k in have if k[1] is None)):
            chosen = next(key, None)
            if chosen is not None:
                return column_name(*chosen), set(self.patients[self.members[chosen]].tolist())
        if not have and math.isclose(fraction, 1.0):
            return "", None
        listed = ", ".join(column_name(*k) for k in self.members) or "none"
        what = f"label fraction {fraction:g} and seed {seed}" if have else f"label fraction {fraction:g}"
        raise DataError(f"split file {self.path}: no column for {what} (fraction columns: {listed})")

    def check_patients(self, index_patients: np.ndarray, where: str) -> None:
        """Every listed patient must be in the index (``where``: the dataset and root, for the message)."""
        known = set(map(str, index_patients))
        unknown = np.array([p not in known for p in self.patients.tolist()], dtype=bool)
        if unknown.any():
            first = int(np.flatnonzero(unknown)[0])
            raise DataError(
                f"split file {self.path}: {int(unknown.sum())} patients are not in the index of {where} "
                f"(first: '{self.patients[first]}' on line {self.lines[first]})"
            )


_PARSED: dict[tuple[str, str], SplitFile] = {}


def read(path: Path) -> SplitFile:
    """Parse and check a split file: columns, split names, one split per patient, 0/1 memberships,
    only train patients in a fraction, no empty split or column. One DataError line naming the
    file and the offending value (LeakageError for a patient in two splits)."""
    data = _read_bytes(path)
    sha = hashlib.sha256(data).hexdigest()
    key = (str(path.resolve()), sha)
    if key not in _PARSED:
        _PARSED[key] = _parse(path, data, sha)
    return _PARSED[key]


def _parse(path: Path, data: bytes, sha: str) -> SplitFile:
    named = _HASHED_NAME.search(path.name)
    if named and named["digest"] != sha[:12]:
        raise DataError(
            f"split file {path}: its content's sha256 begins {sha[:12]}, its name says {named['digest']} "
            "(edited after export?): re-export it or rename it"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"split file {path}: not UTF-8 text (byte {e.start})") from None
    reader = csv.reader(io.StringIO(text))
    try:
        records = [(reader.line_num, row) for row in reader if row]  # blank lines skipped
    except csv.Error as e:
        raise DataError(f"split file {path} line {reader.line_num}: not well-formed CSV ({e})") from None
    header = [h.strip() for h in records[0][1]] if records else []
    fractions = _check_header(path, header)
    for n, row in records[1:]:
        if len(row) != len(header):  # pandas would quietly take surplus fields as an index
            raise DataError(f"split file {path} line {n}: {len(row)} fields, the header has {len(header)}")
    if len(records) < 2:
        raise DataError(f"split file {path}: lists no patient")
    table = pd.DataFrame([row for _, row in records[1:]], columns=header, dtype=str)
    lines = np.array([n for n, _ in records[1:]])
    patients = table["patient_id"].str.strip().to_numpy(dtype=object)
    blank = np.flatnonzero(patients == "")
    if len(blank):
        raise DataError(f"split file {path} line {lines[blank[0]]}: empty patient_id")
    raw_split = table["split"].str.strip().str.lower()
    bad = np.flatnonzero(~raw_split.isin(list(SPLIT_NAMES)).to_numpy())
    if len(bad):
        value = table["split"].iloc[bad[0]]
        raise DataError(
            f"split file {path} line {lines[bad[0]]}: split '{value}' is not train, valid (or val) or test"
        )
    split = raw_split.map(SPLIT_NAMES).to_numpy(dtype=object)
    _check_one_split_per_patient(path, patients, split, lines)
    for name in SPLITS:
        if not (split == name).any():
            raise DataError(
                f"split file {path}: no patient in the {name} split (train, valid and test each need one)"
            )
    members = {}
    for column, key in fractions.items():
        values = table[column].str.strip().str.lower()
        wrong = np.flatnonzero(~values.isin(_ONE | _ZERO).to_numpy())
        if len(wrong):
            raise DataError(
                f"split file {path} line {lines[wrong[0]]}: column {column} has "
                f"'{table[column].iloc[wrong[0]]}' (expected 1, 0 or blank)"
            )
        marked = values.isin(_ONE).to_numpy()
        outside = np.flatnonzero(marked & (split != "train"))
        if len(outside):
            i = outside[0]
            raise DataError(
                f"split file {path} line {lines[i]}: patient '{patients[i]}' is in the {split[i]} split "
                f"but marked 1 in {column} (only train patients can be in a label fraction)"
            )
        if not marked.any():
            raise DataError(f"split file {path}: column {column} marks no patient")
        members[key] = marked
    return SplitFile(path, sha, patients.astype(str), split.astype(str), lines, members)


def _check_header(path: Path, header: list[str]) -> dict[str, tuple[float, int | None]]:
    """The fraction columns of a header, each as (fraction, seed or None); DataError on anything else."""
    for required in ("patient_id", "split"):
        if required not in header:
            raise DataError(
                f"split file {path}: no '{required}' column (header: {','.join(header) or 'empty'})"
            )
    fractions: dict[str, tuple[float, int | None]] = {}
    for i, column in enumerate(header):
        if column in header[:i]:
            raise DataError(f"split file {path}: column '{column}' appears twice")
        if column in ("patient_id", "split"):
            continue
        m = _COLUMN.match(column)
        fraction = _as_fraction(m["fraction"]) if m else None
        if fraction is None:
            raise DataError(
                f"split file {path}: unknown column '{column}' (expected patient_id, split, then "
                "fraction_<f> or fraction_<f>_seed_<s> with 0 < f <= 1)"
            )
        key = (fraction, int(m["seed"]) if m["seed"] is not None else None)
        twin = next((c for c, k in fractions.items() if math.isclose(k[0], key[0]) and k[1] == key[1]), None)
        if twin:
            raise DataError(
                f"split file {path}: columns '{twin}' and '{column}' name the same fraction and seed"
            )
        fractions[column] = key
    for column, (fraction, seed) in fractions.items():
        mixed = [
            c
            for c, k in fractions.items()
            if math.isclose(k[0], fraction) and (k[1] is None) != (seed is None)
        ]
        if mixed:
            raise DataError(
                f"split file {path}: label fraction {fraction:g} has a column for every seed ('{column}') "
                f"and one for a single seed ('{mixed[0]}'): use one kind"
            )
    return fractions


def _as_fraction(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if 0 < value <= 1 else None


def _check_one_split_per_patient(
    path: Path, patients: np.ndarray, split: np.ndarray, lines: np.ndarray
) -> None:
    first: dict[str, int] = {}
    leaked: list[tuple[int, int]] = []
    for i, p in enumerate(patients.tolist()):
        j = first.setdefault(p, i)
        if j == i:
            continue
        if split[j] == split[i]:
            raise DataError(
                f"split file {path}: patient '{p}' is listed twice (lines {lines[j]} and {lines[i]})"
            )
        leaked.append((j, i))
    if leaked:
        j, i = leaked[0]
        more = (
            f"; {len({patients[a] for a, _ in leaked})} patients in more than one split"
            if len(leaked) > 1
            else ""
        )
        raise LeakageError(
            f"split file {path}: patient '{patients[i]}' is in two splits ({split[j]} on line {lines[j]}, "
            f"{split[i]} on line {lines[i]}){more}"
        )


def for_options(dataset: str, options: Mapping[str, Any]) -> SplitFile | None:
    """The split file the options name (checked against the hash the grid recorded), or None."""
    if not options.get(OPTION):
        return None
    found = read(locate(dataset, str(options[OPTION])))
    recorded = options.get(HASH_KEY)
    if recorded and recorded != found.sha256:
        raise DataError(
            f"split file {found.path} changed since the grid was read (sha256 {str(recorded)[:12]}… in the"
            f" cell, {found.sha256[:12]}… now): plan and run again so the cell id names the file it reads"
        )
    return found


def apply(
    index: pd.DataFrame, dataset: str, options: Mapping[str, Any], root: Path | str
) -> tuple[pd.DataFrame, SplitFile | None]:
    """The index with its ``split`` column taken from the options' split file (patients the file
    does not list: ``""``, in no split), and the file; the index itself when no file is named."""
    found = for_options(dataset, options)
    if found is None:
        return index, None
    patients = index["patient_id"].astype(str).to_numpy()
    found.check_patients(patients, f"'{dataset}' at {root}")
    out = index.copy()
    out["split"] = pd.Series(patients).map(found.split_of()).fillna("").to_numpy(dtype=object)
    return out, found


def patient_splits(index: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """One row per patient with a split: ``patient_id, split`` (sorted by patient); DataError when
    an index puts one patient in two splits (a split file gives each patient one)."""
    rows = (
        index.loc[index["split"].astype(str).isin(SPLITS), ["patient_id", "split"]]
        .astype(str)
        .drop_duplicates()
    )
    twice = rows["patient_id"].duplicated(keep=False)
    if twice.any():
        p = rows.loc[twice, "patient_id"].iloc[0]
        raise DataError(
            f"dataset '{dataset}': patient '{p}' has images in {twice.sum()} splits"
            f" ({', '.join(sorted(rows.loc[rows['patient_id'] == p, 'split']))}); a split file gives each"
            " patient one"
        )
    return rows.sort_values("patient_id", kind="stable").reset_index(drop=True)


def table(splits: pd.DataFrame, members: Mapping[tuple[float, int], set[str]]) -> pd.DataFrame:
    """The split file's rows: ``splits`` (:func:`patient_splits`) plus one 0/1 column per
    (fraction, seed), columns ordered by fraction then seed."""
    out = splits.copy()
    for fraction, seed in sorted(members):
        out[column_name(fraction, seed)] = out["patient_id"].isin(members[(fraction, seed)]).astype(int)
    return out


def to_bytes(rows: pd.DataFrame) -> bytes:
    return rows.to_csv(index=False, lineterminator="\n").encode()


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes (what ``sha256sum`` prints)."""
    return hashlib.sha256(_read_bytes(Path(path))).hexdigest()


def nesting_notes(rows: pd.DataFrame) -> list[str]:
    """One line per seed and pair of its fraction columns whose smaller fraction has a patient the
    larger lacks (allowed: see the module docstring), e.g. ``seed 0: 2 patients of fraction_0.1_seed_0
    are not in fraction_0.5_seed_0``."""
    by_seed: dict[int | None, list[tuple[float, str]]] = {}
    for column in rows.columns[2:]:
        m = _COLUMN.match(column)
        by_seed.setdefault(int(m["seed"]) if m["seed"] else None, []).append((float(m["fraction"]), column))
    notes = []
    for seed, columns in by_seed.items():
        columns.sort()
        for (_, small), (_, large) in zip(columns, columns[1:], strict=False):
            outside = int(((rows[small] == 1) & (rows[large] == 0)).sum())
            if outside:
                who = "every seed" if seed is None else f"seed {seed}"
                notes.append(f"{who}: {outside} patients of {small} are not in {large}")
    return notes


def write(rows: pd.DataFrame, dataset: str, out_dir: Path) -> Path:
    """Write ``rows`` (:func:`table`) atomically as ``out_dir/<dataset>-splits-<sha12>.csv``."""
    data = to_bytes(rows)
    path = Path(out_dir) / file_name(dataset, hashlib.sha256(data).hexdigest())
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)
    return path
