"""prepare → index → build_cell_data on native-layout fixtures of real label rows.

Expected targets are computed from the source label files directly (pandas + the CheXpert
paper's policy definitions), not through the loaders.
"""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from chexbench.core.errors import LeakageError
from chexbench.datasets import celldata
from chexbench.datasets.celldata import build_cell_data, pretrain_pool
from chexbench.datasets.decode import decode_image
from chexbench.datasets.fixtures import (
    real_indiana_reports,
    real_label_file,
    write_chexpert_layout,
    write_indiana_layout,
    write_nih_layout,
)
from chexbench.datasets.labels import CHEXPERT_COLUMNS, NIH_FINDINGS
from chexbench.spec.cell import CellConfig
from chexbench.spec.settings import Settings

SIZE = 16
U_ONES = {"ones": set(CHEXPERT_COLUMNS.values()), "zeros": set(), "mixed": {"atelectasis", "edema"}}


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("CHEXBENCH_CACHE", str(tmp_path / "cache"))


def _split_rows(n, cut):
    rows = pd.read_csv(real_label_file("chexpert"), nrows=n)
    pid = rows["Path"].str.split("/").str[2]
    return rows[pid < cut], rows[pid >= cut]


@pytest.fixture
def chexpert_root(tmp_path):
    train, valid = _split_rows(400, "patient00095")
    return write_chexpert_layout(tmp_path / "data", train, valid)


def cell(root, dataset="chexpert", fraction=1.0, seed=0, **settings):
    return CellConfig(
        strategy="scratch",
        backbone="resnet50",
        dataset=dataset,
        protocol="finetune",
        label_fraction=fraction,
        seed=seed,
        settings=Settings(image_size=SIZE, **settings),
        dataset_options={"root": str(root)},
    )


def expected_chexpert_targets(root, image_ids, labels, policy, not_mentioned="negative"):
    """Targets straight from the CSVs: 1/0 kept, blank → 0 (or masked), -1 by the policy's definition."""
    src = pd.concat([pd.read_csv(root / "train.csv"), pd.read_csv(root / "valid.csv")])
    src.index = src["Path"].str.split("/", n=1).str[1]
    raw = src.loc[list(image_ids), [k for k, v in CHEXPERT_COLUMNS.items() if v in labels]].to_numpy(float)
    out = raw.copy()
    for j, lab in enumerate(labels):
        unc = raw[:, j] == -1
        out[unc, j] = np.nan if policy == "ignore" else float(lab in U_ONES[policy])
    if not_mentioned == "negative":
        out[np.isnan(raw)] = 0.0
    return out


@pytest.mark.parametrize(
    "policy,not_mentioned",
    [
        ("ignore", "negative"),
        ("zeros", "negative"),
        ("ones", "negative"),
        ("mixed", "negative"),
        ("ignore", "ignore"),
        ("zeros", "ignore"),
    ],
)
def test_targets_and_images_match_the_source_rows(chexpert_root, policy, not_mentioned):
    data = build_cell_data(cell(chexpert_root, uncertainty=policy, not_mentioned=not_mentioned))
    assert data.manifest["not_mentioned"] == not_mentioned
    assert data.labels == list(CHEXPERT_COLUMNS.values())
    assert data.eval_labels == ["atelectasis", "cardiomegaly", "consolidation", "edema", "pleural_effusion"]
    for split in (data.train, data.valid, data.test):
        assert split.images.dtype == np.uint8 and split.images.shape == (len(split), SIZE, SIZE)
        assert split.targets.dtype == np.float32
        np.testing.assert_array_equal(
            split.targets,
            expected_chexpert_targets(chexpert_root, split.image_ids, data.labels, policy, not_mentioned),
        )
    for i in (0, len(data.train) - 1):
        np.testing.assert_array_equal(
            data.train.images[i], decode_image(chexpert_root / data.train.image_ids[i], SIZE)
        )
    assert data.manifest["uncertainty"] == policy
    assert "valid.csv as test" in data.manifest["split_rule"]
    json.dumps(data.manifest)  # JSON-able


