import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chexbench.core.errors import ConfigError
from chexbench.datasets.labels import (
    BLANK_NOT_MENTIONED,
    BLANK_UNKNOWN,
    CHEXPERT_COLUMNS,
    CHEXPERT_EVAL_LABELS,
    HARMONIZED_LABELS,
    INDIANA_EVAL_LABELS,
    INDIANA_LABELS,
    INDIANA_TERMS,
    NIH_EVAL_LABELS,
    NIH_FINDINGS,
    apply_uncertainty,
    has_usable_label,
    indiana_term_label,
    training_targets,
)


def test_vocabulary_is_the_21_snake_case_labels_and_mappings_land_in_it():
    assert len(HARMONIZED_LABELS) == 21 and len(set(HARMONIZED_LABELS)) == 21
    assert all(lab == lab.lower() and " " not in lab for lab in HARMONIZED_LABELS)
    for table in (CHEXPERT_COLUMNS, NIH_FINDINGS, INDIANA_TERMS):
        assert set(table.values()) <= set(HARMONIZED_LABELS)
    assert len(set(CHEXPERT_COLUMNS.values())) == 14
    assert len(set(NIH_FINDINGS.values())) == 14
    assert set(CHEXPERT_EVAL_LABELS) == {
        "atelectasis",
        "cardiomegaly",
        "consolidation",
        "edema",
        "pleural_effusion",
    }
    assert set(NIH_EVAL_LABELS) == set(NIH_FINDINGS.values())
    assert set(INDIANA_EVAL_LABELS) <= set(INDIANA_LABELS)


@pytest.mark.parametrize(
    "term, label",
    [
        ("Pleural Effusion/right", "pleural_effusion"),
        ("Cardiomegaly/mild", "cardiomegaly"),
        ("Cardiac Shadow/enlarged", "cardiomegaly"),
        ("Thickening/pleura/apex/left", "pleural_thickening"),
        ("Opacity/lung/base/left/mild", "lung_opacity"),
        ("Pulmonary Atelectasis/base/left", "atelectasis"),
        ("Hernia, Hiatal", "hernia"),
        ("  pleural   effusions ", "pleural_effusion"),
        ("normal", None),
        ("Lung/hypoinflation", None),
        ("Thickening/bronchovascular", None),
        ("Calcified Granuloma/lung/upper lobe/right", None),
    ],
)
def test_indiana_terms_map_through_the_table(term, label):
    assert indiana_term_label(term) == label


RAW = np.array([[1.0, 0.0, -1.0, np.nan], [-1.0, -1.0, 1.0, 0.0]])
LABELS = ["atelectasis", "cardiomegaly", "edema", "pleural_effusion"]


@pytest.mark.parametrize(
    "policy, expected",
    [
        ("ignore", [[1, 0, np.nan, np.nan], [np.nan, np.nan, 1, 0]]),
        ("zeros", [[1, 0, 0, np.nan], [0, 0, 1, 0]]),
        ("ones", [[1, 0, 1, np.nan], [1, 1, 1, 0]]),
        # CheXpert paper: U-Ones for atelectasis and edema, U-Zeros for the others
        ("mixed", [[1, 0, 1, np.nan], [1, 0, 1, 0]]),
    ],
)
def test_uncertainty_policies_on_a_hand_made_table(policy, expected):
    out = apply_uncertainty(RAW, LABELS, policy)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.array(expected, dtype=np.float32))
    assert np.isnan(RAW[0, 3]) and RAW[0, 2] == -1.0  # input untouched


def test_unknown_policy_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown uncertainty policy 'maybe'"):
        apply_uncertainty(RAW, LABELS, "maybe")


@given(st.lists(st.sampled_from([1.0, 0.0, -1.0, np.nan]), min_size=4, max_size=40))
def test_policies_never_touch_certain_values_and_keep_not_mentioned_masked(values):
    raw = np.array(values[: len(values) // 4 * 4]).reshape(-1, 4)
    for policy in ("ignore", "zeros", "ones", "mixed"):
        out = apply_uncertainty(raw, LABELS, policy)
        certain = (raw == 1) | (raw == 0)
        np.testing.assert_array_equal(out[certain], raw[certain])
        assert np.isnan(out[np.isnan(raw)]).all()
        assert set(np.unique(out[~np.isnan(out)])) <= {0.0, 1.0}


@pytest.mark.parametrize("uncertainty", ["ignore", "zeros", "ones", "mixed"])
def test_blanks_follow_the_dataset_convention_after_the_uncertainty_policy(uncertainty):
    after_policy = apply_uncertainty(RAW, LABELS, uncertainty)
    negative = training_targets(RAW, LABELS, uncertainty, "negative", BLANK_NOT_MENTIONED)
    expected = after_policy.copy()
    expected[np.isnan(RAW)] = 0.0  # CheXpert: a blank (not mentioned) is a negative by default
    np.testing.assert_array_equal(negative, expected)
    np.testing.assert_array_equal(
        training_targets(RAW, LABELS, uncertainty, "ignore", BLANK_NOT_MENTIONED), after_policy
    )
    # "unknown" blanks (no label information) are masked whatever not_mentioned says
    for not_mentioned in ("negative", "ignore"):
        np.testing.assert_array_equal(
            training_targets(RAW, LABELS, uncertainty, not_mentioned, BLANK_UNKNOWN), after_policy
        )


def test_rows_without_any_usable_target_are_found():
    raw = np.array([[np.nan, np.nan], [np.nan, 0.0], [-1.0, np.nan]])
    assert has_usable_label(
        training_targets(raw, LABELS[:2], "ignore", "negative", BLANK_UNKNOWN)
    ).tolist() == [False, True, False]
    assert has_usable_label(
        training_targets(raw, LABELS[:2], "zeros", "negative", BLANK_UNKNOWN)
    ).tolist() == [False, True, True]
    assert has_usable_label(
        training_targets(raw, LABELS[:2], "ignore", "negative", BLANK_NOT_MENTIONED)
    ).all()


def test_unknown_not_mentioned_setting_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown not_mentioned setting 'negativ'"):
        training_targets(RAW, LABELS, "zeros", "negativ", BLANK_NOT_MENTIONED)
