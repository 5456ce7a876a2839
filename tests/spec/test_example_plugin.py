"""The example plugin package (examples/chexbench-example-plugin) is built, installed, listed and run.

How it is installed here, honestly and fast: a temp venv with ``pip install -e`` takes minutes,
so the test builds the example's wheel with its own build backend (``pip wheel --no-deps
--no-build-isolation``, about a second) and unpacks it into a site folder — which is what
``pip install`` does with a pure-Python wheel — then puts that folder on ``sys.path`` of a
subprocess. chexbench discovers the plugin through ``importlib.metadata``, exactly as for any
installed distribution. The build runs on a copy, so the repository stays clean. The commands of one
installed version run in one such process (list, list options, run, report; then plan after the upgrade):
each process start imports torch and the CLI again, which was most of this test's time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "chexbench-example-plugin"

GRID = """
name = "plugin-demo"
[axes]
strategy = ["scratch", "orthogonal"]
backbone = ["resnet_tiny"]
dataset = ["phantom-chexpert"]
protocol = ["linear"]
[settings]
image_size = 32
epochs = 2
batch_size = 16
max_train_images = 64
uncertainty = "zeros"
[dataset.phantom-chexpert]
patients = 24
size = 32
[protocol.linear]
lr_grid = [1e-2]
l2_grid = [0.0]
localize = false
save_model = "false"
"""


def install(site: Path, work: Path, version: str | None = None) -> str:
    """Build the example's wheel (optionally re-versioned, as a new release would be) and unpack it into
    ``site`` (replacing an earlier install); returns the distribution name."""
    src = work / f"pkg-{version or 'orig'}"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    pyproject = src / "pyproject.toml"
    project = tomllib.loads(pyproject.read_text())["project"]
    if version:
        pyproject.write_text(
            pyproject.read_text().replace(f'version = "{project["version"]}"', f'version = "{version}"')
        )
    wheels = work / f"wheels-{version or 'orig'}"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(src),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    shutil.rmtree(site, ignore_errors=True)
    site.mkdir(parents=True)
    (wheel,) = wheels.glob("*.whl")
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    assert (site / "chexbench_example_plugin" / "strategy.py").is_file()
    return project["name"]


def chexbench(site: Path, cache: Path, *commands: list[str]) -> list[tuple[int, str]]:
    """Each of ``commands`` (a chexbench command line) through Typer's CliRunner, one after another, in ONE
    fresh
    Python process whose ``sys.path`` holds ``site``: the plugin is found as an installed distribution, the
    way a
    user's shell finds it, while the interpreter and the CLI are imported once (each process start costs
    seconds).
    Returns each command's (exit code, output)."""
    code = textwrap.dedent("""
        import json, sys
        from typer.testing import CliRunner
        from chexbench.cli import app
        results = []
        for argv in json.loads(sys.argv[1]):
            r = CliRunner().invoke(app, argv)
            results.append([r.exit_code, r.output])
        print(json.dumps(results))
        """)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), str(REPO / "src")]),
        "CHEXBENCH_CACHE": str(cache),
    }
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(commands)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [(code, output) for code, output in json.loads(proc.stdout.splitlines()[-1])]


@pytest.mark.slow  # a wheel built twice, two interpreters, a grid run: 15-30 s
def test_example_plugin_is_listed_documented_and_runs_in_a_tiny_grid(tmp_path):
    site, cache, results = tmp_path / "site", tmp_path / "cache", tmp_path / "results"
    dist = install(site, tmp_path)
    grid = tmp_path / "plugin.toml"
    grid.write_text(GRID)

    listed, options, run, report = chexbench(
        site,
        cache,
        ["list", "strategies"],
        ["list", "options", "orthogonal"],
        ["run", "--grid", str(grid), "--results", str(results), "--device", "cpu"],
        ["report", "--results", str(results), "--bootstrap", "100", "--no-figures", "--format", "markdown"],
    )
    for code, output in (listed, options, run, report):
        assert code == 0, output
    row = next(ln for ln in listed[1].splitlines() if " orthogonal " in ln)
    assert "plugin chexbench_example_plugin.strategy:register" in row and "Saxe et al. 2014" in row
    assert "[strategy.orthogonal] options" in options[1] and "norm-preserving" in options[1]

    assert "float > 0" in next(
        ln for ln in options[1].splitlines() if " gain " in ln
    )  # from its option_model's field
    records = pd.concat([pd.read_parquet(p) for p in (results / "records").glob("*.parquet")])
    assert sorted(records["status"]) == ["ok", "ok"]
    by_strategy = {r.strategy: r for r in records.itertuples()}
    plugin_config = json.loads(by_strategy["orthogonal"].config_json)
    assert plugin_config["plugins"] == {
        "strategy": f"{dist}==0.1.0"
    }  # name and version in every plugin record
    assert "plugins" not in json.loads(by_strategy["scratch"].config_json)
    assert "orthogonal init (gain 1)" in by_strategy["orthogonal"].init_json

    # the report calls the plugin by its declared display name, and lists it with its version
    assert "| Orthogonal init |" in (results / "tables" / "paired.md").read_text()
    assert f"strategy: {dist}==0.1.0" in (results / "report.md").read_text()

    # a new release of the plugin is a new cell; the built-in cell is still done (a new process: a user's
    # next command after `pip install -U`, which reads the new version)
    install(site, tmp_path, version="0.2.0")
    ((code, planned),) = chexbench(site, cache, ["plan", "--grid", str(grid), "--results", str(results)])
    assert code == 0, planned
    assert "2 cells: 1 to run (1 already done)" in planned
    assert by_strategy["scratch"].cell_id in planned and by_strategy["orthogonal"].cell_id not in planned
