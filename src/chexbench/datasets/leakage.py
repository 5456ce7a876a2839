"""Leakage by patient, not by name: the checks a dataset runs before any cell trains.

A test patient may never be in the pretraining pool or the train split of the same target
(DESIGN.md, reliability rules). The guard compares **patient ids**, not dataset names or
roots: the pretraining pool (the source's train split under the cell's views) against every
patient of the target's test split, whatever the source is called and wherever its root
lies — a copy of the target's folder under another name or root is caught. Ids are compared
as strings, so two datasets are only compared meaningfully when they share an id scheme
(CheXpert ``patientNNNNN``, NIH ``NNNNNNNN``, Indiana ``CXRn``); the same person under two
id schemes (which would need image content hashes across datasets) is **out of scope**.
Unrelated collections that happen to reuse ids (two phantom generations with different
seeds) are refused as well; ``allow_leakage = true`` overrides, and the record says so.

:func:`check_cell` is what :meth:`chexbench.datasets.base.Dataset.preflight` runs: the
target's index builds (label files and values), each split has images under the cell's
views, no patient is in two splits, and — when the cell's strategy pretrains — no target
test patient is in the pool. Indexes are read with the dataset's own loader (no image is
decoded) and kept per (dataset, root, label files), so a grid of many cells reads each once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from chexbench.core.errors import DataError, LeakageError
from chexbench.datasets import split_files
from chexbench.datasets.prepared import label_file_fingerprint
from chexbench.datasets.splits import FRONTAL_VIEWS, SPLITS, patient_overlaps
from chexbench.spec.grid import resolve_pretrain_source_options
from chexbench.spec.registry import DATASETS, STRATEGIES

if TYPE_CHECKING:
    from chexbench.spec.cell import CellConfig


def pretrain_source_options(cell: CellConfig) -> dict[str, Any]:
    """The dataset options of the cell's pretraining source, the one place that decides them:
    ``cell.pretrain_source_options`` when the grid resolved a ``[dataset.<source>]`` table into
    it; else the same resolution without such a table (the cell's own dataset options when the
    source is the target, ``pretrain_root`` as root;
    :func:`chexbench.spec.grid.resolve_pretrain_source_options`).
    """
    if cell.pretrain_source_options:
        return dict(cell.pretrain_source_options)
    source = cell.settings.pretrain_source
    opts = resolve_pretrain_source_options(
        source, cell.dataset, cell.dataset_options, {}, cell.strategy_options.get("pretrain_root")
    )
    # as a grid's table would be: what identifies the source's data (a generated phantom's dependencies)
    # enters the pretraining run's key, so a run made on other data is never reused
    return DATASETS.get(source).identity_options(opts)


@dataclass(frozen=True)
class IndexedRoot:
    """A dataset's index as its loader reads it from ``root`` (no image decoded)."""

    dataset: str
    root: Path
    index: pd.DataFrame

    def patients(self, splits: Iterable[str], views: str = "all") -> set[str]:
        """Patient ids with an image in one of ``splits`` (``views = "frontal"``: frontal images only)."""
        mask = self.index["split"].astype(str).isin(list(splits)).to_numpy()
        if views == "frontal":
            mask = mask & self.index["view"].astype(str).isin(FRONTAL_VIEWS).to_numpy()
        return set(self.index["patient_id"].astype(str).to_numpy()[mask])


_INDEXES: dict[tuple[str, str, str], IndexedRoot] = {}


def indexed_root(dataset: str, options: dict[str, Any]) -> IndexedRoot:
    """The index of ``dataset`` located by ``options``, read once per root and label-file state;
    its splits from the split file the options name, if any (:mod:`chexbench.datasets.split_files`)."""
    ds = DATASETS.get(dataset)
    root = Path(ds.resolve_root(options))
    stamp = json.dumps(label_file_fingerprint(ds, root), sort_keys=True)
    key = (dataset, str(root.resolve()), stamp)
    if key not in _INDEXES:
        _INDEXES[key] = IndexedRoot(dataset, root, ds.load_index(root))
    # a split file (``splits`` option) replaces the loader's split column: it is read and checked each time
    index, split_file = split_files.apply(_INDEXES[key].index, dataset, options, root)
    return _INDEXES[key] if split_file is None else IndexedRoot(dataset, root, index)


def check_split_overlaps(cell: CellConfig, target: IndexedRoot) -> dict[str, int]:
    """Shared patients between the target's splits (under the cell's views); LeakageError unless allowed."""
    views = cell.settings.views
    by_split = {name: np.array(sorted(target.patients([name], views)), dtype=object) for name in SPLITS}
    for name, ids in by_split.items():
        if len(ids) == 0:
            raise DataError(
                f"dataset '{cell.dataset}' at {target.root}: the {name} split has no images (views = {views})"
            )
    overlaps = patient_overlaps(by_split)
    if overlaps and not cell.settings.allow_leakage:
        raise LeakageError(split_leakage_message(cell.dataset, overlaps))
    return overlaps


def split_leakage_message(dataset: str, overlaps: dict[str, int]) -> str:
    detail = ", ".join(f"{k}: {v}" for k, v in overlaps.items())
    return (
        f"dataset '{dataset}': {sum(overlaps.values())} patients appear in more than one split ({detail}); "
        "set allow_leakage = true to override (the record will say so)"
    )


def pool_leakage(cell: CellConfig, pool_patients: Iterable[str], pool_root: Path, target: IndexedRoot) -> int:
    """Target test patients in a pretraining pool; LeakageError naming both roots unless ``allow_leakage``."""
    test = target.patients(["test"])
    shared = len(set(map(str, pool_patients)) & test)
    if shared and not cell.settings.allow_leakage:
        source = cell.settings.pretrain_source
        raise LeakageError(
            f"dataset '{cell.dataset}' at {target.root}: {shared} of its {len(test)} test patients are in the"
            f" pretraining pool of '{source}' at {pool_root} (same patient ids); set allow_leakage = true to"
            " override (the record will say so)"
        )
    return shared


def check_pretrain_leakage(cell: CellConfig) -> int:
    """Target test patients in the cell's pretraining pool (the source's train split under the
    cell's views), compared by patient id whatever the names and roots. Returns the count (0, or
    more only under ``allow_leakage``); raises LeakageError otherwise."""
    source = indexed_root(cell.settings.pretrain_source, pretrain_source_options(cell))
    target = indexed_root(cell.dataset, cell.dataset_options)
    return pool_leakage(cell, source.patients(["train"], cell.settings.views), source.root, target)


def pretrains(cell: CellConfig) -> bool:
    """Whether the cell's strategy pretrains on an unlabeled pool (it has a pretraining key)."""
    return STRATEGIES.get(cell.strategy).pretrain_key(cell) is not None


def check_cell(cell: CellConfig) -> None:
    """The dataset pre-run check of ``cell`` (module docstring). Indexes are read once; the
    checks themselves are set operations, cheap enough to repeat per cell."""
    target = indexed_root(cell.dataset, cell.dataset_options)
    check_split_overlaps(cell, target)
    if pretrains(cell):
        check_pretrain_leakage(cell)