def test_splits_share_no_patient_and_valid_csv_is_the_test_set(chexpert_root):
    data = build_cell_data(cell(chexpert_root, views="all"))
    groups = {n: set(data.split(n).patient_ids) for n in ("train", "valid", "test")}
    assert not (
        groups["train"] & groups["valid"]
        or groups["train"] & groups["test"]
        or groups["valid"] & groups["test"]
    )
    valid_csv = pd.read_csv(chexpert_root / "valid.csv")
    assert len(data.test) == len(valid_csv)
    assert all(i.startswith("valid/") for i in data.test.image_ids)


def test_views_frontal_by_default(chexpert_root):
    frontal = build_cell_data(cell(chexpert_root))
    every = build_cell_data(cell(chexpert_root, views="all"))
    n_lateral = (pd.read_csv(chexpert_root / "train.csv")["Frontal/Lateral"] == "Lateral").sum()
    assert n_lateral > 0
    assert len(every.train) + len(every.valid) - len(frontal.train) - len(frontal.valid) == n_lateral
    assert not any("lateral" in i for i in frontal.train.image_ids)


def test_label_fraction_is_patient_level_seeded_and_keeps_eval_positives(chexpert_root):
    full = build_cell_data(cell(chexpert_root))
    a = build_cell_data(cell(chexpert_root, fraction=0.1, seed=0))
    b = build_cell_data(cell(chexpert_root, fraction=0.1, seed=1))
    a2 = build_cell_data(cell(chexpert_root, fraction=0.1, seed=0))
    n_full = len(set(full.train.patient_ids))
    assert len(set(a.train.patient_ids)) >= round(0.1 * n_full)
    np.testing.assert_array_equal(a.train.image_ids, a2.train.image_ids)
    assert set(a.train.image_ids) != set(b.train.image_ids)
    for pid in set(a.train.patient_ids):  # whole patients
        assert (a.train.patient_ids == pid).sum() == (full.train.patient_ids == pid).sum()
    for j, lab in enumerate(full.labels):
        if lab in full.eval_labels and (full.train.targets[:, j] == 1).any():
            assert (a.train.targets[:, j] == 1).any(), lab
    assert a.manifest["splits"]["test"] == full.manifest["splits"]["test"]  # the test set never moves
    assert (
        a.manifest["splits"]["train"]["image_ids_sha256"] != b.manifest["splits"]["train"]["image_ids_sha256"]
    )


def test_caps_take_whole_patients_and_eval_caps_ignore_the_seed(chexpert_root):
    a = build_cell_data(cell(chexpert_root, seed=0, max_train_images=30, max_eval_images=10))
    b = build_cell_data(cell(chexpert_root, seed=3, max_train_images=30, max_eval_images=10))
    assert 1 <= len(a.train) <= 30 + 5 and len(a.test) <= 10 + 5
    np.testing.assert_array_equal(a.test.image_ids, b.test.image_ids)
    np.testing.assert_array_equal(a.valid.image_ids, b.valid.image_ids)
    assert a.manifest["max_train_images"] == 30


def test_large_selections_are_cache_views_or_memmap_files(chexpert_root, tmp_path, monkeypatch):
    small = build_cell_data(cell(chexpert_root))
    half = build_cell_data(cell(chexpert_root, fraction=0.5))
    monkeypatch.setattr(celldata, "IN_MEMORY_LIMIT_BYTES", 0)
    big = build_cell_data(cell(chexpert_root))
    # a whole split's frontal images are one block of the cache: a view, no copy
    assert isinstance(big.train.images, np.memmap) and not list((tmp_path / "cache").glob("cells/*.u8"))
    np.testing.assert_array_equal(np.asarray(big.train.images), small.train.images)
    big_half = build_cell_data(cell(chexpert_root, fraction=0.5))
    assert len(list((tmp_path / "cache").glob("cells/*.u8"))) == 1  # a subsample is written once
    np.testing.assert_array_equal(np.asarray(big_half.train.images), half.train.images)


@pytest.fixture
def leaky_root(tmp_path):
    train, valid = _split_rows(400, "patient00095")
    valid = pd.concat(
        [valid, train[train["Path"].str.contains("/patient00001/")]]
    )  # patient00001 now also in test
    return write_chexpert_layout(tmp_path / "leaky", train, valid)


