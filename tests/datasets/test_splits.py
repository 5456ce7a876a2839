import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chexbench.datasets.splits import (
    assign_patient_splits,
    carve_patients,
    ids_sha256,
    patient_overlaps,
    sample_patients,
)


@st.composite
def cohorts(draw):
    """Per-image patient ids (1–6 images each) and a sparse positives matrix (N, E)."""
    n_pat = draw(st.integers(1, 60))
    sizes = draw(st.lists(st.integers(1, 6), min_size=n_pat, max_size=n_pat))
    pids = np.repeat([f"p{i:03d}" for i in range(n_pat)], sizes)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    e = draw(st.integers(0, 4))
    positives = rng.random((len(pids), e)) < draw(st.sampled_from([0.0, 0.02, 0.2, 0.6]))
    return pids, positives


def _is_patient_level(pids, mask):
    return all(len(set(mask[pids == p])) == 1 for p in set(pids))


@settings(max_examples=60, deadline=None)
@given(cohorts(), st.sampled_from([0.01, 0.1, 0.5, 1.0]), st.integers(0, 5))
def test_label_fraction_is_patient_level_sized_and_keeps_every_labels_positives(cohort, fraction, seed):
    pids, positives = cohort
    mask = sample_patients(pids, positives, seed, fraction=fraction)
    assert _is_patient_level(pids, mask)
    n_pat = len(set(pids))
    target = n_pat if fraction == 1.0 else max(1, round(fraction * n_pat))
    # a sample too small to hold one positive patient per label grows by at most one per label
    assert target <= len(set(pids[mask])) <= target + positives.shape[1]
    for label in range(positives.shape[1]):
        assert positives[mask, label].any() == positives[:, label].any(), label
    np.testing.assert_array_equal(mask, sample_patients(pids, positives, seed, fraction=fraction))


@settings(max_examples=40, deadline=None)
@given(cohorts(), st.integers(1, 80), st.integers(0, 5))
def test_image_caps_take_whole_patients_up_to_the_cap(cohort, cap, seed):
    pids, positives = cohort
    mask = sample_patients(pids, np.zeros((len(pids), 0), bool), seed, max_images=cap)
    assert _is_patient_level(pids, mask)
    largest = max(np.unique(pids, return_counts=True)[1])
    assert mask.sum() <= max(cap, largest)
    assert mask.sum() >= 1


def test_a_one_patient_sample_grows_to_hold_two_labels_positives():
    pids = np.array(["a", "b", "c"])
    positives = np.array([[True, False], [False, True], [False, False]])
    mask = sample_patients(pids, positives, 0, fraction=0.1)
    assert mask.tolist() == [True, True, False]


def test_stratification_swaps_in_a_positive_patient_of_a_rare_label():
    pids = np.array([f"p{i:02d}" for i in range(100)])
    positives = np.zeros((100, 1), bool)
    positives[37, 0] = True  # one positive patient in 100
    for seed in range(10):
        mask = sample_patients(pids, positives, seed, fraction=0.05)
        assert mask.sum() == 5 and mask[37]


def test_different_seeds_give_different_samples_and_fraction_one_keeps_all():
    pids = np.array([f"p{i:03d}" for i in range(200)])
    none = np.zeros((200, 0), bool)
    a, b = (sample_patients(pids, none, s, fraction=0.1) for s in (0, 1))
    assert not np.array_equal(a, b)
    assert sample_patients(pids, none, 0, fraction=1.0).all()


@given(st.lists(st.text(min_size=1, max_size=5), min_size=1, max_size=80), st.integers(0, 100))
def test_assigned_splits_share_no_patient_and_ignore_row_order(ids, seed):
    pids = np.array(ids, dtype=object)
    split = assign_patient_splits(pids, {"train": 0.7, "valid": 0.1, "test": 0.2}, seed)
    by_split = {s: pids[split == s] for s in ("train", "valid", "test")}
    assert patient_overlaps(by_split) == {}
    shuffled = np.random.default_rng(seed).permutation(len(pids))
    again = assign_patient_splits(pids[shuffled], {"train": 0.7, "valid": 0.1, "test": 0.2}, seed)
    np.testing.assert_array_equal(again, split[shuffled])
    if len(set(ids)) >= 3:
        assert all(len(v) for v in by_split.values())


def test_carve_is_deterministic_and_order_free():
    pids = np.array([f"p{i}" for i in range(1000)] * 2)
    a = carve_patients(pids, 0.05, 7)
    assert len(a) == 50
    assert a == carve_patients(pids[::-1], 0.05, 7)
    assert a != carve_patients(pids, 0.05, 8)


def test_overlaps_and_hashes():
    assert patient_overlaps(
        {"train": np.array(["a", "b"]), "test": np.array(["b", "c"]), "valid": np.array(["c"])}
    ) == {
        "train&test": 1,
        "test&valid": 1,
    }
    assert ids_sha256(np.array(["b", "a"])) == ids_sha256(np.array(["a", "b"])) != ids_sha256(np.array(["a"]))
    with pytest.raises(ValueError, match="sum to 1"):
        assign_patient_splits(np.array(["a"]), {"train": 0.5}, 0)
