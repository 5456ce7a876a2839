"""The harmonized label vocabulary, each dataset's mapping onto it, and the target rules.

Every index carries one float column per harmonized label it knows, with values
1.0 positive, 0.0 negative, -1.0 uncertain, NaN blank. :func:`training_targets` turns those
values into the targets a cell trains and is scored on (1 / 0 / NaN = masked), in two steps:

1. Uncertain (-1) by the uncertainty policy (Irvin et al., "CheXpert", AAAI 2019, §4):

       ignore   U-Ignore: uncertain → masked (NaN)
       zeros    U-Zeros:  uncertain → 0
       ones     U-Ones:   uncertain → 1
       mixed    the paper's best per-label choice: U-Ones for atelectasis and edema,
                U-Zeros for every other label

2. Blank (NaN) by the dataset's convention (``Dataset.blank_label_means``):

       not_mentioned  the report was read and does not mention the finding (CheXpert's
                      labeler blank). ``settings.not_mentioned = "negative"`` (default, the
                      CheXpert convention) makes it 0; ``"ignore"`` keeps it masked.
       unknown        there is no label information (an Indiana report indexed only
                      ``No Indexing``): masked whatever ``settings.not_mentioned`` says.

An image whose targets are all masked after both steps has no usable label: it is left out
of train, valid and test, and the cell manifest counts it (``unlabeled_images_excluded``).
NIH ChestX-ray14 has no blanks (every finding is 1 or 0 in the index); an indexed Indiana
report has 0 for every label no MeSH term names, set by its loader.
"""

from __future__ import annotations

import numpy as np

from chexbench.core.errors import ConfigError

#: The harmonized vocabulary (snake_case); every dataset maps onto a subset of it.
HARMONIZED_LABELS: tuple[str, ...] = (
    "no_finding",
    "enlarged_cardiomediastinum",
    "cardiomegaly",
    "lung_opacity",
    "lung_lesion",
    "edema",
    "consolidation",
    "pneumonia",
    "atelectasis",
    "pneumothorax",
    "pleural_effusion",
    "pleural_other",
    "fracture",
    "support_devices",
    "infiltration",
    "mass",
    "nodule",
    "emphysema",
    "fibrosis",
    "pleural_thickening",
    "hernia",
)

# -- CheXpert (Irvin et al. 2019): the 14 observation columns of train.csv / valid.csv --
CHEXPERT_COLUMNS: dict[str, str] = {
    "No Finding": "no_finding",
    "Enlarged Cardiomediastinum": "enlarged_cardiomediastinum",
    "Cardiomegaly": "cardiomegaly",
    "Lung Opacity": "lung_opacity",
    "Lung Lesion": "lung_lesion",
    "Edema": "edema",
    "Consolidation": "consolidation",
    "Pneumonia": "pneumonia",
    "Atelectasis": "atelectasis",
    "Pneumothorax": "pneumothorax",
    "Pleural Effusion": "pleural_effusion",
    "Pleural Other": "pleural_other",
    "Fracture": "fracture",
    "Support Devices": "support_devices",
}
#: The five CheXpert competition labels, the headline evaluation set.
CHEXPERT_EVAL_LABELS: tuple[str, ...] = (
    "atelectasis",
    "cardiomegaly",
    "consolidation",
    "edema",
    "pleural_effusion",
)

# -- NIH ChestX-ray14 (Wang et al., CVPR 2017): tokens of the ``Finding Labels`` column --
NIH_FINDINGS: dict[str, str] = {
    "Atelectasis": "atelectasis",
    "Cardiomegaly": "cardiomegaly",
    "Effusion": "pleural_effusion",
    "Infiltration": "infiltration",
    "Mass": "mass",
    "Nodule": "nodule",
    "Pneumonia": "pneumonia",
    "Pneumothorax": "pneumothorax",
    "Consolidation": "consolidation",
    "Edema": "edema",
    "Emphysema": "emphysema",
    "Fibrosis": "fibrosis",
    "Pleural_Thickening": "pleural_thickening",
    "Hernia": "hernia",
}
NIH_NO_FINDING = "No Finding"
NIH_EVAL_LABELS: tuple[str, ...] = tuple(NIH_FINDINGS.values())