def test_a_test_patient_in_train_is_refused_with_dataset_and_count(leaky_root):
    with pytest.raises(
        LeakageError, match=r"dataset 'chexpert': 1 patients appear in more than one split \(train&test: 1\)"
    ):
        build_cell_data(cell(leaky_root))


def test_allow_leakage_runs_and_the_manifest_says_so(leaky_root):
    data = build_cell_data(cell(leaky_root, allow_leakage=True))
    assert data.manifest["allow_leakage"] is True
    assert data.manifest["patient_overlaps"] == {"train&test": 1}


def test_pretrain_pool_is_the_train_split_and_refuses_test_patients(chexpert_root, leaky_root):
    c = cell(chexpert_root)
    images, patients = pretrain_pool(c)
    data = build_cell_data(c)
    assert images.dtype == np.uint8 and images.shape[1:] == (SIZE, SIZE)
    assert set(patients) == set(data.train.patient_ids) and len(patients) == len(data.train)
    assert not set(patients) & set(data.test.patient_ids)
    capped, capped_patients = pretrain_pool(c, max_images=20)
    assert len(capped) <= 20 + 5 and set(capped_patients) <= set(patients)
    with pytest.raises(
        LeakageError,
        match=(
            r"dataset 'chexpert' at .*: 1 of its \d+ test patients are in the pretraining pool of"
            r" 'chexpert' at "
        ),
    ):
        pretrain_pool(cell(leaky_root))
    leaked = cell(leaky_root, allow_leakage=True)
    assert "patient00001" in set(pretrain_pool(leaked)[1])
    with pytest.raises(LeakageError):
        pretrain_pool(
            dataclasses.replace(leaked, settings=dataclasses.replace(leaked.settings, allow_leakage=False))
        )


def test_nih_fixture_end_to_end(tmp_path):
    rows = pd.read_csv(real_label_file("nih"), nrows=120)
    test_patients = set(rows["Patient ID"].unique()[-6:])
    root = write_nih_layout(tmp_path / "nih", rows, test_patients)
    data = build_cell_data(cell(root, dataset="nih"))
    assert data.eval_labels == list(NIH_FINDINGS.values())
    src = rows.set_index("Image Index")
    for split in (data.train, data.valid, data.test):
        for i, image_id in enumerate(split.image_ids):
            findings = set(src.loc[image_id, "Finding Labels"].split("|"))
            expected = [float(f in findings) for f in NIH_FINDINGS]
            np.testing.assert_array_equal(split.targets[i, 1:], expected)
            assert split.targets[i, 0] == float(findings == {"No Finding"})
    assert {f"{p:08d}" for p in test_patients} == set(data.test.patient_ids)


def test_indiana_fixture_end_to_end(tmp_path):
    root = write_indiana_layout(tmp_path / "iu", real_indiana_reports(60), as_tgz=True)
    data = build_cell_data(cell(root, dataset="indiana", views="all"))
    n_images = sum(len(data.split(s)) for s in ("train", "valid", "test"))
    assert n_images == data.manifest["splits_before_sampling"]["train"]["images"] + sum(
        data.manifest["splits_before_sampling"][s]["images"] for s in ("valid", "test")
    )
    assert data.manifest["skipped_images"] == 0
    assert set(data.eval_labels) <= set(data.labels)


def _unindexed_images(reports):
    """Image ids of the reports whose MeSH terms carry no label information, from the XML directly."""
    import xml.etree.ElementTree as ET

    out = set()
    for _name, data in reports:
        doc = ET.fromstring(data)
        terms = {
            t.text.strip().lower()
            for tag in ("major", "automatic")
            for t in doc.iter(tag)
            if t.text and t.text.strip()
        }
        if not terms - {"no indexing"}:
            out |= {p.get("id") for p in doc.findall("parentImage")}
    return out


