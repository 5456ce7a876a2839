"""Label statistics of the real datasets, from the label files shipped in ``torchxrayvision``.

The generator samples each site's findings from these statistics (label co-occurrence
patterns, uncertainty and explicit-negative rates, sex / age / view mix). They are computed
once at development time and embedded in :mod:`._site_tables` (so generation needs neither
``torchxrayvision`` nor the files); a test recomputes them and checks the embedded copy::

    python -m chexbench.datasets.phantom.real_stats > src/chexbench/datasets/phantom/_site_tables.py
"""

from __future__ import annotations

import io
import pprint
import re
import tarfile
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chexbench.datasets.fixtures import real_label_file
from chexbench.datasets.labels import CHEXPERT_COLUMNS as LOADER_CHEXPERT_COLUMNS
from chexbench.datasets.labels import NIH_FINDINGS

#: CheXpert native label columns → harmonized names (findings the phantom draws: the loader's
#: table without "No Finding", which follows from the others, and "Pleural Other")
CHEXPERT_COLUMNS: dict[str, str] = {
    column: label
    for column, label in LOADER_CHEXPERT_COLUMNS.items()
    if label not in ("no_finding", "pleural_other")
}
#: NIH ``Finding Labels`` names → harmonized names
NIH_LABELS: dict[str, str] = NIH_FINDINGS
#: Indiana MeSH ``major`` term heads (text before the first '/') → harmonized names
INDIANA_TERMS: dict[str, str] = {
    "Cardiomegaly": "cardiomegaly",
    "Pulmonary Atelectasis": "atelectasis",
    "Pleural Effusion": "pleural_effusion",
    "Opacity": "lung_opacity",
    "Airspace Disease": "lung_opacity",
    "Nodule": "nodule",
    "Mass": "mass",
    "Consolidation": "consolidation",
    "Pneumonia": "pneumonia",
    "Pneumothorax": "pneumothorax",
    "Pulmonary Edema": "edema",
    "Emphysema": "emphysema",
    "Pulmonary Emphysema": "emphysema",
    "Hernia, Hiatal": "hernia",
    "Fractures, Bone": "fracture",
    "Infiltrate": "infiltration",
    "Pulmonary Fibrosis": "fibrosis",
    "Catheters, Indwelling": "support_devices",
    "Implanted Medical Device": "support_devices",
    "Tube, Inserted": "support_devices",
    "Medical Device": "support_devices",
    "Surgical Instruments": "support_devices",
    "Stents": "support_devices",
}
MAX_PATTERNS = 400


def torchxrayvision_data_dir() -> Path:
    """torchxrayvision's ``data/`` folder, found without importing the package."""
    return real_label_file("chexpert").parent


def _patterns(present: np.ndarray) -> list[tuple[int, int]]:
    """Most frequent label-combination bitmasks of a boolean (N, L) matrix, as (mask, count)."""
    bits = (present.astype(np.int64) << np.arange(present.shape[1])).sum(axis=1)
    return Counter(bits.tolist()).most_common(MAX_PATTERNS)


def chexpert_stats(data_dir: Path) -> dict[str, Any]:
    df = pd.read_csv(data_dir / "chexpert_train.csv.gz")
    frontal = df[df["Frontal/Lateral"] == "Frontal"]
    values = frontal[list(CHEXPERT_COLUMNS)].to_numpy(dtype=float)
    present = (values == 1) | (values == -1)
    absent = ~present
    study = df["Path"].str.extract(r"(patient\d+/study\d+)/")[0]
    per_patient = (
        df.assign(study=study, patient=study.str.split("/").str[0]).groupby("patient")["study"].nunique()
    )
    view_age = _view_and_age_models(present, frontal["AP/PA"].eq("AP").to_numpy(), frontal["Age"].to_numpy())
    return {
        **view_age,
        "labels": list(CHEXPERT_COLUMNS.values()),
        "patterns": _patterns(present),
        "uncertain_given_present": (
            np.round((values == -1).sum(0) / np.maximum(present.sum(0), 1), 4).tolist()
        ),
        "negative_given_absent": np.round((values == 0).sum(0) / np.maximum(absent.sum(0), 1), 4).tolist(),
        "female": round(float((frontal["Sex"] == "Female").mean()), 4),
        "age_mean": round(float(frontal["Age"].mean()), 2),
        "age_sd": round(float(frontal["Age"].std()), 2),
        "ap_given_frontal": round(float((frontal["AP/PA"] == "AP").mean()), 4),
        "lateral_per_study": round(float((df["Frontal/Lateral"] == "Lateral").sum() / study.nunique()), 4),
        "studies_per_patient": _count_hist(per_patient.to_numpy()),
    }


