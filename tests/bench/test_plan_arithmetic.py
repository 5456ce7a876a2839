"""`plan`'s GPU-hours: per-shard hours sum to the total, shards balanced by estimated cost, every line
derived."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from chexbench.bench.shard import Shard, pretrain_group, shard_cells
from chexbench.cli import app
from chexbench.cli.run import shard_costs
from chexbench.perf.throughput import estimate_gpu_hours
from chexbench.spec.parse import load_grid


def _full():
    return load_grid("full").cells()


def test_balanced_shards_cover_the_grid_once_and_sum_to_the_total():
    planned = _full()
    est = estimate_gpu_hours(planned, [])
    costs = shard_costs(planned)
    n = 6
    parts = [[p for p in shard_cells(planned, Shard(i, n), costs) if p.status == "run"] for i in range(n)]
    ids = [p.cell.cell_id for part in parts for p in part]
    assert sorted(ids) == sorted(p.cell.cell_id for p in planned if p.status == "run") and len(
        set(ids)
    ) == len(ids)
    runs = [{pretrain_group(p) for p in part} - {""} for part in parts]
    assert sum(len(r) for r in runs) == est.pretrain_runs  # no pretraining run needed by two shards
    hours = [
        (sum(est.cell_seconds[p.cell.cell_id] for p in part) + sum(est.run_seconds[r] for r in rs)) / 3600
        for part, rs in zip(parts, runs, strict=True)
    ]
    assert abs(sum(hours) - est.gpu_hours) < 1e-9
    biggest_unit = max(est.run_seconds.values()) / 3600
    assert max(hours) <= max(est.gpu_hours / n, biggest_unit) * 1.25  # was 1.0 h … 10.1 h for a 5.1 h mean
    assert shard_cells(planned, Shard(2, n), costs) == shard_cells(
        load_grid("full").cells(), Shard(2, n), shard_costs(planned)
    )


def test_plan_output_sums_and_derives():
    r = CliRunner().invoke(
        app, ["plan", "--grid", "full", "--no-check", "--shards", "6"], env={"COLUMNS": "300"}
    )
    assert r.exit_code == 0, r.output
    total = float(re.search(r"estimated ([\d,.]+) GPU-hours", r.output).group(1).replace(",", ""))
    rows = re.findall(r"(\d)/6\W+\d+\W+\d+\W+([\d,.]+)", r.output)
    assert len(rows) == 6
    assert (
        abs(sum(float(h) for _, h in rows) - total) <= 0.05 * 6
    )  # rounding of six one-decimal numbers (was 37.0 vs 30.5)
    assert re.search(
        r"pretraining mocov2/vit_b16 on chexpert .*: 200 epochs × 191,229 images ÷ [\d,]+ img/s = [\d.]+ h",
        r.output,
    )
    assert "cell(s) ×" in r.output


def test_derivation_lines_sum_to_the_total():
    est = estimate_gpu_hours(_full(), [])
    parts = [
        float(re.search(r"([\d,.]+) h(?: — |$)", line).group(1).replace(",", "")) for line in est.derivation
    ]
    assert abs(sum(parts) - est.gpu_hours) < 0.01 * len(parts)


def test_plan_without_data_names_an_option_plan_has():
    r = CliRunner().invoke(
        app, ["plan", "--grid", "full"], env={"COLUMNS": "300", "CHEXBENCH_CACHE": "/nonexistent-cache"}
    )
    assert r.exit_code == 2
    assert (
        "--root" not in r.output and "--no-check" in r.output
    )  # was "pass --root", an option plan does not have


def _phantom_transfer_grid(tmp_path, fractions: str):
    path = tmp_path / "g.toml"
    path.write_text(f"""
name = "pool"
[axes]
strategy = ["simclr"]
backbone = ["vit_tiny"]
dataset = ["phantom-nih"]
protocol = ["linear"]
label_fraction = [{fractions}]
seed = [0]
[settings]
image_size = 64
pretrain_source = "phantom-chexpert"
[dataset.phantom-nih]
patients = 4400
[dataset.phantom-chexpert]
patients = 1500
[strategy.simclr]
pretrain_epochs = 2
[strategy.simclr.recipe.vit]
pretrain_warmup_epochs = 0.5
""")
    return load_grid(str(path)).cells()


def test_a_pretraining_pool_is_estimated_from_its_source_not_from_the_first_cells_label_fraction(tmp_path):
    # the pool was the target's nominal train images × the label fraction of the first cell planned
    # (88 images for a 1 % cell of a 4,400-patient target), not the 1,500-patient source's
    for fractions in ("0.01, 1.0", "1.0, 0.01"):
        est = estimate_gpu_hours(_phantom_transfer_grid(tmp_path, fractions), [])
        (line,) = [x for x in est.derivation if x.startswith("pretraining ")]
        assert "2 epochs × 3,000 images" in line, line
