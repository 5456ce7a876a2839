"""The NIH ChestX-ray14 loader on the real Data_Entry_2017_v2020.csv (all 112,120 rows)."""

import logging
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest

from chexbench.core.errors import DataError
from chexbench.datasets.fixtures import real_label_file, write_nih_layout
from chexbench.datasets.labels import NIH_FINDINGS, apply_uncertainty
from chexbench.datasets.nih import NIH_VALID_FRACTION, _parse_age, load_nih_boxes, load_nih_index

# positives per finding in the real file (Wang et al. 2017, v2020 release)
REAL_POSITIVES = {
    "Atelectasis": 11559,
    "Cardiomegaly": 2776,
    "Effusion": 13317,
    "Infiltration": 19894,
    "Mass": 5782,
    "Nodule": 6331,
    "Pneumonia": 1431,
    "Pneumothorax": 5302,
    "Consolidation": 4667,
    "Edema": 2303,
    "Emphysema": 2516,
    "Fibrosis": 1686,
    "Pleural_Thickening": 3385,
    "Hernia": 227,
}


def _official_lists(root, names, test_mask):
    (root / "test_list.txt").write_text("\n".join(names[test_mask]) + "\n")
    (root / "train_val_list.txt").write_text("\n".join(names[~test_mask]) + "\n")


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    root = tmp_path_factory.mktemp("nih")
    shutil.copy(real_label_file("nih"), root / "Data_Entry_2017_v2020.csv.gz")
    shutil.copy(real_label_file("nih_boxes"), root / "BBox_List_2017.csv.gz")
    raw = pd.read_csv(root / "Data_Entry_2017_v2020.csv.gz")
    test_mask = (raw["Patient ID"] % 5 == 0).to_numpy()  # a patient-disjoint list pair in the official format
    _official_lists(root, raw["Image Index"].to_numpy(), test_mask)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("chexbench.datasets.nih")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            index = load_nih_index(root)
    finally:
        logger.removeHandler(handler)
    assert not records  # disjoint lists: no warning
    return root, raw, test_mask, index


def test_real_file_images_patients_and_positives(real):
    _, raw, _, idx = real
    assert len(idx) == 112120
    assert idx["patient_id"].nunique() == 30805
    assert idx["image_id"].tolist() == raw["Image Index"].tolist()
    assert idx["patient_id"].iloc[0] == "00000001" and idx["study_id"].iloc[0] == "00000001_000"
    assert idx["path"].iloc[0] == "images/00000001_000.png"
    for finding, label in NIH_FINDINGS.items():
        col = idx[label].to_numpy()
        assert (col == 1).sum() == REAL_POSITIVES[finding], finding
        assert (col == 0).sum() == 112120 - REAL_POSITIVES[finding], finding
        for policy in ("ignore", "zeros", "ones", "mixed"):  # NIH has no uncertain labels
            np.testing.assert_array_equal(apply_uncertainty(col[:, None], [label], policy)[:, 0], col)
    assert (idx["no_finding"] == 1).sum() == 60361
    assert idx["view"].value_counts().to_dict() == {"PA": 67310, "AP": 44810}
    assert idx["sex"].value_counts().to_dict() == {"M": 63340, "F": 48780}


def test_official_lists_give_test_and_a_patient_level_validation_carve(real):
    _, raw, test_mask, idx = real
    assert set(idx["image_id"][idx["split"] == "test"]) == set(raw["Image Index"][test_mask])
    groups = {s: set(idx["patient_id"][idx["split"] == s]) for s in ("train", "valid", "test")}
    assert not (groups["train"] & groups["valid"]) and not (groups["train"] & groups["test"])
    assert not (groups["valid"] & groups["test"])
    n_trainval = raw["Patient ID"][~test_mask].nunique()
    assert len(groups["valid"]) == round(NIH_VALID_FRACTION * n_trainval)


def test_boxes_are_harmonized(real):
    root = real[0]
    boxes = load_nih_boxes(root)
    assert len(boxes) == 984
    assert boxes["label"].value_counts()["infiltration"] == 123  # 'Infiltrate' in the box file
    assert boxes["label"].value_counts()["pleural_effusion"] == 153
    assert np.isfinite(boxes[["x", "y", "w", "h"]].to_numpy()).all()


