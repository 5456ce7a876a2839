"""The dataset contract: a native root on disk becomes an index, one row per image.

Index columns (in this order), then one float column per harmonized label:

    image_id    str   unique within the dataset (e.g. the CheXpert ``Path`` without prefix)
    patient_id  str   e.g. ``patient00001``
    study_id    str   unique within the dataset (includes the patient id)
    path        str   path of the image file relative to the dataset root
    view        str   ``PA`` / ``AP`` / ``LATERAL`` / ``LL`` / ``UNKNOWN``
    sex         str   ``M`` / ``F`` / ``U``
    age         float years, NaN if unknown
    split       str   ``train`` / ``valid`` / ``test`` (see each dataset's split rule)

Label values: 1.0 positive, 0.0 negative, -1.0 uncertain, NaN blank. What a blank means is
the dataset's convention, declared by :attr:`Dataset.blank_label_means` (values and the rule
that turns them into training targets in :mod:`chexbench.datasets.labels`).
Label column names are harmonized snake_case names from ``chexbench.datasets.labels``.

Registered objects are *instances* of :class:`Dataset` subclasses
(``@DATASETS.register`` on the class).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pandas as pd
from pydantic import Field

from chexbench.core.errors import DataError
from chexbench.datasets import leakage, split_files
from chexbench.datasets.labels import BLANK_UNKNOWN
from chexbench.datasets.splits import FRONTAL_VIEWS, SPLITS
from chexbench.spec.options import OptionDefaults, Options

__all__ = ["FRONTAL_VIEWS", "INDEX_META_COLUMNS", "SPLITS", "SUBGROUP_COLUMNS", "Dataset", "label_columns"]

if TYPE_CHECKING:
    from chexbench.spec.cell import CellConfig

INDEX_META_COLUMNS: tuple[str, ...] = (
    "image_id",
    "patient_id",
    "study_id",
    "path",
    "view",
    "sex",
    "age",
    "split",
)

#: Per-image attributes a cell's predictions file carries beside each row, for subgroup analysis
#: (``chexbench score --by``, the report's subgroup section): each one the index has (``site``: only
#: where a dataset's index carries it).
SUBGROUP_COLUMNS: tuple[str, ...] = ("sex", "age", "view", "site")


def label_columns(index: pd.DataFrame) -> list[str]:
    """The harmonized label columns of an index (every column that is not metadata)."""
    return [c for c in index.columns if c not in INDEX_META_COLUMNS]


class DatasetOptions(Options):
    """Options every dataset accepts under ``[dataset.<name>]``."""

    root: str | None = Field(None, description="folder holding the dataset in its native layout")
    splits: str | None = Field(
        None,
        description=(
            "split file (or a folder holding one) to read the patient splits and label-fraction samples from "
            "instead of deriving them (docs/DATASETS.md, Split files); its sha256 enters the cell id"
        ),
    )


class Dataset:
    """Base class of a registered dataset.

    Subclasses set ``name``, ``description``, ``labels`` (every harmonized label the dataset
    can carry), ``eval_labels`` (the labels a leaderboard averages over) and ``options``
    (the option names a grid may set under ``[dataset.<name>]``, with defaults), and
    implement ``load_index``. ``blank_label_means`` declares what a NaN label value of its
    index means: :data:`~chexbench.datasets.labels.BLANK_NOT_MENTIONED` (the source was read
    and does not mention the finding, CheXpert's blank: ``settings.not_mentioned`` decides)
    or :data:`~chexbench.datasets.labels.BLANK_UNKNOWN` (no label information: always masked).
    The default is the safe one, ``BLANK_UNKNOWN``: a blank becomes a negative only where a
    dataset says that is its convention.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    labels: ClassVar[tuple[str, ...]] = ()
    eval_labels: ClassVar[tuple[str, ...]] = ()
    option_model: ClassVar[type[Options]] = DatasetOptions
    #: ``{option: default}``, derived from ``option_model``
    options = OptionDefaults()
    blank_label_means: ClassVar[str] = BLANK_UNKNOWN

    def resolve_root(self, options: dict[str, Any]) -> Path:
        """The root folder to read; subclasses may locate or generate a default."""
        root = options.get("root")
        if not root:
            raise DataError(
                f"dataset '{self.name}' needs a root: set root = \"/path\" under [dataset.{self.name}] in the"
                " grid"
            )
        path = Path(root).expanduser()
        if not path.exists():
            raise DataError(f"dataset '{self.name}': root folder not found: {path}")
        return path

    def load_index(self, root: Path) -> pd.DataFrame:
        raise NotImplementedError

    def identity_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """The options a cell stores (its id holds them): ``options`` plus, when they name a split
        file, its content's sha256 (``splits_sha256``), so editing the file makes new cells."""
        return split_files.identity(self.name, options)

    def invalid_reason(self, cell: CellConfig) -> str | None:
        return None

    def preflight(self, cell: CellConfig) -> None:
        """Check without training what can be checked for ``cell``: the index builds (label files
        and values), every split has images, no patient is in two splits, and no test patient is
        in the cell's pretraining pool, compared by patient id (:mod:`chexbench.datasets.leakage`).
        Raises a one-line ChexbenchError. Called by ``bench.runner.preflight``; indexes are cached."""
        leakage.check_cell(cell)
