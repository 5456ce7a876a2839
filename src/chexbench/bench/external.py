"""External validation (``settings.evaluate_on``): a cell's selected model on other datasets' test splits.

A cell trained on dataset S with ``evaluate_on = ["T1", "T2"]`` also predicts the test split of
each Tk (not S itself: that is its internal test) with the model its protocol selected on S's
validation split. What each target is comes from the grid: the cell the grid resolves for the
same axis values with Tk as dataset (its *internal twin*, :attr:`chexbench.spec.grid.PlannedCell.external`)
gives Tk's dataset options (root, a phantom's generation options) and the settings that define
Tk's test split (:data:`TARGET_DATA_SETTINGS`); the image size stays the source cell's (the model's
input). So the external test images are the twin's own test images, and the report pairs the
two predictions image by image for the Δ vs the target's internal result.

**Labels.** Only labels both datasets carry, under the harmonized names (``datasets/labels.py``):
``shared`` (in the source's order), ``dropped`` (the model predicts them, the target lacks them)
and ``not_predicted`` (the target has them, the model does not) are listed in the record; the
macro runs over the shared labels that are evaluation labels of both datasets (all shared labels
when none is).

**Identity and resumption.** ``external/<cell_id>/<target>.parquet`` holds the predictions (the
runner's per-image long form, test split only) and, in its footer, the record: the target's
name, its data-defining config and its hash (:func:`target_key`), the target's data manifest
(root, cache id, index fingerprint, test split's image-id hash), the twin's cell id, the label
lists, the leakage counts, and the write id of the cell's own record — the model that made the
predictions. One atomic write: a killed run leaves it whole or absent. A file is *current* when
it names the cell's present write and the target's present key (:func:`pending_targets`); a
missing or stale one is redone from the saved model (``models/<cell_id>.pt``) without
retraining, or, when the model was not saved, reported and left (a rerun with ``--overwrite``
retrains the cell and makes it).

**Leakage across datasets** (:func:`check_leakage`): the target's test patients are compared,
by patient id, with every patient of the source dataset (a patient in both makes the target no
external test: trained on, or the source's own test) and, for a self-supervised strategy, with
its pretraining pool. Phantom layouts draw each site's
cohort from its own random stream (seed, site, patient), so phantoms of different layouts never
share a patient even with one seed; the same generated set read under two names or roots does,
and is refused. Real collections (CheXpert, NIH, Indiana) come from different hospitals under
disjoint id schemes (``patientNNNNN``, ``NNNNNNNN``, ``CXRn``): the same check runs and finds
none; one person in two collections under two schemes is out of scope (datasets/leakage.py).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from chexbench.core.errors import LeakageError
from chexbench.core.metrics import macro, per_label_metrics
from chexbench.datasets.leakage import indexed_root, pretrain_source_options, pretrains

if TYPE_CHECKING:
    from chexbench.bench.store import ResultStore
    from chexbench.spec.cell import CellConfig

#: bump when the meaning of an external record changes
EXTERNAL_FORMAT = 1
#: settings of the target's internal twin that define its test split (the rest is the model's business)
TARGET_DATA_SETTINGS = ("views", "uncertainty", "not_mentioned", "max_eval_images", "allow_leakage")


@dataclass(frozen=True)
class ExternalTarget:
    """One dataset a cell is validated on: its name, its internal twin, and the config that builds its test
    split."""

    name: str
    twin: CellConfig  # the grid's cell of the same axis values on this dataset
    data_cell: CellConfig  # the twin at the source cell's image size: what builds the external test split

    @property
    def key(self) -> str:
        return target_key(self.data_cell)

    def identity(self) -> dict[str, Any]:
        return target_identity(self.data_cell)


def external_targets(cell: CellConfig, twins: dict[str, CellConfig]) -> list[ExternalTarget]:
    """The targets of ``cell`` from its planned twins (:attr:`chexbench.spec.grid.PlannedCell.external`)."""
    out = []
    for name, twin in twins.items():
        settings = dataclasses.replace(twin.settings, image_size=cell.settings.image_size)
        out.append(ExternalTarget(name, twin, dataclasses.replace(twin, settings=settings)))
    return out


def target_identity(data_cell: CellConfig) -> dict[str, Any]:
    """What defines a target's external test split: dataset, its options, the split-defining settings, image
    size."""
    st = data_cell.settings
    return {
        "dataset": data_cell.dataset,
        "dataset_options": dict(sorted(data_cell.dataset_options.items())),
        "image_size": st.image_size,
        **{k: getattr(st, k) for k in TARGET_DATA_SETTINGS},
    }


def target_key(data_cell: CellConfig) -> str:
    """sha256 of :func:`target_identity`: a changed target (another root, cap or policy) is predicted
    again."""
    return hashlib.sha256(
        json.dumps(target_identity(data_cell), sort_keys=True, default=str).encode()
    ).hexdigest()


@dataclass(frozen=True)
class LabelSets:
    shared: list[str]  # predicted by the model and carried by the target (source order)
    dropped: list[str]  # predicted by the model, absent from the target
    not_predicted: list[str]  # carried by the target, not predicted by the model
    macro: list[str]  # shared labels the macro averages over


def label_sets(
    source_labels: list[str], source_eval: list[str], target_labels: list[str], target_eval: list[str]
) -> LabelSets:
    """The label lists of one (source, target) pair, harmonized names compared as they are."""
    shared = [lab for lab in source_labels if lab in target_labels]
    both_eval = [lab for lab in shared if lab in source_eval and lab in target_eval]
    return LabelSets(
        shared,
        [lab for lab in source_labels if lab not in target_labels],
        [lab for lab in target_labels if lab not in source_labels],
        both_eval or list(shared),
    )


def check_leakage(cell: CellConfig, target: ExternalTarget) -> dict[str, int]:
    """Target test patients who are also patients of the cell's dataset (any split, any view: a patient in
    two datasets makes the second no external test) or of its pretraining pool, compared by patient id.

    Returns the counts (``shared_with_source``, ``shared_with_pretraining``, nonzero only under
    ``allow_leakage``, and ``target_test_patients``); raises LeakageError (one line) otherwise."""
    tgt = indexed_root(target.name, target.data_cell.dataset_options)
    test = tgt.patients(["test"], target.data_cell.settings.views)
    src = indexed_root(cell.dataset, cell.dataset_options)
    counts = {
        "shared_with_source": len(src.patients(["train", "valid", "test"]) & test),
        "shared_with_pretraining": 0,
    }
    pool_root = None
    if pretrains(cell):
        pool = indexed_root(cell.settings.pretrain_source, pretrain_source_options(cell))
        counts["shared_with_pretraining"] = len(pool.patients(["train"], cell.settings.views) & test)
        pool_root = pool.root
    if (
        counts["shared_with_source"] or counts["shared_with_pretraining"]
    ) and not cell.settings.allow_leakage:
        where = []
        if counts["shared_with_source"]:
            where.append(
                f"{counts['shared_with_source']} are patients of '{cell.dataset}' at {src.root}, the cell's"
                " own dataset"
            )
        if counts["shared_with_pretraining"]:
            where.append(
                f"{counts['shared_with_pretraining']} are in the pretraining pool of"
                f" '{cell.settings.pretrain_source}' at {pool_root}"
            )
        raise LeakageError(
            f"evaluate_on '{target.name}' at {tgt.root}: of its {len(test)} test patients,"
            f" {' and '.join(where)} (same patient ids: the datasets share patients, e.g. one phantom"
            " generation read under two names or roots); drop it from evaluate_on, or set allow_leakage ="
            " true (the record will say so)"
        )
    return {**counts, "target_test_patients": len(test)}


def external_record(
    cell: CellConfig,
    target: ExternalTarget,
    labels: LabelSets,
    manifest: dict[str, Any],
    y_true: np.ndarray,
    y_score: np.ndarray,
    leakage: dict[str, int],
    origin: str,
) -> dict[str, Any]:
    """The record of one external predictions file. ``y_true``/``y_score``: (N, len(labels.shared)).
    ``origin``: "cell" (predicted right after training) | "saved model" (completed later)."""
    metrics = per_label_metrics(y_true, y_score, labels.shared)
    split = (manifest.get("splits") or {}).get("test", {})
    return {
        "format": EXTERNAL_FORMAT,
        "cell_id": cell.cell_id,
        "cell_write_id": "",  # set when the cell's own record is stored (the model's write)
        "source_dataset": cell.dataset,
        "strategy": cell.strategy,
        "backbone": cell.backbone,
        "protocol": cell.protocol,
        "label_fraction": cell.label_fraction,
        "seed": cell.seed,
        "configuration_hash": cell.configuration_hash,
        "target": target.name,
        "target_key": target.key,
        "target_config": target.identity(),
        "target_data": (
            {
                k: manifest.get(k)
                for k in (
                    "root",
                    "cache_id",
                    "index_fingerprint",
                    "loader_version",
                    "split_rule",
                    "labels",
                    "eval_labels",
                    "blank_is_negative",
                )
            }
            | {
                "test_images": split.get("images"),
                "test_patients": split.get("patients"),
                "test_image_ids_sha256": split.get("image_ids_sha256"),
            }
        ),
        "internal_cell_id": target.twin.cell_id,
        "shared_labels": labels.shared,
        "dropped_labels": labels.dropped,
        "not_predicted_labels": labels.not_predicted,
        "macro_labels": labels.macro,
        "metrics": metrics,
        "macro_auroc": macro(metrics, labels.macro, "auroc"),
        "leakage": {**leakage, "compared_by": "patient_id", "allow_leakage": cell.settings.allow_leakage},
        "origin": origin,
        "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def pending_targets(
    store: ResultStore, cell_id: str, targets: list[ExternalTarget]
) -> list[tuple[ExternalTarget, str]]:
    """The targets whose external file is missing or stale, each with why (``[]``: all current)."""
    write_id = store.cell_write_id(cell_id)
    out = []
    for t in targets:
        rec = store.external_record(cell_id, t.name)
        if rec is None:
            out.append((t, "missing"))
        elif rec.get("cell_write_id") != write_id:
            out.append((t, "made by an earlier run of the cell"))
        elif rec.get("target_key") != t.key:
            out.append((t, "the target's options changed"))
    return out
