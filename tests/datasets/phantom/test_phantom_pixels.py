"""The labels live in the pixels: each finding changes the image where (and how) it should."""

from __future__ import annotations

import numpy as np
import pytest

from chexbench.datasets.phantom.anatomy import Pose, compose, draw_frontal, sample_anatomy
from chexbench.datasets.phantom.cohort import Patient, Study, sample_cohort, site_labels
from chexbench.datasets.phantom.findings import BILATERAL, SUBTLE, Finding, adjust_anatomy
from chexbench.datasets.phantom.labels import chexpert_values, indiana_major_terms, nih_finding_labels
from chexbench.datasets.phantom.render import render_study

SIZE = 128


def _patient(findings: tuple[Finding, ...], seed: int = 1) -> tuple[Patient, Study]:
    study = Study(0, 1, 60, False, "PA", False, findings)
    return Patient(0, False, 1000 + seed, (study,)), study


def _render(findings: tuple[Finding, ...], site: str = "nih", seed: int = 1):
    patient, study = _patient(findings, seed)
    image, boxes = render_study(patient, study, site, SIZE, 0)
    return image.astype(float), boxes


def measured_ctr(ctr_finding: tuple[Finding, ...], seed: int) -> float:
    """Cardiothoracic ratio measured on the drawn masks: widest heart / widest thorax (lung margins)."""
    anat = adjust_anatomy(sample_anatomy(np.random.default_rng(seed), False), list(ctr_finding))
    scene = draw_frontal(anat, Pose(), SIZE, SIZE)
    heart_cols = np.flatnonzero((scene.heart > 0.5).any(axis=0))
    lung_cols = np.flatnonzero((scene.lung > 0.5).any(axis=0))
    return (heart_cols[-1] - heart_cols[0] + 1) / (lung_cols[-1] - lung_cols[0] + 1)


@pytest.mark.parametrize("seed", range(5))
def test_cardiomegaly_means_a_cardiothoracic_ratio_above_one_half(seed):
    assert measured_ctr((), seed) < 0.5
    assert measured_ctr((Finding("cardiomegaly", 0.1, BILATERAL, 0),), seed) > 0.5


def test_radiograph_contrast_dark_lungs_bright_mediastinum_and_bones():
    anat = sample_anatomy(np.random.default_rng(0), False)
    scene = draw_frontal(anat, Pose(), SIZE, SIZE)
    img = compose(scene)
    lungs = img[(scene.lung > 0.9) & (scene.heart < 0.1)].mean()
    mediastinum = img[scene.mediastinum > 0.9].mean()
    outside = img[scene.body < 0.1].mean()
    assert outside < lungs < mediastinum


@pytest.mark.parametrize(
    "name", ["nodule", "mass", "consolidation", "pleural_effusion", "pneumonia", "fracture"]
)
def test_focal_findings_brighten_the_image_inside_their_boxes(name):
    base, _ = _render(())
    img, boxes = _render((Finding(name, 0.8, 0, 7),))
    assert boxes and all(b.label == name for b in boxes)
    diff = img - base
    inside = np.zeros_like(diff, dtype=bool)
    for b in boxes:
        inside[max(b.y - 3, 0) : b.y + b.h + 3, max(b.x - 3, 0) : b.x + b.w + 3] = True
    signal = np.clip(diff, 0, None)
    assert signal[inside].mean() > 8  # grey levels
    assert signal[inside].sum() > 0.8 * signal.sum()  # the change is where the box says


def test_atelectasis_draws_a_band_and_loses_volume_on_its_side():
    normal = sample_anatomy(np.random.default_rng(3), False)
    collapsed = adjust_anatomy(normal, [Finding("atelectasis", 0.8, 0, 1)])
    area = [draw_frontal(a, Pose(), SIZE, SIZE).lungs for a in (normal, collapsed)]
    assert area[1][0].sum() < 0.9 * area[0][0].sum()  # the right lung (image left) shrinks
    assert abs(area[1][1].sum() - area[0][1].sum()) < 1e-3 * area[0][1].sum()  # the other does not
    base, _ = _render(())
    img, boxes = _render((Finding("atelectasis", 0.8, 0, 7),))
    (b,) = boxes
    assert b.w > 2 * b.h  # plate-like
    assert (img - base)[b.y : b.y + b.h, b.x : b.x + b.w].mean() > 8


def test_pneumothorax_darkens_its_rim():
    base, _ = _render(())
    img, boxes = _render((Finding("pneumothorax", 0.9, 1, 3),))
    (b,) = boxes
    region = (slice(b.y, b.y + b.h), slice(b.x, b.x + b.w))
    assert (img[region] - base[region]).mean() < -2


def test_severity_scales_the_change():
    base, _ = _render(())
    faint, _ = _render((Finding("pleural_effusion", 0.1, BILATERAL, 5),))
    marked, _ = _render((Finding("pleural_effusion", 0.9, BILATERAL, 5),))
    assert np.abs(marked - base).sum() > 2 * np.abs(faint - base).sum() > 0


def test_sites_differ_systematically_for_the_same_study():
    patient, study = _patient((), 2)
    stats = {}
    for site in ("chexpert", "nih", "indiana"):
        img, _ = render_study(patient, study, site, SIZE, 0)
        stats[site] = (img.shape, img.mean())
    assert len({s[1].__round__(0) for s in stats.values()}) == 3


def test_native_label_encodings_follow_severity():
    subtle = Finding("atelectasis", SUBTLE / 2, 0, 1)
    marked = Finding("pleural_effusion", 0.9, BILATERAL, 2)
    study = Study(0, 1, 50, True, "AP", False, (subtle, marked))
    values = chexpert_values(study, np.random.default_rng(0))
    assert values["Atelectasis"] == "-1.0" and values["Pleural Effusion"] == "1.0"
    assert values["Lung Opacity"] == "-1.0"  # only a subtle opacity behind it
    assert values["No Finding"] == ""
    assert chexpert_values(study, np.random.default_rng(0), certain=True)["Atelectasis"] == "1.0"
    assert nih_finding_labels(study) == "Atelectasis|Effusion"
    assert indiana_major_terms(study) == ["Pleural Effusion/bilateral", "Pulmonary Atelectasis/right/mild"]
    normal = Study(0, 1, 50, True, "PA", False, ())
    assert chexpert_values(normal, np.random.default_rng(0))["No Finding"] == "1.0"
    assert nih_finding_labels(normal) == "No Finding" and indiana_major_terms(normal) == ["normal"]


def test_cohorts_follow_the_real_label_statistics():
    from chexbench.datasets.phantom._site_tables import SITE_STATS

    patients = sample_cohort("nih", 3000, seed=0)
    first = [p.studies[0] for p in patients]
    stats = SITE_STATS["nih"]
    total = sum(c for _, c in stats["patterns"])
    for i, label in enumerate(site_labels("nih")):
        real = sum(c for m, c in stats["patterns"] if m >> i & 1) / total
        ours = np.mean([label in s.names for s in first])
        assert abs(ours - real) < 0.02 + 0.15 * real, label
    counts = np.array([len(p.studies) for p in patients])
    assert counts.min() == 1 and counts.max() == 5 and 0.45 < np.mean(counts == 1) < 0.7
    # findings evolve: studies are not all copies of the first, chronic ones mostly persist
    multi = [p for p in patients if len(p.studies) > 1]
    assert any(p.studies[0].names != p.studies[-1].names for p in multi)
    kept = [("cardiomegaly" in p.studies[1].names) for p in multi if "cardiomegaly" in p.studies[0].names]
    assert np.mean(kept) > 0.85
