"""Phantom chest radiographs: the embedded default datasets (see docs/PHANTOM.md).

Defines ``phantom-chexpert``, ``phantom-nih`` and ``phantom-indiana`` (one class per layout,
declared in :mod:`chexbench.datasets`). Each generates its site's native layout on first use
into ``cache_dir()/phantom/<layout>-<hash of options>`` (unless ``root`` is given) and reads it
with the *real* loader of that layout, so phantoms and real data travel the same path.

Modules: :mod:`.fields` (drawing primitives), :mod:`.anatomy`, :mod:`.findings`,
:mod:`.sites` (acquisition), :mod:`.cohort` (patients, studies, label sampling),
:mod:`.labels` (native encodings), :mod:`.render`, ``write_*`` (layouts), :mod:`.generate`,
:mod:`.preview`. Heavy modules are imported only when data is generated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
from pydantic import Field

from chexbench.core.paths import cache_dir
from chexbench.datasets.base import Dataset, DatasetOptions
from chexbench.datasets.chexpert import CheXpert
from chexbench.datasets.indiana import Indiana
from chexbench.datasets.labels import CHEXPERT_EVAL_LABELS, INDIANA_EVAL_LABELS, NIH_EVAL_LABELS
from chexbench.datasets.nih import NIHChestXray14
from chexbench.datasets.phantom.dependencies import DEFAULT_DEPENDENCIES, Dependencies
from chexbench.datasets.phantom.generate import cached_site
from chexbench.spec.options import Options
from chexbench.spec.registry import DATASETS

#: labels each layout carries *and* the phantom draws (harmonized names)
PHANTOM_LABELS: dict[str, tuple[str, ...]] = {
    "chexpert": (
        "no_finding",
        "enlarged_cardiomediastinum",
        "cardiomegaly",
        "lung_opacity",
        "lung_lesion",
        "edema",
        "consolidation",
        "pneumonia",
        "atelectasis",
        "pneumothorax",
        "pleural_effusion",
        "fracture",
        "support_devices",
    ),
    "nih": (
        "atelectasis",
        "cardiomegaly",
        "pleural_effusion",
        "infiltration",
        "mass",
        "nodule",
        "pneumonia",
        "pneumothorax",
        "consolidation",
        "edema",
        "emphysema",
        "fibrosis",
        "pleural_thickening",
        "hernia",
        "no_finding",
    ),
    "indiana": (
        "atelectasis",
        "cardiomegaly",
        "consolidation",
        "edema",
        "emphysema",
        "fibrosis",
        "fracture",
        "hernia",
        "infiltration",
        "lung_opacity",
        "mass",
        "nodule",
        "pleural_effusion",
        "pneumonia",
        "pneumothorax",
        "support_devices",
        "no_finding",
    ),
}
#: the real datasets' evaluation labels (all of them are drawn); Indiana's as the real collection's rule
#: gave them until its labels came from the manual MeSH terms only (edema then fell to 92 positive
#: reports, under the rule's 100): a phantom's prevalence is generated, not the collection's, and
#: keeping the set keeps phantom results (smoke, docs/TOPK.md) comparable across that change
PHANTOM_EVAL_LABELS: dict[str, tuple[str, ...]] = {
    "chexpert": CHEXPERT_EVAL_LABELS,
    "nih": NIH_EVAL_LABELS,
    "indiana": (*INDIANA_EVAL_LABELS[:2], "edema", *INDIANA_EVAL_LABELS[2:]),
}
#: the dataset class of each layout: a phantom follows its layout's label conventions
LAYOUT_DATASETS: dict[str, type[Dataset]] = {"chexpert": CheXpert, "nih": NIHChestXray14, "indiana": Indiana}
#: where each layout's loader root sits inside a generated site folder
LAYOUT_SUBDIR: dict[str, str] = {"chexpert": "CheXpert-v1.0-small", "nih": "", "indiana": ""}


def layout_root(layout: str, folder: Path) -> Path:
    """The folder the real loader of ``layout`` reads, given a generated site folder (or that folder
    itself)."""
    sub = LAYOUT_SUBDIR[layout]
    return folder / sub if sub and (folder / sub).is_dir() else folder


class PhantomOptions(DatasetOptions):
    """Options of a phantom: a root to read, or the generation parameters of the cached set."""

    root: str | None = Field(
        None,
        description="read an existing phantom set from this folder instead of generating one into the cache",
    )
    patients: int = Field(500, ge=1, description="phantom patients generated (each with several studies)")
    size: int = Field(128, ge=16, le=2048, description="side of the generated images, in pixels")
    seed: int = Field(0, ge=0, description="seed of the phantom cohort and images")
    dependencies: Dependencies = Field(
        DEFAULT_DEPENDENCIES,
        description=(
            '"published": view, age and AP magnification depend on the findings as in the real '
            'data (docs/PHANTOM.md); "none": independent, the files of generator version 5 exactly'
        ),
    )


class PhantomDataset(Dataset):
    """A phantom in one site's native layout, read by that layout's real loader."""

    layout: ClassVar[str] = ""
    option_model: ClassVar[type[Options]] = PhantomOptions

    def resolve_root(self, options: dict[str, Any]) -> Path:
        if options.get("root"):
            return layout_root(self.layout, super().resolve_root(options))

        full = {**self.options, **{k: v for k, v in options.items() if k != "root"}}
        return layout_root(self.layout, cached_site(cache_dir(), self.layout, full))

    def load_index(self, root: Path) -> pd.DataFrame:
        return DATASETS.get(self.layout).load_index(root)

    def identity_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """A generated phantom's cell stores its ``dependencies`` explicitly, the default included: the
        default changed in generator version 6 (published dependencies; version 5's files are ``"none"``),
        and a cell (or pretraining run) computed on version-5 files must not be taken as finished for the
        new default. A phantom read from a ``root`` folder is identified by that folder, as any dataset."""
        out = super().identity_options(options)
        if out.get("root"):
            return out
        return {**out, "dependencies": out.get("dependencies", DEFAULT_DEPENDENCIES)}


def _layout_class(layout: str) -> type[PhantomDataset]:
    """The phantom dataset ``phantom-<layout>``: generated, then read by that layout's loader."""
    return type(
        f"Phantom{layout.capitalize()}",
        (PhantomDataset,),
        {
            "name": f"phantom-{layout}",
            "layout": layout,
            "labels": PHANTOM_LABELS[layout],
            "eval_labels": PHANTOM_EVAL_LABELS[layout],
            "blank_label_means": LAYOUT_DATASETS[layout].blank_label_means,
        },
    )


# one class per layout, declared in chexbench.datasets (with their descriptions)
PhantomChexpert = _layout_class("chexpert")
PhantomNih = _layout_class("nih")
PhantomIndiana = _layout_class("indiana")
