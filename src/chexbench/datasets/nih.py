"""NIH ChestX-ray14 (Wang et al., CVPR 2017) from its native layout.

Layout::

    ROOT/Data_Entry_2017.csv | Data_Entry_2017_v2020.csv   (.csv.gz accepted)
    ROOT/train_val_list.txt  ROOT/test_list.txt             official split, one image name a line
    ROOT/BBox_List_2017.csv                                 ~1k boxes (optional)
    ROOT/images/*.png  or  ROOT/images_001/images/*.png … images_012/images/*.png

Labels: ``Finding Labels`` is ``A|B`` or ``No Finding``; every image gets all 14 findings as
1 / 0 (NIH labels have no uncertain or missing values) and ``no_finding``.

Split rule: ``test_list.txt`` → test; ``train_val_list.txt`` → train, except a patient-level
validation split of ``NIH_VALID_FRACTION`` of its patients (seeded permutation of the sorted
patient ids, seed ``NIH_VALID_SEED``). Images in neither list are left out (with a warning);
an image in both lists is an error. The official lists are patient-disjoint; if given lists
are not, a warning (one line on the ``chexbench.datasets.nih`` logger, once per root and
process) names the count at load time, and ``build_cell_data`` and the pre-run check refuse
the dataset unless ``allow_leakage`` is set.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from chexbench.core.errors import DataError
from chexbench.datasets.base import INDEX_META_COLUMNS, Dataset
from chexbench.datasets.labels import BLANK_NOT_MENTIONED, NIH_EVAL_LABELS, NIH_FINDINGS, NIH_NO_FINDING
from chexbench.datasets.splits import carve_patients
from chexbench.datasets.tables import read_csv_checked

NIH_VALID_FRACTION = 0.1
NIH_VALID_SEED = 20170101
ENTRY_FILES = (
    "Data_Entry_2017_v2020.csv",
    "Data_Entry_2017.csv",
    "Data_Entry_2017_v2020.csv.gz",
    "Data_Entry_2017.csv.gz",
)
REQUIRED = ("Image Index", "Finding Labels", "Patient ID", "Patient Age", "Patient Gender", "View Position")
NIH_LABELS: tuple[str, ...] = ("no_finding", *NIH_FINDINGS.values())
_BBOX_NAMES = {**NIH_FINDINGS, "Infiltrate": "infiltration"}
log = logging.getLogger(__name__)
_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    """A suspicious but not fatal property of a root, as one log line (not a Python warning with
    a source line); the same message is given once per process."""
    if message not in _WARNED:
        _WARNED.add(message)
        log.warning(message)


def entry_file(root: Path) -> Path:
    for name in ENTRY_FILES:
        if (root / name).is_file():
            return root / name
    raise DataError(f"NIH root {root}: no {' / '.join(ENTRY_FILES[:2])} found")


def read_split_list(path: Path) -> list[str]:
    """Image names of an official split list (one per line, blank lines ignored)."""
    if not path.is_file():
        raise DataError(f"NIH split list not found: {path} (the official train_val_list.txt / test_list.txt)")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    bad = [n for n in names if not n.lower().endswith(".png") or "/" in n]
    if bad:
        raise DataError(f"{path}: '{bad[0]}' is not an image file name like 00000001_000.png")
    return names


def find_images(root: Path) -> dict[str, str]:
    """Image file name → path relative to root, from ``images/`` and ``images_NNN/images/``."""
    found: dict[str, str] = {}
    for sub in sorted(os.listdir(root)):
        if not (sub == "images" or re.fullmatch(r"images_\d+", sub)):
            continue
        for folder in (root / sub / "images", root / sub):
            if folder.is_dir():
                with os.scandir(folder) as it:
                    for e in it:
                        if e.name.lower().endswith(".png"):
                            found.setdefault(e.name, str(folder.relative_to(root) / e.name))
    return found


def _parse_age(values: pd.Series) -> np.ndarray:
    """Years as float; ``058Y`` / ``011M`` / ``020D`` strings accepted; > 120 years → NaN."""
    if pd.api.types.is_numeric_dtype(values.dtype):
        age = values.to_numpy(dtype=np.float64, copy=True)
        age[age > 120] = np.nan
        return age
    s = values.astype(str).str.strip().str.upper()
    num = pd.to_numeric(s.str.extract(r"^(\d+(?:\.\d+)?)")[0], errors="coerce").to_numpy(dtype=np.float64)
    unit = s.str.extract(r"([YMWD])$")[0].fillna("Y").map({"Y": 1.0, "M": 1 / 12, "W": 1 / 52, "D": 1 / 365})
    age = num * unit.to_numpy(dtype=np.float64)
    age[age > 120] = np.nan
    return age


def load_nih_index(
    root: Path, valid_fraction: float = NIH_VALID_FRACTION, seed: int = NIH_VALID_SEED
) -> pd.DataFrame:
    """The NIH index of ``root`` (schema in :mod:`chexbench.datasets.base`)."""
    root = Path(root)
    file = entry_file(root)
    df = read_csv_checked(
        file, REQUIRED, dtype={"Image Index": str, "Finding Labels": str, "Patient Gender": str}
    )
    names = df["Image Index"].astype(str).str.strip()
    if names.duplicated().any():
        raise DataError(f"{file}: column 'Image Index' lists '{names[names.duplicated()].iloc[0]}' twice")
    labels = _finding_labels(file, df)
    patient = _patient_ids(file, df)
    view = df["View Position"].astype(str).str.strip().str.upper()
    view = view.where(view.isin(["PA", "AP", "LL", "LATERAL"]), "UNKNOWN")
    sex = df["Patient Gender"].astype(str).str.strip().str.upper().map({"M": "M", "F": "F"}).fillna("U")
    images = find_images(root)
    paths = np.array([images.get(n, f"images/{n}") for n in names], dtype=object)
    split = _listed_split(root, file, names.to_numpy(dtype=object), patient, valid_fraction, seed)
    out = pd.DataFrame(
        {
            "image_id": names.to_numpy(dtype=object),
            "patient_id": patient,
            "study_id": names.str.replace(r"\.png$", "", regex=True).to_numpy(dtype=object),
            "path": paths,
            "view": view.to_numpy(dtype=object),
            "sex": sex.to_numpy(dtype=object),
            "age": _parse_age(df["Patient Age"]),
            "split": split.astype(object),
            **labels,
        }
    )
    return out[split != ""].reset_index(drop=True)[[*INDEX_META_COLUMNS, *NIH_LABELS]]


def _finding_labels(file: Path, df: pd.DataFrame) -> dict[str, np.ndarray]:
    """0/1 columns of the harmonized NIH labels from the '|'-joined 'Finding Labels'."""
    dummies = df["Finding Labels"].fillna("").astype(str).str.replace(" ", "").str.get_dummies("|")
    known = {k.replace(" ", ""): v for k, v in {**NIH_FINDINGS, NIH_NO_FINDING: "no_finding"}.items()}
    unknown = [c for c in dummies.columns if c not in known]
    if unknown:
        i = int(np.flatnonzero(dummies[unknown[0]].to_numpy())[0])
        raise DataError(
            f"{file}: column 'Finding Labels' has unknown label value {unknown[0]!r} on data row {i + 1} "
            f"(known: {', '.join(sorted([*NIH_FINDINGS, NIH_NO_FINDING]))})"
        )
    labels = {lab: np.zeros(len(df), dtype=np.float64) for lab in NIH_LABELS}
    for token, lab in known.items():
        if token in dummies.columns:
            labels[lab] = dummies[token].to_numpy(dtype=np.float64)
    return labels


def _patient_ids(file: Path, df: pd.DataFrame) -> np.ndarray:
    """'Patient ID' as zero-padded 8-digit strings (the numbering of the image names)."""
    pid = pd.to_numeric(df["Patient ID"], errors="coerce")
    if pid.isna().any():
        i = int(np.flatnonzero(pid.isna().to_numpy())[0])
        raise DataError(
            f"{file}: column 'Patient ID' has non-numeric value {df['Patient ID'].iloc[i]!r} on data row"
            f" {i + 1}"
        )
    return np.array([f"{v:08d}" for v in pid.astype(np.int64)], dtype=object)


def _listed_split(
    root: Path, file: Path, names: np.ndarray, patient: np.ndarray, valid_fraction: float, seed: int
) -> np.ndarray:
    """train / valid / test of every image by the official split lists, valid carved out of
    train_val by patient; "" for an image in neither list (left out, with a warning)."""
    test_names = set(read_split_list(root / "test_list.txt"))
    trainval_names = set(read_split_list(root / "train_val_list.txt"))
    both = test_names & trainval_names
    if both:
        raise DataError(f"{root / 'test_list.txt'}: image '{sorted(both)[0]}' is also in train_val_list.txt")
    in_test = np.fromiter((n in test_names for n in names), dtype=bool, count=len(names))
    in_trainval = np.fromiter((n in trainval_names for n in names), dtype=bool, count=len(names))
    split = np.where(in_test, "test", np.where(in_trainval, "train", ""))
    listed = split != ""
    if not listed.all():
        _warn_once(
            f"NIH {root}: {int((~listed).sum())} images of {file.name} are in neither split list; left out"
        )
    shared = set(patient[split == "test"]) & set(patient[split == "train"])
    if shared:
        _warn_once(
            f"NIH {root}: the split lists share {len(shared)} patients between train_val and test; "
            "cells on this dataset are refused unless allow_leakage = true"
        )
    carved = carve_patients(patient[split == "train"], valid_fraction, seed)
    is_carved = np.fromiter((p in carved for p in patient), dtype=bool, count=len(patient))
    return np.where((split == "train") & is_carved, "valid", split)


def load_nih_boxes(root: Path) -> pd.DataFrame:
    """``BBox_List_2017.csv`` as columns image_id, label (harmonized), x, y, w, h (pixels of the original)."""
    file = next(
        (
            Path(root) / n
            for n in ("BBox_List_2017.csv", "BBox_List_2017.csv.gz")
            if (Path(root) / n).is_file()
        ),
        None,
    )
    if file is None:
        raise DataError(f"NIH root {root}: BBox_List_2017.csv not found")
    df = read_csv_checked(file, ("Image Index", "Finding Label"))
    coords = df.iloc[:, 2:6]
    if coords.shape[1] != 4:
        raise DataError(f"{file}: expected 4 box columns after 'Finding Label' (x, y, w, h)")
    label = df["Finding Label"].astype(str).str.strip()
    unknown = ~label.isin(list(_BBOX_NAMES))
    if unknown.any():
        raise DataError(f"{file}: column 'Finding Label' has unknown label value {label[unknown].iloc[0]!r}")
    xywh = coords.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    return pd.DataFrame(
        {
            "image_id": df["Image Index"].astype(str).str.strip().to_numpy(dtype=object),
            "label": label.map(_BBOX_NAMES).to_numpy(dtype=object),
            "x": xywh[:, 0],
            "y": xywh[:, 1],
            "w": xywh[:, 2],
            "h": xywh[:, 3],
        }
    )


class NIHChestXray14(Dataset):
    """NIH ChestX-ray14: 112,120 frontal radiographs, 30,805 patients, 14 text-mined findings."""

    name = "nih"
    labels = NIH_LABELS
    eval_labels = NIH_EVAL_LABELS
    # a finding absent from 'Finding Labels' is not mentioned; the loader already writes it as 0
    blank_label_means = BLANK_NOT_MENTIONED
    split_rule = (
        f"official test_list.txt as test; {NIH_VALID_FRACTION:g} of train_val_list.txt patients as valid "
        f"(seed {NIH_VALID_SEED})"
    )

    def load_index(self, root: Path) -> pd.DataFrame:
        return load_nih_index(root)

    def label_files(self, root: Path) -> list[Path]:
        root = Path(root)
        files = [entry_file(root), root / "train_val_list.txt", root / "test_list.txt"]
        return [f for f in files if f.is_file()]
