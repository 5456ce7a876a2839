"""From drawn findings to each layout's native label encoding.

The same study gets different label *files* at each site, as real labelers differ:
CheXpert's NLP labeler writes 1.0 / -1.0 (uncertain: a subtle finding) / 0.0 (explicitly
negative) / blank (not mentioned); NIH's writes a ``|``-joined list of positive names;
Indiana's reports carry MeSH major terms with side and severity modifiers.
"""

from __future__ import annotations

import numpy as np

from chexbench.datasets.phantom._site_tables import SITE_STATS
from chexbench.datasets.phantom.cohort import OPACITIES, Study
from chexbench.datasets.phantom.findings import BILATERAL, Finding

#: CheXpert label columns in file order, with the drawn findings each one is positive for
CHEXPERT_LABEL_COLUMNS: dict[str, tuple[str, ...]] = {
    "No Finding": (),
    "Enlarged Cardiomediastinum": ("enlarged_cardiomediastinum",),
    "Cardiomegaly": ("cardiomegaly",),
    "Lung Opacity": tuple(sorted(OPACITIES)),
    "Lung Lesion": ("nodule", "mass"),
    "Edema": ("edema",),
    "Consolidation": ("consolidation",),
    "Pneumonia": ("pneumonia",),
    "Atelectasis": ("atelectasis",),
    "Pneumothorax": ("pneumothorax",),
    "Pleural Effusion": ("pleural_effusion",),
    "Pleural Other": (),
    "Fracture": ("fracture",),
    "Support Devices": ("support_devices",),
}
#: harmonized labels a CheXpert-layout phantom carries (drawn, with a column)
CHEXPERT_HARMONIZED: tuple[str, ...] = (
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
    "fracture",
    "support_devices",
)
#: NIH names (Data_Entry ``Finding Labels``) for each drawn finding
NIH_NAMES: dict[str, str] = {
    "atelectasis": "Atelectasis",
    "cardiomegaly": "Cardiomegaly",
    "pleural_effusion": "Effusion",
    "infiltration": "Infiltration",
    "mass": "Mass",
    "nodule": "Nodule",
    "pneumonia": "Pneumonia",
    "pneumothorax": "Pneumothorax",
    "consolidation": "Consolidation",
    "edema": "Edema",
    "emphysema": "Emphysema",
    "fibrosis": "Fibrosis",
    "pleural_thickening": "Pleural_Thickening",
    "hernia": "Hernia",
}
#: NIH BBox_List_2017.csv names (the box file says "Infiltrate")
NIH_BOX_NAMES: dict[str, str] = {
    "atelectasis": "Atelectasis",
    "cardiomegaly": "Cardiomegaly",
    "pleural_effusion": "Effusion",
    "infiltration": "Infiltrate",
    "mass": "Mass",
    "nodule": "Nodule",
    "pneumonia": "Pneumonia",
    "pneumothorax": "Pneumothorax",
}
#: Indiana MeSH major term heads for each drawn finding
INDIANA_TERMS: dict[str, str] = {
    "cardiomegaly": "Cardiomegaly",
    "atelectasis": "Pulmonary Atelectasis",
    "pleural_effusion": "Pleural Effusion",
    "lung_opacity": "Opacity",
    "nodule": "Nodule",
    "mass": "Mass",
    "consolidation": "Consolidation",
    "pneumonia": "Pneumonia",
    "pneumothorax": "Pneumothorax",
    "edema": "Pulmonary Edema",
    "emphysema": "Pulmonary Emphysema",
    "hernia": "Hernia, Hiatal",
    "fracture": "Fractures, Bone",
    "infiltration": "Infiltrate",
    "fibrosis": "Pulmonary Fibrosis",
    "support_devices": "Catheters, Indwelling",
}


def chexpert_values(study: Study, rng: np.random.Generator, certain: bool = False) -> dict[str, str]:
    """The 14 CheXpert label cells of one study: ``"1.0"``, ``"-1.0"``, ``"0.0"`` or ``""``.

    A column is uncertain when every drawn finding behind it is subtle. ``certain`` (the
    radiologist-labelled ``valid.csv``) writes only 1.0 / 0.0, every cell filled.
    """
    stats = SITE_STATS["chexpert"]
    by_name: dict[str, list[Finding]] = {}
    for f in study.findings:
        by_name.setdefault(f.name, []).append(f)
    out: dict[str, str] = {}
    pathology = False
    for column, drawn in CHEXPERT_LABEL_COLUMNS.items():
        if column == "No Finding":
            continue
        hits = [f for name in drawn for f in by_name.get(name, [])]
        if hits:
            subtle = all(f.subtle for f in hits)
            out[column] = "1.0" if certain or not subtle else "-1.0"
            pathology |= column != "Support Devices"
        else:
            harmonized = _chexpert_harmonized(column)
            p0 = (
                stats["negative_given_absent"][stats["labels"].index(harmonized)]
                if harmonized in stats["labels"]
                else 0.0
            )
            out[column] = "0.0" if certain or rng.random() < p0 else ""
    no_finding = "1.0" if not pathology else ("0.0" if certain else "")
    return {"No Finding": no_finding, **out}


def _chexpert_harmonized(column: str) -> str:
    return column.lower().replace(" ", "_")


def nih_finding_labels(study: Study) -> str:
    """``Finding Labels`` of one image: positive NIH names joined by ``|`` (sorted), or ``No Finding``."""
    names = sorted({NIH_NAMES[f.name] for f in study.findings if f.name in NIH_NAMES})
    return "|".join(names) if names else "No Finding"


def indiana_major_terms(study: Study) -> list[str]:
    """MeSH major terms of one report, e.g. ``Pleural Effusion/right/small``, or ``["normal"]``."""
    terms = []
    for f in study.findings:
        head = INDIANA_TERMS.get(f.name)
        if head is None:
            continue
        parts = [head]
        if f.name not in ("cardiomegaly", "edema", "emphysema", "hernia", "support_devices"):
            parts.append({0: "right", 1: "left", BILATERAL: "bilateral"}[f.side])
        if f.subtle:
            parts.append("mild" if f.name != "pleural_effusion" else "small")
        terms.append("/".join(parts))
    return sorted(terms) if terms else ["normal"]
