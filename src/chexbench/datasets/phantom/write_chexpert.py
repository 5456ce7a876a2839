"""CheXpert native layout (``CheXpert-v1.0-small``), exactly as the real download.

::

    <root>/CheXpert-v1.0-small/train.csv
    <root>/CheXpert-v1.0-small/valid.csv
    <root>/CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg
    <root>/CheXpert-v1.0-small/train/patient00001/study1/view2_lateral.jpg
    <root>/CheXpert-v1.0-small/valid/patient00201/study1/view1_frontal.jpg
    <root>/CheXpert-v1.0-small/phantom_boxes.csv     (sidecar, not in the real dataset)

CSV columns ``Path,Sex,Age,Frontal/Lateral,AP/PA`` then the 14 observations; ``Path`` starts
with ``CheXpert-v1.0-small/``; labels ``1.0`` / ``-1.0`` / ``0.0`` / blank in ``train.csv``,
``1.0`` / ``0.0`` in the radiologist-labelled ``valid.csv``. As in the real data, validation
patients are numbered after the training patients and have one study each.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from chexbench.datasets.phantom.cohort import Patient, Study
from chexbench.datasets.phantom.labels import CHEXPERT_LABEL_COLUMNS, chexpert_values
from chexbench.datasets.phantom.output import ImageJob, SiteWriter

PREFIX = "CheXpert-v1.0-small"
META_COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA")
COLUMNS = (*META_COLUMNS, *CHEXPERT_LABEL_COLUMNS)
VALID_FRACTION = 0.1


def split_patients(n_patients: int, seed: int) -> np.ndarray:
    """Boolean (n,) mask of validation patients: ~10% chosen at random (at least one if n >= 5)."""
    rng = np.random.default_rng([seed, 11])
    n_valid = int(round(n_patients * VALID_FRACTION)) if n_patients >= 5 else 0
    mask = np.zeros(n_patients, dtype=bool)
    mask[rng.permutation(n_patients)[: max(n_valid, 1 if n_patients >= 5 else 0)]] = True
    return mask


class CheXpertWriter(SiteWriter):
    site = "chexpert"

    def write(self, root: Path, patients: list[Patient], size: int, seed: int) -> None:
        base = root / PREFIX
        valid = split_patients(len(patients), seed)
        train_ids = [p for p in patients if not valid[p.index]]
        valid_ids = [p for p in patients if valid[p.index]]
        number = {p.index: i + 1 for i, p in enumerate(train_ids + valid_ids)}
        rows: dict[str, list[list[str]]] = {"train": [], "valid": []}
        jobs, refs = [], []
        for patient in patients:
            split = "valid" if valid[patient.index] else "train"
            studies = patient.studies[:1] if split == "valid" else patient.studies
            for study in studies:
                labels = chexpert_values(
                    study,
                    np.random.default_rng([seed, 12, patient.index, study.number]),
                    certain=split == "valid",
                )
                views = ["frontal", "lateral"] if study.lateral else ["frontal"]
                for k, view in enumerate(views, start=1):
                    folder = f"{PREFIX}/{split}/patient{number[patient.index]:05d}/study{study.number}"
                    rel = f"{folder}/view{k}_{view}.jpg"
                    rows[split].append(self._row(rel, study, view, labels))
                    jobs.append(ImageJob(patient, study, view, root / rel, "jpeg", self.site, size, seed))
                    refs.append(rel)
        self.render_all(jobs, refs)
        for split, table in rows.items():
            with open(base / f"{split}.csv", "w", newline="") as fh:
                w = csv.writer(fh, lineterminator="\n")
                w.writerow(COLUMNS)
                w.writerows(table)
        self.write_boxes(base / "phantom_boxes.csv")

    @staticmethod
    def _row(rel: str, study: Study, view: str, labels: dict[str, str]) -> list[str]:
        frontal = view == "frontal"
        meta = [
            rel,
            "Female" if study.female else "Male",
            str(study.age),
            "Frontal" if frontal else "Lateral",
            study.view if frontal else "",
        ]
        return meta + [labels[c] for c in CHEXPERT_LABEL_COLUMNS]
