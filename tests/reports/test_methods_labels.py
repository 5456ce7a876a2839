"""The report's Methods says how blank labels were treated, from what each cell recorded."""

import json
from types import SimpleNamespace

import pandas as pd

from chexbench.reports.report import methods_section


def _results(*rows):
    ok = pd.DataFrame([{"dataset": d, "data_json": json.dumps(m)} for d, m in rows])
    return SimpleNamespace(ok=ok, n_boot=100, seed=0)


def test_methods_names_where_blanks_are_negatives_masked_and_images_left_out():
    text = methods_section(
        _results(
            (
                "phantom-chexpert",
                {"blank_is_negative": True, "unlabeled_images_excluded": {"train": 0, "test": 0}},
            ),
            (
                "phantom-indiana",
                {"blank_is_negative": False, "unlabeled_images_excluded": {"train": 4, "test": 2}},
            ),
            ("chexpert", {"blank_is_negative": False, "unlabeled_images_excluded": {"test": 0}}),
        )
    )
    assert "a blank (not mentioned) label is a negative on phantom-chexpert (CheXpert convention)" in text
    assert "a blank label is masked on chexpert, phantom-indiana" in text
    assert "(test images left out: phantom-indiana 2)" in text
    assert (
        "not mentioned, or uncertain under U-Ignore" not in text
    )  # the old claim that blanks are always masked


def test_methods_says_when_old_records_do_not_record_the_rule():
    text = methods_section(_results(("nih", {})))
    assert "the blank rule is not recorded for nih" in text
