"""The CheXpert loader on the real train.csv shipped by torchxrayvision (all 223,414 rows)."""

import gzip
import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chexbench.core.errors import DataError
from chexbench.datasets.base import INDEX_META_COLUMNS
from chexbench.datasets.chexpert import CHEXPERT_VALID_FRACTION, load_chexpert_index
from chexbench.datasets.fixtures import real_label_file
from chexbench.datasets.labels import apply_uncertainty
from chexbench.spec.registry import DATASETS

# value counts of the real file (CheXpert-v1.0-small train.csv), per competition label:
# (positive 1.0, negative 0.0, uncertain -1.0, blank)
REAL_COUNTS = {
    "atelectasis": (33376, 1328, 33739, 154971),
    "cardiomegaly": (27000, 11116, 8087, 177211),
    "consolidation": (14783, 28097, 27742, 152792),
    "edema": (52246, 20726, 12984, 137458),
    "pleural_effusion": (86187, 35396, 11628, 90203),
}
HEADER = ",".join(
    [
        "Path",
        "Sex",
        "Age",
        "Frontal/Lateral",
        "AP/PA",
        "No Finding",
        "Enlarged Cardiomediastinum",
        "Cardiomegaly",
        "Lung Opacity",
        "Lung Lesion",
        "Edema",
        "Consolidation",
        "Pneumonia",
        "Atelectasis",
        "Pneumothorax",
        "Pleural Effusion",
        "Pleural Other",
        "Fracture",
        "Support Devices",
    ]
)
VALID_CSV = (
    HEADER
    + """
CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg,Male,73,Frontal,AP,0.0,1.0,1.0,1.0,0.0,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0
CheXpert-v1.0-small/valid/patient64542/study1/view1_frontal.jpg,Male,70,Frontal,PA,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,1.0
CheXpert-v1.0-small/valid/patient64542/study1/view2_lateral.jpg,Male,70,Lateral,,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,1.0
"""
)


@pytest.fixture(scope="module")
def real_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("chexpert") / "CheXpert-v1.0-small"
    root.mkdir()
    with gzip.open(real_label_file("chexpert"), "rb") as src, open(root / "train.csv", "wb") as dst:
        shutil.copyfileobj(src, dst)
    (root / "valid.csv").write_text(VALID_CSV)
    return root


@pytest.fixture(scope="module")
def real_index(real_root):
    return load_chexpert_index(real_root)


def test_real_file_counts_images_patients_and_schema(real_index):
    idx = real_index
    assert list(idx.columns[: len(INDEX_META_COLUMNS)]) == list(INDEX_META_COLUMNS)
    assert len(idx) == 223414 + 3
    train_valid = idx[idx["split"] != "test"]
    assert len(train_valid) == 223414
    assert train_valid["patient_id"].nunique() == 64540
    assert idx["image_id"].is_unique
    first = idx.iloc[0]
    assert first["image_id"] == "train/patient00001/study1/view1_frontal.jpg"
    assert first["path"] == first["image_id"]
    assert (first["patient_id"], first["study_id"], first["view"], first["sex"], first["age"]) == (
        "patient00001",
        "patient00001/study1",
        "AP",
        "F",
        68.0,
    )
    assert idx["view"].value_counts()["LATERAL"] == 32387 + 1
    assert idx["sex"].value_counts().to_dict() == {"M": 132636 + 3, "F": 90777, "U": 1}


@pytest.mark.parametrize("label", sorted(REAL_COUNTS))
def test_real_file_label_counts_under_every_policy(real_index, label):
    train = real_index[real_index["split"] != "test"]
    raw = train[[label]].to_numpy()
    pos, neg, unc, blank = REAL_COUNTS[label]
    assert ((raw == 1).sum(), (raw == 0).sum(), (raw == -1).sum(), np.isnan(raw).sum()) == (
        pos,
        neg,
        unc,
        blank,
    )
    expected = {
        "ignore": (pos, neg, unc + blank),
        "zeros": (pos, neg + unc, blank),
        "ones": (pos + unc, neg, blank),
        "mixed": (pos + unc, neg, blank) if label in ("atelectasis", "edema") else (pos, neg + unc, blank),
    }
    for policy, (p, n, masked) in expected.items():
        y = apply_uncertainty(raw, [label], policy)
        assert ((y == 1).sum(), (y == 0).sum(), np.isnan(y).sum()) == (p, n, masked), policy


