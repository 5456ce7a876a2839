"""Configuration identity in the report: only seeds of one configuration are pooled, every key that
tells configurations apart is shown, duplicates are never averaged, unpaired truths are not paired,
and a number does not depend on which other cells share the results folder."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pandas as pd
import pytest
import torch
from synthetic_store import _predictions, _record, _truth

from chexbench.bench.runner import base_record
from chexbench.bench.store import RECORD_COLUMNS, ResultStore, record_configuration_hash
from chexbench.reports.aggregate import load_results
from chexbench.reports.leaderboard import build_tables
from chexbench.reports.report import write_report
from chexbench.spec.cell import CellConfig, configuration_keys
from chexbench.spec.settings import Settings

TRUTH = _truth(30, 2)


def _cell(
    store: ResultStore,
    cell_id: str,
    strategy: str,
    seed: int,
    strength: float,
    extra: dict | None = None,
    backbone: str = "resnet50",
    truth: pd.DataFrame = TRUTH,
    created: str = "2026-01-01T00:00:00+00:00",
    noise_seed: int | None = None,
) -> None:
    rec = _record(cell_id, strategy, backbone, "chexpert", "finetune", 1.0, seed)
    config = {**json.loads(rec["config_json"]), **(extra or {})}
    rec["config_json"] = json.dumps(config, sort_keys=True)
    rec["created_at"] = created
    rng = np.random.default_rng(noise_seed if noise_seed is not None else zlib.crc32(cell_id.encode()))
    store.write(rec, _predictions(truth, rng, strength))


def _tables(root, n_boot=200, seed=0):
    return build_tables(load_results(root, n_boot=n_boot, seed=seed))


def test_configuration_hash_ignores_only_the_seed_and_is_derived_from_the_stored_config():
    a = CellConfig("simclr", "resnet50", "chexpert", "finetune", 1.0, 0, grid="one")
    b = CellConfig("simclr", "resnet50", "chexpert", "finetune", 1.0, 1, grid="two")
    c = CellConfig(
        "simclr", "resnet50", "chexpert", "finetune", 1.0, 0, strategy_options={"temperature": 0.2}
    )
    d = CellConfig("simclr", "resnet50", "chexpert", "finetune", 1.0, 0, settings=Settings(epochs=2))
    assert a.configuration_hash == b.configuration_hash and a.cell_id != b.cell_id
    assert len({a.configuration_hash, c.configuration_hash, d.configuration_hash}) == 3
    assert (
        record_configuration_hash(c.canonical_json()) == c.configuration_hash
    )  # old records: derived on load
    keys = configuration_keys(json.loads(c.canonical_json()))
    assert keys["strategy.temperature"] == 0.2 and keys["settings.epochs"] == 10 and "seed" not in keys
    rec = base_record(c, torch.device("cpu")).as_dict()
    assert rec["configuration_hash"] == c.configuration_hash
    assert list(RECORD_COLUMNS).index("configuration_hash") == list(RECORD_COLUMNS).index("config_hash") + 1


def test_records_without_the_column_still_load(tmp_path):
    store = ResultStore(tmp_path)
    for i, strategy in enumerate(("scratch", "simclr")):
        _cell(store, f"c{i}", strategy, 0, 1.0)
        path = store.record_path(f"c{i}")
        pd.read_parquet(path).drop(columns=["configuration_hash"]).to_parquet(path)  # a folder from before
    lb = _tables(tmp_path).leaderboard
    assert len(lb) == 2 and lb["configuration_hash"].str.len().eq(64).all()


@pytest.mark.parametrize("baseline_swept_too", [False, True])
def test_swept_option_axis_gives_separate_rows(tmp_path, baseline_swept_too):
    """``"strategy.temperature" = [0.1, 0.2]`` as an axis; a grid axis reaches every strategy, the
    baseline's cells too (then each simclr row is paired with the scratch cell of its own value)."""
    store = ResultStore(tmp_path)
    for seed in (0, 1):
        for t in (0.1, 0.2):
            if baseline_swept_too or t == 0.1:
                extra = {"strategy_options": {"temperature": t}} if baseline_swept_too else None
                _cell(store, f"s{t}_{seed}", "scratch", seed, 0.6, extra)
            _cell(store, f"t{t}_{seed}", "simclr", seed, 1.4, {"strategy_options": {"temperature": t}})
    t = _tables(tmp_path)
    lb = t.leaderboard
    simclr = lb[lb["strategy"] == "simclr"].sort_values("strategy.temperature")
    assert t.split_keys == ["strategy.temperature"]
    assert list(simclr["strategy.temperature"]) == ["0.1", "0.2"]
    assert list(simclr["seeds"]) == ["0,1", "0,1"] and (simclr["n_seeds"] == 2).all()
    assert simclr["delta"].notna().all()  # each is compared with scratch (the option is the strategy's own)
    base = lb.set_index("configuration_hash").loc[list(simclr["baseline_configuration"])]
    assert list(base["strategy"]) == ["scratch", "scratch"]
    if baseline_swept_too:
        assert list(base["strategy.temperature"]) == ["0.1", "0.2"]
    text = write_report(tmp_path, n_boot=200, figures=False).read_text()
    assert "| strategy | strategy.temperature | resnet50 |" in text
    assert "| `simclr` | 0.1 |" in text and "| `simclr` | 0.2 |" in text


