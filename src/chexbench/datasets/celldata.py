"""The data of one cell: uint8 images and masked targets per split, plus a JSON manifest.

:func:`build_cell_data` is what the runner calls. Order of operations (each recorded in the
manifest): prepared cache (reused or built) → views → uncertainty policy → blanks by the
dataset's convention (:func:`chexbench.datasets.labels.training_targets`) → patient-overlap
check between splits → images with no usable label left out (counted per split) → label
fraction (train, patient level, seed = cell seed, stratified on the evaluation labels) →
image caps (train: cell seed; valid/test: fixed seed, so every cell of a grid is scored on
the same test images) → arrays.

:func:`pretrain_pool` gives the unlabeled train-split images of the pretraining source and
refuses (LeakageError) when a patient of the cell's test split is in it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chexbench.core.atomic import atomic_path
from chexbench.core.errors import ConfigError, DataError, LeakageError
from chexbench.core.paths import cache_dir
from chexbench.datasets import split_files
from chexbench.datasets.base import FRONTAL_VIEWS, SPLITS, SUBGROUP_COLUMNS
from chexbench.datasets.cache import PreparedCache, ensure_prepared
from chexbench.datasets.labels import (
    BLANK_UNKNOWN,
    HARMONIZED_LABELS,
    blank_is_negative,
    has_usable_label,
    training_targets,
)
from chexbench.datasets.leakage import (
    indexed_root,
    pool_leakage,
    pretrain_source_options,
    split_leakage_message,
)
from chexbench.datasets.splits import ids_sha256, patient_overlaps, sample_patients
from chexbench.spec.cell import CellConfig
from chexbench.spec.registry import DATASETS

#: Seed of the valid/test image caps: fixed, so paired comparisons see identical test sets.
EVAL_CAP_SEED = 0
#: Selections larger than this are written to a memmap file instead of held in RAM.
IN_MEMORY_LIMIT_BYTES = 2 << 30
VIEWS = ("frontal", "all")


@dataclass
class SplitData:
    images: np.ndarray  # uint8 (N, S, S), one channel
    targets: np.ndarray  # float32 (N, L): 1 / 0, NaN = masked; uncertainty policy applied
    image_ids: np.ndarray  # str (N,)
    patient_ids: np.ndarray  # str (N,)
    #: per-image subgroup attributes from the index (``SUBGROUP_COLUMNS`` it has: sex, age, view, site), each
    #: (N,)
    attributes: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.image_ids)


@dataclass
class CellData:
    labels: list[str]  # the L label columns trained on
    eval_labels: list[str]  # the subset the leaderboard averages over
    train: SplitData
    valid: SplitData
    test: SplitData
    manifest: dict[str, Any]

    def split(self, name: str) -> SplitData:
        return {"train": self.train, "valid": self.valid, "test": self.test}[name]


def resolve_prepared(dataset: str, options: dict[str, Any], size: int) -> tuple[Any, Path, PreparedCache]:
    """The registered dataset, its resolved root and its prepared cache at ``size``."""
    ds = DATASETS.get(dataset)
    root = Path(ds.resolve_root(options))
    return ds, root, ensure_prepared(dataset, root, size)


def _view_mask(index: pd.DataFrame, views: str) -> np.ndarray:
    if views not in VIEWS:
        raise ConfigError(f"unknown views setting '{views}' (known: {', '.join(VIEWS)})")
    if views == "all":
        return np.ones(len(index), dtype=bool)
    return index["view"].astype(str).isin(FRONTAL_VIEWS).to_numpy()


def _ordered_labels(ds: Any, index: pd.DataFrame) -> list[str]:
    declared = list(ds.labels) or [lab for lab in HARMONIZED_LABELS if lab in index.columns]
    return [lab for lab in declared if lab in index.columns]


def _take_images(cache: PreparedCache, rows: np.ndarray) -> np.ndarray:
    """``cache.images[rows]``: in RAM when small; a view of the cache when the rows are one
    contiguous block (a whole split's frontal images); else a read-only memmap file."""
    s = cache.size
    if len(rows) * s * s <= IN_MEMORY_LIMIT_BYTES:
        return np.asarray(cache.images[rows])
    if rows[-1] - rows[0] + 1 == len(rows) and bool(np.all(np.diff(rows) == 1)):
        return cache.images[rows[0] : rows[-1] + 1]  # a contiguous block (see memmap_order): no copy
    # the pixels' identity, not only the cache's name: a rebuilt cache (same key, new images.u8) must not
    # be served from a selection copied out of the old one
    st = (cache.dir / "images.u8").stat()
    pixels = f"{cache.cache_id}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"
    key = hashlib.sha256(pixels.encode() + rows.tobytes()).hexdigest()[:16]
    path = cache_dir() / "cells" / f"{key}.u8"
    shape = (len(rows), s, s)
    if not path.is_file():
        with atomic_path(path) as tmp:
            out = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=shape)
            for start in range(0, len(rows), 4096):
                out[start : start + 4096] = cache.images[rows[start : start + 4096]]
            out.flush()
            del out
    return np.memmap(path, dtype=np.uint8, mode="r", shape=shape)


