"""``chexbench data prepare|verify`` and ``chexbench bench data`` through Typer's CliRunner."""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from chexbench.cli import app
from chexbench.datasets.fixtures import real_label_file, write_chexpert_layout, write_image

runner = CliRunner()


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("CHEXBENCH_CACHE", str(tmp_path / "cache"))
    rows = pd.read_csv(real_label_file("chexpert"), nrows=40)
    pid = rows["Path"].str.split("/").str[2]
    return write_chexpert_layout(tmp_path / "data", rows[pid < "patient00010"], rows[pid >= "patient00010"])


def test_prepare_then_verify(root, tmp_path):
    r = runner.invoke(
        app, ["data", "prepare", "chexpert", "--root", str(root), "--size", "16", "--workers", "1"]
    )
    assert r.exit_code == 0, r.output
    assert "skipped" in r.output and "40" in r.output
    folders = list((tmp_path / "cache" / "prepared").glob("chexpert-s16-*"))
    assert len(folders) == 1 and json.loads((folders[0] / "manifest.json").read_text())["n_images"] == 40
    r = runner.invoke(app, ["data", "verify", "chexpert"])  # the only prepared cache: found without --size
    assert r.exit_code == 0, r.output
    assert "matches its sources" in r.output
    assert (
        runner.invoke(app, ["data", "prepare", "chexpert", "--root", str(root), "--size", "12"]).exit_code
        == 0
    )
    r = runner.invoke(app, ["data", "verify", "chexpert"])
    assert r.exit_code == 2 and "2 prepared caches of 'chexpert'" in r.output
    assert runner.invoke(app, ["data", "verify", "chexpert", "--size", "12"]).exit_code == 0
    index = pd.read_parquet(folders[0] / "index.parquet")
    write_image(root / index["path"].iloc[0], 40)
    r = runner.invoke(app, ["data", "verify", "chexpert", "--size", "16", "--root", str(root)])
    assert r.exit_code == 2
    assert "does not match its sources" in r.output and index["path"].iloc[0] in r.output


def test_bad_input_is_one_line_and_exit_2(root, tmp_path):
    r = runner.invoke(app, ["data", "prepare", "chexpert"])
    assert r.exit_code == 2 and "needs a root" in r.output
    (root / index_path(root)).unlink()
    out = tmp_path / "strict"
    r = runner.invoke(
        app,
        ["data", "prepare", "chexpert", "--root", str(root), "--size", "16", "--strict", "--out", str(out)],
    )
    assert r.exit_code == 2 and "missing file" in r.output and "Traceback" not in r.output
    assert not out.exists()
    r = runner.invoke(
        app, ["data", "prepare", "chexpert", "--root", str(root), "--size", "16", "--out", str(out)]
    )
    assert r.exit_code == 0 and "skipped" in r.output and index_path(root) in r.output
    r = runner.invoke(app, ["data", "verify", "nih", "--size", "16"])
    assert r.exit_code == 2 and "no prepared cache of 'nih'" in r.output


def index_path(root):
    return pd.read_csv(root / "train.csv")["Path"].iloc[1].split("/", 1)[1]


def test_bench_data_writes_its_section(root, tmp_path):
    perf = tmp_path / "PERFORMANCE.md"
    r = runner.invoke(
        app,
        [
            "bench",
            "data",
            "chexpert",
            "--root",
            str(root),
            "--size",
            "16",
            "--images",
            "24",
            "--batch-size",
            "8",
            "--epochs",
            "1",
            "--output",
            str(perf),
        ],
    )
    assert r.exit_code == 0, r.output
    text = perf.read_text()
    assert "## Data loading: PIL decode vs prepared cache" in text
    assert "ratio (b) / (a)" in text and "chexbench bench data chexpert" in text
    assert not list((tmp_path / "cache" / "prepared").glob("*"))  # the benchmark leaves the real cache alone


def test_dataset_options_are_checked_against_the_dataset():
    r = runner.invoke(app, ["data", "prepare", "chexpert", "--option", "patients=3"])
    assert r.exit_code == 2 and "dataset 'chexpert' has no option 'patients'" in r.output
    r = runner.invoke(app, ["bench", "data", "chexpert", "--option", "root"])
    assert r.exit_code == 2 and "--option expects key=value" in r.output