def test_stale_record_gives_a_separate_row_with_the_differing_key(tmp_path):
    store = ResultStore(tmp_path)
    for seed in (0, 1):
        _cell(store, f"s{seed}", "scratch", seed, 0.6, {"settings": {"epochs": 2}})
        _cell(store, f"m{seed}", "simclr", seed, 1.4, {"settings": {"epochs": 2}})
    _cell(store, "stale", "simclr", 0, 1.4, {"settings": {"epochs": 1}})  # a setting changed between two runs
    t = _tables(tmp_path)
    lb = t.leaderboard
    simclr = lb[lb["strategy"] == "simclr"].set_index("settings.epochs")
    assert t.split_keys == ["settings.epochs"]
    assert simclr.loc["2", "seeds"] == "0,1" and simclr.loc["1", "seeds"] == "0"
    assert simclr.loc["1", "cell_ids"] == "stale"
    assert np.isnan(simclr.loc["1", "delta"]) and "settings.epochs=1" in simclr.loc["1", "delta_note"]
    assert np.isfinite(simclr.loc["2", "delta"])  # paired with scratch at the same epochs
    text = write_report(tmp_path, n_boot=200, figures=False).read_text()
    assert "| strategy | settings.epochs | resnet50 |" in text


def test_duplicate_configuration_and_seed_newer_wins_and_is_listed(tmp_path):
    store = ResultStore(tmp_path)
    _cell(store, "scratch0", "scratch", 0, 0.6)
    _cell(store, "old_id", "simclr", 0, 1.4, created="2026-01-01T00:00:00+00:00", noise_seed=1)
    _cell(store, "new_id", "simclr", 0, 1.4, created="2026-02-01T00:00:00+00:00", noise_seed=2)
    t = _tables(tmp_path)
    row = t.leaderboard[t.leaderboard["strategy"] == "simclr"].iloc[0]
    assert row["seeds"] == "0" and row["cell_ids"] == "new_id" and row["n_seeds"] == 1
    single = _tables_of_one(tmp_path, "new_id")
    assert row["macro_auroc"] == single  # the newer cell's own number, not an average
    text = write_report(tmp_path, n_boot=200, figures=False).read_text()
    assert "## Superseded cells" in text and "| `old_id` | `new_id` |" in text
    assert "| `old_id` | superseded by `new_id` |" in text  # provenance


def _tables_of_one(root, cell_id):
    results = load_results(root, n_boot=200, seed=0)
    from chexbench.reports.bootstrap import macro_point

    labels = build_tables(results).test_set_labels[results.test_set_of[cell_id]]
    return macro_point(results.scores[cell_id], labels)


