"""NIH ChestX-ray14 native layout, with the columns of the real ``Data_Entry_2017`` file.

::

    <root>/Data_Entry_2017.csv      Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,
                                    Patient Gender,View Position,OriginalImage[Width,Height],
                                    OriginalImagePixelSpacing[x,y]   (the v2020 header)
    <root>/images/00000001_000.png  <patient id, 8 digits>_<follow-up, 3 digits>.png
    <root>/train_val_list.txt       image names, one a line; split by patient (~22% test,
    <root>/test_list.txt            as the official lists)
    <root>/BBox_List_2017.csv       Image Index,Finding Label,Bbox [x,y,w,h],,,  one row per drawn
                                    lesion of the 8 box labels, pixels of the written image

NIH images are frontal only; each study is one image and its follow-up number is the
study's position in the patient's history.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from chexbench.datasets.phantom.cohort import Patient
from chexbench.datasets.phantom.labels import NIH_BOX_NAMES, nih_finding_labels
from chexbench.datasets.phantom.output import ImageJob, SiteWriter

ENTRY_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)
BBOX_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,"
TEST_FRACTION = 0.22
DETECTOR_WIDTH_MM = 430.0  # a 43 cm detector: pixel spacing = width / pixels


def test_patients(n_patients: int, seed: int) -> np.ndarray:
    """Boolean (n,) mask of test patients (official-style patient-disjoint split)."""
    rng = np.random.default_rng([seed, 21])
    mask = np.zeros(n_patients, dtype=bool)
    mask[rng.permutation(n_patients)[: int(round(n_patients * TEST_FRACTION))]] = True
    return mask


class NIHWriter(SiteWriter):
    site = "nih"

    def write(self, root: Path, patients: list[Patient], size: int, seed: int) -> None:
        is_test = test_patients(len(patients), seed)
        entries: list[str] = []
        lists: dict[bool, list[str]] = {False: [], True: []}
        jobs, names = [], []
        for patient in patients:
            for study in patient.studies:
                name = f"{patient.index + 1:08d}_{study.number - 1:03d}.png"
                jobs.append(
                    ImageJob(patient, study, "frontal", root / "images" / name, "png", self.site, size, seed)
                )
                names.append(name)
                lists[bool(is_test[patient.index])].append(name)
        bbox: list[str] = []
        for job, name, ((h, w), boxes) in zip(jobs, names, self.render_all(jobs, names), strict=True):
            study = job.study
            spacing = round(DETECTOR_WIDTH_MM / w, 3)
            entries.append(
                ",".join(
                    [
                        name,
                        nih_finding_labels(study),
                        str(study.number - 1),
                        str(job.patient.index + 1),
                        str(study.age),
                        "F" if study.female else "M",
                        study.view,
                        str(w),
                        str(h),
                        repr(spacing),
                        repr(spacing),
                    ]
                )
            )
            for b in boxes:
                if b.label in NIH_BOX_NAMES:
                    bbox.append(
                        ",".join(
                            [name, NIH_BOX_NAMES[b.label], *(repr(float(v)) for v in (b.x, b.y, b.w, b.h))]
                        )
                    )
        (root / "Data_Entry_2017.csv").write_text("\n".join([ENTRY_HEADER, *entries]) + "\n")
        (root / "train_val_list.txt").write_text("".join(n + "\n" for n in lists[False]))
        (root / "test_list.txt").write_text("".join(n + "\n" for n in lists[True]))
        (root / "BBox_List_2017.csv").write_text("\n".join([BBOX_HEADER, *bbox]) + "\n")
