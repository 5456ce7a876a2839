"""Checks before the first cell: what can be found without training is found before anything runs.

:func:`preflight` (called by ``chexbench plan``, at the start of ``run`` and by ``submit``)
checks, for every runnable cell, once per distinct configuration:

* every dataset the cell reads (its target, and the pretraining source of a self-supervised
  strategy): the root resolves and the index builds through the dataset's own loader (bad
  CSV columns or values, an empty folder, no image listed);
* each ``settings.evaluate_on`` target (external validation, ``bench/external.py``): its index builds,
  its test split has images, and none of its test patients is a patient of the cell's dataset or
  of its pretraining pool (compared by patient id): one line per refused pair;
* each component's own ``preflight(cell)`` hook (dataset: index and leakage; strategy: weight
  files; backbone; protocol), called once per distinct ``preflight_key(cell)`` when the
  component defines one, else once per configuration without the seed.

Problems are collected over the whole plan and refused together, as one line that names each
problem and the cell group it affects (``dataset=phantom-nih, strategy=simclr,mocov2: 8 cells``).
Index builds are cached per (dataset, root, label files' sizes and times) for the process.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chexbench.bench.external import check_leakage, external_targets
from chexbench.core.errors import ChexbenchError, ConfigError, DataError, SkipCell
from chexbench.datasets import split_files
from chexbench.datasets.base import FRONTAL_VIEWS, SPLITS, label_columns
from chexbench.datasets.celldata import EVAL_CAP_SEED
from chexbench.datasets.labels import apply_uncertainty
from chexbench.datasets.leakage import pretrain_source_options
from chexbench.datasets.prepared import label_file_fingerprint
from chexbench.datasets.splits import sample_patients
from chexbench.spec.cell import AXES, CellConfig
from chexbench.spec.grid import PlannedCell, PlanStatus
from chexbench.spec.registry import BACKBONES, DATASETS, PROTOCOLS, STRATEGIES

#: components whose ``preflight(cell)`` hook is called, in this order
HOOKED: tuple[tuple[str, Any], ...] = (
    ("dataset", DATASETS),
    ("strategy", STRATEGIES),
    ("backbone", BACKBONES),
    ("protocol", PROTOCOLS),
)
_INDEX_CACHE: dict[tuple[str, str, str], pd.DataFrame] = {}
#: fewer positive test patients than this for a label: its AUROC interval will be wide (plan warns)
MIN_POSITIVE_TEST_PATIENTS = 10


class PreflightError(ConfigError):
    """Problems found before the first cell; the message names every affected cell group."""


def dataset_options_for_source(cell: CellConfig) -> tuple[str, dict[str, Any]]:
    """The pretraining source of ``cell`` and the options its root is resolved with, as
    ``datasets.celldata.pretrain_pool`` resolves them
    (:func:`chexbench.datasets.leakage.pretrain_source_options`).
    """
    return cell.settings.pretrain_source, pretrain_source_options(cell)


def dataset_index(name: str, options: dict[str, Any]) -> tuple[Path, pd.DataFrame]:
    """The resolved root and the index of dataset ``name`` (built by its loader; cached per root)."""
    ds = DATASETS.get(name)
    root = Path(ds.resolve_root(options))
    key = (name, str(root.resolve()), json.dumps(label_file_fingerprint(ds, root), sort_keys=True))
    if key not in _INDEX_CACHE:
        try:
            index = ds.load_index(root)
        except ChexbenchError:
            raise
        except Exception as e:  # a loader's unexpected failure is still one line, naming the dataset
            raise DataError(
                f"dataset '{name}' at {root}: the index does not build: {type(e).__name__}: {e}"
            ) from None
        if len(index) == 0:
            raise DataError(f"dataset '{name}' at {root}: the index lists no image")
        _INDEX_CACHE[key] = index
    return (
        root,
        split_files.apply(_INDEX_CACHE[key], name, options, root)[0],
    )  # a split file's splits, if named


@dataclass
class SplitSummary:
    """What ``plan`` prints per dataset: split sizes and the test split's positives per evaluation label."""

    dataset: str
    root: str
    views: str
    uncertainty: str
    max_eval_images: int
    splits: dict[str, tuple[int, int]]  # split -> (images, patients); train before label fraction
    test_positives: dict[str, tuple[int, int]]  # evaluation label -> (positive patients, positive images)

    def thin_labels(self, minimum: int = MIN_POSITIVE_TEST_PATIENTS) -> list[str]:
        """Evaluation labels with fewer than ``minimum`` positive test patients."""
        return [lab for lab, (patients, _) in self.test_positives.items() if patients < minimum]


def summary_key(cell: CellConfig) -> str:
    st = cell.settings
    return json.dumps(
        [cell.dataset, cell.dataset_options, st.views, st.uncertainty, st.max_eval_images],
        sort_keys=True,
        default=str,
    )