@pytest.mark.parametrize("not_mentioned", ["negative", "ignore"])
def test_unindexed_indiana_reports_are_never_negatives_in_any_split(tmp_path, not_mentioned):
    reports = real_indiana_reports(200)
    unindexed = _unindexed_images(reports)
    assert len(unindexed) >= 5  # the real collection's first 200 reports hold a few "No Indexing" ones
    root = write_indiana_layout(tmp_path / "iu", reports)
    data = build_cell_data(
        cell(root, dataset="indiana", views="all", uncertainty="zeros", not_mentioned=not_mentioned)
    )
    index = pd.concat([pd.Series(data.split(s).image_ids) for s in ("train", "valid", "test")])
    assert not set(index) & unindexed
    for s in ("train", "valid", "test"):
        assert not np.isnan(data.split(s).targets).all(axis=1).any()  # every kept image has a usable label
    excluded = data.manifest["unlabeled_images_excluded"]
    assert sum(excluded.values()) == len(unindexed)
    assert data.manifest["blank_label_means"] == "unknown" and data.manifest["blank_is_negative"] is False
    # per split: the loader's split of the unindexed images
    from chexbench.datasets.indiana import load_indiana_index

    full = load_indiana_index(root)
    by_split = full[full["image_id"].isin(unindexed)]["split"].value_counts().to_dict()
    assert excluded == {s: by_split.get(s, 0) for s in ("train", "valid", "test")}
    assert excluded["test"] > 0 and excluded["train"] > 0


def test_chexpert_blanks_stay_negative_by_default_and_nothing_is_excluded(chexpert_root):
    data = build_cell_data(cell(chexpert_root, uncertainty="ignore"))
    src = pd.read_csv(chexpert_root / "train.csv")
    assert src["Pneumothorax"].isna().sum() > 0
    j = data.labels.index("pneumothorax")
    n_blank_train = int(
        src.set_index(src["Path"].str.split("/", n=1).str[1])
        .loc[list(data.train.image_ids), "Pneumothorax"]
        .isna()
        .sum()
    )
    assert n_blank_train > 0 and (data.train.targets[:, j] == 0).sum() >= n_blank_train
    assert (
        data.manifest["blank_is_negative"] is True and data.manifest["blank_label_means"] == "not_mentioned"
    )
    assert data.manifest["unlabeled_images_excluded"] == {"train": 0, "valid": 0, "test": 0}


def test_phantom_datasets_take_their_layouts_label_convention():
    from chexbench.spec.registry import DATASETS

    for layout in ("chexpert", "nih", "indiana"):
        assert DATASETS.get(f"phantom-{layout}").blank_label_means == DATASETS.get(layout).blank_label_means
    assert DATASETS.get("indiana").blank_label_means == "unknown"
    assert DATASETS.get("chexpert").blank_label_means == "not_mentioned"


def test_pretrain_pool_of_another_dataset_comes_from_pretrain_root(chexpert_root, tmp_path):
    rows = pd.read_csv(real_label_file("nih"), nrows=60)
    nih_root = write_nih_layout(tmp_path / "nih", rows, set(rows["Patient ID"].unique()[-3:]))
    target = cell(nih_root, dataset="nih", pretrain_source="chexpert")
    target = dataclasses.replace(target, strategy_options={"pretrain_root": str(chexpert_root)})
    images, patients = pretrain_pool(target)
    chexpert_train = build_cell_data(cell(chexpert_root)).train
    assert sorted(patients) == sorted(chexpert_train.patient_ids)
    assert images.shape == (len(chexpert_train), SIZE, SIZE)


def test_a_rebuilt_cache_is_never_served_from_a_selection_of_the_old_one(
    chexpert_root, tmp_path, monkeypatch
):
    # the copied selection was keyed by the cache's name and rows only: after a rebuild under the same key
    # (new pixels, e.g. a re-exported image) the old copy was served again
    import os

    monkeypatch.setattr(celldata, "IN_MEMORY_LIMIT_BYTES", 0)
    before = build_cell_data(cell(chexpert_root, fraction=0.5))
    assert len(list((tmp_path / "cache").glob("cells/*.u8"))) == 1
    images = next((tmp_path / "cache").rglob("images.u8"))
    new = images.with_name("images.u8.new")
    new.write_bytes((255 - np.fromfile(images, dtype=np.uint8)).tobytes())  # a rebuild with other pixels
    os.replace(new, images)
    after = build_cell_data(cell(chexpert_root, fraction=0.5))
    np.testing.assert_array_equal(after.train.image_ids, before.train.image_ids)
    np.testing.assert_array_equal(np.asarray(after.train.images), 255 - np.asarray(before.train.images))