# -- Indiana / OpenI (Demner-Fushman et al., JAMIA 2016): MeSH terms of the reports --
#: Lower-cased MeSH ``major`` / ``automatic`` terms → harmonized label. A term is matched on
#: its full text first (``cardiac shadow/enlarged``), then on its first ``/`` component
#: (``pleural effusion/right`` → ``pleural effusion``). Terms not listed (anatomy such as
#: ``lung/hypoinflation``, ``aorta/tortuous``, ``calcified granuloma``, ``scoliosis``) carry
#: no harmonized label. ``normal`` marks a report with no finding.
INDIANA_TERMS: dict[str, str] = {
    # cardiac / mediastinum
    "cardiomegaly": "cardiomegaly",
    "cardiac shadow/enlarged": "cardiomegaly",
    "mediastinum/enlarged": "enlarged_cardiomediastinum",
    "mediastinum/prominent": "enlarged_cardiomediastinum",
    # lung parenchyma
    "opacity": "lung_opacity",
    "density": "lung_opacity",
    "airspace disease": "lung_opacity",
    "consolidation": "consolidation",
    "pneumonia": "pneumonia",
    "pulmonary atelectasis": "atelectasis",
    "atelectasis": "atelectasis",
    "atelectases": "atelectasis",
    "pulmonary edema": "edema",
    "edema": "edema",
    "edemas": "edema",
    "pulmonary congestion": "edema",  # the CheXpert labeler counts vascular congestion as edema
    "infiltrate": "infiltration",
    "infiltrates": "infiltration",
    "nodule": "nodule",
    "nodules": "nodule",
    "mass": "mass",
    "emphysema": "emphysema",
    "emphysemas": "emphysema",
    "pulmonary emphysema": "emphysema",
    "bullous emphysema": "emphysema",
    "pulmonary fibrosis": "fibrosis",
    "fibrosis": "fibrosis",
    "lung diseases, interstitial": "fibrosis",
    "cavitation": "lung_lesion",
    "cysts": "lung_lesion",
    # pleura
    "pleural effusion": "pleural_effusion",
    "pleural effusions": "pleural_effusion",
    "bilateral pleural effusion": "pleural_effusion",
    "effusion": "pleural_effusion",
    "pneumothorax": "pneumothorax",
    "hydropneumothorax": "pneumothorax",
    "hemopneumothorax": "pneumothorax",
    "thickening/pleura": "pleural_thickening",
    "pleural thickening": "pleural_thickening",
    # other
    "hernia, hiatal": "hernia",
    "hiatal hernia": "hernia",
    "hernia, diaphragmatic": "hernia",
    "fractures, bone": "fracture",
    "fracture": "fracture",
    "rib fracture": "fracture",
    "rib fractures": "fracture",
    "catheters, indwelling": "support_devices",
    "catheterization, central venous": "support_devices",
    "implanted medical device": "support_devices",
    "medical device": "support_devices",
    "tube, inserted": "support_devices",
    "pacemaker, artificial": "support_devices",
    "stents": "support_devices",
}
INDIANA_NORMAL_TERM = "normal"
INDIANA_UNINDEXED_TERM = "no indexing"
#: Indiana labels the index carries: every label some term maps to, plus no_finding.
INDIANA_LABELS: tuple[str, ...] = tuple(
    lab for lab in HARMONIZED_LABELS if lab == "no_finding" or lab in set(INDIANA_TERMS.values())
)
#: Rule for Indiana's evaluation set: a pathology label (``no_finding`` excluded) is evaluated
#: when at least this many reports *with images* carry it, so the 20 % test split keeps ~20
#: positive patients. On the real collection (torchxrayvision's NLMCXR_reports.tgz: 3,955
#: reports, 3,851 with images, 7,470 images) the positive-report counts, from the manual MeSH
#: terms (see :mod:`chexbench.datasets.indiana`), are asserted by the tests; the next labels
#: below the threshold are edema (92) and fracture (83).
INDIANA_MIN_POSITIVE_REPORTS = 100
INDIANA_EVAL_LABELS: tuple[str, ...] = (
    "cardiomegaly",  # 364 positive reports
    "lung_opacity",  # 596
    "atelectasis",  # 315
    "pleural_effusion",  # 149
    "support_devices",  # 236
    "nodule",  # 106
    "emphysema",  # 100
)


