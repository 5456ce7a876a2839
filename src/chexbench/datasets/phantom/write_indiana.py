"""Indiana University / OpenI (NLMCXR) native layout: report XMLs and PNGs by image id.

::

    <root>/ecgen-radiology/1.xml                  one report = one study, as the real files:
                                                  <uId id="CXR1"/>, AbstractText FINDINGS /
                                                  IMPRESSION, <MeSH><major>Pleural Effusion/right
                                                  </major>…, <parentImage id="CXR1_1_IM-0001-3001">
    <root>/NLMCXR_png/CXR1_1_IM-0001-3001.png     frontal (listed first, as OpenI does)
    <root>/NLMCXR_png/CXR1_1_IM-0001-4001.png     lateral, when the study has one
    <root>/phantom_boxes.csv                      sidecar boxes; ``image`` is the image id

The collection is de-identified per report, so every study becomes its own report number;
follow-up studies of one phantom patient are not linkable, exactly as in the real data.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from chexbench.datasets.phantom.cohort import Patient, Study
from chexbench.datasets.phantom.labels import indiana_major_terms
from chexbench.datasets.phantom.output import ImageJob, SiteWriter

REPORT_DIR = "ecgen-radiology"
PNG_DIR = "NLMCXR_png"
XML_DECLARATION = '<?xml version="1.0" encoding="utf-8"?>\n'

_SENTENCES: dict[str, str] = {
    "cardiomegaly": "The heart is enlarged.",
    "pleural_effusion": "There is a {side} pleural effusion.",
    "pneumothorax": "There is a {side} pneumothorax.",
    "consolidation": "Focal consolidation in the {side} lung.",
    "pneumonia": "Patchy airspace disease in the {side} lung, compatible with pneumonia.",
    "edema": "Perihilar haziness consistent with pulmonary edema.",
    "atelectasis": "Linear {side} basilar atelectasis.",
    "nodule": "A nodule projects over the {side} lung.",
    "mass": "A mass in the {side} lung.",
    "infiltration": "Hazy {side} infiltrate.",
    "lung_opacity": "Opacity in the {side} lung.",
    "emphysema": "The lungs are hyperexpanded with flattened diaphragms, consistent with emphysema.",
    "fibrosis": "Coarse reticular opacities at the lung bases.",
    "hernia": "Retrocardiac soft tissue density with an air-fluid level, a hiatal hernia.",
    "fracture": "Healed {side} rib fracture.",
    "support_devices": "Support lines and tubes in place.",
}
_SIDE = {0: "right", 1: "left", 2: "bilateral"}


def image_ids(report: int, lateral: bool) -> list[str]:
    """OpenI image ids of one report: ``CXR<report>_1_IM-<report:04d>-3001`` (frontal), ``-4001``
    (lateral)."""
    base = f"CXR{report}_1_IM-{report:04d}"
    return [f"{base}-3001", f"{base}-4001"] if lateral else [f"{base}-3001"]


def report_xml(report: int, study: Study, images: list[str]) -> bytes:
    """One ``ecgen-radiology`` report in the structure of the real NLMCXR XML files."""
    root = ET.Element("eCitation")
    ET.SubElement(root, "meta", type="rr")
    ET.SubElement(root, "uId", id=f"CXR{report}")
    ET.SubElement(root, "pmcId", id=str(report))
    ET.SubElement(root, "docSource").text = "CXR"
    ET.SubElement(root, "IUXRId", id=str(report))
    ET.SubElement(root, "licenseType").text = "open-access"
    ET.SubElement(root, "publisher").text = "chexbench phantom (synthetic)"
    ET.SubElement(root, "title").text = "Phantom chest X-ray collection in the Indiana University layout"
    article = ET.SubElement(
        ET.SubElement(root, "MedlineCitation", Owner="chexbench", Status="synthetic"),
        "Article",
        PubModel="Electronic",
    )
    abstract = ET.SubElement(article, "Abstract")
    findings = [f for f in study.findings if f.name in _SENTENCES]
    text = " ".join(_SENTENCES[f.name].format(side=_SIDE[f.side]) for f in findings)
    sections = {
        "COMPARISON": "None." if study.number == 1 else "Prior study.",
        "INDICATION": "Chest pain.",
        "FINDINGS": (
            text or "The heart is normal in size. The mediastinum is unremarkable. The lungs are clear."
        ),
        "IMPRESSION": text.split(".")[0] + "." if text else "No acute cardiopulmonary disease.",
    }
    for label, value in sections.items():
        ET.SubElement(abstract, "AbstractText", Label=label).text = value
    mesh = ET.SubElement(root, "MeSH")
    for term in indiana_major_terms(study):
        ET.SubElement(mesh, "major").text = term
    for k, image_id in enumerate(images):
        parent = ET.SubElement(root, "parentImage", id=image_id)
        ET.SubElement(parent, "figureId").text = f"F{k + 1}"
        ET.SubElement(parent, "caption").text = (
            "Xray Chest PA and Lateral" if len(images) > 1 else "Xray Chest PA"
        )
        panel = ET.SubElement(parent, "panel", type="single")
        ET.SubElement(panel, "url").text = f"/hadoop/storage/radiology/extract/{image_id}.jpg"
        ET.SubElement(panel, "imgModality").text = "7"
    ET.indent(root, space="   ")
    return (XML_DECLARATION + ET.tostring(root, encoding="unicode") + "\n").encode("utf-8")


class IndianaWriter(SiteWriter):
    site = "indiana"

    def write(self, root: Path, patients: list[Patient], size: int, seed: int) -> None:
        (root / REPORT_DIR).mkdir(parents=True, exist_ok=True)
        report = 0
        jobs, refs = [], []
        for patient in patients:
            for study in patient.studies:
                report += 1
                ids = image_ids(report, study.lateral)
                (root / REPORT_DIR / f"{report}.xml").write_bytes(report_xml(report, study, ids))
                for image_id, view in zip(ids, ("frontal", "lateral"), strict=False):
                    jobs.append(
                        ImageJob(
                            patient,
                            study,
                            view,
                            root / PNG_DIR / f"{image_id}.png",
                            "png",
                            self.site,
                            size,
                            seed,
                        )
                    )
                    refs.append(image_id)
        self.render_all(jobs, refs)
        self.write_boxes(root / "phantom_boxes.csv")