def test_split_rule_valid_csv_is_test_and_validation_is_carved_by_patient(real_index):
    idx = real_index
    test = idx[idx["split"] == "test"]
    assert set(test["patient_id"]) == {"patient64541", "patient64542"}
    valid_patients = set(idx["patient_id"][idx["split"] == "valid"])
    train_patients = set(idx["patient_id"][idx["split"] == "train"])
    assert not valid_patients & train_patients
    assert len(valid_patients) == round(CHEXPERT_VALID_FRACTION * 64540)
    assert len(valid_patients) + len(train_patients) == 64540


def test_a_labelled_test_file_makes_valid_csv_the_validation_split(tmp_path):
    root = tmp_path / "CheXpert-v1.0"
    root.mkdir()
    header, *rows = VALID_CSV.strip().splitlines()
    (root / "train.csv").write_text(
        header + "\n" + rows[0].replace("valid/patient64541", "train/patient00001") + "\n"
    )
    (root / "valid.csv").write_text(header + "\n" + rows[0] + "\n")
    (root / "test_labels.csv").write_text(
        header + "\n" + rows[1].replace("CheXpert-v1.0-small/valid", "test") + "\n"
    )
    idx = load_chexpert_index(root)
    assert idx.set_index("patient_id")["split"].to_dict() == {
        "patient00001": "train",
        "patient64541": "valid",
        "patient64542": "test",
    }
    assert idx["path"].tolist()[2] == "test/patient64542/study1/view1_frontal.jpg"


def _write(tmp_path, text):
    root = tmp_path / "CheXpert-v1.0-small"
    root.mkdir(exist_ok=True)
    (root / "train.csv").write_text(text)
    (root / "valid.csv").write_text(VALID_CSV)
    return root


def test_missing_column_is_one_line_naming_file_and_column(tmp_path):
    df = pd.read_csv(io.StringIO(VALID_CSV)).drop(columns=["Edema"])
    root = _write(tmp_path, df.to_csv(index=False))
    with pytest.raises(DataError, match=r"train\.csv: missing column 'Edema'") as e:
        load_chexpert_index(root)
    assert "\n" not in str(e.value)


def test_unknown_label_value_names_file_column_and_value(tmp_path):
    text = VALID_CSV.replace("Male,70,Frontal,PA,0.0,0.0,0.0", "Male,70,Frontal,PA,0.0,0.0,2.0", 1)
    root = _write(tmp_path, text)
    with pytest.raises(
        DataError, match=r"train\.csv: column 'Cardiomegaly' has unknown label value '2\.0' on data row 2"
    ):
        load_chexpert_index(root)
    root = _write(tmp_path, VALID_CSV.replace("Male,73,Frontal,AP,0.0,1.0", "Male,73,Frontal,AP,0.0,yes"))
    with pytest.raises(DataError, match=r"column 'Enlarged Cardiomediastinum' has unknown label value 'yes'"):
        load_chexpert_index(root)


@pytest.mark.parametrize("written", ["2", "2.0", " 3", "-2"])
def test_an_unknown_label_value_is_echoed_as_the_file_writes_it(tmp_path, written):
    text = VALID_CSV.replace("Male,70,Frontal,PA,0.0,0.0,0.0", f"Male,70,Frontal,PA,0.0,0.0,{written}", 1)
    root = _write(tmp_path, text)
    with pytest.raises(
        DataError, match=rf"column 'Cardiomegaly' has unknown label value '{written}' on data row 2"
    ):
        load_chexpert_index(root)


def test_missing_label_file_and_bad_path_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="label file not found: .*train.csv"):
        load_chexpert_index(tmp_path)
    root = _write(tmp_path, VALID_CSV.replace("valid/patient64541/study1/view1_frontal.jpg", "foo.jpg"))
    with pytest.raises(DataError, match="column 'Path' value 'CheXpert-v1.0-small/foo.jpg'"):
        load_chexpert_index(root)


def test_registered_instance_declares_labels_and_eval_labels():
    ds = DATASETS.get("chexpert")
    assert len(ds.labels) == 14
    assert set(ds.eval_labels) <= set(ds.labels)
    with pytest.raises(DataError, match="needs a root"):
        ds.resolve_root({})


def test_valid_label_values_are_read_however_they_are_written():
    from chexbench.datasets.tables import parse_label_column

    df = pd.DataFrame({"Edema": ["1", "1.00", " 0.0", "-1", "", None, "-1.0"]}, dtype=object)
    np.testing.assert_array_equal(
        parse_label_column(df, "Edema", Path("x.csv")), [1, 1, 0, -1, np.nan, np.nan, -1]
    )
