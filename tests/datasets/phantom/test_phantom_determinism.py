"""Same seed → byte-identical files (whatever the number of processes); another seed → other files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from chexbench.core.errors import ConfigError, DataError
from chexbench.datasets.phantom.generate import generate


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_gives_identical_bytes_across_runs_and_worker_counts(tmp_path, phantom_root):
    args = {"patients": 40, "size": 48, "seed": 3}  # as the session phantom (conftest.SMALL)
    again = generate(tmp_path / "again", ("chexpert", "nih", "indiana"), workers=2, **args)
    a, b = tree_digest(phantom_root), tree_digest(again.root)
    assert len(a) > 200 and a == b


def test_another_seed_gives_other_images_and_labels(tmp_path, phantom_root):
    other = generate(tmp_path / "other", ("chexpert",), patients=40, size=48, seed=4, workers=1)
    a, b = tree_digest(phantom_root / "chexpert"), tree_digest(other.root / "chexpert")
    shared = set(a) & set(b)
    assert shared
    differing = [k for k in shared if a[k] != b[k]]
    assert len(differing) > 0.9 * len(shared)
    csv = "CheXpert-v1.0-small/train.csv"
    assert a[csv] != b[csv]


def test_output_must_be_new_or_empty_and_nothing_partial_is_left(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(DataError, match="not empty"):
        generate(out, ("chexpert",), patients=2, size=32)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with pytest.raises(ConfigError, match="size"):
        generate(tmp_path / "new", ("chexpert",), patients=2, size=8)
    with pytest.raises(ConfigError, match="unknown phantom site"):
        generate(tmp_path / "new", ("mimic",), patients=2, size=32)
    assert not (tmp_path / "new").exists()


def test_a_failure_mid_generation_leaves_no_output(tmp_path, monkeypatch):
    import chexbench.datasets.phantom.output as output

    calls = {"n": 0}
    real = output.render_and_save

    def failing(job):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("disk full")
        return real(job)

    monkeypatch.setattr(output, "render_and_save", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        generate(tmp_path / "out", ("chexpert",), patients=6, size=32, workers=1)
    assert list(tmp_path.iterdir()) == []
