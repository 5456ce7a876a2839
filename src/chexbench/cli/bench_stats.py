"""``chexbench bench stats``: vectorized bootstrap vs a scikit-learn loop; recorded in docs/PERFORMANCE.md."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from chexbench.cli.app import bench_app, console
from chexbench.core.errors import ConfigError


@bench_app.command("stats")
def bench_stats(
    resamples: Annotated[int, typer.Option("--resamples", help="bootstrap resamples")] = 2000,
    labels: Annotated[int, typer.Option("--labels", help="labels")] = 14,
    images: Annotated[int, typer.Option("--images", help="test images")] = 20_000,
    patients: Annotated[int, typer.Option("--patients", help="test patients")] = 6_000,
    sklearn_resamples: Annotated[int | None, typer.Option("--sklearn-resamples", help="run the slow sklearn loop on the first N resamples only (scaled); default all")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    record: Annotated[bool, typer.Option("--record/--no-record", help="write the result to docs/PERFORMANCE.md")] = True,
    out: Annotated[Path | None, typer.Option("--out", help="PERFORMANCE.md to write (default: the checkout's docs/)")] = None,
) -> None:
    """Time the patient-level bootstrap against scikit-learn's roc_auc_score on the same resamples."""
    # lazy: keeps chexbench --help fast
    from chexbench.perf.record import record_section
    from chexbench.perf.stats import benchmark_markdown, run_stats_benchmark

    if min(resamples, labels, images, patients) < 1 or images < patients:
        raise ConfigError("--resamples/--labels/--images/--patients must be positive, with at least one image per patient")
    with console.status("timing the bootstrap and the scikit-learn loop…"):
        result = run_stats_benchmark(resamples, labels, images, patients, seed, sklearn_resamples)
    body = benchmark_markdown(result)
    console.print(body, highlight=False)
    if record:
        command = (f"chexbench bench stats --resamples {resamples} --labels {labels} --images {images} "
                   f"--patients {patients} --seed {seed}")
        if sklearn_resamples is not None:
            command += f" --sklearn-resamples {sklearn_resamples}"
        path = record_section("bench stats: patient-level bootstrap vs scikit-learn", body, command, out)
        console.print(f"recorded in {path}", highlight=False)
