"""Filesystem faults as a new user meets them: one line naming the path and what to do, exit 1,
nothing partial left; ``status`` only reads. (Tests run as root here, so permissions and a full
disk are simulated at the write.)"""

from __future__ import annotations

import errno
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chexbench.cli import app
from chexbench.core import atomic

sys.path.insert(0, str(Path(__file__).parents[1] / "reports"))
from synthetic_store import write_synthetic_results  # noqa: E402

runner = CliRunner()


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


@pytest.fixture
def results(tmp_path):
    return write_synthetic_results(tmp_path / "res", seeds=(0,), n_patients=12, images_per_patient=1)


def _one_error_line(output: str) -> str:
    lines = [x for x in output.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in output, output
    return lines[0]


def test_full_disk_is_one_line_and_leaves_nothing(results, monkeypatch):
    def full(path):
        raise OSError(errno.ENOSPC, "No space left on device")  # as a writer says it: no file name

    monkeypatch.setattr(atomic, "_fsync_file", full)
    r = runner.invoke(app, ["report", "--results", str(results), "--bootstrap", "100", "--no-figures"])
    assert r.exit_code == 1
    line = _one_error_line(r.output)
    assert "No space left on device" in line and str(results) in line and "free some space" in line
    assert not (results / "report.md").exists() and not _leftovers(results)


def test_read_only_folder_is_one_line(results, monkeypatch):
    def refused(path):
        raise PermissionError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(atomic, "_create_temp_file", refused)
    r = runner.invoke(app, ["report", "--results", str(results), "--bootstrap", "100", "--no-figures"])
    assert r.exit_code == 1
    line = _one_error_line(r.output)
    assert str(results) in line and "writable folder" in line


def test_os_error_line_names_path_and_advice():
    from chexbench.core.errors import os_error_line

    line = os_error_line(PermissionError(errno.EACCES, "Permission denied", "/data/x"))
    assert line.startswith("/data/x: Permission denied") and "permissions" in line
    assert "check the path" in os_error_line(
        FileNotFoundError(errno.ENOENT, "No such file or directory", "/nope")
    )


def test_status_of_a_missing_folder_is_an_error(tmp_path):
    r = runner.invoke(app, ["status", "--results", str(tmp_path / "no" / "such")])
    assert r.exit_code == 2 and "results directory not found" in r.output  # was "no cells", exit 0


def test_status_only_reads(results):
    victim = sorted((results / "predictions").glob("*.parquet"))[0]
    victim.write_bytes(b"not parquet")
    before = sorted(p.relative_to(results) for p in results.rglob("*"))
    r = runner.invoke(app, ["status", "--results", str(results)])
    assert r.exit_code == 0, r.output
    assert "damaged" in r.output and victim.name in r.output
    assert (
        sorted(p.relative_to(results) for p in results.rglob("*")) == before
    )  # nothing moved to quarantine/
    assert victim.read_bytes() == b"not parquet"


def test_run_stops_on_a_full_disk(tmp_path, monkeypatch):
    from chexbench.bench import runner as bench_runner

    grid = tmp_path / "g.toml"
    grid.write_text(
        '[axes]\nstrategy=["scratch"]\nbackbone=["resnet_tiny"]\ndataset=["phantom-chexpert"]\nprotocol=["linear"]\nseed=[0,1,2]\n[dataset.phantom-chexpert]\npatients'
        " = 20\nsize = 32\n"
    )
    out = tmp_path / "results"
    calls = []

    def no_space(cell, ctx):
        calls.append(cell.cell_id)
        raise OSError(errno.ENOSPC, "No space left on device", str(out / "predictions"))

    monkeypatch.setattr(bench_runner, "run_cell", no_space)
    monkeypatch.setenv("CHEXBENCH_CACHE", str(tmp_path / "cache"))
    r = runner.invoke(app, ["run", "--grid", str(grid), "--results", str(out), "--device", "cpu"])
    assert r.exit_code == 1, r.output
    assert "No space left on device" in _one_error_line(r.output)
    assert len(calls) == 1  # stopped at the first cell, not three cells recorded as failed
    assert not list(out.rglob("records/*.parquet"))


def test_a_full_disk_under_torch_save_is_an_os_error(tmp_path, monkeypatch):
    """torch.save reports a full disk as a RuntimeError; it becomes the OSError the CLI prints as one line."""
    import shutil
    from collections import namedtuple

    import torch

    def failing(obj, f):
        raise RuntimeError(
            "[enforce fail at inline_container.cc:783] . PytorchStreamWriter failed writing file data/0: file"
            " write failed"
        )

    monkeypatch.setattr(torch, "save", failing)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: namedtuple("u", "total used free")(10, 10, 0))
    with pytest.raises(OSError) as e:
        atomic.atomic_torch_save({"w": 1}, tmp_path / "ckpt.pt")
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(tmp_path / "ckpt.pt")
    assert not list(tmp_path.iterdir())  # nothing partial
