"""Shared pieces of the layout writers: image files, the box sidecar, per-site tallies.

The sidecar ``phantom_boxes.csv`` (CheXpert and Indiana layouts; NIH uses its native
``BBox_List_2017.csv``) has one row per drawn focal lesion::

    image,label,x,y,w,h
    CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg,pleural_effusion,12,80,40,31

``image`` is the path (CheXpert, relative to the root, as in ``Path``) or image id (Indiana),
``label`` the harmonized name, ``x, y, w, h`` the box in pixels of the written image.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image

from chexbench.datasets.phantom.cohort import Patient, Study
from chexbench.datasets.phantom.render import Box

JPEG_QUALITY = 92


def save_jpeg(image: np.ndarray, path: Path) -> None:
    """Grayscale baseline JPEG (as CheXpert-small); deterministic for the same pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image, mode="L").save(path, format="JPEG", quality=JPEG_QUALITY, optimize=False)


def save_png(image: np.ndarray, path: Path) -> None:
    """8-bit grayscale PNG (as NIH / OpenI)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image, mode="L").save(path, format="PNG", compress_level=3)


@dataclass
class BoxRow:
    image: str
    label: str
    x: int
    y: int
    w: int
    h: int

    COLUMNS: ClassVar[tuple[str, ...]] = ("image", "label", "x", "y", "w", "h")


@dataclass
class SiteTally:
    """What a writer wrote: counts for the CLI summary and the preview's picks."""

    site: str
    images: int = 0
    frontal_images: int = 0
    patients: set[int] = field(default_factory=set)
    studies: int = 0
    positives: Counter = field(default_factory=Counter)  # drawn finding → frontal images
    boxes: int = 0
    shapes: Counter = field(default_factory=Counter)

    def prevalence(self) -> dict[str, float]:
        n = max(self.frontal_images, 1)
        return {k: v / n for k, v in sorted(self.positives.items())}


class SiteWriter:
    """Base class of a layout writer: subclasses implement :meth:`write`."""

    site: ClassVar[str] = ""

    def __init__(self) -> None:
        self.tally = SiteTally(self.site)
        self.box_rows: list[BoxRow] = []

    def write(self, root: Path, patients: list[Patient], size: int, seed: int) -> None:
        raise NotImplementedError

    def record(self, image_ref: str, patient: Patient, study: Study, view: str, split: str,
               image: np.ndarray, boxes: list[Box]) -> None:
        t = self.tally
        t.images += 1
        t.patients.add(patient.index)
        t.shapes[image.shape] += 1
        if view == "frontal":
            t.frontal_images += 1
            t.studies += 1
            t.positives.update(study.names)
            if not study.names - {"support_devices"}:
                t.positives["no_finding"] += 1
        for b in boxes:
            self.box_rows.append(BoxRow(image_ref, b.label, b.x, b.y, b.w, b.h))
        t.boxes += len(boxes)

    def write_boxes(self, path: Path) -> None:
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(BoxRow.COLUMNS)
            for r in self.box_rows:
                w.writerow([r.image, r.label, r.x, r.y, r.w, r.h])
