"""The report's Warnings section names a cell whose pretraining run collapsed."""

from __future__ import annotations

import json

import pandas as pd

from chexbench.reports.cell_warnings import init_warnings, warnings_section


def _init(collapsed_at):
    notes = ["resumed from epoch 2 (step 24)"]
    if collapsed_at is not None:
        notes.append(
            f"collapsed at epoch {collapsed_at}: embedding std x sqrt(d) 0.0000 < 0.01 (effective rank 1.00)"
        )
    return json.dumps(
        {
            "source": "pretrain:abc",
            "pretrain_run": "abc",
            "notes": notes,
            "extra": {"pretrain_collapsed_at_epoch": collapsed_at},
        }
    )


def test_a_collapsed_pretraining_run_is_a_warning_of_every_cell_it_serves() -> None:
    assert init_warnings(_init(None)) == [] and init_warnings("") == [] and init_warnings("not json") == []
    (w,) = init_warnings(_init(3))
    assert (
        w == "pretraining run abc collapsed at epoch 3 (embedding std x sqrt(d) 0.0000 < 0.01 (effective rank"
        " 1.00))"
    )
    records = pd.DataFrame(
        [
            {
                "cell_id": "c1",
                "strategy": "dino",
                "backbone": "vit_tiny",
                "protocol": "linear",
                "init_json": _init(3),
                "data_json": "{}",
            },
            {
                "cell_id": "c2",
                "strategy": "dino",
                "backbone": "vit_tiny",
                "protocol": "linear",
                "init_json": _init(None),
                "data_json": "{}",
            },
        ]
    )
    section = warnings_section(records)
    assert "`c1`" in section and "collapsed at epoch 3" in section and "`c2`" not in section
    assert warnings_section(records.iloc[1:]) == ""
