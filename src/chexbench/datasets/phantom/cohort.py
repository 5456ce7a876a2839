"""Patients, studies and their findings, sampled from each real site's label statistics.

A patient has 1–5 studies over time (the real studies-per-patient distribution, tail folded
into 5). The first study's findings are one label *pattern* drawn from the real co-occurrence
table of the site (:mod:`._site_tables`); later studies evolve: chronic findings persist,
acute ones resolve or appear, severities drift. Nothing here looks at pixels. Under
``dependencies = "none"`` (generator version 5) view and age are drawn independently of the
findings; under ``"published"`` they follow the real files (:mod:`.dependencies`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from chexbench.datasets.phantom._site_tables import SITE_STATS
from chexbench.datasets.phantom.dependencies import (
    DEFAULT_DEPENDENCIES,
    Dependencies,
    cardiac_magnification,
    check_dependencies,
    dependency_rng,
    draw_age,
    draw_view,
    unseen_on_film,
)
from chexbench.datasets.phantom.findings import BILATERAL, SUBTLE, Finding
from chexbench.datasets.phantom.placement import draw_side

SITE_CODES: dict[str, int] = {"chexpert": 1, "nih": 2, "indiana": 3}

#: probability that a finding present in one study is still there in the next
PERSIST: dict[str, float] = {
    "cardiomegaly": 0.95,
    "enlarged_cardiomediastinum": 0.9,
    "emphysema": 1.0,
    "fibrosis": 1.0,
    "hernia": 1.0,
    "pleural_thickening": 1.0,
    "fracture": 1.0,
    "nodule": 0.97,
    "mass": 0.97,
    "pleural_effusion": 0.65,
    "edema": 0.55,
    "consolidation": 0.6,
    "pneumonia": 0.5,
    "atelectasis": 0.6,
    "pneumothorax": 0.4,
    "lung_opacity": 0.55,
    "infiltration": 0.5,
    "support_devices": 0.7,
}
#: chance that a finding may occur on both sides (the real NIH box file cannot tell: one box per image and
#: finding)
BILATERAL_RATE: dict[str, float] = {
    "pleural_effusion": 0.4,
    "atelectasis": 0.3,
    "consolidation": 0.15,
    "pneumonia": 0.15,
    "infiltration": 0.3,
    "lung_opacity": 0.3,
    "pleural_thickening": 0.3,
}
UNILATERAL_ONLY = frozenset({"pneumothorax", "nodule", "mass", "fracture"})
GLOBAL = frozenset(
    {
        "cardiomegaly",
        "enlarged_cardiomediastinum",
        "edema",
        "emphysema",
        "fibrosis",
        "hernia",
        "support_devices",
    }
)
#: subtle (uncertain) rate for sites whose files carry no uncertainty
DEFAULT_SUBTLE_RATE = 0.15
#: lesions whose CheXpert label is "Lung Lesion": drawn as a nodule or a mass (half each)
LESION_AS_MASS = 0.5
#: CheXpert parent label "Lung Opacity" covers these drawn findings
OPACITIES = frozenset(
    {"lung_opacity", "consolidation", "pneumonia", "edema", "atelectasis", "nodule", "mass", "infiltration"}
)


@dataclass(frozen=True)
class Study:
    patient: int  # 0-based index of the patient within its site
    number: int  # 1-based study number within the patient
    age: int
    female: bool
    view: str  # "PA" | "AP" (the frontal view)
    lateral: bool  # also a lateral view (CheXpert layout only)
    findings: tuple[Finding, ...]
    #: factor on the cardiothoracic ratio of the frontal film (AP magnification; 1: none)
    cardiac_magnification: float = 1.0
    #: findings present but not visible on the frontal film (a bedside AP film under "published")
    unseen: frozenset[str] = frozenset()
    #: breast shadows drawn for a woman (off under "published": sex is the deliberately null variable)
    sex_in_pixels: bool = True

    @property
    def names(self) -> frozenset[str]:
        return frozenset(f.name for f in self.findings)


@dataclass(frozen=True)
class Patient:
    index: int
    female: bool
    anatomy_seed: int
    studies: tuple[Study, ...]


def site_labels(site: str) -> tuple[str, ...]:
    """The harmonized labels of a site's pattern table (as the native files carry them)."""
    return tuple(SITE_STATS[site]["labels"])


@lru_cache(maxsize=8)
def _pattern_table(site: str) -> tuple[np.ndarray, np.ndarray]:
    """Label-combination bitmasks of a site and their probabilities."""
    stats = SITE_STATS[site]
    masks = np.array([m for m, _ in stats["patterns"]], dtype=np.int64)
    counts = np.array([c for _, c in stats["patterns"]], dtype=float)
    return masks, counts / counts.sum()


def _draw_pattern(rng: np.random.Generator, site: str) -> frozenset[str]:
    masks, probs = _pattern_table(site)
    mask = int(masks[rng.choice(len(masks), p=probs)])
    return frozenset(name for i, name in enumerate(SITE_STATS[site]["labels"]) if mask >> i & 1)