def split_summary(cell: CellConfig) -> SplitSummary:
    """Split sizes and test positives of ``cell``'s dataset under its views, uncertainty policy
    and evaluation cap, as :func:`chexbench.datasets.celldata.build_cell_data` selects them (from
    the index alone: no image is read). Raises DataError when a split has no image."""
    ds = DATASETS.get(cell.dataset)
    st = cell.settings
    root, index = dataset_index(cell.dataset, cell.dataset_options)
    labels = [lab for lab in ds.labels if lab in index.columns] or label_columns(index)
    eval_labels = [lab for lab in ds.eval_labels if lab in labels] or labels
    view_ok = (
        np.ones(len(index), bool)
        if st.views == "all"
        else index["view"].astype(str).isin(FRONTAL_VIEWS).to_numpy()
    )
    split = index["split"].astype(str).to_numpy()
    patients = index["patient_id"].astype(str).to_numpy()
    positives = (
        apply_uncertainty(index[eval_labels].to_numpy(dtype=np.float64), eval_labels, st.uncertainty) == 1.0
    )
    masks = {name: (split == name) & view_ok for name in SPLITS}
    for name, m in masks.items():
        if not m.any():
            raise DataError(
                f"dataset '{cell.dataset}' at {root}: the {name} split has no images (views = {st.views})"
            )
    if st.max_eval_images > 0:
        for name in ("valid", "test"):
            sub = np.flatnonzero(masks[name])
            keep = sample_patients(
                patients[sub], positives[sub], EVAL_CAP_SEED, max_images=st.max_eval_images
            )
            masks[name] = np.zeros(len(index), dtype=bool)
            masks[name][sub[keep]] = True
    test = masks["test"]
    return SplitSummary(
        dataset=cell.dataset,
        root=str(root),
        views=st.views,
        uncertainty=st.uncertainty,
        max_eval_images=st.max_eval_images,
        splits={name: (int(m.sum()), int(len(set(patients[m])))) for name, m in masks.items()},
        test_positives={
            lab: (int(len(set(patients[test & positives[:, j]]))), int((test & positives[:, j]).sum()))
            for j, lab in enumerate(eval_labels)
        },
    )


def split_summaries(planned: list[PlannedCell]) -> list[SplitSummary]:
    """One :class:`SplitSummary` per distinct (dataset, options, views, uncertainty, cap) of the runnable
    cells
    and of their ``evaluate_on`` targets (whose test splits the cells predict too)."""
    out: dict[str, SplitSummary] = {}
    for p in planned:
        if p.status != PlanStatus.RUN:
            continue
        for cell in (p.cell, *(t.data_cell for t in external_targets(p.cell, p.external))):
            if summary_key(cell) not in out:
                out[summary_key(cell)] = split_summary(cell)
    return list(out.values())


def _datasets_of(cell: CellConfig) -> list[tuple[str, dict[str, Any], str]]:
    """(dataset, options, role) of every dataset ``cell`` reads."""
    out = [(cell.dataset, dict(cell.dataset_options), "target")]
    if STRATEGIES.get(cell.strategy).pretrain_key(cell) is not None:
        source, options = dataset_options_for_source(cell)
        if (source, options) != (cell.dataset, cell.dataset_options):
            out.append((source, options, "pretraining source"))
    return out


def _check_dataset(cell: CellConfig, name: str, options: dict[str, Any], role: str) -> None:
    if name not in DATASETS:
        raise ConfigError(f"pretrain_source: {DATASETS.unknown_message(name)}")
    if role == "target":
        split_summary(cell)
        return
    try:
        root, index = dataset_index(name, options)
        frontal = index["view"].astype(str).isin(FRONTAL_VIEWS) | (cell.settings.views == "all")
        if not ((index["split"].astype(str) == "train") & frontal).any():
            raise DataError(
                f"dataset '{name}' at {root}: its train split has no images (views = {cell.settings.views})"
            )
    except DataError as e:
        raise DataError(
            f"pretraining source '{name}' of {cell.strategy} (settings.pretrain_source): {e}; "
            f"set pretrain_root under [strategy.{cell.strategy}], or another pretrain_source"
        ) from None


def _configuration_key(cell: CellConfig) -> str:
    d = cell.to_dict()
    d.pop("seed")
    return json.dumps(d, sort_keys=True, default=str)


def _learned_key(cell: CellConfig) -> str:
    """What a cell's model learned from, as far as cross-dataset leakage goes (its dataset, its pretraining
    pool)."""
    return json.dumps(
        [
            cell.dataset,
            cell.dataset_options,
            cell.settings.views,
            cell.settings.allow_leakage,
            (
                pretrain_source_options(cell)
                if STRATEGIES.get(cell.strategy).pretrain_key(cell) is not None
                else None
            ),
            cell.settings.pretrain_source,
        ],
        sort_keys=True,
        default=str,
    )