def test_same_images_with_another_truth_are_not_paired(tmp_path):
    store = ResultStore(tmp_path)
    _cell(store, "a", "scratch", 0, 0.6)
    other = TRUTH.copy()
    flip = (other["split"] == "test") & (other["label"] == "edema") & other["y_true"].isna()
    other.loc[flip, "y_true"] = 1.0  # U-Ones instead of U-Ignore: same images, another truth
    assert flip.any()
    _cell(store, "b", "simclr", 0, 1.4, {"settings": {"uncertainty": "ones"}}, truth=other)
    t = _tables(tmp_path)
    row = t.leaderboard[t.leaderboard["strategy"] == "simclr"].iloc[0]
    assert np.isnan(row["delta"]) and "different y_true" in row["delta_note"]
    assert t.summary["verdict"].iloc[0] == "not tested"


def _folder(root, others: tuple[str, ...]):
    """scratch and simclr (2 seeds each), plus ``others``: a third strategy's cells ("strategy") and/or
    a cell on another test set of the same dataset where a label has no positive ("test_set")."""
    store = ResultStore(root)
    for seed in (0, 1):
        _cell(store, f"scratch{seed}", "scratch", seed, 0.6, noise_seed=10 + seed)
        _cell(store, f"simclr{seed}", "simclr", seed, 1.0, noise_seed=20 + seed)
        if "strategy" in others:
            _cell(store, f"mocov2{seed}", "mocov2", seed, 1.2, noise_seed=30 + seed)
    if "test_set" in others:
        truth = _truth(12, 1)
        truth.loc[truth["label"] == "edema", "y_true"] = 0.0
        _cell(store, "aaa_other", "scratch", 0, 1.0, backbone="vit_b16", truth=truth, noise_seed=40)
    return root


@pytest.mark.parametrize("others", [("strategy",), ("test_set",), ("strategy", "test_set")])
def test_a_comparison_does_not_depend_on_the_other_cells_in_the_folder(tmp_path, others):
    small = _tables(_folder(tmp_path / "small", ()))
    large = _tables(_folder(tmp_path / "large", others))
    cols = [
        "macro_auroc",
        "macro_auroc_ci_low",
        "macro_auroc_ci_high",
        "macro_auprc_ci_low",
        "macro_auprc_ci_high",
        "delta",
        "delta_ci_low",
        "delta_ci_high",
        "p_value",
    ]
    for strategy in ("scratch", "simclr"):
        a = small.leaderboard[
            (small.leaderboard["strategy"] == strategy) & (small.leaderboard["backbone"] == "resnet50")
        ]
        b = large.leaderboard[
            (large.leaderboard["strategy"] == strategy) & (large.leaderboard["backbone"] == "resnet50")
        ]
        for col in cols:
            x, y = a[col].iloc[0], b[col].iloc[0]
            assert (np.isnan(x) and np.isnan(y)) or x == y, (strategy, col, x, y)  # bitwise, not approx
    key = ["strategy", "backbone", "label"]
    pa = small.per_label.set_index(key).sort_index()
    pb = large.per_label.set_index(key).loc[pa.index]
    for col in ("auroc_ci_low", "auroc_ci_high", "p_value"):
        np.testing.assert_array_equal(pa[col].to_numpy(), pb[col].to_numpy())


