"""Indiana University chest X-ray collection / OpenI NLMCXR (Demner-Fushman et al., JAMIA 2016).

Layout::

    ROOT/ecgen-radiology/*.xml      one report (= one study) per file; or ROOT/NLMCXR_reports.tgz
    ROOT/**/<parentImage id>.png    e.g. NLMCXR_png/CXR1_1_IM-0001-3001.png (anywhere under ROOT;
                                    the Kaggle naming 1_IM-0001-3001.dcm.png is accepted too)
    ROOT/indiana_projections.csv    optional: uid, filename, projection (Frontal / Lateral)
    ROOT/nlmcxr_tsne_pa.csv         optional (.gz accepted): imageid, tsne-view (PA / L)
    ROOT/nlmcxr_dicom_metadata.csv  optional (.gz accepted): imageid, View Position

Labels come from the report's manually assigned MeSH terms (``<major>``) through the table in
:data:`chexbench.datasets.labels.INDIANA_TERMS`: a label is 1 when some term maps to it and 0
otherwise (the MeSH list of a report enumerates its findings); ``no_finding`` is 1 when the
report is indexed ``normal`` and no other label is positive. The ``<automatic>`` terms (the
Medical Text Indexer's, Demner-Fushman et al. 2016) are not used: they include findings the
report denies ("No pleural effusions or pneumothorax" → Pleural Effusion) or only hedges, and
made 62 of 374 atelectasis and 29 of 177 pleural-effusion positives on the real collection.
A report indexed only as ``No Indexing`` (or with no MeSH terms) has every label NaN: the
dataset declares its blanks as ``unknown`` (``blank_label_means``), so they stay masked and
such images are left out of every split of a cell (never counted as negatives; see
:mod:`chexbench.datasets.labels`).

Patients: the collection is de-identified per report, so each report (``uId``, e.g. CXR1)
is taken as its own patient and study.

Views, first source that names the image: (1) ``indiana_projections.csv``; (2) the
image-based view of ``nlmcxr_tsne_pa.csv`` (torchxrayvision's t-SNE clustering of each
report's first image: PA or L); (3) the DICOM ``View Position`` in ``nlmcxr_dicom_metadata.csv``
(PA / AP frontal, LL / RL / LATERAL lateral; entered at acquisition, and where it and the
t-SNE view disagree the pixels are taken); (4) for images no source names, a rule on the
report's order of images: if no image of the report is known to be frontal, its first unnamed
image is taken as ``FRONTAL``, every other one as ``LATERAL``. The rule alone is wrong for
about one report in seven: on the real collection 584 of 3,851 first images are laterals by
the t-SNE view (129 by DICOM, all among them) — so give the loader one of the files above.

Split: no official split; patients are split 70 / 10 / 20 % (train / valid / test) by a
permutation of the sorted report ids with the fixed seed ``INDIANA_SPLIT_SEED``.
"""

from __future__ import annotations

import os
import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from chexbench.core.errors import DataError
from chexbench.datasets.base import INDEX_META_COLUMNS, Dataset
from chexbench.datasets.labels import (
    BLANK_UNKNOWN,
    INDIANA_EVAL_LABELS,
    INDIANA_LABELS,
    INDIANA_NORMAL_TERM,
    INDIANA_UNINDEXED_TERM,
    indiana_term_label,
)
from chexbench.datasets.splits import assign_patient_splits

INDIANA_SPLIT = {"train": 0.7, "valid": 0.1, "test": 0.2}
INDIANA_SPLIT_SEED = 2016
REPORT_DIR = "ecgen-radiology"
REPORT_TGZ = "NLMCXR_reports.tgz"
_LATERAL = {"LL", "RL", "LATERAL", "LARGE LATERAL", "LAT"}
#: the MeSH tags labels come from: the manual indexing only (module docstring)
INDIANA_LABEL_TAGS = ("major",)
#: the view sources, most trusted first (module docstring); part of the index fingerprint
INDIANA_VIEW_SOURCES = (
    "indiana_projections.csv",
    "nlmcxr_tsne_pa.csv",
    "nlmcxr_dicom_metadata.csv",
    "order rule",
)


