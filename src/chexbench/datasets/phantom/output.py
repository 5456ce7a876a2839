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
import multiprocessing as mp
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image

from chexbench.datasets.phantom.cohort import Patient, Study
from chexbench.datasets.phantom.render import Box, render_study
from chexbench.datasets.workers import die_with_parent

JPEG_QUALITY = 92


def _save(image: np.ndarray, path: Path, **params: object) -> None:
    try:
        Image.fromarray(image).save(path, **params)
    except FileNotFoundError:  # first file of its folder
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path, **params)


def save_jpeg(image: np.ndarray, path: Path) -> None:
    """Grayscale baseline JPEG (as CheXpert-small); deterministic for the same pixels."""
    _save(image, path, format="JPEG", quality=JPEG_QUALITY, optimize=False)


def save_png(image: np.ndarray, path: Path) -> None:
    """8-bit grayscale PNG (as NIH / OpenI)."""
    _save(image, path, format="PNG", compress_level=3)


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


@dataclass(frozen=True)
class ImageJob:
    """One image to render and write: which study, which view, where, in which format."""

    patient: Patient
    study: Study
    view: str  # "frontal" | "lateral"
    path: Path
    fmt: str  # "jpeg" | "png"
    site: str
    size: int
    seed: int


def render_and_save(job: ImageJob) -> tuple[tuple[int, int], list[Box]]:
    """Render one image, write it; returns its (H, W) and its lesion boxes."""
    image, boxes = render_study(job.patient, job.study, job.site, job.size, job.seed, view=job.view)
    (save_jpeg if job.fmt == "jpeg" else save_png)(image, job.path)
    return image.shape, boxes


def default_workers(n_jobs: int) -> int:
    """Processes to use: one per CPU (at most 8) for big batches, else 1 (no start-up cost)."""
    if n_jobs < 200:
        return 1
    return max(
        1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    )


def run_jobs(jobs: list[ImageJob], workers: int | None = None) -> list[tuple[tuple[int, int], list[Box]]]:
    """Render and write every job, in parallel processes when ``workers`` > 1; results in job order.

    Every image has its own random stream, so the files do not depend on ``workers``.
    """
    workers = default_workers(len(jobs)) if workers is None else workers
    if workers <= 1:
        return [render_and_save(j) for j in jobs]

    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    # a killed generator takes its workers with it (no orphans writing into its temporary folder)
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=die_with_parent, initargs=(os.getpid(),)
    ) as pool:
        return list(pool.map(render_and_save, jobs, chunksize=max(1, len(jobs) // (workers * 8))))


class SiteWriter:
    """Base class of a layout writer: subclasses implement :meth:`write`."""

    site: ClassVar[str] = ""

    def __init__(self, workers: int | None = None) -> None:
        self.tally = SiteTally(self.site)
        self.box_rows: list[BoxRow] = []
        self.workers = workers

    def write(self, root: Path, patients: list[Patient], size: int, seed: int) -> None:
        raise NotImplementedError

    def render_all(self, jobs: list[ImageJob], refs: list[str]) -> list[tuple[tuple[int, int], list[Box]]]:
        """Render and write ``jobs``; tally them under ``refs`` (path or id); returns (H, W) and boxes per
        job."""
        results = run_jobs(jobs, self.workers)
        for job, ref, (shape, boxes) in zip(jobs, refs, results, strict=True):
            self.record(ref, job.patient, job.study, job.view, shape, boxes)
        return results

    def record(
        self,
        image_ref: str,
        patient: Patient,
        study: Study,
        view: str,
        shape: tuple[int, int],
        boxes: list[Box],
    ) -> None:
        t = self.tally
        t.images += 1
        t.patients.add(patient.index)
        t.shapes[shape] += 1
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