def test_summary_names_a_best_strategy_only_when_the_corrected_test_says_so(tmp_path):
    clear = ResultStore(tmp_path / "clear")
    truth = _truth(120, 1)
    for seed in (0, 1):
        _cell(clear, f"s{seed}", "scratch", seed, 0.0, truth=truth, noise_seed=seed)
        _cell(clear, f"m{seed}", "simclr", seed, 3.0, truth=truth, noise_seed=10 + seed)
    sm = _tables(tmp_path / "clear").summary.iloc[0]
    assert sm["verdict"] == "best" and sm["top_label"] == "simclr" and sm["closest_p_holm"] < 0.05
    text = write_report(tmp_path / "clear", n_boot=200, figures=False).read_text()
    assert "| **`simclr`** |" in text

    noisy = ResultStore(tmp_path / "noisy")
    for seed in (0, 1):
        _cell(noisy, f"s{seed}", "scratch", seed, 1.0, noise_seed=seed)
        _cell(noisy, f"m{seed}", "simclr", seed, 1.05, noise_seed=10 + seed)
    sm = _tables(tmp_path / "noisy").summary.iloc[0]
    assert sm["verdict"] == "no significant difference" and sm["closest_p_holm"] >= 0.05
    text = write_report(tmp_path / "noisy", n_boot=200, figures=False).read_text()
    assert f"no significant difference (top point estimate: `{sm['top_label']}`)" in text
    assert "best strategy" in text and "**`" not in text.split("## Leaderboards")[0]


@pytest.mark.parametrize("seeds", [(0,), (0, 1)])
def test_one_seed_note_is_said_once_per_table_not_in_every_cell(tmp_path, seeds):
    store = ResultStore(tmp_path)
    for seed in seeds:
        for strategy in ("scratch", "simclr", "mocov2"):
            _cell(store, f"{strategy}{seed}", strategy, seed, 1.0)
    text = write_report(tmp_path, n_boot=100, figures=False).read_text()
    board = text.split("## Leaderboards")[1].split("## Paired comparisons")[0]
    assert board.count("seed variation not estimated") == (1 if seeds == (0,) else 0)


def test_seeds_pooled_across_code_versions_get_one_line_per_configuration(tmp_path):
    store = ResultStore(tmp_path)
    code = {
        ("scratch", 0): ("0.1.0", "aaaaaaaaaaaa11"),
        ("scratch", 1): ("0.1.0", "bbbbbbbbbbbb22"),
        ("simclr", 0): ("0.1.0", "cccccccccccc"),
        ("simclr", 1): ("0.1.0", "cccccccccccc"),  # same code: no line
        ("mocov2", 0): ("0.1.0", ""),
        ("mocov2", 1): ("0.2.0", ""),
        ("mocov2", 2): ("0.2.0", ""),
    }
    for (strategy, seed), (version, sha) in code.items():
        rec = _record(f"{strategy}{seed}", strategy, "resnet50", "chexpert", "finetune", 1.0, seed)
        rec["chexbench_version"], rec["git_sha"] = version, sha
        store.write(rec, _predictions(TRUTH, np.random.default_rng(seed + 10 * len(strategy)), 1.0))
    text = write_report(tmp_path, n_boot=100, figures=False).read_text()
    assert "**Seeds pooled across code versions.**" in text
    lines = [line for line in text.splitlines() if "(seeds " in line and line.startswith("- `")]
    assert lines == [
        (
            "- `mocov2` · resnet50 · chexpert · finetune · label fraction 1 (seeds 0,1,2): 0.1.0 no git sha:"
            " seed 0; 0.2.0 no git sha: seed 1,2"
        ),
        (
            "- `scratch` · resnet50 · chexpert · finetune · label fraction 1 (seeds 0,1): 0.1.0 aaaaaaaaaa:"
            " seed 0; 0.1.0 bbbbbbbbbb: seed 1"
        ),
    ]
    assert (
        text.index("## Leaderboards")
        < text.index("**Seeds pooled across code versions.**")
        < text.index("## Paired comparisons")
    )
    # a failed cell (older code) is not pooled, so it does not count
    store.write(
        _record("mocov2_2", "mocov2", "resnet50", "chexpert", "finetune", 1.0, 0) | {"status": "failed"}, None
    )
    for strategy, seed in (("scratch", 1), ("mocov2", 0)):  # one code version per configuration now
        store.record_path(f"{strategy}{seed}").unlink()
    assert "across code versions" not in write_report(tmp_path, n_boot=100, figures=False).read_text()