def _iter_reports(root: Path) -> Iterator[tuple[str, bytes]]:
    folder = root / REPORT_DIR
    if folder.is_dir():
        for name in sorted(os.listdir(folder)):
            if name.endswith(".xml"):
                yield str(folder / name), (folder / name).read_bytes()
        return
    tgz = root / REPORT_TGZ
    if tgz.is_file():
        with tarfile.open(tgz) as tar:
            for m in sorted(tar.getmembers(), key=lambda m: m.name):
                if m.isfile() and m.name.endswith(".xml"):
                    f = tar.extractfile(m)
                    if f is not None:
                        yield f"{tgz}:{m.name}", f.read()
        return
    raise DataError(f"Indiana root {root}: neither {REPORT_DIR}/ nor {REPORT_TGZ} found")


def parse_report(name: str, data: bytes) -> dict:
    """One report XML → ``{"report_id", "terms", "automatic", "images"}``: the manual MeSH terms
    (the labels' source), the indexer's automatic ones (kept for inspection, not used), the images
    in document order."""
    try:
        doc = ET.fromstring(data)
    except ET.ParseError as e:
        raise DataError(f"{name}: invalid XML: {e}") from None
    uid = doc.find("uId")
    if uid is None or not uid.get("id"):
        raise DataError(f"{name}: no <uId id=...> element")

    def texts(tags: tuple[str, ...]) -> list[str]:
        return [t.text.strip() for tag in tags for t in doc.iter(tag) if t.text and t.text.strip()]

    images = [p.get("id") for p in doc.findall("parentImage") if p.get("id")]
    return {
        "report_id": uid.get("id"),
        "terms": texts(INDIANA_LABEL_TAGS),
        "automatic": texts(("automatic",)),
        "images": images,
    }


def report_labels(terms: list[str]) -> dict[str, float]:
    """Harmonized label values of one report from its MeSH terms (rule in the module docstring)."""
    lowered = {" ".join(t.lower().split()) for t in terms}
    if not (lowered - {INDIANA_UNINDEXED_TERM}):
        return {lab: np.nan for lab in INDIANA_LABELS}
    out = {lab: 0.0 for lab in INDIANA_LABELS}
    for t in terms:
        lab = indiana_term_label(t)
        if lab is not None:
            out[lab] = 1.0
    others = any(v == 1.0 for k, v in out.items() if k != "no_finding")
    out["no_finding"] = (
        1.0 if INDIANA_NORMAL_TERM in {t.split("/")[0] for t in lowered} and not others else 0.0
    )
    return out


