"""[[exclude]]: a grid trades cells (e.g. one backbone on the transfer datasets); excluded cells are listed as
skipped."""

import pytest

from chexbench.core.errors import ConfigError
from chexbench.spec.parse import load_grid, parse_grid

BASE = {
    "axes": {
        "strategy": ["scratch", "simclr"],
        "backbone": ["resnet_tiny", "vit_tiny"],
        "dataset": ["phantom-chexpert", "phantom-nih", "phantom-indiana"],
        "protocol": ["finetune", "linear"],
    }
}


def test_excluded_cells_are_skipped_with_the_reason_and_lists_mean_any_of():
    raw = {
        **BASE,
        "exclude": [
            {
                "match": {"dataset": ["phantom-nih", "phantom-indiana"], "backbone": "vit_tiny"},
                "reason": "transfer datasets on the ResNet only",
            }
        ],
    }
    cells = parse_grid(raw, "g.toml").cells()
    assert len(cells) == 2 * 2 * 3 * 2
    skipped = [p for p in cells if p.status == "skipped"]
    assert {(p.cell.dataset, p.cell.backbone) for p in skipped} == {
        ("phantom-nih", "vit_tiny"),
        ("phantom-indiana", "vit_tiny"),
    }
    assert len(skipped) == 2 * 2 * 2
    assert all(
        p.reason == "excluded by the grid ([[exclude]] #1): transfer datasets on the ResNet only"
        for p in skipped
    )


@pytest.mark.parametrize(
    "table,message",
    [
        (
            {"match": {"dataset": "phantom-nh"}},
            (
                r"\[\[exclude\]\] #1 match dataset = 'phantom-nh' is not a value of axis 'dataset'; did you"
                r" mean 'phantom-nih'"
            ),
        ),
        (
            {"match": {"backbon": "vit_tiny"}},
            r"unknown key 'backbon' in \[\[exclude\]\] #1 match; did you mean 'backbone'",
        ),
        ({"match": {}}, r"\[\[exclude\]\] #1 needs a non-empty 'match' table"),
        (
            {"match": {"seed": 0}, "reasn": "x"},
            r"unknown key 'reasn' in \[\[exclude\]\] #1; did you mean 'reason'",
        ),
    ],
)
def test_a_mistyped_exclude_is_one_line_not_a_silent_no_op(table, message):
    with pytest.raises(ConfigError, match=message):
        parse_grid({**BASE, "exclude": [table]}, "g.toml")


def test_the_smoke_grid_evaluates_every_layout_and_pretrains_once_per_strategy_and_backbone():
    from chexbench.spec.registry import STRATEGIES
    from chexbench.strategies.pretrain import run_id_of

    cells = [p.cell for p in load_grid("smoke").cells() if p.status == "run"]
    assert {c.dataset for c in cells} == {"phantom-chexpert", "phantom-nih", "phantom-indiana"}
    runs = {}
    for c in cells:
        key = STRATEGIES.get(c.strategy).pretrain_key(c)
        if key is not None:
            runs.setdefault((c.strategy, c.backbone), set()).add(run_id_of(key))
    assert runs and all(
        len(ids) == 1 for ids in runs.values()
    )  # the transfer cells reuse the CheXpert-layout run
    for c in cells:
        assert c.settings.pretrain_source == "phantom-chexpert"
