"""The localization section: per configuration (seeds pooled on the same pairs, never across
configurations) with patient-level intervals, per label, and per cell as stored."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from chexbench.reports.localization_table import (
    localization_label_rows,
    localization_rows,
    localization_section,
    localization_summary,
)


def _detail(hits: list[float], patients: list[str] | None = None) -> dict:
    n = len(hits)
    return {
        "image_id": [f"img{i}" for i in range(n)],
        "cluster": patients or [f"p{i}" for i in range(n)],
        "label": ["cardiomegaly" if i % 2 else "pleural_effusion" for i in range(n)],
        "hit": hits,
        "hit_tolerant": hits,
        "random": [0.1] * n,
        "random_tolerant": [0.2] * n,
        "flat": [False] * n,
    }


def _record(
    cell_id: str,
    backbone: str,
    head: str | None,
    loc: dict | None,
    status: str = "ok",
    seed: int = 0,
    topk: int = 8,
) -> dict:
    opts = {"head": head, "topk": topk} if head else {}
    return {
        "cell_id": cell_id,
        "status": status,
        "strategy": "scratch",
        "backbone": backbone,
        "dataset": "phantom-nih",
        "protocol": "finetune",
        "label_fraction": 1.0,
        "seed": seed,
        "macro_auroc": 0.8125,
        "config_json": json.dumps({"backbone": backbone, "seed": seed, "protocol_options": opts}),
        "data_json": json.dumps(
            {"protocol_extra": {"head": head or "linear", **({"localization": loc} if loc else {})}}
        ),
    }


LOC = {
    "method": "topk_scores",
    "pairs": 40,
    "pointing_hit_rate": 0.45,
    "random_hit_rate": 0.0825,
    "flat_maps": 0,
    "pointing_ci": [0.3, 0.6],
    "tolerant": {
        "tolerance_px": 4.29,
        "pointing_hit_rate": 0.5,
        "pointing_ci": [0.35, 0.65],
        "random_hit_rate": 0.12,
    },
    "deletion_auc": 0.31,
    "random_deletion_auc": 0.4,
}


def test_rows_and_markdown():
    records = pd.DataFrame(
        [
            _record("a", "vit_tiny", "topk", LOC),
            _record(
                "b",
                "resnet_tiny",
                None,
                {**LOC, "method": "gradcam", "pointing_hit_rate": 0.2, "deletion_auc": None, "flat_maps": 3},
            ),
            _record("c", "vit_tiny", None, None),
            _record("d", "vit_tiny", "topk", LOC, status="failed"),
        ]
    )
    rows = localization_rows(records)
    assert list(rows["backbone"]) == ["resnet_tiny", "vit_tiny"]
    assert rows.loc[1, "K"] == 8 and rows.loc[0, "K"] == ""
    md = localization_section(records)
    assert md.startswith("## Localization")
    assert (
        "| phantom-nih | scratch | vit_tiny | topk | 8 | topk_scores | 1 | 0.812 | 40 | 0 | 0.450 | [0.300,"
        " 0.600] | 0.083 | — | — | — | — | — | 0.500 | [0.350, 0.650] | 0.120 | 4.167 | — | — | — | — | — |"
        " 0.310 | 0.400 |" in md
    )
    assert "| gradcam | 1 | 0.812 | 40 | 3 | 0.200 | [0.300, 0.600] |" in md  # flat maps shown


def test_seeds_of_one_configuration_are_pooled_on_the_same_pairs_and_configurations_are_not():
    a = [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0]
    b = [1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0]

    def loc(hits):
        return {
            **LOC,
            "pairs": len(hits),
            "pointing_hit_rate": float(np.mean(hits)),
            "pair_detail": _detail(hits),
        }

    records = pd.DataFrame(
        [
            _record("s0", "vit_tiny", "topk_classwise", loc(a), seed=0),
            _record("s1", "vit_tiny", "topk_classwise", loc(b), seed=1),
            _record("k16", "vit_tiny", "topk_classwise", loc(b), seed=0, topk=16),  # another configuration
        ]
    )
    summary = localization_summary(records)
    assert len(summary) == 2 and sorted(summary["seeds"]) == [1, 2]
    pooled = summary[summary["seeds"] == 2].iloc[0]
    assert pooled["pointing"] == pytest.approx(np.mean((np.array(a) + np.array(b)) / 2))
    assert pooled["random tolerant"] == pytest.approx(0.2) and pooled["tolerant ÷ random"] == pytest.approx(
        pooled["tolerant pointing"] / 0.2
    )
    lo, hi = pooled["pointing CI"]
    assert lo < pooled["pointing"] < hi
    labels = localization_label_rows(records)
    assert set(labels["label"]) == {"cardiomegaly", "pleural_effusion"} and labels["pairs"].sum() == 16


def test_empty_without_localization():
    assert localization_section(pd.DataFrame([_record("c", "vit_tiny", None, None)])) == ""


def test_the_local_classwise_source_is_its_own_named_row():
    """Two class-specific cells that differ only in classwise_source are two rows, the local one named."""
    plain = _record("a", "vit_tiny", "topk_classwise", {**LOC, "pair_detail": _detail([1.0, 0.0])})
    local = _record("b", "vit_tiny", "topk_classwise", {**LOC, "pair_detail": _detail([1.0, 1.0])})
    local["config_json"] = json.dumps(
        {
            "backbone": "vit_tiny",
            "seed": 0,
            "protocol_options": {"head": "topk_classwise", "topk": 8, "classwise_source": "local"},
        }
    )
    summary = localization_summary(pd.DataFrame([plain, local]))
    assert sorted(summary["head"]) == ["topk_classwise", "topk_classwise (local)"]


def test_the_local_head_rows_name_their_kernel_and_offset():
    """local_kernel = 1 and local_offset = false are other head designs: each row says which it is."""
    records = []
    for cid, extra_opts in (
        ("a", {}),
        ("b", {"local_kernel": 1}),
        ("c", {"local_kernel": 1, "local_offset": False}),
    ):
        rec = _record(cid, "vit_tiny", "topk_classwise", {**LOC, "pair_detail": _detail([1.0, 0.0])})
        rec["config_json"] = json.dumps(
            {
                "backbone": "vit_tiny",
                "seed": 0,
                "protocol_options": {
                    "head": "topk_classwise",
                    "topk": 8,
                    "classwise_source": "local",
                    **extra_opts,
                },
            }
        )
        records.append(rec)
    summary = localization_summary(pd.DataFrame(records))
    assert sorted(summary["head"]) == [
        "topk_classwise (local)",
        "topk_classwise (local, 1×1)",
        "topk_classwise (local, 1×1, no offset)",
    ]


def test_a_seed_without_pair_detail_gives_the_mean_of_the_seeds_not_one_seeds_numbers():
    # an older record (no pair_detail) beside a newer one: the row must not show seed 0's rate under "seeds 2"
    old = {**LOC, "pointing_hit_rate": 1.0, "random_hit_rate": 0.1}
    new = {**LOC, "pointing_hit_rate": 0.0, "random_hit_rate": 0.1, "pair_detail": _detail([0.0] * 40)}
    summary = localization_summary(
        pd.DataFrame(
            [_record("a", "vit_tiny", "topk", old, seed=0), _record("b", "vit_tiny", "topk", new, seed=1)]
        )
    )
    row = summary.iloc[0]
    assert row["seeds"] == 2 and row["pointing"] == pytest.approx(0.5) and row["pointing CI"] is None


def test_flat_maps_are_counted_per_seed_not_summed_over_seeds():
    flat_detail = {**_detail([0.0] * 8), "flat": [True] * 8}
    loc = {**LOC, "pairs": 8, "pointing_hit_rate": 0.0, "flat_maps": 8, "pair_detail": flat_detail}
    summary = localization_summary(
        pd.DataFrame([_record(c, "vit_tiny", "topk", loc, seed=s) for s, c in enumerate("abc")])
    )
    assert summary.iloc[0]["pairs"] == 8 and summary.iloc[0]["flat maps"] == 8  # not 24


def _detail_with_baselines(hits: list[float], prior: list[float], shuffled: list[float]) -> dict:
    n = len(hits)
    return {
        **_detail(hits, [f"p{i // 2}" for i in range(n)]),
        "label_prior": prior,
        "label_prior_tolerant": prior,
        "shuffled": shuffled,
        "shuffled_tolerant": shuffled,
    }


def test_the_pointing_rate_is_a_ratio_to_the_strongest_baseline_with_a_patient_interval():
    # the label prior (0.5) beats random (0.1) and shuffled (0.25): the ratio is to it, seeds pooled on the
    # same pairs
    hits_a, hits_b = [1.0, 1.0, 0.0, 1.0] * 5, [1.0, 0.0, 0.0, 1.0] * 5
    prior, shuffled = [1.0, 0.0] * 10, [1.0, 0.0, 0.0, 0.0] * 5
    records = pd.DataFrame(
        [
            _record(
                "a",
                "vit_tiny",
                "topk",
                {**LOC, "pair_detail": _detail_with_baselines(hits_a, prior, shuffled)},
                seed=0,
            ),
            _record(
                "b",
                "vit_tiny",
                "topk",
                {**LOC, "pair_detail": _detail_with_baselines(hits_b, prior, shuffled)},
                seed=1,
            ),
        ]
    )
    row = localization_summary(records).iloc[0]
    pooled = (np.mean(hits_a) + np.mean(hits_b)) / 2
    assert row["label prior"] == pytest.approx(0.5) and row["shuffled"] == pytest.approx(0.25)
    assert row["strongest baseline"] == "label prior" and row["÷ strongest"] == pytest.approx(pooled / 0.5)
    lo, hi = row["÷ strongest CI"]
    assert lo < pooled / 0.5 < hi and hi - lo > 0.1
    md = localization_section(records)
    assert "| label prior | 1.250 | [" in md
    labels = localization_label_rows(records)
    eff = labels[labels["label"] == "pleural_effusion"].iloc[0]  # even pairs: prior 1.0, the strongest
    assert (
        eff["label prior"] == 1.0
        and eff["strongest baseline"] == "label prior"
        and eff["÷ strongest"] == pytest.approx(0.5)
    )