def nih_stats(data_dir: Path) -> dict[str, Any]:
    df = pd.read_csv(data_dir / "Data_Entry_2017_v2020.csv.gz")
    names = list(NIH_LABELS)
    split = df["Finding Labels"].str.split("|")
    present = np.array([[n in labels for n in names] for labels in split], dtype=bool)
    view_age = _view_and_age_models(
        present, df["View Position"].eq("AP").to_numpy(), df["Patient Age"].clip(upper=100).to_numpy()
    )
    return {
        **view_age,
        "labels": list(NIH_LABELS.values()),
        "patterns": _patterns(present),
        "female": round(float((df["Patient Gender"] == "F").mean()), 4),
        "age_mean": round(float(df["Patient Age"].clip(upper=100).mean()), 2),
        "age_sd": round(float(df["Patient Age"].clip(upper=100).std()), 2),
        "ap_given_frontal": round(float((df["View Position"] == "AP").mean()), 4),
        "studies_per_patient": _count_hist(df.groupby("Patient ID").size().to_numpy()),
    }


def indiana_reports(data_dir: Path) -> list[tuple[list[str], int]]:
    """(MeSH ``major`` terms, number of images) of every report with images in ``NLMCXR_reports.tgz``."""
    out = []
    with tarfile.open(data_dir / "NLMCXR_reports.tgz") as tar:
        for member in tar:
            if not member.name.endswith(".xml"):
                continue
            root = ET.parse(io.BytesIO(tar.extractfile(member).read())).getroot()
            if root.find("parentImage") is None:
                continue
            out.append(([m.text or "" for m in root.iter("major")], len(root.findall("parentImage"))))
    return out


def indiana_stats(data_dir: Path) -> dict[str, Any]:
    labels = sorted(set(INDIANA_TERMS.values()))
    parsed = indiana_reports(data_dir)
    reports = [terms for terms, _ in parsed]
    n_images = np.array([n for _, n in parsed])
    present = np.zeros((len(reports), len(labels)), dtype=bool)
    for i, terms in enumerate(reports):
        for term in terms:
            head = term.split("/")[0].strip()
            if head in INDIANA_TERMS:
                present[i, labels.index(INDIANA_TERMS[head])] = True
    modifiers = Counter(
        part
        for terms in reports
        for t in terms
        for part in t.split("/")[1:]
        if re.fullmatch(r"[a-z ]+", part)
    )
    return {
        "labels": labels,
        "patterns": _patterns(present),
        "normal": round(float(np.mean([terms == ["normal"] for terms in reports])), 4),
        "lateral_per_study": round(float(np.mean(n_images >= 2)), 4),
        "top_modifiers": [m for m, _ in modifiers.most_common(12)],
    }


def _view_and_age_models(present: np.ndarray, ap: np.ndarray, age: np.ndarray) -> dict[str, Any]:
    """How view and age depend on the findings in a real file: one row per frontal image.

    ``view_logit``: intercept, then one coefficient per label, of a logistic regression of
    "AP" on the labels present (maximum likelihood, statsmodels); ``age_given_labels``:
    intercept, one coefficient per label, and the residual standard deviation of a least-squares
    fit of age on the labels present. The phantom draws a frontal view and a patient's age from
    these (cohort.py, ``dependencies = "published"``), so AP films carry more support devices,
    edema and effusion, and cardiomegaly and effusion rise with age, by the real amounts.
    """
    import statsmodels.api as sm

    design = sm.add_constant(present.astype(float), has_constant="add")
    view = sm.Logit(ap.astype(float), design).fit(method="newton", disp=False, maxiter=100)
    keep = np.isfinite(age)
    ols = sm.OLS(age[keep].astype(float), design[keep]).fit()
    return {
        "view_logit": np.round(view.params, 3).tolist(),
        "age_given_labels": np.round(ols.params, 2).tolist(),
        "age_residual_sd": round(float(np.sqrt(ols.scale)), 2),
    }


def _count_hist(counts: np.ndarray, cap: int = 5) -> list[float]:
    """Fraction of patients with 1..cap studies (the tail folded into ``cap``)."""
    c = np.clip(counts, 1, cap)
    return [round(float((c == k).mean()), 4) for k in range(1, cap + 1)]


def all_stats(data_dir: Path | None = None) -> dict[str, dict[str, Any]]:
    d = data_dir or torchxrayvision_data_dir()
    return {"chexpert": chexpert_stats(d), "nih": nih_stats(d), "indiana": indiana_stats(d)}


def render_module(stats: dict[str, dict[str, Any]]) -> str:
    header = '"""Generated by ``python -m chexbench.datasets.phantom.real_stats``; do not edit."""\n\n'
    return header + "SITE_STATS = " + pprint.pformat(stats, width=110, compact=True, sort_dicts=True) + "\n"


if __name__ == "__main__":
    print(render_module(all_stats()), end="")
