"""`status` lists cell ids with filters; cell-id prefixes; a missing baseline; plan's counts."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chexbench.bench.cell_ids import resolve_cell_id
from chexbench.bench.runner import base_record
from chexbench.bench.store import ResultStore
from chexbench.cli import app
from chexbench.core.errors import DataError
from chexbench.spec.parse import load_grid

sys.path.insert(0, str(Path(__file__).parents[1] / "reports"))
from synthetic_store import write_synthetic_results  # noqa: E402

runner = CliRunner()

GRID = (
    '[axes]\nstrategy=["scratch"]\nbackbone=["resnet_tiny"]\ndataset=["phantom-chexpert"]\nprotocol=["linear"]\nseed=[0,1,2,3,4,5]\n[dataset.phantom-chexpert]\npatients'
    " = 20\nsize = 32\n"
)


def _grid_with_done_cells(tmp_path: Path, done: int, failed: int = 0) -> tuple[Path, Path, list[str]]:
    """A 6-cell grid whose first ``done`` cells have ok records and next ``failed`` failed ones."""
    import torch

    grid = tmp_path / "g.toml"
    grid.write_text(GRID)
    results = tmp_path / "results"
    store = ResultStore(results)
    cells = [p.cell for p in load_grid(str(grid)).cells()]
    for i, cell in enumerate(cells[: done + failed]):
        rec = base_record(cell, torch.device("cpu")).as_dict()
        rec["status"] = "ok" if i < done else "failed"
        rec["failure_reason"] = (
            "" if i < done else "RuntimeError: loss became NaN at epoch 2 step 17 " + "x" * 120
        )
        store.write(rec, _one_prediction() if i < done else None)  # an ok record always has its predictions
    return grid, results, [c.cell_id for c in cells]


def _one_prediction():
    import pandas as pd

    return pd.DataFrame(
        {
            "image_id": ["i0"],
            "patient_id": ["p0"],
            "label": ["Edema"],
            "y_true": [1.0],
            "y_score": [0.5],
            "split": ["test"],
        }
    )


def test_plan_counts_only_the_cells_left_to_run(tmp_path, monkeypatch):
    monkeypatch.setenv("CHEXBENCH_CACHE", str(tmp_path / "cache"))
    grid, results, _ = _grid_with_done_cells(tmp_path, done=4)
    result = runner.invoke(app, ["plan", "--grid", str(grid), "--results", str(results)])
    assert result.exit_code == 0, result.output
    assert "6 cells: 2 to run (4 already done)" in result.output


def test_run_counts_only_the_cells_left_to_train(tmp_path, monkeypatch):
    monkeypatch.setenv("CHEXBENCH_CACHE", str(tmp_path / "cache"))
    grid, results, _ = _grid_with_done_cells(tmp_path, done=6)
    result = runner.invoke(app, ["run", "--grid", str(grid), "--results", str(results), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "0 to run (6 already done)" in result.output and "nothing to train" in result.output


def test_status_lists_every_cell_id_and_filters(tmp_path, monkeypatch):
    monkeypatch.setenv("CHEXBENCH_CACHE", str(tmp_path / "cache"))
    grid, results, ids = _grid_with_done_cells(tmp_path, done=3, failed=1)
    result = runner.invoke(app, ["status", "--results", str(results), "--grid", str(grid)])
    assert result.exit_code == 0, result.output
    assert all(i in result.output for i in ids)
    # the failure reason is printed whole: a pipe is not cut at 80 columns
    assert "loss became NaN at epoch 2 step 17 " + "x" * 120 in result.output

    result = runner.invoke(app, ["status", "--results", str(results), "--failed"])
    assert result.exit_code == 0, result.output
    assert ids[3] in result.output and not any(i in result.output for i in ids[:3] + ids[4:])

    result = runner.invoke(app, ["status", "--results", str(results), "--grid", str(grid), "--pending"])
    assert result.exit_code == 0, result.output
    assert (
        ids[4] in result.output and ids[5] in result.output and not any(i in result.output for i in ids[:4])
    )

    result = runner.invoke(app, ["status", "--results", str(results), "--pending"])
    assert result.exit_code == 2 and "--pending needs --grid" in result.output


def test_a_unique_prefix_names_its_cell():
    ids = ["a1b2c3d4e5f6", "a1b2ffffffff", "0123456789ab"]
    assert resolve_cell_id("0123", ids, "R") == "0123456789ab"
    assert resolve_cell_id("a1b2c", ids, "R") == "a1b2c3d4e5f6"
    assert resolve_cell_id("a1b2ffffffff", ids, "R") == "a1b2ffffffff"
    with pytest.raises(DataError, match="ambiguous in R: a1b2c3d4e5f6, a1b2ffffffff"):
        resolve_cell_id("a1b2", ids, "R")
    with pytest.raises(DataError, match="no cell 'zz' in R \\(no cell id starts with it"):
        resolve_cell_id("zz", ids, "R")


def test_explain_accepts_a_prefix_and_refuses_an_ambiguous_one(tmp_path, monkeypatch):
    monkeypatch.setenv("CHEXBENCH_CACHE", str(tmp_path / "cache"))
    _, results, ids = _grid_with_done_cells(tmp_path, done=0, failed=2)
    # the prefix resolves to the failed cell, which explain then refuses for what it is (not for its id)
    result = runner.invoke(app, ["explain", "--results", str(results), "--cell", ids[0][:6]])
    assert result.exit_code == 2
    assert f"cell {ids[0]} " in result.output and "did not finish" in result.output
    result = runner.invoke(app, ["explain", "--results", str(results), "--cell", ""])
    assert result.exit_code == 2 and "empty cell id" in result.output


def test_report_with_a_baseline_not_in_the_results_is_one_line(tmp_path):
    root = write_synthetic_results(tmp_path / "results", seeds=(0,), n_patients=10)
    result = runner.invoke(
        app, ["report", "--results", str(root), "--baseline", "imagenett", "--bootstrap", "100"]
    )
    assert result.exit_code == 2
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "--baseline 'imagenett'" in lines[0] and "mocov2, scratch, simclr" in lines[0]
    assert not (root / "report.md").exists()


def test_a_narrow_console_folds_table_cells_instead_of_cutting_them(tmp_path, monkeypatch):
    """Even at 60 columns (a narrow terminal, or COLUMNS set in a pipe) no cell is cut with "…"."""
    import io

    from rich.console import Console

    import chexbench.cli.run as run_commands

    monkeypatch.setenv("CHEXBENCH_CACHE", str(tmp_path / "cache"))
    grid, results, ids = _grid_with_done_cells(tmp_path, done=1, failed=1)
    buf = io.StringIO()
    monkeypatch.setattr(run_commands, "console", Console(file=buf, width=60, color_system=None))
    result = runner.invoke(app, ["status", "--results", str(results), "--grid", str(grid)])
    assert result.exit_code == 0, result.output
    out = buf.getvalue()
    assert "…" not in out
    assert all(i in out for i in ids)  # ids are never folded (no_wrap) …
    # … and the failure reason (last column) folds onto more lines: read back, every character is there
    table_lines = [ln for ln in out.splitlines() if ln.startswith("│")]
    reason = "".join(
        ln.split("│")[-2].strip() for ln in table_lines if ids[1] in ln or ln.split("│")[1].strip() == ""
    )
    assert reason.replace(" ", "") == (
        "RuntimeError: loss became NaN at epoch 2 step 17 " + "x" * 120
    ).replace(" ", "")


def test_a_run_preflights_once_and_scans_the_store_once(tmp_path, monkeypatch):
    """`chexbench run` checks its cells once and reads the store's state once: a finished cell is looked
    at by the run's one scan only; a cell to train once more, under its claim, before it trains."""
    from collections import Counter

    from chexbench.bench import runner as bench_runner
    from chexbench.bench import store as store_module

    monkeypatch.setenv("CHEXBENCH_CACHE", str(tmp_path / "cache"))
    grid, results, ids = _grid_with_done_cells(tmp_path, done=4)
    preflights, checked = [], Counter()
    real_preflight, real_check = bench_runner.preflight, store_module._check_files

    def counting_preflight(planned):
        preflights.append(len(planned))
        return real_preflight(planned)

    def counting_check(rec_path, pred_path, cell_id, full_record):
        checked[cell_id] += 1
        return real_check(rec_path, pred_path, cell_id, full_record)

    def fake_cell(cell, ctx):
        return base_record(cell, ctx.device).replace(status="ok"), _one_prediction()

    monkeypatch.setattr(bench_runner, "preflight", counting_preflight)
    monkeypatch.setattr(store_module, "_check_files", counting_check)
    monkeypatch.setattr(bench_runner, "run_cell", fake_cell)
    result = runner.invoke(app, ["run", "--grid", str(grid), "--results", str(results), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "2 to run (4 already done)" in result.output and "2 ok" in result.output
    assert preflights == [6]  # once, for the whole plan
    assert [checked[i] for i in ids] == [1, 1, 1, 1, 2, 2]
