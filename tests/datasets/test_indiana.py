"""The Indiana / OpenI loader on the real report XMLs (all 3,955, from NLMCXR_reports.tgz)."""

import shutil

import numpy as np
import pandas as pd
import pytest

from chexbench.core.errors import DataError
from chexbench.datasets.fixtures import real_indiana_reports, real_label_file, write_indiana_layout
from chexbench.datasets.indiana import INDIANA_SPLIT, load_indiana_index, parse_report, report_labels
from chexbench.datasets.labels import (
    INDIANA_EVAL_LABELS,
    INDIANA_LABELS,
    INDIANA_MIN_POSITIVE_REPORTS,
    apply_uncertainty,
)

# positive reports (with images) per label in the real collection, under the documented table
REAL_POSITIVE_REPORTS = {
    "no_finding": 1379, "lung_opacity": 602, "atelectasis": 374, "cardiomegaly": 364, "support_devices": 236,
    "pleural_effusion": 177, "nodule": 121, "emphysema": 116, "edema": 115, "fracture": 98, "infiltration": 93,
    "pneumonia": 82, "hernia": 50, "pleural_thickening": 47, "fibrosis": 37, "consolidation": 30,
    "pneumothorax": 26, "enlarged_cardiomediastinum": 17, "mass": 15, "lung_lesion": 13,
}


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    root = tmp_path_factory.mktemp("indiana")
    shutil.copy(real_label_file("indiana"), root / "NLMCXR_reports.tgz")
    return root, load_indiana_index(root)


def test_real_reports_images_patients_and_label_counts(real):
    _, idx = real
    assert len(real_indiana_reports()) == 3955
    assert len(idx) == 7470
    assert idx["patient_id"].nunique() == 3851  # 104 reports list no image
    assert idx["image_id"].is_unique
    reports = idx.drop_duplicates("patient_id")
    for label, n in REAL_POSITIVE_REPORTS.items():
        assert int((reports[label] == 1).sum()) == n, label
    unindexed = reports[list(INDIANA_LABELS)].isna().all(axis=1)
    assert int(unindexed.sum()) == 81
    indexed = reports[~unindexed]
    assert not indexed[list(INDIANA_LABELS)].isna().any().any()  # indexed reports: every label 1 or 0
    y = apply_uncertainty(idx[list(INDIANA_LABELS)].to_numpy(), INDIANA_LABELS, "ignore")
    assert np.nanmax(y) == 1 and (idx[list(INDIANA_LABELS)].to_numpy() != -1).all()  # no uncertain value


def test_eval_labels_follow_the_documented_rule_on_the_real_file(real):
    reports = real[1].drop_duplicates("patient_id")
    counts = {lab: int((reports[lab] == 1).sum()) for lab in INDIANA_LABELS if lab != "no_finding"}
    rule = {lab for lab, n in counts.items() if n >= INDIANA_MIN_POSITIVE_REPORTS}
    assert rule == set(INDIANA_EVAL_LABELS)


def test_seeded_patient_split_and_first_image_view_rule(real):
    _, idx = real
    groups = {s: set(idx["patient_id"][idx["split"] == s]) for s in INDIANA_SPLIT}
    assert not (groups["train"] & groups["test"]) and not (groups["valid"] & groups["test"])
    assert not (groups["train"] & groups["valid"])
    total = sum(map(len, groups.values()))
    for s, share in INDIANA_SPLIT.items():
        assert abs(len(groups[s]) / total - share) < 0.005
    first = idx.groupby("patient_id", sort=False).head(1)
    assert (first["view"] == "FRONTAL").all()
    assert (idx["view"] == "FRONTAL").sum() == 3851


def test_one_report_end_to_end_from_its_xml():
    name, data = next((n, d) for n, d in real_indiana_reports(40) if n.endswith("/1.xml"))
    rep = parse_report(name, data)
    assert rep == {"report_id": "CXR1", "terms": ["normal"], "images": ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"]}
    labels = report_labels(rep["terms"])
    assert labels["no_finding"] == 1 and sum(labels.values()) == 1
    assert report_labels(["Cardiomegaly/mild", "Pleural Effusion/right", "normal"]) == {
        **{lab: 0.0 for lab in INDIANA_LABELS}, "cardiomegaly": 1.0, "pleural_effusion": 1.0
    }
    assert all(np.isnan(v) for v in report_labels(["No Indexing"]).values())


def test_layout_with_folder_pngs_and_view_metadata(tmp_path):
    reports = real_indiana_reports(12)
    root = write_indiana_layout(tmp_path, reports)
    idx = load_indiana_index(root)
    assert all((root / p).is_file() for p in idx["path"])
    assert idx["path"].iloc[0].startswith("NLMCXR_png/")
    # Kaggle-style projections file overrides the first-image rule
    first = idx["image_id"].iloc[0]
    pd.DataFrame(
        {"uid": [1], "filename": [first.removeprefix("CXR") + ".dcm.png"], "projection": ["Lateral"]}
    ).to_csv(root / "indiana_projections.csv", index=False)
    assert load_indiana_index(root).set_index("image_id").loc[first, "view"] == "LATERAL"


def test_malformed_xml_and_missing_reports_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="neither ecgen-radiology/ nor NLMCXR_reports.tgz"):
        load_indiana_index(tmp_path)
    (tmp_path / "ecgen-radiology").mkdir()
    (tmp_path / "ecgen-radiology" / "7.xml").write_text("<eCitation><uId id='CXR7'/>")
    with pytest.raises(DataError, match=r"7\.xml: invalid XML"):
        load_indiana_index(tmp_path)


def test_views_from_the_real_dicom_metadata(tmp_path):
    reports = real_indiana_reports(30)
    root = write_indiana_layout(tmp_path, reports)
    shutil.copy(real_label_file("indiana_dicom"), root / "nlmcxr_dicom_metadata.csv.gz")
    idx = load_indiana_index(root).set_index("image_id")
    meta = pd.read_csv(root / "nlmcxr_dicom_metadata.csv.gz", usecols=["imageid", "View Position"]).set_index("imageid")
    checked = 0
    for image_id, vp in meta["View Position"].dropna().items():
        if image_id in idx.index:
            want = vp if vp in ("PA", "AP") else "LATERAL"
            assert idx.loc[image_id, "view"] == want, image_id
            checked += 1
    assert checked >= 10
