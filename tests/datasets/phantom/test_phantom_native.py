"""Phantom files parse exactly like the real datasets' files (columns, encodings, id formats)."""

from __future__ import annotations

import csv
import gzip
import re
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from chexbench.datasets.fixtures import real_label_file
from chexbench.datasets.phantom import PHANTOM_LABELS, layout_root
from chexbench.spec.registry import DATASETS


def _real_header(which: str) -> str:
    with gzip.open(real_label_file(which), "rt") as fh:
        return fh.readline().rstrip("\n")


@pytest.fixture(scope="module")
def real_chexpert_rows() -> pd.DataFrame:
    return pd.read_csv(real_label_file("chexpert"), dtype=str, keep_default_na=False, nrows=20000)


# -- CheXpert -------------------------------------------------------------------------------
def test_chexpert_csv_columns_and_encodings_match_the_real_file(phantom_root: Path, real_chexpert_rows):
    root = phantom_root / "chexpert" / "CheXpert-v1.0-small"
    for name in ("train.csv", "valid.csv"):
        assert (root / name).read_text().splitlines()[0] == _real_header("chexpert")
    ours = pd.read_csv(root / "train.csv", dtype=str, keep_default_na=False)
    real = real_chexpert_rows
    assert list(ours.columns) == list(real.columns)
    for col in real.columns[5:]:  # label columns: the same string encodings
        assert set(ours[col]) <= {"1.0", "0.0", "-1.0", ""}, col
    assert set(ours[col]) <= set(real[col])
    assert set(ours["Sex"]) <= set(real["Sex"]) and set(ours["Frontal/Lateral"]) == {"Frontal", "Lateral"}
    assert set(ours["AP/PA"]) <= {"AP", "PA", ""}
    assert (ours.loc[ours["Frontal/Lateral"] == "Lateral", "AP/PA"] == "").all()
    path_re = re.compile(r"^CheXpert-v1\.0-small/train/patient\d{5}/study\d+/view\d+_(frontal|lateral)\.jpg$")
    assert real["Path"].str.match(path_re).all() and ours["Path"].str.match(path_re).all()
    assert ours["Age"].str.fullmatch(r"\d+").all()
    valid = pd.read_csv(root / "valid.csv", dtype=str, keep_default_na=False)
    assert set(valid[real.columns[5:]].to_numpy().ravel()) <= {"1.0", "0.0"}  # radiologist labels: no blanks


def test_chexpert_images_are_grayscale_jpegs_of_the_listed_paths(phantom_root: Path):
    base = phantom_root / "chexpert"
    df = pd.read_csv(base / "CheXpert-v1.0-small" / "train.csv")
    for rel in df["Path"].iloc[:20]:
        with Image.open(base / rel) as im:
            assert im.format == "JPEG" and im.mode == "L" and im.width == 48


def test_chexpert_loader_reads_the_phantom_and_labels_match_the_csv(phantom_root: Path):
    root = layout_root("chexpert", phantom_root / "chexpert")
    index = DATASETS.get("chexpert").load_index(root)
    raw = pd.read_csv(root / "train.csv")
    assert len(index) == len(raw) + len(pd.read_csv(root / "valid.csv"))
    row = index.set_index("path").loc[raw["Path"].str.split("/", n=1).str[1]]
    np.testing.assert_array_equal(
        row["pleural_effusion"].to_numpy(), raw["Pleural Effusion"].fillna(np.nan).to_numpy()
    )
    assert set(PHANTOM_LABELS["chexpert"]) <= set(index.columns)


# -- NIH ------------------------------------------------------------------------------------
def test_nih_files_have_the_real_headers_and_vocabulary(phantom_root: Path):
    root = phantom_root / "nih"
    assert (root / "Data_Entry_2017.csv").read_text().splitlines()[0] == _real_header("nih")
    assert (root / "BBox_List_2017.csv").read_text().splitlines()[0] == _real_header("nih_boxes")
    ours = pd.read_csv(root / "Data_Entry_2017.csv")
    real = pd.read_csv(real_label_file("nih"), nrows=5000)
    assert list(ours.columns) == list(real.columns)
    assert list(ours.dtypes) == list(real.dtypes)
    real_vocab = set(
        "|".join(pd.read_csv(real_label_file("nih"), usecols=["Finding Labels"])["Finding Labels"]).split("|")
    )
    assert set("|".join(ours["Finding Labels"]).split("|")) <= real_vocab
    assert ours["Image Index"].str.fullmatch(r"\d{8}_\d{3}\.png").all()
    boxes = pd.read_csv(root / "BBox_List_2017.csv")
    real_boxes = pd.read_csv(real_label_file("nih_boxes"))
    assert list(boxes.columns) == list(real_boxes.columns)
    assert set(boxes["Finding Label"]) <= set(real_boxes["Finding Label"])
    assert len(boxes) > 0


