"""The registered phantom datasets: generated on first use into the cache, reused, read by the real
loaders."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from chexbench.cli import app
from chexbench.core.errors import ConfigError
from chexbench.datasets.phantom import PHANTOM_LABELS
from chexbench.datasets.phantom._site_tables import SITE_STATS
from chexbench.spec.registry import DATASETS


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CHEXBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.parametrize("layout", ["chexpert", "nih", "indiana"])
def test_registered_phantom_generates_once_and_loads_with_the_real_loader(cache, layout):
    ds = DATASETS.get(f"phantom-{layout}")
    assert set(ds.options) == {"root", "patients", "size", "seed", "dependencies", "splits"}
    assert ds.options["dependencies"] == "published"
    options = {"patients": 12, "size": 32, "seed": 1}
    root = ds.resolve_root(options)
    assert root.is_relative_to(cache / "phantom")
    stamp = (next(root.rglob("*.csv"), None) or next(root.rglob("*.xml"))).stat().st_mtime_ns
    assert ds.resolve_root(dict(options)) == root  # reused, not regenerated
    assert (next(root.rglob("*.csv"), None) or next(root.rglob("*.xml"))).stat().st_mtime_ns == stamp
    assert ds.resolve_root({**options, "seed": 2}) != root
    assert ds.resolve_root({**options, "dependencies": "none"}) != root  # its own cached folder
    index = ds.load_index(root)
    reference = DATASETS.get(layout).load_index(root)
    assert index.equals(reference)
    assert set(ds.labels) <= set(index.columns) and set(ds.eval_labels) <= set(ds.labels)
    assert set(ds.labels) == set(PHANTOM_LABELS[layout])
    assert not [p for p in (cache / "phantom").iterdir() if p.name.startswith(".")]  # no temp folders left


def test_explicit_root_is_used_as_given(cache, phantom_root):
    ds = DATASETS.get("phantom-chexpert")
    root = ds.resolve_root({"root": str(phantom_root / "chexpert")})
    assert (root / "train.csv").is_file()
    assert not cache.exists()


def test_bad_options_are_config_errors(cache):
    with pytest.raises(ConfigError, match="patients"):
        DATASETS.get("phantom-nih").resolve_root({"patients": 0})
    with pytest.raises(ConfigError, match="size"):
        DATASETS.get("phantom-nih").resolve_root({"size": "big"})
    with pytest.raises(ConfigError, match="dependencies.*'real'"):
        DATASETS.get("phantom-nih").resolve_root({"dependencies": "real"})


def test_phantom_labels_are_labels_the_real_tables_carry():
    for layout, labels in PHANTOM_LABELS.items():
        drawn = set(SITE_STATS[layout]["labels"]) | {"no_finding"}
        assert set(labels) <= drawn, layout


def test_cli_synth_writes_every_site_and_refuses_a_non_empty_folder(tmp_path):
    runner = CliRunner()
    out = tmp_path / "synth"
    result = runner.invoke(
        app,
        [
            "data",
            "synth",
            "--out",
            str(out),
            "--patients",
            "4",
            "--size",
            "32",
            "--sites",
            "chexpert,indiana",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "chexpert" in result.output and "indiana" in result.output
    assert (out / "chexpert" / "CheXpert-v1.0-small" / "train.csv").is_file()
    assert (out / "indiana" / "ecgen-radiology").is_dir() and not (out / "nih").exists()
    again = runner.invoke(app, ["data", "synth", "--out", str(out), "--patients", "4"])
    assert again.exit_code == 2 and "not empty" in again.output
    bad = runner.invoke(app, ["data", "synth", "--out", str(tmp_path / "x"), "--sites", "chexpert,mimic"])
    assert bad.exit_code == 2 and "mimic" in bad.output and not (tmp_path / "x").exists()
    bad = runner.invoke(app, ["data", "synth", "--out", str(tmp_path / "y"), "--dependencies", "real"])
    assert bad.exit_code == 2 and "dependencies" in bad.output and not (tmp_path / "y").exists()


def test_cli_synth_preview_writes_a_contact_sheet(tmp_path):
    from PIL import Image

    out = tmp_path / "synth"
    result = CliRunner().invoke(
        app,
        [
            "data",
            "synth",
            "--out",
            str(out),
            "--patients",
            "2",
            "--size",
            "32",
            "--sites",
            "nih",
            "--preview",
        ],
    )
    assert result.exit_code == 0, result.output
    with Image.open(out / "contact_sheet.png") as im:
        assert im.width >= 10 * 128 and im.height > 128


def test_bench_phantom_records_a_section(tmp_path):
    perf = tmp_path / "PERFORMANCE.md"
    result = CliRunner().invoke(
        app, ["bench", "phantom", "--size", "32", "--images", "3", "--output", str(perf)]
    )
    assert result.exit_code == 0, result.output
    text = perf.read_text()
    assert "## Phantom generation" in text and "| chexpert | JPEG | 3 |" in text