def _split_rule(ds: Any) -> str:
    """The dataset's documented split rule (a phantom reports the rule of the layout it uses)."""
    rule = getattr(ds, "split_rule", "")
    layout = getattr(ds, "layout", "")
    if not rule and layout and layout in DATASETS:
        rule = getattr(DATASETS.get(layout), "split_rule", "")
    return rule


def _split_summary(index: pd.DataFrame, mask: np.ndarray) -> dict[str, Any]:
    return {
        "images": int(mask.sum()),
        "patients": int(index["patient_id"][mask].nunique()),
        "image_ids_sha256": ids_sha256(index["image_id"][mask].to_numpy()),
    }


@dataclass
class RowSelection:
    """The index rows of a cell's splits, as :func:`build_cell_data` selects them (no image read)."""

    dataset: Any  # the registered dataset
    root: Path
    cache: PreparedCache
    index: pd.DataFrame  # the cache's index; its split column from the split file when one is named
    labels: list[str]
    eval_labels: list[str]
    targets: np.ndarray  # float64 (N, L) training targets of every index row
    patients: np.ndarray  # str (N,)
    before: dict[str, np.ndarray]  # split → bool (N,): usable images, before label fraction and caps
    masks: dict[str, np.ndarray]  # split → bool (N,): the images the cell uses
    unlabeled: dict[str, int]
    overlaps: Any
    split_file: split_files.SplitFile | None
    split_column: str  # the split file's column that gave the train patients ("" when sampled)


def select_rows(cell: CellConfig) -> RowSelection:
    """Split masks of ``cell``: views, labels, leakage check, label fraction and caps (module docstring);
    with ``[dataset.NAME] splits``, the split file's splits and train patients (docs/DATASETS.md)."""
    st = cell.settings
    ds, root, cache = resolve_prepared(cell.dataset, cell.dataset_options, st.image_size)
    index, split_file = split_files.apply(cache.index, cell.dataset, cell.dataset_options, root)
    labels = _ordered_labels(ds, index)
    if not labels:
        raise DataError(f"dataset '{cell.dataset}' at {root}: the index has no label columns")
    eval_labels = [lab for lab in ds.eval_labels if lab in labels] or list(labels)
    view_ok = _view_mask(index, st.views)
    raw = index[labels].to_numpy(dtype=np.float64)
    # uncertainty policy, then blanks by the dataset's convention (datasets/labels.py): e.g. a
    # CheXpert blank is a negative by default, an unindexed Indiana report stays masked
    blank_means = getattr(ds, "blank_label_means", BLANK_UNKNOWN)
    targets = training_targets(raw, labels, st.uncertainty, st.not_mentioned, blank_means)
    patients = index["patient_id"].astype(str).to_numpy()
    before, unlabeled, overlaps = _split_masks(cell, root, index, view_ok, has_usable_label(targets))
    positives = targets[:, [labels.index(lab) for lab in eval_labels]] == 1.0
    masks, column = _sample_masks(cell, before, patients, positives, split_file, root)
    return RowSelection(
        ds,
        root,
        cache,
        index,
        labels,
        eval_labels,
        targets,
        patients,
        before,
        masks,
        unlabeled,
        overlaps,
        split_file,
        column,
    )