def _drawn_names(site: str, labels: frozenset[str], rng: np.random.Generator) -> set[str]:
    """Site label set → the findings actually drawn (CheXpert 'lung_lesion' becomes nodule/mass)."""
    out = set(labels)
    if "lung_lesion" in out:
        out.discard("lung_lesion")
        out.add("mass" if rng.random() < LESION_AS_MASS else "nodule")
    if "lung_opacity" in out and out & (OPACITIES - {"lung_opacity"}):
        out.discard("lung_opacity")  # the specific opacity explains the parent label
    return out


def _subtle_rate(site: str, name: str) -> float:
    stats = SITE_STATS[site]
    if "uncertain_given_present" in stats:
        key = "lung_lesion" if name in ("nodule", "mass") else name
        if key in stats["labels"]:
            return float(stats["uncertain_given_present"][stats["labels"].index(key)])
    return DEFAULT_SUBTLE_RATE


def _new_finding(site: str, name: str, rng: np.random.Generator) -> Finding:
    subtle = rng.random() < _subtle_rate(site, name)
    severity = rng.uniform(0.08, SUBTLE - 0.02) if subtle else rng.uniform(SUBTLE + 0.05, 1.0)
    # one side: in the proportion of the real NIH boxes of the finding (placement.draw_side; even without
    # boxes)
    if name in GLOBAL:
        side = BILATERAL
    elif name in UNILATERAL_ONLY:
        side = draw_side(name, rng)
    else:
        side = BILATERAL if rng.random() < BILATERAL_RATE.get(name, 0.0) else draw_side(name, rng)
    return Finding(name, float(severity), side, int(rng.integers(2**31)))


def _evolve(
    site: str, prev: tuple[Finding, ...], rng: np.random.Generator, marginal: dict[str, float]
) -> tuple[Finding, ...]:
    out = []
    have = set()
    for f in prev:
        if rng.random() < PERSIST.get(f.name, 0.5):
            sev = float(np.clip(f.severity + rng.normal(0, 0.15), 0.08, 1.0))
            out.append(Finding(f.name, sev, f.side, f.place))
            have.add(f.name)
    for name, p in marginal.items():
        if name not in have and PERSIST.get(name, 0.5) < 0.9 and rng.random() < 0.25 * p:
            out.append(_new_finding(site, name, rng))
    return tuple(sorted(out, key=lambda f: f.name))


@lru_cache(maxsize=8)
def _marginals(site: str) -> dict[str, float]:
    stats = SITE_STATS[site]
    total = sum(c for _, c in stats["patterns"])
    out = {}
    for i, name in enumerate(stats["labels"]):
        p = sum(c for m, c in stats["patterns"] if m >> i & 1) / total
        for drawn in ("nodule", "mass") if name == "lung_lesion" else (name,):
            out[drawn] = p
    return out


def sample_cohort(
    site: str, n_patients: int, seed: int, dependencies: Dependencies = DEFAULT_DEPENDENCIES
) -> list[Patient]:
    """``n_patients`` patients of one site, each with 1–5 studies; deterministic for ``seed``.

    ``dependencies = "published"`` redraws age and view from their own stream as the real data
    relate them to the findings (:mod:`.dependencies`); every draw of ``"none"`` (version 5) is
    still made, in the same order, so the findings and anatomy are the same under both.
    """
    published = check_dependencies(dependencies) == "published"
    stats = SITE_STATS[site]
    hist = np.array(stats.get("studies_per_patient", [1.0]), dtype=float)
    marginal = _marginals(site)
    patients = []
    for p in range(n_patients):
        rng = np.random.default_rng([seed, SITE_CODES[site], p])
        dep = dependency_rng(seed, SITE_CODES[site], p) if published else None
        female = bool(rng.random() < stats.get("female", 0.5))
        age = int(np.clip(rng.normal(stats.get("age_mean", 55), stats.get("age_sd", 17)), 18, 90))
        n_studies = int(rng.choice(len(hist), p=hist / hist.sum())) + 1
        findings = tuple(
            sorted(
                (
                    _new_finding(site, n, rng)
                    for n in sorted(_drawn_names(site, _draw_pattern(rng, site), rng))
                ),
                key=lambda f: f.name,
            )
        )
        if dep is not None:
            age = draw_age(site, (f.name for f in findings), dep, default=age)
        studies = []
        for k in range(n_studies):
            if k:
                findings = _evolve(site, findings, rng, marginal)
                age += int(rng.random() < 0.4)
            view = "AP" if rng.random() < stats.get("ap_given_frontal", 0.0) else "PA"
            lateral = bool(rng.random() < stats.get("lateral_per_study", 0.0))
            magnification, unseen = 1.0, frozenset()
            if dep is not None:
                view = draw_view(site, (f.name for f in findings), dep, default=view)
                magnification = cardiac_magnification(view, dep)
                unseen = unseen_on_film(view, findings, dep)
            studies.append(
                Study(
                    p,
                    k + 1,
                    age,
                    female,
                    view,
                    lateral,
                    findings,
                    magnification,
                    unseen,
                    sex_in_pixels=dep is None,
                )
            )
        patients.append(Patient(p, female, int(rng.integers(2**31)), tuple(studies)))
    return patients