def _find_pngs(root: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            if f.lower().endswith(".png"):
                stem = f[:-4]
                stem = stem[:-4] if stem.endswith(".dcm") else stem
                rel = str(Path(dirpath, f).relative_to(root))
                found.setdefault(stem, rel)
    return found


def _view_table(root: Path) -> dict[str, str]:
    """``{image id: view}`` from the view files present, the more trusted source winning (module
    docstring)."""
    out: dict[str, str] = {}
    for name in (
        "nlmcxr_dicom_metadata.csv",
        "nlmcxr_dicom_metadata.csv.gz",
    ):  # least trusted first: overwritten
        meta = root / name
        if meta.is_file():
            df = pd.read_csv(meta, usecols=["imageid", "View Position"], dtype=str)
            for img, vp in zip(df["imageid"], df["View Position"].fillna(""), strict=True):
                vp = vp.strip().upper()
                if vp in ("PA", "AP"):
                    out[img] = vp
                elif vp in _LATERAL:
                    out[img] = "LATERAL"
            break
    for name in ("nlmcxr_tsne_pa.csv", "nlmcxr_tsne_pa.csv.gz"):
        tsne = root / name
        if tsne.is_file():
            df = pd.read_csv(tsne, dtype=str)
            if not {"imageid", "tsne-view"} <= set(df.columns):
                raise DataError(f"{tsne}: missing column 'imageid' or 'tsne-view'")
            for img, v in zip(df["imageid"], df["tsne-view"].fillna("").str.strip().str.upper(), strict=True):
                if v in ("PA", "L"):
                    out[img] = "PA" if v == "PA" else "LATERAL"
                elif v:
                    raise DataError(f"{tsne}: view {v!r} of {img} is neither PA nor L")
            break
    proj = root / "indiana_projections.csv"
    if proj.is_file():
        df = pd.read_csv(proj, dtype=str)
        if not {"filename", "projection"} <= set(df.columns):
            raise DataError(f"{proj}: missing column 'filename' or 'projection'")
        stems = df["filename"].str.replace(r"(\.dcm)?\.png$", "", regex=True)
        views = np.where(df["projection"].str.strip().str.lower().eq("lateral"), "LATERAL", "FRONTAL")
        out.update(
            {("CXR" + s if not s.startswith("CXR") else s): v for s, v in zip(stems, views, strict=True)}
        )
    return out


def report_views(images: list[str], known: dict[str, str]) -> list[str]:
    """The view of each image of one report: from ``known`` where it names the image; otherwise,
    when no image of the report is known to be frontal, the first unnamed one is ``FRONTAL`` and
    every other unnamed one ``LATERAL`` (the order rule of the module docstring)."""
    views = [known.get(img) for img in images]
    need_frontal = not any(v is not None and v != "LATERAL" for v in views)
    out = []
    for v in views:
        if v is None:
            v = "FRONTAL" if need_frontal else "LATERAL"
            need_frontal = False
        out.append(v)
    return out


def load_indiana_index(root: Path, seed: int = INDIANA_SPLIT_SEED) -> pd.DataFrame:
    """The Indiana index of ``root`` (schema in :mod:`chexbench.datasets.base`)."""
    root = Path(root)
    pngs = _find_pngs(root)
    views = _view_table(root)
    rows = []
    for name, data in _iter_reports(root):
        rep = parse_report(name, data)
        labels = report_labels(rep["terms"])
        for img, view in zip(rep["images"], report_views(rep["images"], views), strict=True):
            stem_kaggle = img[3:] if img.startswith("CXR") else img
            path = pngs.get(img) or pngs.get(stem_kaggle) or f"NLMCXR_png/{img}.png"
            rows.append(
                {
                    "image_id": img,
                    "patient_id": rep["report_id"],
                    "study_id": rep["report_id"],
                    "path": path,
                    "view": view,
                    "sex": "U",
                    "age": np.nan,
                    **labels,
                }
            )
    if not rows:
        raise DataError(f"Indiana root {root}: the reports list no images")
    index = pd.DataFrame(rows)
    dup = index["image_id"].duplicated()
    if dup.any():
        raise DataError(
            f"Indiana root {root}: image '{index['image_id'][dup].iloc[0]}' is listed by two reports"
        )
    index["split"] = assign_patient_splits(index["patient_id"].to_numpy(), INDIANA_SPLIT, seed)
    return index[[*INDEX_META_COLUMNS, *INDIANA_LABELS]]


class Indiana(Dataset):
    """Indiana University / OpenI chest X-rays: 3,955 reports, ~7.5k images, MeSH-coded findings."""

    name = "indiana"
    labels = INDIANA_LABELS
    eval_labels = INDIANA_EVAL_LABELS
    # blanks are only those of unindexed reports: no label information, never a negative
    blank_label_means = BLANK_UNKNOWN
    split_rule = f"patients split train/valid/test {INDIANA_SPLIT} (seed {INDIANA_SPLIT_SEED})"

    def load_index(self, root: Path) -> pd.DataFrame:
        return load_indiana_index(root)

    def label_files(self, root: Path) -> list[Path]:
        root = Path(root)
        folder = root / REPORT_DIR
        # every report of a folder (a report edited in place changes neither the folder's size nor its mtime)
        files = sorted(folder.glob("*.xml")) if folder.is_dir() else [root / REPORT_TGZ]
        files += [root / f for name in INDIANA_VIEW_SOURCES[:-1] for f in (name, f"{name}.gz")]
        return [f for f in files if f.is_file()]
