"""`run` with its output in a file (SLURM log, nohup): timed progress lines, and Ctrl-C says what was kept."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from typer.testing import CliRunner

from chexbench.cli import app
from chexbench.cli.run import _LineProgress

GRID = (
    '[axes]\nstrategy=["scratch"]\nbackbone=["resnet_tiny"]\ndataset=["phantom-chexpert"]\nprotocol=["linear"]\nseed=[0,1,2]\n[dataset.phantom-chexpert]\npatients'
    " = 20\nsize = 32\n"
)


def test_line_progress_prints_at_a_steady_interval():
    now = [0.0]
    console = Console(record=True, width=200, force_terminal=False)
    p = _LineProgress(console, 60.0, clock=lambda: now[0])
    p.start("pretrain simclr abc", 1000)
    for _ in range(1000):  # one step every 0.5 s: 500 s in all
        now[0] += 0.5
        p.advance()
    lines = console.export_text().splitlines()
    assert len(lines) == 1 + 8  # the start, then one line per 60 s (not one per step, not none)
    assert "pretrain simclr abc: step 120/1000" in lines[1] and "(2m00s)" in lines[2]


def test_redirected_run_prints_lines_and_an_interrupt_says_what_was_kept(tmp_path, monkeypatch):
    from chexbench.bench import runner as bench_runner

    grid = tmp_path / "g.toml"
    grid.write_text(GRID)
    calls = []

    def fake_cell(cell, ctx):
        calls.append(cell.cell_id)
        if len(calls) == 2:
            raise KeyboardInterrupt
        ctx.progress.start("pretrain simclr run1", 3)
        for _ in range(3):
            ctx.progress.advance()
        raise RuntimeError("a failure is stored too")

    monkeypatch.setattr(bench_runner, "run_cell", fake_cell)
    monkeypatch.setenv("CHEXBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CHEXBENCH_PROGRESS_INTERVAL", "0")
    out = tmp_path / "results"
    r = CliRunner().invoke(app, ["run", "--grid", str(grid), "--results", str(out), "--device", "cpu"])
    assert r.exit_code == 130, r.output
    assert "started" in r.output and "pretrain simclr run1: step 2/3" in r.output  # was silent until the end
    assert "interrupted" in r.output and "1 cell(s) finished by this run are stored" in r.output
    assert f"cell {calls[1]}" in r.output and "resume" in r.output
    assert len(list(Path(out / "records").glob("*.parquet"))) == 1


def test_sigterm_ends_a_run_as_ctrl_c_does(tmp_path, monkeypatch):
    """SLURM's time limit and scancel send SIGTERM: the log says what was kept, as for Ctrl-C."""
    import os
    import signal

    from chexbench.bench import runner as bench_runner

    grid = tmp_path / "g.toml"
    grid.write_text(GRID)

    def fake_cell(cell, ctx):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM should have ended the run")

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(bench_runner, "run_cell", fake_cell)
    monkeypatch.setenv("CHEXBENCH_CACHE", str(tmp_path / "cache"))
    r = CliRunner().invoke(
        app, ["run", "--grid", str(grid), "--results", str(tmp_path / "res"), "--device", "cpu"]
    )
    assert r.exit_code == 130, r.output
    assert "interrupted" in r.output and "no cell finished by this run" in r.output
    assert signal.getsignal(signal.SIGTERM) is before  # restored
