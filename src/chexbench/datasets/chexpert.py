"""CheXpert (Irvin et al., AAAI 2019) from its native layout.

Layout (``CheXpert-v1.0`` or ``CheXpert-v1.0-small``)::

    ROOT/train.csv  ROOT/valid.csv  [ROOT/test_labels.csv | ROOT/test.csv]
    ROOT/train/patient00001/study1/view1_frontal.jpg  ...

``Path`` values in the CSVs start with the root folder's name
(``CheXpert-v1.0-small/train/...``): they are resolved against the root's parent, so the
first component is dropped whatever the folder is called; paths starting directly with
``train/``, ``valid/`` or ``test/`` are taken as they are.

Split rule (documented choice, see issue 4):

- with a labelled test file (``test_labels.csv`` or ``test.csv``, the 500-study
  radiologist-labelled test set): train.csv → train, valid.csv → valid, test file → test;
- without one (the public release): valid.csv (200 studies, radiologist consensus) is the
  **test** split, and a patient-level **validation** split is carved from train.csv:
  ``CHEXPERT_VALID_FRACTION`` of the train patients, chosen by a permutation of the sorted
  patient ids with the fixed seed ``CHEXPERT_VALID_SEED``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from chexbench.core.errors import DataError
from chexbench.datasets.base import INDEX_META_COLUMNS, Dataset
from chexbench.datasets.labels import BLANK_NOT_MENTIONED, CHEXPERT_COLUMNS, CHEXPERT_EVAL_LABELS
from chexbench.datasets.splits import carve_patients
from chexbench.datasets.tables import parse_label_column, read_csv_checked

CHEXPERT_VALID_FRACTION = 0.05
CHEXPERT_VALID_SEED = 20190121  # CheXpert's arXiv date; fixed so every user gets the same split
META_COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA")
_SPLIT_DIRS = frozenset({"train", "valid", "test"})
_SEX = {"male": "M", "female": "F"}


def _relative_paths(paths: pd.Series, file: Path) -> np.ndarray:
    parts = paths.astype(str).str.strip().str.split("/")
    first = parts.str[0]
    rel = np.where(first.isin(_SPLIT_DIRS), paths.astype(str), parts.str[1:].str.join("/"))
    rel = np.asarray(rel, dtype=object)
    bad = ~pd.Series(rel).str.contains(r"(?:^|/)patient[^/]+/study[^/]+/", regex=True).to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{file}: column 'Path' value {paths.iloc[i]!r} is not"
            " '<root>/<split>/patientN/studyN/<view>.jpg'"
        )
    return rel


def read_chexpert_csv(file: Path) -> pd.DataFrame:
    """One CheXpert CSV as index rows (without ``split``), label columns harmonized."""
    # label columns read as text, so an error echoes a value as the file writes it ('2', not '2.0')
    text_columns = {"Path": str, "Sex": str, **{c: str for c in CHEXPERT_COLUMNS}}
    df = read_csv_checked(file, (*META_COLUMNS, *CHEXPERT_COLUMNS), dtype=text_columns)
    rel = _relative_paths(df["Path"], file)
    parts = pd.Series(rel).str.split("/")
    patient = parts.str[-3].to_numpy(dtype=object)
    study = (parts.str[-3] + "/" + parts.str[-2]).to_numpy(dtype=object)
    lateral = df["Frontal/Lateral"].astype(str).str.strip().str.lower().eq("lateral").to_numpy()
    appa = df["AP/PA"].astype(str).str.strip().str.upper()
    view = np.where(lateral, "LATERAL", np.where(appa.isin(["AP", "PA"]), appa, "FRONTAL"))
    sex = df["Sex"].astype(str).str.strip().str.lower().map(_SEX).fillna("U")
    age = pd.to_numeric(df["Age"], errors="coerce").to_numpy(dtype=np.float64)
    out = pd.DataFrame(
        {
            "image_id": rel,
            "patient_id": patient,
            "study_id": study,
            "path": rel,
            "view": view.astype(object),
            "sex": sex.to_numpy(dtype=object),
            "age": age,
        }
    )
    for column, label in CHEXPERT_COLUMNS.items():
        out[label] = parse_label_column(df, column, file)
    return out


def load_chexpert_index(
    root: Path, valid_fraction: float = CHEXPERT_VALID_FRACTION, seed: int = CHEXPERT_VALID_SEED
) -> pd.DataFrame:
    """The CheXpert index of ``root`` (schema in :mod:`chexbench.datasets.base`), split rule above."""
    root = Path(root)
    train = read_chexpert_csv(root / "train.csv")
    valid = read_chexpert_csv(root / "valid.csv")
    test_file = next((root / n for n in ("test_labels.csv", "test.csv") if (root / n).is_file()), None)
    if test_file is not None:
        test = read_chexpert_csv(test_file)
        train["split"], valid["split"], test["split"] = "train", "valid", "test"
        frames = [train, valid, test]
    else:
        carved = carve_patients(train["patient_id"].to_numpy(), valid_fraction, seed)
        train["split"] = np.where(train["patient_id"].isin(carved), "valid", "train")
        valid["split"] = "test"
        frames = [train, valid]
    index = pd.concat(frames, ignore_index=True)
    dup = index["image_id"].duplicated()
    if dup.any():
        raise DataError(f"{root}: image '{index['image_id'][dup].iloc[0]}' is listed twice across the CSVs")
    labels = list(CHEXPERT_COLUMNS.values())
    return index[[*INDEX_META_COLUMNS, *labels]]


class CheXpert(Dataset):
    """CheXpert v1.0 (Stanford): 224k radiographs, 65k patients, 14 labeler observations."""

    name = "chexpert"
    labels = tuple(CHEXPERT_COLUMNS.values())
    eval_labels = CHEXPERT_EVAL_LABELS
    blank_label_means = BLANK_NOT_MENTIONED  # the labeler's blank: the report does not mention it
    split_rule = (
        "test_labels.csv/test.csv as test and valid.csv as valid if present; else valid.csv as test and "
        f"{CHEXPERT_VALID_FRACTION:g} of train patients as valid (seed {CHEXPERT_VALID_SEED})"
    )

    def load_index(self, root: Path) -> pd.DataFrame:
        return load_chexpert_index(root)

    def label_files(self, root: Path) -> list[Path]:
        """The files whose change makes a prepared cache stale."""
        names = ("train.csv", "valid.csv", "test_labels.csv", "test.csv")
        return [Path(root) / n for n in names if (Path(root) / n).is_file()]