def build_cell_data(cell: CellConfig) -> CellData:
    """Images and targets of the cell's train / valid / test splits, with a manifest."""
    st = cell.settings
    sel = select_rows(cell)
    ds, root, cache, index, labels, eval_labels = (
        sel.dataset,
        sel.root,
        sel.cache,
        sel.index,
        sel.labels,
        sel.eval_labels,
    )
    blank_means = getattr(ds, "blank_label_means", BLANK_UNKNOWN)
    masks, unlabeled, overlaps = sel.masks, sel.unlabeled, sel.overlaps
    before = {name: _split_summary(index, m) for name, m in sel.before.items()}
    parts = {
        name: _split_data(cache, sel.targets, sel.patients, np.flatnonzero(m)) for name, m in masks.items()
    }
    manifest = {
        "dataset": cell.dataset,
        "root": str(root.resolve()),
        "cache_id": cache.cache_id,
        "cache_dir": str(cache.dir),
        "loader_version": cache.manifest.get("loader_version"),
        "index_fingerprint": cache.manifest.get("index_fingerprint"),
        "split_rule": _split_rule(ds),
        "image_size": st.image_size,
        "views": st.views,
        "uncertainty": st.uncertainty,
        "not_mentioned": st.not_mentioned,
        "blank_label_means": blank_means,
        "blank_is_negative": blank_is_negative(blank_means, st.not_mentioned),
        "unlabeled_images_excluded": unlabeled,
        "labels": labels,
        "eval_labels": eval_labels,
        "label_fraction": cell.label_fraction,
        "label_fraction_seed": cell.seed,
        "max_train_images": st.max_train_images,
        "max_eval_images": st.max_eval_images,
        "eval_cap_seed": EVAL_CAP_SEED,
        "allow_leakage": st.allow_leakage,
        "patient_overlaps": overlaps,
        "skipped_images": cache.manifest.get("n_skipped", 0),
        "splits_before_sampling": before,
        "splits": {name: _split_summary(index, m) for name, m in masks.items()},
        "train_positives": {
            lab: int(np.nansum(parts["train"].targets[:, i] == 1.0)) for i, lab in enumerate(labels)
        },
        "split_file": _split_file_summary(sel),
    }
    return CellData(labels, eval_labels, parts["train"], parts["valid"], parts["test"], manifest)


def _split_masks(
    cell: CellConfig, root: Path, index: pd.DataFrame, view_ok: np.ndarray, usable: np.ndarray
) -> tuple[dict[str, np.ndarray], dict[str, int], Any]:
    """Boolean masks of each split's images with a usable label, after the leakage check;
    the count of images each split drops for having none; the patient overlaps found."""
    st = cell.settings
    split = index["split"].astype(str).to_numpy()
    patients = index["patient_id"].astype(str).to_numpy()
    masks = {name: (split == name) & view_ok for name in SPLITS}
    for name, m in masks.items():
        if not m.any():
            raise DataError(
                f"dataset '{cell.dataset}' at {root}: the {name} split has no images (views = {st.views})"
            )
    # the split rule is checked on every image of a split, labelled or not
    overlaps = patient_overlaps({name: patients[m] for name, m in masks.items()})
    if overlaps and not st.allow_leakage:
        raise LeakageError(split_leakage_message(cell.dataset, overlaps))
    # images without one usable target (e.g. unindexed Indiana reports) carry no label: they are
    # neither trained on nor scored, and never counted as negatives
    unlabeled = {name: int((m & ~usable).sum()) for name, m in masks.items()}
    masks = {name: m & usable for name, m in masks.items()}
    for name, m in masks.items():
        if not m.any():
            raise DataError(
                f"dataset '{cell.dataset}' at {root}: the {name} split has no image with a usable label "
                f"({unlabeled[name]} without; views = {st.views}, uncertainty = {st.uncertainty}, "
                f"not_mentioned = {st.not_mentioned})"
            )
    return masks, unlabeled, overlaps


def _sample_masks(
    cell: CellConfig,
    masks: dict[str, np.ndarray],
    patients: np.ndarray,
    positives: np.ndarray,
    split_file: split_files.SplitFile | None = None,
    root: Path | None = None,
) -> tuple[dict[str, np.ndarray], str]:
    """The train split subsampled by whole patients to the label fraction (seed: the cell's),
    or the split file's train patients of the cell's fraction and seed (no sampling, no cap:
    the file states the sample); valid and test capped at ``max_eval_images`` (fixed seed, the
    same for every cell). Also returns the split file's column used ("" when sampled)."""
    st = cell.settings
    n = len(patients)
    out = dict(masks)
    sub = np.flatnonzero(masks["train"])
    column, members = split_file.train_members(cell.label_fraction, cell.seed) if split_file else ("", None)
    if members is None:
        keep = sample_patients(
            patients[sub],
            positives[sub],
            cell.seed,
            fraction=cell.label_fraction,
            max_images=st.max_train_images,
        )
    else:
        keep = np.isin(patients[sub], np.array(sorted(members), dtype=object))
        if not keep.any():
            raise DataError(
                f"dataset '{cell.dataset}' at {root}: no patient marked in column {column} of split file "
                f"{split_file.path} has a usable train image (views = {st.views})"
            )
    out["train"] = np.zeros(n, dtype=bool)
    out["train"][sub[keep]] = True
    if st.max_eval_images > 0:
        for name in ("valid", "test"):
            sub = np.flatnonzero(masks[name])
            keep = sample_patients(
                patients[sub], positives[sub], EVAL_CAP_SEED, max_images=st.max_eval_images
            )
            out[name] = np.zeros(n, dtype=bool)
            out[name][sub[keep]] = True
    return out, column