def _small(tmp_path, n=40):
    rows = pd.read_csv(real_label_file("nih"), nrows=n)
    test_patients = set(rows["Patient ID"].unique()[-2:])
    return write_nih_layout(tmp_path, rows, test_patients), rows


def test_images_are_found_in_images_nnn_folders(tmp_path):
    root, rows = _small(tmp_path)
    idx = load_nih_index(root)
    assert idx["path"].iloc[0] == "images_001/images/00000001_000.png"
    assert idx["path"].iloc[1] == "images_002/images/" + rows["Image Index"].iloc[1]
    assert all((root / p).is_file() for p in idx["path"])


def test_lists_sharing_patients_warn_loudly_with_the_count(tmp_path, caplog):
    root, rows = _small(tmp_path)
    names = rows["Image Index"].to_numpy()
    pid = rows["Patient ID"].to_numpy()
    test_mask = np.zeros(len(rows), bool)
    test_mask[[0, len(rows) - 1]] = True  # patient of row 0 now on both sides
    _official_lists(root, names, test_mask)
    shared = len(set(pid[test_mask]) & set(pid[~test_mask]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a log line, not a Python warning with a source line
        with caplog.at_level(logging.WARNING, logger="chexbench.datasets.nih"):
            load_nih_index(root)
            load_nih_index(root)
    lines = [r.getMessage() for r in caplog.records if "share" in r.getMessage()]
    assert lines == [
        f"NIH {root}: the split lists share {shared} patients between train_val and test; "
        "cells on this dataset are refused unless allow_leakage = true"
    ]  # once, one line


def test_an_image_in_both_lists_and_unlisted_images(tmp_path, caplog):
    root, rows = _small(tmp_path)
    names = rows["Image Index"].tolist()
    (root / "test_list.txt").write_text(names[0] + "\n")
    (root / "train_val_list.txt").write_text("\n".join(names) + "\n")
    with pytest.raises(DataError, match=f"'{names[0]}' is also in train_val_list.txt"):
        load_nih_index(root)
    (root / "train_val_list.txt").write_text("\n".join(names[1:-1]) + "\n")
    with caplog.at_level(logging.WARNING, logger="chexbench.datasets.nih"):
        idx = load_nih_index(root)
    messages = [r.getMessage() for r in caplog.records]
    assert any("1 images of Data_Entry_2017_v2020.csv are in neither split list" in m for m in messages)
    assert any("share 1 patients" in m for m in messages)  # names[0]'s patient has images on both sides
    assert len(idx) == len(names) - 1
    (root / "test_list.txt").unlink()
    with pytest.raises(DataError, match="NIH split list not found: .*test_list.txt"):
        load_nih_index(root)


def test_bad_label_file_errors_name_file_and_column(tmp_path):
    root, rows = _small(tmp_path)
    bad = rows.copy()
    bad.loc[3, "Finding Labels"] = "Cardiomegaly|Pneumonitis"
    bad.to_csv(root / "Data_Entry_2017_v2020.csv", index=False)
    with pytest.raises(
        DataError,
        match=(
            r"Data_Entry_2017_v2020.csv: column 'Finding Labels' has unknown label value 'Pneumonitis' on"
            r" data row 4"
        ),
    ):
        load_nih_index(root)
    rows.drop(columns=["View Position"]).to_csv(root / "Data_Entry_2017_v2020.csv", index=False)
    with pytest.raises(DataError, match="Data_Entry_2017_v2020.csv: missing column 'View Position'"):
        load_nih_index(root)


def test_age_strings_of_the_2017_release():
    ages = _parse_age(pd.Series(["058Y", "011M", "414", "30"]))
    np.testing.assert_allclose(ages, [58, 11 / 12, np.nan, 30])
    np.testing.assert_allclose(_parse_age(pd.Series([58, 414])), [58, np.nan])


def test_images_directly_in_an_images_folder(tmp_path):
    root, rows = _small(tmp_path)
    flat = tmp_path / "flat"
    (flat / "images").mkdir(parents=True)
    for p in root.glob("images_*/images/*.png"):
        shutil.copy(p, flat / "images" / p.name)
    for name in ("Data_Entry_2017_v2020.csv", "test_list.txt", "train_val_list.txt"):
        shutil.copy(root / name, flat / name)
    idx = load_nih_index(flat)
    assert all(p.startswith("images/") and (flat / p).is_file() for p in idx["path"])
