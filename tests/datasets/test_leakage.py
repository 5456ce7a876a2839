"""Leakage is decided by patient ids, whatever the dataset names and roots (issue 16 item 5)."""

import dataclasses
import shutil

import numpy as np
import pandas as pd
import pytest

from chexbench.core.errors import DataError, LeakageError
from chexbench.datasets.celldata import pretrain_pool
from chexbench.datasets.fixtures import real_label_file, write_nih_layout
from chexbench.datasets.leakage import check_pretrain_leakage, pretrain_source_options
from chexbench.datasets.nih import load_nih_index
from chexbench.spec.cell import CellConfig
from chexbench.spec.registry import DATASETS
from chexbench.spec.settings import Settings

SIZE = 16


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("CHEXBENCH_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def nih(tmp_path):
    rows = pd.read_csv(real_label_file("nih"), nrows=90)
    test_patients = set(rows["Patient ID"].unique()[-5:])
    root = write_nih_layout(tmp_path / "nih", rows, test_patients)
    n_test = len({f"{p:08d}" for p in test_patients})
    return root, n_test


def ssl_cell(
    target_root, dataset="nih", source="phantom-nih", pretrain_root=None, strategy="simclr", **settings
):
    return CellConfig(
        strategy=strategy,
        backbone="resnet_tiny",
        dataset=dataset,
        protocol="linear",
        label_fraction=1.0,
        seed=0,
        settings=Settings(image_size=SIZE, pretrain_source=source, views="all", **settings),
        dataset_options={"root": str(target_root)},
        strategy_options={"pretrain_root": str(pretrain_root)} if pretrain_root else {},
    )


def _copy_with_test_as_train(root, dest):
    """A copy of an NIH root whose official lists put every image in train_val (the pool)."""
    shutil.copytree(root, dest)
    names = (root / "train_val_list.txt").read_text().split() + (root / "test_list.txt").read_text().split()
    (dest / "train_val_list.txt").write_text("\n".join(names[1:]) + "\n")
    (dest / "test_list.txt").write_text(names[0] + "\n")
    return dest


def _leaked(pool_root, target_root):
    """Target test patients in the pool root's train split, from the loader's splits."""
    pool, target = load_nih_index(pool_root), load_nih_index(target_root)
    return len(
        set(pool["patient_id"][pool["split"] == "train"])
        & set(target["patient_id"][target["split"] == "test"])
    )


def test_a_copy_of_the_target_under_another_name_is_refused_with_roots_and_count(nih, tmp_path):
    root, n_test = nih
    copy = _copy_with_test_as_train(root, tmp_path / "elsewhere")
    n_leaked = _leaked(copy, root)
    assert n_leaked >= 2
    cell = ssl_cell(root, source="phantom-nih", pretrain_root=copy)
    with pytest.raises(LeakageError) as e:
        DATASETS.get("nih").preflight(cell)  # before the first cell: plan / run refuse here
    msg = str(e.value)
    assert f"dataset 'nih' at {root}:" in msg and f"'phantom-nih' at {copy}" in msg
    assert f"{n_leaked} of its {n_test} test patients are in the pretraining pool" in msg
    with pytest.raises(LeakageError, match=f"{n_leaked} of its {n_test} test patients"):
        pretrain_pool(cell)  # and in the cell path
    allowed = dataclasses.replace(cell, settings=dataclasses.replace(cell.settings, allow_leakage=True))
    DATASETS.get("nih").preflight(allowed)
    assert check_pretrain_leakage(allowed) == n_leaked  # recorded in the init record by the strategy


def test_pretrain_root_is_used_even_when_the_source_is_the_target(nih, tmp_path):
    root, n_test = nih
    copy = _copy_with_test_as_train(root, tmp_path / "copy")
    cell = ssl_cell(root, source="nih", pretrain_root=copy)
    assert pretrain_source_options(cell) == {"root": str(copy)}
    with pytest.raises(LeakageError, match=f"'nih' at {copy}"):
        DATASETS.get("nih").preflight(cell)
    allowed = dataclasses.replace(cell, settings=dataclasses.replace(cell.settings, allow_leakage=True))
    _, patients = pretrain_pool(allowed)
    train_val = pd.read_csv(copy / "Data_Entry_2017_v2020.csv")
    assert len(set(patients)) > len(
        set(pretrain_pool(ssl_cell(root, source="nih"))[1])
    )  # the copy's larger pool
    assert set(patients) <= {f"{p:08d}" for p in train_val["Patient ID"]}


def test_disjoint_patients_pass_and_strategies_without_pretraining_skip_the_pool(nih, tmp_path):
    root, _ = nih
    rows = pd.read_csv(real_label_file("nih"), nrows=300).iloc[150:]  # other patients
    other = write_nih_layout(tmp_path / "other", rows, set(rows["Patient ID"].unique()[-3:]))
    assert not set(rows["Patient ID"]) & set(pd.read_csv(root / "Data_Entry_2017_v2020.csv")["Patient ID"])
    cell = ssl_cell(root, source="phantom-nih", pretrain_root=other)
    DATASETS.get("nih").preflight(cell)
    assert check_pretrain_leakage(cell) == 0
    leaky = _copy_with_test_as_train(root, tmp_path / "leaky")
    DATASETS.get("nih").preflight(
        ssl_cell(root, source="phantom-nih", pretrain_root=leaky, strategy="scratch")
    )


def test_preflight_names_bad_label_files_and_split_leakage_before_any_cell(nih, tmp_path):
    root, _ = nih
    bad = tmp_path / "bad"
    shutil.copytree(root, bad)
    df = pd.read_csv(bad / "Data_Entry_2017_v2020.csv")
    df.loc[3, "Finding Labels"] = "Cardiomegally"
    df.to_csv(bad / "Data_Entry_2017_v2020.csv", index=False)
    with pytest.raises(DataError, match="unknown label value 'Cardiomegally'"):
        DATASETS.get("nih").preflight(ssl_cell(bad, strategy="scratch"))
    shared = tmp_path / "shared"
    shutil.copytree(root, shared)
    names = (root / "test_list.txt").read_text().split()
    (shared / "train_val_list.txt").write_text((root / "train_val_list.txt").read_text() + names[0] + "\n")
    (shared / "test_list.txt").write_text("\n".join(names[1:]) + "\n")
    pids = pd.read_csv(root / "Data_Entry_2017_v2020.csv").set_index("Image Index")["Patient ID"]
    if (pids[names[1:]] == pids[names[0]]).any():  # the moved image's patient keeps images in test
        with pytest.raises(LeakageError, match="dataset 'nih': 1 patients appear in more than one split"):
            DATASETS.get("nih").preflight(ssl_cell(shared, strategy="scratch"))
    else:
        DATASETS.get("nih").preflight(ssl_cell(shared, strategy="scratch"))
    assert np.all(pids.index.notna())


def test_phantom_pool_of_another_layout_shares_no_patient_ids(tmp_path):
    # the smoke grid: pretraining on phantom-chexpert, evaluation on the NIH and Indiana layouts
    opts = {"patients": 40, "size": 32}
    for target in ("phantom-nih", "phantom-indiana"):
        cell = CellConfig(
            strategy="mocov2",
            backbone="resnet_tiny",
            dataset=target,
            protocol="linear",
            label_fraction=1.0,
            seed=0,
            settings=Settings(image_size=SIZE, pretrain_source="phantom-chexpert"),
            dataset_options=opts,
        )
        DATASETS.get(target).preflight(cell)
        assert check_pretrain_leakage(cell) == 0
