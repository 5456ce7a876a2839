"""``chexbench explain``: heatmap overlays and a Markdown gallery for one finished cell."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from chexbench.cli.app import app, console


@app.command("explain")
def explain_cmd(
    cell: Annotated[str, typer.Option("--cell", "-c", help="cell id or a unique prefix of it (see `chexbench status`)")],
    results: Annotated[Path, typer.Option("--results", "-r", help="results directory")] = Path("chexbench-results"),
    n: Annotated[int, typer.Option("--n", help="how many test images (boxed positives first)")] = 8,
    ids: Annotated[list[str] | None, typer.Option("--ids", help="explain these test image ids instead (repeatable)")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="output folder (default RESULTS/explain/CELL)")] = None,
    columns: Annotated[int, typer.Option(help="overlays per row in gallery.png")] = 4,
    root: Annotated[Path | None, typer.Option("--root", help="read the cell's dataset from this root instead")] = None,
) -> None:
    """Write heatmap overlays (top-K patch scores for ViT top-K cells, Grad-CAM for CNN cells),
    gallery.png and gallery.md for a finished cell whose model was saved."""
    from chexbench.bench.cell_ids import resolve_cell_id
    from chexbench.bench.store import ResultStore
    from chexbench.reports.explain import write_explanations

    cell = resolve_cell_id(cell, ResultStore(results).cell_ids(), str(results))
    summary = write_explanations(results, cell, n=n, ids=ids, out_dir=out, columns=columns, dataset_root=root)
    if summary.note:
        console.print(f"[yellow]warning:[/] {escape(summary.note)}")
    console.print(f"{len(summary.images)} overlays ({summary.method}) → {escape(str(summary.out_dir))}/gallery.md")
    loc = summary.localization
    if loc:
        console.print(
            f"pointing game {loc['pointing_hit_rate']:.3f} vs random {loc['random_hit_rate']:.3f} "
            f"on {loc['pairs']} test image–label pairs"
        )
