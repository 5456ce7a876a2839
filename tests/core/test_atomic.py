"""Atomic writes respect the umask, and a killed writer's temporaries are cleaned later."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

import pandas as pd
import pytest
from typer.testing import CliRunner

from chexbench.cli import app
from chexbench.core.atomic import (
    atomic_path,
    atomic_write_parquet,
    atomic_write_text,
    clean_stale_temporaries,
    make_temp_dir,
)


@pytest.fixture()
def group_umask():
    old = os.umask(0o002)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_writes_give_the_modes_an_ordinary_write_gives(tmp_path, group_umask):
    atomic_write_text("x", tmp_path / "a.txt")
    atomic_write_parquet(pd.DataFrame({"a": [1]}), tmp_path / "sub" / "b.parquet")
    assert _mode(tmp_path / "a.txt") == 0o664
    assert _mode(tmp_path / "sub" / "b.parquet") == 0o664
    assert _mode(tmp_path / "sub") == 0o775
    assert _mode(make_temp_dir(tmp_path, "x")) == 0o775
    os.umask(0o077)
    atomic_write_text("y", tmp_path / "private.txt")
    assert _mode(tmp_path / "private.txt") == 0o600


def test_data_synth_out_folder_is_group_readable(tmp_path, group_umask):
    out = tmp_path / "synth"
    result = CliRunner().invoke(
        app, ["data", "synth", "--out", str(out), "--patients", "2", "--size", "32", "--sites", "chexpert"]
    )
    assert result.exit_code == 0, result.output
    assert _mode(out) == 0o775
    files = [p for p in out.rglob("*") if p.is_file()]
    assert files and all(_mode(p) & 0o664 == 0o664 for p in files)


def test_temporaries_of_dead_writers_are_cleaned_and_live_ones_kept(tmp_path):
    # a writer killed inside the block leaves its temporary file behind
    code = (
        "import os; from chexbench.core.atomic import atomic_path\n"
        f"cm = atomic_path({str(tmp_path / 'records' / 'c.parquet')!r}); tmp = cm.__enter__()\n"
        "open(tmp, 'w').write('half'); os._exit(9)"
    )
    subprocess.run([sys.executable, "-c", code], check=False)
    left = list((tmp_path / "records").glob(".*.tmp"))
    assert len(left) == 1
    with atomic_path(tmp_path / "records" / "live.parquet") as live:  # ours, still being written
        foreign = tmp_path / ".notes.tmp"
        foreign.write_text("not ours")
        removed = clean_stale_temporaries(tmp_path)
        assert removed == left and not left[0].exists()
        assert os.path.exists(live) and foreign.exists()
        # from another host: only its age can tell
        other = tmp_path / ".d.parquet.0123abcd.42@another-node.tmp"
        other.write_text("x")
        assert clean_stale_temporaries(tmp_path) == []
        old = time.time() - 7 * 3600
        os.utime(other, (old, old))
        assert clean_stale_temporaries(tmp_path) == [other]