def _split_file_summary(sel: RowSelection) -> dict[str, Any] | None:
    """The manifest's account of a split file: which file (path, sha256), which column, how many patients."""
    f = sel.split_file
    if f is None:
        return None
    return {
        "path": str(f.path.resolve()),
        "sha256": f.sha256,
        "column": sel.split_column or "(none: every train patient, sampled as without a file)",
        "patients_listed": len(f.patients),
        "index_patients_not_listed": int(len(set(sel.patients) - set(f.patients.tolist()))),
    }


def _split_data(
    cache: PreparedCache, targets: np.ndarray, patients: np.ndarray, sel: np.ndarray
) -> SplitData:
    """The images, targets and ids of index rows ``sel``."""
    return SplitData(
        images=_take_images(cache, cache.rows[sel]),
        targets=np.ascontiguousarray(targets[sel]),
        image_ids=cache.index["image_id"].to_numpy()[sel].astype(str),
        patient_ids=patients[sel].astype(str),
        attributes={
            col: cache.index[col].to_numpy()[sel] for col in SUBGROUP_COLUMNS if col in cache.index.columns
        },
    )


def pretrain_pool(cell: CellConfig, max_images: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unlabeled train-split images of ``cell.settings.pretrain_source`` and their patient ids.

    Returns uint8 (N, S, S) and str (N,). The source is located by
    :func:`chexbench.datasets.leakage.pretrain_source_options` (the grid's ``[dataset.<source>]``
    options, or the cell's own dataset options when the source is the target; ``pretrain_root``
    as root; none: the source's default, e.g. the embedded phantom set). Views follow
    ``cell.settings.views``. ``max_images > 0`` takes whole patients up to that many images
    (seed ``cell.settings.pretrain_seed``). Leakage guard: no patient of the target's test
    split may be in the pool, compared by patient id whatever the names and roots — refused
    with LeakageError naming both roots unless ``allow_leakage``.
    """
    st = cell.settings
    source = st.pretrain_source
    src_options = pretrain_source_options(cell)
    _, src_root, cache = resolve_prepared(source, src_options, st.image_size)
    index, _ = split_files.apply(cache.index, source, src_options, src_root)
    mask = (index["split"].astype(str).to_numpy() == "train") & _view_mask(index, st.views)
    patients = index["patient_id"].astype(str).to_numpy()
    if not mask.any():
        raise DataError(f"pretraining source '{source}' at {src_root}: its train split has no images")
    pool_leakage(cell, patients[mask], src_root, indexed_root(cell.dataset, cell.dataset_options))
    sel = np.flatnonzero(mask)
    if max_images > 0:
        keep = sample_patients(
            patients[sel], np.zeros((len(sel), 0), bool), cell.effective_pretrain_seed, max_images=max_images
        )
        sel = sel[keep]
    return _take_images(cache, cache.rows[sel]), patients[sel].astype(str)


@dataclass
class SplitExport:
    """One split file's rows and the cells it serves (cells of one dataset whose data rules agree)."""

    rows: pd.DataFrame  # patient_id, split, fraction_<f>_seed_<s>… (split_files.table)
    cells: list[CellConfig]


def split_exports(cells: list[CellConfig]) -> list[SplitExport]:
    """The split files that describe what ``cells`` (one dataset) train, select and test on.

    Cells whose dataset options, views, label policies, train cap and image size agree share
    one file, with a column per (label fraction, seed); cells that differ in those get their
    own. The train patients of each column are the cell's own selection (:func:`select_rows`),
    so a grid reading the file back trains on the same images. Nothing is written here.
    """
    groups: dict[str, list[CellConfig]] = {}
    for cell in cells:
        st = cell.settings
        rules = [
            cell.dataset,
            cell.dataset_options,
            st.views,
            st.uncertainty,
            st.not_mentioned,
            st.max_train_images,
            st.image_size,
        ]
        groups.setdefault(json.dumps(rules, sort_keys=True, default=str), []).append(cell)
    out: list[SplitExport] = []
    seen: set[bytes] = set()
    for group in groups.values():
        members: dict[tuple[float, int], set[str]] = {}
        rows = None
        for cell in group:
            key = (cell.label_fraction, cell.seed)
            if key in members:
                continue
            sel = select_rows(cell)
            if rows is None:
                rows = split_files.patient_splits(sel.index, cell.dataset)
            members[key] = set(sel.patients[sel.masks["train"]].tolist())
        table = split_files.table(rows, members)
        data = split_files.to_bytes(table)
        if data not in seen:  # e.g. two image sizes of one dataset: the same patients
            seen.add(data)
            out.append(SplitExport(table, group))
        else:
            next(e for e in out if split_files.to_bytes(e.rows) == data).cells.extend(group)
    return out