def indiana_term_label(term: str) -> str | None:
    """The harmonized label of one MeSH term (``Pleural Effusion/right`` → ``pleural_effusion``)."""
    t = " ".join(term.strip().lower().split())
    if t in INDIANA_TERMS:
        return INDIANA_TERMS[t]
    parts = t.split("/")
    if len(parts) > 1:
        two = "/".join(parts[:2])
        if two in INDIANA_TERMS:
            return INDIANA_TERMS[two]
    return INDIANA_TERMS.get(parts[0].strip())


# -- uncertainty policies -----------------------------------------------------------------
UNCERTAINTY_POLICIES: tuple[str, ...] = ("ignore", "zeros", "ones", "mixed")
#: CheXpert paper, Table 2: U-Ones was best for these labels, U-Zeros for the others.
MIXED_U_ONES: frozenset[str] = frozenset({"atelectasis", "edema"})


def apply_uncertainty(values: np.ndarray, labels: list[str] | tuple[str, ...], policy: str) -> np.ndarray:
    """Training targets from raw label values under an uncertainty policy.

    values: float (N, L) with 1 / 0 / -1 / NaN, columns named by ``labels``.
    Returns float32 (N, L) with 1 / 0 / NaN (masked); the input is not modified.
    """
    if policy not in UNCERTAINTY_POLICIES:
        raise ConfigError(f"unknown uncertainty policy '{policy}' (known: {', '.join(UNCERTAINTY_POLICIES)})")
    out = np.array(values, dtype=np.float32, copy=True)
    if out.ndim != 2 or out.shape[1] != len(labels):
        raise ValueError(f"values must be (N, {len(labels)}), got {out.shape}")
    uncertain = out == -1.0
    if policy == "ignore":
        out[uncertain] = np.nan
    elif policy == "zeros":
        out[uncertain] = 0.0
    elif policy == "ones":
        out[uncertain] = 1.0
    else:
        ones = np.array([lab in MIXED_U_ONES for lab in labels], dtype=bool)
        out[uncertain & ones[None, :]] = 1.0
        out[uncertain & ~ones[None, :]] = 0.0
    return out


# -- blanks ------------------------------------------------------------------------------
#: A blank is "not mentioned": 0 under ``not_mentioned = "negative"``, masked under "ignore".
BLANK_NOT_MENTIONED = "not_mentioned"
#: A blank is "no label information": always masked.
BLANK_UNKNOWN = "unknown"
BLANK_MEANINGS: tuple[str, ...] = (BLANK_NOT_MENTIONED, BLANK_UNKNOWN)
NOT_MENTIONED_SETTINGS: tuple[str, ...] = ("negative", "ignore")


def blank_is_negative(blank_label_means: str, not_mentioned: str) -> bool:
    """Whether a blank label becomes 0 under a dataset's convention and ``settings.not_mentioned``."""
    if not_mentioned not in NOT_MENTIONED_SETTINGS:
        raise ConfigError(
            f"unknown not_mentioned setting '{not_mentioned}' (known: {', '.join(NOT_MENTIONED_SETTINGS)})"
        )
    if blank_label_means not in BLANK_MEANINGS:
        raise ConfigError(
            f"unknown blank_label_means '{blank_label_means}' (known: {', '.join(BLANK_MEANINGS)})"
        )
    return blank_label_means == BLANK_NOT_MENTIONED and not_mentioned == "negative"


def training_targets(
    values: np.ndarray,
    labels: list[str] | tuple[str, ...],
    uncertainty: str,
    not_mentioned: str,
    blank_label_means: str,
) -> np.ndarray:
    """Targets from raw label values: the uncertainty policy, then the blank rule (module docstring).

    values: float (N, L) with 1 / 0 / -1 / NaN. Returns float32 (N, L) with 1 / 0 / NaN (masked).
    """
    out = apply_uncertainty(values, labels, uncertainty)
    if blank_is_negative(blank_label_means, not_mentioned):
        out[np.isnan(np.asarray(values, dtype=np.float64))] = 0.0
    return out


def has_usable_label(targets: np.ndarray) -> np.ndarray:
    """bool (N,): rows of ``targets`` (N, L) with at least one target that is not masked."""
    return ~np.isnan(targets).all(axis=1) if targets.shape[1] else np.zeros(len(targets), dtype=bool)