def test_nih_split_lists_are_patient_disjoint_and_cover_every_image(phantom_root: Path):
    root = phantom_root / "nih"
    train = (root / "train_val_list.txt").read_text().split()
    test = (root / "test_list.txt").read_text().split()
    entries = pd.read_csv(root / "Data_Entry_2017.csv")
    assert sorted(train + test) == sorted(entries["Image Index"])
    pid = entries.set_index("Image Index")["Patient ID"]
    assert not set(pid[train]) & set(pid[test])
    index = DATASETS.get("nih").load_index(root)
    assert len(index) == len(entries) and set(index["split"]) == {"train", "valid", "test"}


def test_nih_boxes_lie_inside_their_images(phantom_root: Path):
    root = phantom_root / "nih"
    boxes = pd.read_csv(root / "BBox_List_2017.csv")
    for _, b in boxes.iterrows():
        with Image.open(root / "images" / b["Image Index"]) as im:
            w, h = im.size
            assert im.format == "PNG" and im.mode == "L"
        x, y, bw, bh = b.iloc[2:6].astype(float)
        assert 0 <= x and 0 <= y and bw > 0 and bh > 0 and x + bw <= w and y + bh <= h


# -- Indiana --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_indiana_terms() -> tuple[set[str], set[str]]:
    """(major term heads, child tag names of <eCitation>) over the real reports."""
    heads, tags = set(), set()
    with tarfile.open(real_label_file("indiana")) as tar:
        for member in tar:
            if member.name.endswith(".xml"):
                text = tar.extractfile(member).read().decode("utf-8")
                tags |= set(re.findall(r"^   <(\w+)", text, flags=re.M))  # children of <eCitation>
                heads |= {t.split("/")[0] for t in re.findall(r"<major>([^<]*)</major>", text)}
    return heads, tags


def test_indiana_reports_use_real_terms_and_image_ids(phantom_root: Path, real_indiana_terms):
    heads, tags = real_indiana_terms
    root = phantom_root / "indiana"
    files = sorted((root / "ecgen-radiology").glob("*.xml"))
    assert files
    for f in files:
        doc = ET.parse(f).getroot()
        assert doc.tag == "eCitation" and {c.tag for c in doc} <= tags
        majors = [m.text for m in doc.iter("major")]
        assert majors and {t.split("/")[0] for t in majors} <= heads
        ids = [p.get("id") for p in doc.findall("parentImage")]
        assert ids and all(re.fullmatch(r"CXR\d+_1_IM-\d{4,}-\d{4}", i) for i in ids)
        for i in ids:
            assert (root / "NLMCXR_png" / f"{i}.png").is_file()
    index = DATASETS.get("indiana").load_index(root)
    assert len(index) == sum(len(ET.parse(f).getroot().findall("parentImage")) for f in files)
    assert set(index["view"]) <= {"FRONTAL", "LATERAL"}


def test_sidecar_boxes_have_documented_columns_and_fit_images(phantom_root: Path):
    for site, path, resolve in (
        ("chexpert", "CheXpert-v1.0-small/phantom_boxes.csv", lambda r, i: r / i),
        ("indiana", "phantom_boxes.csv", lambda r, i: r / "NLMCXR_png" / f"{i}.png"),
    ):
        root = phantom_root / site
        with open(root / path) as fh:
            rows = list(csv.DictReader(fh))
        assert rows and list(rows[0]) == ["image", "label", "x", "y", "w", "h"]
        for r in rows[:50]:
            with Image.open(resolve(root, r["image"])) as im:
                w, h = im.size
            x, y, bw, bh = (int(r[k]) for k in ("x", "y", "w", "h"))
            assert 0 <= x < x + bw <= w and 0 <= y < y + bh <= h
