"""One study → one image: anatomy + findings + site detector, and the lesion boxes.

Boxes are (label, x, y, w, h) in pixels of the written image, the bounding box of the
drawn lesion's soft mask above one half.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from chexbench.datasets.phantom.anatomy import (
    compose,
    draw_frontal,
    sample_anatomy,
    sample_pose,
    with_changes,
)
from chexbench.datasets.phantom.cohort import SITE_CODES, Patient, Study
from chexbench.datasets.phantom.fields import mask_box
from chexbench.datasets.phantom.findings import Finding, adjust_anatomy, paint_findings
from chexbench.datasets.phantom.lateral import draw_lateral
from chexbench.datasets.phantom.sites import SITES, detector, image_shape

VIEW_CODES = {"frontal": 1, "lateral": 2}


@dataclass(frozen=True)
class Box:
    label: str  # harmonized name
    x: int
    y: int
    w: int
    h: int


def study_rng(seed: int, site: str, patient: int, study: int, view: str) -> np.random.Generator:
    """The random stream of one image; independent of generation order (parallel-safe)."""
    return np.random.default_rng([seed, SITE_CODES[site], patient, study, VIEW_CODES[view]])


def render_study(
    patient: Patient, study: Study, site: str, size: int, seed: int, view: str = "frontal"
) -> tuple[np.ndarray, list[Box]]:
    """The uint8 (H, W) image of one study's ``view`` as ``site`` writes it, and its lesion boxes."""
    rng = study_rng(seed, site, patient.index, study.number, view)
    spec = SITES[site]
    height, width = image_shape(spec, size, rng)
    anatomy = sample_anatomy(
        np.random.default_rng(patient.anatomy_seed), patient.female and study.sex_in_pixels
    )
    # a finding the frontal film does not show (bedside AP, dependencies = "published") is not drawn on it
    shown = [f for f in study.findings if view != "frontal" or f.name not in study.unseen]
    anatomy = adjust_anatomy(anatomy, shown)
    if view == "frontal" and study.cardiac_magnification != 1.0:  # AP: the heart far from the detector
        anatomy = with_changes(anatomy, ctr=anatomy.ctr * study.cardiac_magnification)
    pose = sample_pose(rng, spec.zoom * (1.04 if study.view == "AP" else 1.0), spec.pose_jitter)
    if view == "lateral":
        scene = draw_lateral(anatomy, pose, height, width)
    else:
        scene = draw_frontal(anatomy, pose, height, width)

    def rng_for(f: Finding) -> np.random.Generator:
        # location is fixed per patient (place); appearance detail varies per image
        return np.random.default_rng([f.place, VIEW_CODES[view]])

    lesions = paint_findings(scene, shown, rng_for)
    image = detector(spec, compose(scene), rng)
    boxes = []
    for label, mask in lesions:
        b = mask_box(mask)
        if b is not None:
            boxes.append(Box(label, *b))
    return image, boxes
