"""How view, age and acquisition depend on the findings, as in the real datasets.

``dependencies = "published"`` (the default) gives the phantom the dependencies real cohorts
have, so a subgroup analysis on a phantom shows a gap where one is built and none where none
is (docs/PHANTOM.md, "Subgroups: what depends on what"):

- **view** — each frontal film is AP with the probability of a logistic regression of "AP" on
  the labels present, fitted on the real file of the site (``view_logit`` in
  :mod:`._site_tables`: CheXpert ``train.csv`` frontal images, NIH ``Data_Entry_2017_v2020``):
  AP films are the portable films of sicker inpatients, with more support devices, edema and
  effusion;
- **age** — a patient's age is drawn around a least-squares fit of age on the labels of the
  first study (``age_given_labels``, ``age_residual_sd``), so cardiomegaly and effusion rise
  with age by the real amounts;
- **AP magnification** — an AP film magnifies the cardiac silhouette against the thorax (the
  heart lies far from the detector, the short portable tube distance diverges the beam): the
  cardiothoracic ratio of an AP frontal film is multiplied by a factor drawn from
  :data:`AP_CTR_FACTOR` (mean 1.14: the correction of "Assessment of cardiac size on portable
  chest films", −12.5 % of the CT ratio for a 40-inch AP film), a real shortcut for cardiomegaly.

Deliberately **null**: sex (drawn as before, independent of every finding and of the view);
Indiana (its real reports carry no view, age or sex: all PA, unchanged). Site differences in
prevalence and acquisition hold under both settings (each site draws from its own real
tables; :mod:`.sites`).

``"none"`` reproduces the generator version 5 exactly: these draws come from their own random
stream (:func:`dependency_rng`), and under ``"none"`` nothing here is called, so the main
stream, the labels, the metadata and the pixels are those of version 5.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, get_args

import numpy as np

from chexbench.core.errors import ConfigError
from chexbench.datasets.phantom._site_tables import SITE_STATS
from chexbench.datasets.phantom.findings import SUBTLE, Finding

Dependencies = Literal["published", "none"]
DEPENDENCY_CHOICES: tuple[str, ...] = get_args(Dependencies)
DEFAULT_DEPENDENCIES: Dependencies = "published"
#: salt of the separate random stream of the dependency draws (one stream per patient)
DEPENDENCY_STREAM = 26_003
#: AP cardiothoracic-ratio factor, uniform in this range; its mean 1.14 = 1 / (1 − 0.125), the
#: published correction for a 40-inch AP film (1.11 = 1 / (1 − 0.10) at 72 inches); the spread
#: stands for what the same paper says cannot be predicted per film (heart size, chest depth)
AP_CTR_FACTOR: tuple[float, float] = (1.08, 1.20)
#: CheXpert's "Lung Opacity" and "Lung Lesion" are parents of several drawn findings
_PARENTS: dict[str, frozenset[str]] = {
    "lung_opacity": frozenset(
        {
            "lung_opacity",
            "consolidation",
            "pneumonia",
            "edema",
            "atelectasis",
            "nodule",
            "mass",
            "infiltration",
        }
    ),
    "lung_lesion": frozenset({"nodule", "mass"}),
}
AGE_RANGE = (18, 90)
#: share of findings seen on a bedside (AP) film, CT as the reference (Kitazono et al., AJR 2010;
#: 194:407-412, 100 ICU patients): effusions 53 % small, 71 % moderate, 92 % large; parenchymal
#: opacities 65 %. Severity bands: below SUBTLE (0.3) small, below 0.65 moderate, else large
EFFUSION_SEEN_BEDSIDE: tuple[float, float, float] = (0.53, 0.71, 0.92)
OPACITY_SEEN_BEDSIDE = 0.65
PARENCHYMAL_OPACITIES = frozenset(
    {"consolidation", "pneumonia", "atelectasis", "lung_opacity", "infiltration"}
)
LARGE_EFFUSION = 0.65


def check_dependencies(value: object) -> Dependencies:
    if value not in DEPENDENCY_CHOICES:
        raise ConfigError(
            f"phantom: dependencies must be one of {', '.join(DEPENDENCY_CHOICES)}, got {value!r}"
        )
    return value  # type: ignore[return-value]


def dependency_rng(seed: int, site_code: int, patient: int) -> np.random.Generator:
    """The stream of one patient's dependency draws, apart from the stream version 5 draws from."""
    return np.random.default_rng([seed, site_code, patient, DEPENDENCY_STREAM])


def label_vector(site: str, names: Iterable[str]) -> np.ndarray:
    """(L,) 0/1 of the site's real labels (``SITE_STATS[site]["labels"]``) given the drawn findings."""
    drawn = set(names)
    return np.array(
        [bool(drawn & _PARENTS.get(label, frozenset({label}))) for label in SITE_STATS[site]["labels"]],
        dtype=float,
    )


def ap_probability(site: str, names: Iterable[str]) -> float | None:
    """P(AP | findings) of the site's real view model; None where the real file has no view."""
    coef = SITE_STATS[site].get("view_logit")
    if coef is None:
        return None
    z = coef[0] + float(np.dot(coef[1:], label_vector(site, names)))
    return float(1.0 / (1.0 + np.exp(-z)))


def draw_view(site: str, names: Iterable[str], rng: np.random.Generator, default: str) -> str:
    p = ap_probability(site, names)
    return default if p is None else ("AP" if rng.random() < p else "PA")


def draw_age(site: str, names: Iterable[str], rng: np.random.Generator, default: int) -> int:
    """A patient's age given the first study's findings (the site's real regression); ``default`` without
    one."""
    stats = SITE_STATS[site]
    coef = stats.get("age_given_labels")
    if coef is None:
        return default
    mean = coef[0] + float(np.dot(coef[1:], label_vector(site, names)))
    return int(np.clip(rng.normal(mean, stats["age_residual_sd"]), *AGE_RANGE))


def cardiac_magnification(view: str, rng: np.random.Generator) -> float:
    """Factor on the cardiothoracic ratio of one frontal film: 1 for PA, :data:`AP_CTR_FACTOR` for AP."""
    return float(rng.uniform(*AP_CTR_FACTOR)) if view == "AP" else 1.0


def seen_on_bedside_film(f: Finding) -> float:
    """Probability that finding ``f`` shows on an AP bedside film (1 for what the study above did not
    measure)."""
    if f.name == "pleural_effusion":
        small, moderate, large = EFFUSION_SEEN_BEDSIDE
        return small if f.severity < SUBTLE else moderate if f.severity < LARGE_EFFUSION else large
    return OPACITY_SEEN_BEDSIDE if f.name in PARENCHYMAL_OPACITIES else 1.0


def unseen_on_film(view: str, findings: Iterable[Finding], rng: np.random.Generator) -> frozenset[str]:
    """Findings an AP (bedside) film does not show: each drawn with :func:`seen_on_bedside_film`; none on
    PA."""
    if view != "AP":
        return frozenset()
    return frozenset(f.name for f in findings if rng.random() >= seen_on_bedside_film(f))