def _external_checks(p: PlannedCell) -> Iterable[tuple[Hashable, Callable[[], None]]]:
    """(cache key, check) pairs of the cell's ``evaluate_on`` targets: the target's test split, and
    leakage between what the model learned from and the target's test patients."""
    cell, learned = p.cell, _learned_key(p.cell)
    for t in external_targets(cell, p.external):
        yield ("summary", summary_key(t.data_cell)), lambda t=t: _check_target(t)
        yield ("external", t.key, learned), lambda t=t: _check_external_leakage(cell, t)


def _check_external_leakage(cell: CellConfig, target: Any) -> None:
    try:
        check_leakage(cell, target)
    except (DataError, ConfigError):
        # a dataset that cannot be read is the target's own check's line (or the source's), not a
        # second one
        pass


@dataclass(frozen=True)
class ExternalLeakage:
    """Cross-dataset leakage counts of one (source, ``evaluate_on`` target) pair, by patient id."""

    source: str
    target: str
    target_test_patients: int
    shared_with_source: int
    shared_with_pretraining: int


def external_leakage(planned: list[PlannedCell]) -> list[ExternalLeakage]:
    """The leakage counts of each distinct (what a model learned from, target) of the runnable cells (``plan``
    prints them). Raises LeakageError where :func:`preflight` refuses; after it, a count is nonzero only under
    ``allow_leakage``."""
    out: dict[Hashable, ExternalLeakage] = {}
    for p in planned:
        if p.status != PlanStatus.RUN:
            continue
        for t in external_targets(p.cell, p.external):
            key = (t.key, _learned_key(p.cell))
            if key not in out:
                out[key] = ExternalLeakage(p.cell.dataset, t.name, **check_leakage(p.cell, t))
    return list(out.values())


def _check_target(target: Any) -> None:
    try:
        split_summary(target.data_cell)
    except DataError as e:
        raise DataError(f"evaluate_on '{target.name}': {e}") from None


def _checks(
    cell: CellConfig, planned: PlannedCell | None = None
) -> Iterable[tuple[Hashable, Callable[[], None]]]:
    """(cache key, check) pairs of ``cell``; a key seen before is not checked again."""
    if planned is not None:
        yield from _external_checks(planned)
    for name, options, role in _datasets_of(cell):
        key = (
            ("summary", summary_key(cell))
            if role == "target"
            else ("source", name, json.dumps(options, sort_keys=True, default=str), cell.settings.views)
        )
        yield key, lambda name=name, options=options, role=role: _check_dataset(cell, name, options, role)
    for axis, registry in HOOKED:
        obj = registry.get(getattr(cell, axis))
        hook = getattr(obj, "preflight", None)
        if hook is None:
            continue
        key_of = getattr(obj, "preflight_key", None)
        key = (axis, getattr(cell, axis), key_of(cell) if key_of is not None else _configuration_key(cell))
        yield key, lambda hook=hook: hook(cell)


def group_label(cells: list[CellConfig], universe: list[CellConfig]) -> str:
    """``dataset=phantom-nih, strategy=simclr,mocov2: 8 cells``: the axis values that set the
    group apart from the whole plan (``all 8 cells`` when none does)."""
    parts = []
    for axis in AXES:
        mine = sorted({getattr(c, axis) for c in cells}, key=str)
        if len(mine) < len({getattr(c, axis) for c in universe}):
            parts.append(f"{axis}={','.join(f'{v:g}' if isinstance(v, float) else str(v) for v in mine)}")
    n = len({c.cell_id for c in cells})
    return f"{', '.join(parts)}: {n} cell{'s' if n != 1 else ''}" if parts else f"all {n} cells"


def preflight(planned: list[PlannedCell]) -> None:
    """Check every runnable cell of ``planned`` before anything is written; raise one
    :class:`PreflightError` naming every problem and the cell group it affects."""
    runnable = [p.cell for p in planned if p.status == PlanStatus.RUN]
    outcome: dict[Hashable, str] = {}
    affected: dict[str, list[CellConfig]] = {}
    for p in (p for p in planned if p.status == PlanStatus.RUN):
        cell = p.cell
        for key, check in _checks(cell, p):
            if key not in outcome:
                try:
                    check()
                    outcome[key] = ""
                except SkipCell:
                    outcome[key] = ""  # not a problem: the cell is skipped when it runs
                except ChexbenchError as e:
                    outcome[key] = str(e)
            if outcome[key]:
                group = affected.setdefault(outcome[key], [])
                if cell not in group:
                    group.append(cell)
    if not affected:
        return
    problems = [f"{message} [{group_label(cells, runnable)}]" for message, cells in affected.items()]
    head = "1 problem" if len(problems) == 1 else f"{len(problems)} problems"
    raise PreflightError(f"{head} before the first cell, nothing was run: " + "; ".join(problems))
