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
# (manual MeSH terms only: the indexer's automatic terms include denied findings)
REAL_POSITIVE_REPORTS = {
    "no_finding": 1379,
    "lung_opacity": 596,
    "cardiomegaly": 364,
    "atelectasis": 315,
    "support_devices": 236,
    "pleural_effusion": 149,
    "nodule": 106,
    "emphysema": 100,
    "edema": 92,
    "fracture": 83,
    "infiltration": 60,
    "hernia": 46,
    "pleural_thickening": 43,
    "pneumonia": 40,
    "fibrosis": 32,
    "consolidation": 30,
    "pneumothorax": 26,
    "enlarged_cardiomediastinum": 17,
    "mass": 15,
    "lung_lesion": 10,
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
    assert int(unindexed.sum()) == 92  # 'No Indexing' by hand, whatever the automatic indexer added
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
    assert rep["report_id"] == "CXR1" and rep["terms"] == ["normal"]
    assert rep["images"] == ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"]
    labels = report_labels(rep["terms"])
    assert labels["no_finding"] == 1 and sum(labels.values()) == 1
    assert report_labels(["Cardiomegaly/mild", "Pleural Effusion/right", "normal"]) == {
        **{lab: 0.0 for lab in INDIANA_LABELS},
        "cardiomegaly": 1.0,
        "pleural_effusion": 1.0,
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
    meta = pd.read_csv(root / "nlmcxr_dicom_metadata.csv.gz", usecols=["imageid", "View Position"]).set_index(
        "imageid"
    )
    checked = 0
    for image_id, vp in meta["View Position"].dropna().items():
        if image_id in idx.index:
            want = vp if vp in ("PA", "AP") else "LATERAL"
            assert idx.loc[image_id, "view"] == want, image_id
            checked += 1
    assert checked >= 10


def test_findings_the_report_denies_are_not_positives(real):
    # the automatic indexer tagged these reports with the finding their text denies
    reports = {parse_report(n, d)["report_id"]: parse_report(n, d) for n, d in real_indiana_reports()}
    idx = real[1].drop_duplicates("patient_id").set_index("patient_id")
    for uid, label, term in (
        ("CXR349", "pleural_effusion", "pleural effusion"),
        ("CXR1695", "pneumonia", "pneumonia"),
    ):
        assert any(term in t.lower() for t in reports[uid]["automatic"]), uid  # the automatic term is there
        assert not any(term in t.lower() for t in reports[uid]["terms"]), uid  # the manual indexing has none
        assert idx.loc[uid, label] == 0.0, uid


def test_views_follow_the_image_based_view_file_over_dicom_and_the_order_rule(real, tmp_path):
    root = tmp_path / "ind"
    root.mkdir()
    shutil.copy(real_label_file("indiana"), root / "NLMCXR_reports.tgz")
    shutil.copy(real_label_file("indiana_tsne"), root / "nlmcxr_tsne_pa.csv.gz")
    idx = load_indiana_index(root)
    tsne = pd.read_csv(root / "nlmcxr_tsne_pa.csv.gz").set_index("imageid")["tsne-view"]
    views = idx.set_index("image_id")["view"]
    assert (views[tsne.index] == tsne.map({"PA": "PA", "L": "LATERAL"})).all()
    assert int((tsne == "L").sum()) == 584  # first images that the order rule alone calls frontal
    # a report whose first image is lateral: its other image is the frontal one
    cxr1 = idx[idx["patient_id"] == "CXR1"].set_index("image_id")["view"].to_dict()
    assert cxr1 == {"CXR1_1_IM-0001-3001": "LATERAL", "CXR1_1_IM-0001-4001": "FRONTAL"}
    multi = idx.groupby("patient_id")["view"].filter(lambda v: len(v) > 1)  # a lone image may be a lateral
    assert (
        idx.loc[multi.index].groupby("patient_id")["view"].apply(lambda v: (v != "LATERAL").sum()) >= 1
    ).all()
    # with the DICOM metadata too, the image-based view wins where they disagree; DICOM names the rest
    shutil.copy(real_label_file("indiana_dicom"), root / "nlmcxr_dicom_metadata.csv.gz")
    both = load_indiana_index(root).set_index("image_id")["view"]
    assert (both[tsne.index] == tsne.map({"PA": "PA", "L": "LATERAL"})).all()
    meta = pd.read_csv(root / "nlmcxr_dicom_metadata.csv.gz", usecols=["imageid", "View Position"]).dropna()
    rest = meta[~meta["imageid"].isin(tsne.index)].set_index("imageid")["View Position"]
    rest = rest[rest.index.isin(both.index)]
    assert (
        len(rest) > 1000
        and (both[rest.index] == rest.map(lambda v: v if v in ("PA", "AP") else "LATERAL")).all()
    )


def test_a_report_edited_in_place_changes_the_label_fingerprint(tmp_path):
    # rewriting a file keeps its folder's size and mtime: the fingerprint must see the file itself
    import os

    from chexbench.datasets.indiana import Indiana
    from chexbench.datasets.prepared import label_file_fingerprint

    root = write_indiana_layout(tmp_path, real_indiana_reports(5))
    before = label_file_fingerprint(Indiana(), root)
    report = sorted((root / "ecgen-radiology").glob("*.xml"))[0]
    folder_stat = os.stat(report.parent)
    report.write_bytes(report.read_bytes().replace(b"</MeSH>", b"<major>Cardiomegaly</major></MeSH>"))
    os.utime(report.parent, ns=(folder_stat.st_atime_ns, folder_stat.st_mtime_ns))
    assert label_file_fingerprint(Indiana(), root) != before
