"""The report on degenerate result sets: no finished cell, only skipped cells, tiny test sets."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from synthetic_store import _record

from chexbench.bench.store import ResultStore
from chexbench.core.atomic import atomic_write_parquet
from chexbench.reports.report import write_report


def test_only_failed_cells(tmp_path):
    store = ResultStore(tmp_path)
    store.write(
        _record("f1", "scratch", "resnet50", "chexpert", "finetune", 1.0, 0, "failed", "CUDA out of memory"),
        None,
    )
    text = write_report(tmp_path, n_boot=100).read_text()
    assert "No cell finished, so there is nothing to rank." in text
    assert "CUDA out of memory" in text
    assert not (tmp_path / "leaderboard.parquet").exists()


def test_only_skipped_cells(tmp_path):
    atomic_write_parquet(
        pd.DataFrame(
            [
                {
                    "cell_id": "s1",
                    "grid": "g",
                    "strategy": "imagenet",
                    "backbone": "resnet50",
                    "dataset": "nih",
                    "protocol": "linear",
                    "label_fraction": 0.1,
                    "seed": 2,
                    "reason": "imagenet: no weights file",
                }
            ]
        ),
        tmp_path / "skipped.parquet",
    )
    text = write_report(tmp_path, n_boot=100).read_text()
    assert "0 cell(s) scored, 0 failed, 1 skipped" in text and "imagenet: no weights file" in text


def test_tiny_test_set_flags_unreliable_intervals(tmp_path):
    """Three test patients, one positive: no interval (not estimable), flagged; label b is n/a."""
    store = ResultStore(tmp_path)
    for i, strategy in enumerate(("scratch", "simclr")):
        rows = []
        for p in range(3):
            for label in ("a", "b"):
                y = float(p == 0) if label == "a" else 0.0
                rows.append((f"i{p}", f"p{p}", label, y, 0.2 + 0.3 * p * (i + 1) / 3, "test"))
                rows.append((f"v{p}", f"q{p}", label, y, 0.5, "valid"))
        rec = _record(f"c{i}", strategy, "resnet50", "chexpert", "finetune", 1.0, 0)
        rec["eval_labels_json"] = json.dumps(["a", "b"])
        store.write(
            rec, pd.DataFrame(rows, columns=["image_id", "patient_id", "label", "y_true", "y_score", "split"])
        )
    text = write_report(tmp_path, n_boot=200, figures=False).read_text()
    assert (
        "| `simclr` | 0.000 [n/a] ⚠ ⚑ |" in text
    )  # one positive patient: no interval (was [0.000, 0.000]); flagged (⚑: < 10 positive patients)
    assert "`a`: interval not estimable: 1 patient(s) with a positive" in text  # and the report says why
    assert (
        text.count("_Every row: 1 seed: seed variation not estimated") == 2
    )  # leaderboard + per-label table
    assert "`b` is undefined on the test set — no positive test image (0 pos / 3 neg)" in text
    assert "no operating point" in text or "n/a" in text
    lb = pd.read_parquet(tmp_path / "leaderboard.parquet")
    assert (lb["n_degenerate"] == 200).all()  # one positive patient: no resample counts


def test_failed_figure_keeps_previous_report(tmp_path, monkeypatch):
    from synthetic_store import write_synthetic_results

    import chexbench.reports.plots as plots

    root = write_synthetic_results(tmp_path / "r", seeds=(0,), n_patients=8)
    write_report(root, n_boot=100, figures=False)
    before = (root / "report.md").read_text()
    (root / "figures").mkdir()
    (root / "figures" / "stale.png").write_bytes(b"x")

    def broken(*args, **kwargs):
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr(plots, "forest_plot", broken)
    with pytest.raises(RuntimeError, match="renderer crashed"):
        write_report(root, n_boot=100, seed=9)
    assert (root / "report.md").read_text() == before
    assert (root / "figures" / "stale.png").exists()
    assert not [p for p in root.iterdir() if p.name.startswith(".figures")]
    monkeypatch.undo()
    # a new report replaces the whole folder (only the cheap figures are drawn here)
    monkeypatch.setattr(plots, "roc_curves", lambda *a, **k: None)
    monkeypatch.setattr(plots, "reliability_figures", lambda *a, **k: [])
    write_report(root, n_boot=100)
    assert not (root / "figures" / "stale.png").exists()
    assert (root / "figures" / "forest_chexpert_finetune.png").exists()


def test_localization_section_appears_when_cells_stored_one(tmp_path):
    store = ResultStore(tmp_path)
    rows = [
        (f"{split}{p}", f"{split}p{p}", "a", float(p % 2), 0.1 + 0.1 * p, split)
        for p in range(6)
        for split in ("test", "valid")
    ]
    rec = _record("c1", "scratch", "vit_tiny", "phantom-nih", "finetune", 1.0, 0)
    rec["eval_labels_json"] = json.dumps(["a"])
    rec["data_json"] = json.dumps(
        {
            "protocol_extra": {
                "head": "linear",
                "localization": {
                    "method": "gradcam",
                    "pairs": 12,
                    "pointing_hit_rate": 0.5,
                    "random_hit_rate": 0.1,
                    "deletion_auc": 0.3,
                    "random_deletion_auc": 0.4,
                },
            }
        }
    )
    store.write(
        rec, pd.DataFrame(rows, columns=["image_id", "patient_id", "label", "y_true", "y_score", "split"])
    )
    text = write_report(tmp_path, n_boot=100, figures=False).read_text()
    assert "## Localization" in text and "| gradcam | 1 |" in text
    assert (
        "| 12 | — | 0.500 | — | 0.100 |" in text
    )  # a record of the older format: no flat-map count, no interval


def _localization_cell(cell_id: str, created: str, hits: list[int], macro: float, warning: str = "") -> dict:
    n = len(hits)
    rec = _record(cell_id, "scratch", "vit_tiny", "phantom-nih", "finetune", 1.0, 0)
    rec["eval_labels_json"] = json.dumps(["a"])
    rec["created_at"], rec["macro_auroc"] = created, macro
    rate = sum(hits) / n
    rec["data_json"] = json.dumps(
        {
            "protocol_extra": {
                "head": "linear",
                "head_notes": [f"warning: {warning}"] if warning else [],
                "localization": {
                    "method": "gradcam",
                    "pairs": n,
                    "pointing_hit_rate": rate,
                    "random_hit_rate": 0.1,
                    "tolerant": {"tolerance_px": 15.0, "pointing_hit_rate": rate, "random_hit_rate": 0.2},
                    "pair_detail": {
                        "image_id": [f"i{k}" for k in range(n)],
                        "cluster": [f"p{k}" for k in range(n)],
                        "label": ["a"] * n,
                        "hit": hits,
                        "hit_tolerant": hits,
                        "random": [0.1] * n,
                        "random_tolerant": [0.2] * n,
                        "flat": [0] * n,
                    },
                },
            }
        }
    )
    return rec


def test_localization_and_warnings_leave_out_a_superseded_cell(tmp_path):
    # the same configuration and seed ran twice: the tables keep the newer cell; the localization table
    # must not pool the older one as a second seed, nor the warnings list it
    store = ResultStore(tmp_path)
    rows = [(f"i{p}", f"p{p}", "a", float(p % 2), 0.1 + 0.1 * p, "test") for p in range(8)]
    preds = pd.DataFrame(rows, columns=["image_id", "patient_id", "label", "y_true", "y_score", "split"])
    store.write(
        _localization_cell("old0001", "2026-01-01T00:00:00+00:00", [0, 0, 0, 0], 0.5, "old head caveat"),
        preds,
    )
    store.write(_localization_cell("new0001", "2026-02-01T00:00:00+00:00", [1, 1, 1, 1], 0.9), preds)
    store.write(
        _record("f1", "scratch", "resnet50", "chexpert", "finetune", 1.0, 0, "failed", "CUDA out of memory")
        | {"data_json": json.dumps({"protocol_extra": {"head_notes": ["warning: failed cell caveat"]}})},
        None,
    )
    text = write_report(tmp_path, n_boot=50, figures=False).read_text()
    assert "| `old0001` | `new0001` |" in text  # listed as superseded
    loc = text[text.index("## Localization") :]
    loc = loc[: loc.index("\n## ", 3)]
    row = next(line for line in loc.splitlines() if line.startswith("| phantom-nih"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    header = next(line for line in loc.splitlines() if line.startswith("| dataset"))
    col = {name.strip(): i for i, name in enumerate(header.strip("|").split("|"))}
    assert (
        cells[col["seeds"]] == "1"
        and cells[col["macro AUROC"]] == "0.900"
        and cells[col["pointing"]] == "1.000"
    )
    assert "0.500" not in row
    warnings = text[text.index("## Warnings") :]
    assert "failed cell caveat" in warnings  # failed cells keep their warnings
    assert "old head caveat" not in text and "`old0001` | scratch" not in text


def test_a_report_killed_while_drawing_leaves_nothing_after_the_next_report(tmp_path):
    # SIGKILL while the figures are staged: the staging folder survives the writer; the next report
    # (or run) removes it because its writer is dead — and leaves a live writer's staging alone
    import os
    import subprocess
    import sys

    from synthetic_store import write_synthetic_results

    root = write_synthetic_results(tmp_path / "r", seeds=(0,), n_patients=8)
    code = (
        "import os, sys; from chexbench.core.atomic import make_temp_dir\n"
        "d = make_temp_dir(sys.argv[1], 'figures'); (d / 'forest.png').write_bytes(b'half'); os._exit(9)"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(root)],
        check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    left = [p for p in root.iterdir() if p.name.startswith(".figures.")]
    assert len(left) == 1 and (left[0] / "forest.png").exists()
    from chexbench.core.atomic import make_temp_dir

    live = make_temp_dir(root, "figures")  # this process's: still being written
    write_report(root, n_boot=100, figures=False)
    assert not left[0].exists() and live.is_dir()


def test_configurations_that_differ_only_invisibly_get_distinct_rows():
    # a record written before a setting existed (key absent) beside one that sets it to null, and 5 vs 5.0:
    # both used to show as "default" / "5", so one leaderboard row silently replaced the other
    from chexbench.reports.leaderboard import display_values, varying_keys

    configs = {
        "old": {"strategy": "scratch"},
        "new": {"strategy": "scratch", "settings.pretrain_source": None},
        "i": {"strategy": "scratch", "settings.epochs": 5},
        "f": {"strategy": "scratch", "settings.epochs": 5.0},
    }
    varying, split = varying_keys(configs)
    assert varying == split == ["settings.epochs", "settings.pretrain_source"]
    shown = display_values(configs, varying)
    assert (
        shown["old"]["settings.pretrain_source"] == "unset"
        and shown["new"]["settings.pretrain_source"] == "null"
    )
    assert shown["i"]["settings.epochs"] == "5" and shown["f"]["settings.epochs"] == "5.0"
    assert len({tuple(v.values()) for v in shown.values()}) == 4
    plain = display_values(
        {"a": {"x": 0.1}, "b": {"x": 0.2}, "c": {}}, ["x"]
    )  # no ambiguity: the usual display
    assert [plain[h]["x"] for h in "abc"] == ["0.1", "0.2", "default"]


def test_an_old_and_a_new_record_of_one_setting_are_both_in_the_leaderboard(tmp_path):
    rows = [
        (f"t{p}", f"tp{p}", "a", float(p % 2), 0.3 + 0.05 * p + (0.2 if p % 2 else 0.0), "test")
        for p in range(12)
    ]
    preds = pd.DataFrame(rows, columns=["image_id", "patient_id", "label", "y_true", "y_score", "split"])
    store = ResultStore(tmp_path)
    for cell_id, seed, extra in (("old0", 0, {}), ("new1", 1, {"settings": {"pretrain_source": None}})):
        rec = _record(cell_id, "scratch", "resnet50", "chexpert", "finetune", 1.0, seed)
        cfg = json.loads(rec["config_json"]) | extra
        rec["config_json"], rec["eval_labels_json"] = json.dumps(cfg, sort_keys=True), json.dumps(["a"])
        store.write(rec, preds)
    text = write_report(tmp_path, n_boot=100, figures=False).read_text()
    board = text[text.index("## Leaderboards") : text.index("## Paired")]
    assert "| `scratch` | unset |" in board and "| `scratch` | null |" in board
    assert len(pd.read_parquet(tmp_path / "leaderboard.parquet")) == 2


def test_a_row_whose_macro_uses_other_labels_than_the_header_says_so(tmp_path):
    # eval labels changed between versions: one strategy's records evaluate a, b; the other's a, b, c
    rng = np.random.default_rng(3)
    store = ResultStore(tmp_path)
    for cell_id, strategy, labels in (("s0", "scratch", ["a", "b"]), ("c0", "simclr", ["a", "b", "c"])):
        rows = [
            (f"i{p}", f"p{p}", lab, float((p + k) % 2), rng.random() + 0.5 * ((p + k) % 2), "test")
            for p in range(30)
            for k, lab in enumerate("abc")
        ]
        rec = _record(cell_id, strategy, "resnet50", "chexpert", "finetune", 1.0, 0)
        rec["eval_labels_json"] = json.dumps(labels)
        store.write(
            rec, pd.DataFrame(rows, columns=["image_id", "patient_id", "label", "y_true", "y_score", "split"])
        )
    text = write_report(tmp_path, n_boot=100, figures=False).read_text()
    board = text[text.index("## Leaderboards") : text.index("## Paired")]
    assert "macro over 3 label(s): a, b, c." in board
    scratch_row = next(line for line in board.splitlines() if line.startswith("| `scratch`"))
    simclr_row = next(line for line in board.splitlines() if line.startswith("| `simclr`"))
    assert scratch_row.endswith("(see note 1) |") and "see note" not in simclr_row
    assert (
        "Note 1: `scratch` · resnet50: macro over 2 label(s): a, b — not the test set's list above." in board
    )


def test_images_missing_when_a_dataset_was_prepared_are_stated(tmp_path):
    rows = [(f"t{p}", f"tp{p}", "a", float(p % 2), 0.1 * p, "test") for p in range(10)]
    preds = pd.DataFrame(rows, columns=["image_id", "patient_id", "label", "y_true", "y_score", "split"])
    store = ResultStore(tmp_path)
    for cell_id, strategy, skipped in (("s0", "scratch", 12), ("c0", "simclr", 12)):
        rec = _record(cell_id, strategy, "resnet50", "chexpert", "finetune", 1.0, 0)
        rec["eval_labels_json"] = json.dumps(["a"])
        rec["data_json"] = json.dumps({"blank_is_negative": True, "skipped_images": skipped})
        store.write(rec, preds)
    text = write_report(tmp_path, n_boot=100, figures=False).read_text()
    assert "missing or unreadable when it was prepared are left out of every split (**chexpert 12**;" in text
    rec = _record("n0", "scratch", "resnet50", "nih", "finetune", 1.0, 0)
    rec["eval_labels_json"], rec["data_json"] = (
        json.dumps(["a"]),
        json.dumps({"blank_is_negative": True, "skipped_images": 0}),
    )
    store.write(rec, preds)
    assert "nih 0" not in write_report(tmp_path, n_boot=100, figures=False).read_text()
