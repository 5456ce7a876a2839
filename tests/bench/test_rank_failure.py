"""No rank can hang the others: two gloo ranks run a grid of three cells through the real runner;
in the first cell rank 1 raises while rank 0 waits in a collective (in the last, rank 0 raises while
rank 1 polls for the pretraining lock rank 0 would have taken). Both ranks must leave that
cell within seconds (not the process-group timeout), agree that it failed (with rank 1's reason),
record it once, and run the next cells together."""

from __future__ import annotations

import datetime
import json
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

WORLD = 2
pytestmark = pytest.mark.slow  # two spawned interpreters importing torch: ~25 s in the suite


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _grid():
    from chexbench.spec.parse import parse_grid

    raw = {
        "axes": {
            "strategy": ["scratch"],
            "backbone": ["resnet_tiny"],
            "dataset": ["chexpert"],
            "protocol": ["finetune"],
            "label_fraction": [1.0],
            "seed": [0, 1, 2, 3],
        },
        "dataset": {"chexpert": {"root": "/nowhere"}},
    }
    return parse_grid(raw, "g.toml")


def _worker(rank: int, port: int, out: str) -> None:
    import os

    import pandas as pd
    import torch.distributed as dist

    from chexbench.bench import runner
    from chexbench.core import distributed as D
    from chexbench.core.context import RunContext
    from chexbench.core.errors import SkipCell

    os.environ["CHEXBENCH_CELL_TIMEOUT_MIN"] = "1"  # the fallback; the disconnect must be much faster
    torch.set_num_threads(1)
    # a short default timeout, so that without the agreement the test fails after 40 s instead of hanging
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=WORLD,
        timeout=datetime.timedelta(seconds=40),
    )

    def fake_run_cell(cell, ctx):
        if cell.seed == 0:
            if D.rank() == 1:
                time.sleep(0.5)  # rank 0 is inside the collective by now
                raise ValueError("rank 1 broke")
            D.mean_over_ranks(torch.ones(()))  # rank 0 waits here for rank 1, which never comes
            D.mean_over_ranks(torch.ones(()))
        if cell.seed == 2:
            raise SkipCell("no weights on any rank")
        if cell.seed == 3:  # rank 0 fails before taking the pretraining lock that rank 1 waits for (polling)
            if D.rank() == 0:
                time.sleep(0.5)
                raise ValueError("rank 0 broke before the lock")
            with D.exclusive_across_jobs(Path(out) / "pretrain.lck"):
                pass
        value = D.mean_over_ranks(torch.tensor(float(D.rank()))).item()  # the ranks still talk to each other
        record = runner.base_record(cell, ctx.device).replace(status="ok", macro_auroc=value)
        # an ok cell comes with its predictions, like the real run_cell's (the store refuses an ok record
        # alone)
        predictions = pd.DataFrame(
            {
                "image_id": ["a", "b"],
                "patient_id": ["p", "q"],
                "label": "edema",
                "y_true": [1.0, 0.0],
                "y_score": [0.9, 0.1],
                "split": "test",
            }
        )
        return record, predictions

    runner.run_cell = fake_run_cell
    runner.preflight = lambda planned: None
    grid = _grid()
    ctx = RunContext(torch.device("cpu"), Path(out) / "results", Path(out) / "cache")
    t0 = time.monotonic()
    summary = runner.run_grid(grid, ctx.results_dir, ctx, cells=grid.cells())
    elapsed = time.monotonic() - t0
    result = {"elapsed": elapsed, "outcomes": [(o.cell.seed, o.status, o.reason) for o in summary.outcomes]}
    with open(f"{out}/rank{rank}.json", "w") as f:
        json.dump(result, f)
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("rankfail")
    t0 = time.monotonic()
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True)
    wall = time.monotonic() - t0
    return out, wall, [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]


def test_a_rank_that_raises_fails_the_cell_on_every_rank_within_seconds(ranks):
    _, _, results = ranks  # (the spawn's wall time is mostly two interpreters importing torch)
    for r in results:
        assert r["elapsed"] < 20, r  # neither the cell timeout (60 s) nor the group's (40 s) ended the wait
        seeds = {seed: (status, reason) for seed, status, reason in r["outcomes"]}
        assert seeds[0] == ("failed", "CellFailedOnRank: rank 1 of 2: ValueError: rank 1 broke")
        assert seeds[1] == ("ok", "")
        assert seeds[2][0] == "skipped" and "no weights" in seeds[2][1]
        assert seeds[3] == (
            "failed",
            "CellFailedOnRank: rank 0 of 2: ValueError: rank 0 broke before the lock",
        )


def test_the_failed_cell_is_recorded_once_and_the_next_cell_ran(ranks):
    import pandas as pd

    from chexbench.bench.store import ResultStore

    out, _, _ = ranks
    store = ResultStore(out / "results")
    records = store.records()
    assert len(records) == 3 and records["cell_id"].is_unique  # cell 2 was skipped, not recorded
    by_seed = records.set_index("seed")
    assert by_seed.loc[0, "status"] == "failed"
    assert by_seed.loc[0, "failure_reason"] == "CellFailedOnRank: rank 1 of 2: ValueError: rank 1 broke"
    assert by_seed.loc[1, "status"] == "ok" and by_seed.loc[1, "macro_auroc"] == pytest.approx(
        0.5
    )  # mean of ranks 0, 1
    skipped = pd.read_parquet(out / "results" / "skipped.parquet")
    assert skipped["seed"].tolist() == [2]
