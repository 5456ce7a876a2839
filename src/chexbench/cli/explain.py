"""``chexbench explain``: heatmap overlays and a Markdown gallery for one finished cell."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from chexbench.bench.cell_ids import resolve_cell_id
from chexbench.cli.app import app, console


@app.command("explain")
def explain_cmd(
    cell: Annotated[
        list[str],
        typer.Option(
            "--cell",
            "-c",
            help=(
                "cell id or a unique prefix of it (see `chexbench status`); repeat it to compare cells' maps"
                " side by side"
            ),
        ),
    ],
    results: Annotated[Path, typer.Option("--results", "-r", help="results directory")] = Path(
        "chexbench-results"
    ),
    n: Annotated[int, typer.Option("--n", help="how many test images (boxed positives first)")] = 8,
    ids: Annotated[
        list[str] | None, typer.Option("--ids", help="explain these test image ids instead (repeatable)")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="output folder (default RESULTS/explain/CELL)")
    ] = None,
    columns: Annotated[int, typer.Option(help="overlays per row in gallery.png")] = 4,
    root: Annotated[
        Path | None, typer.Option("--root", help="read the cell's dataset from this root instead")
    ] = None,
) -> None:
    """Write heatmap overlays (top-K patch scores, per-class top-K patch logits, ViT or CNN Grad-CAM),
    gallery.png and gallery.md for a finished cell whose model was saved; with several --cell, one
    comparison.png of their maps side by side on the same images."""
    # lazy: keeps chexbench --help fast (torch, the models)
    # lazy: keeps chexbench --help fast
    from chexbench.bench.finished import load_finished_cell, rebuild_cell_data
    from chexbench.bench.store import ResultStore
    from chexbench.explain.baselines import baselines_text
    from chexbench.explain.gallery import heatmap_method, write_explanations, write_method_comparison

    known = ResultStore(results).cell_ids()
    cell = [resolve_cell_id(c, known, str(results)) for c in cell]
    if len(cell) > 1:
        finished = []
        for c in cell:
            finished.append(load_finished_cell(results, c))
            heatmap_method(finished[-1], why="no heatmap for this model")
        data = rebuild_cell_data(finished[0].cell, root)
        target = out / "comparison.png" if out else results / "explain" / "comparison.png"
        path = write_method_comparison(finished, data, target, n=n, ids=ids)
        console.print(f"{len(cell)} cells side by side → {escape(str(path))}")
        return
    one = load_finished_cell(results, cell[0])
    heatmap_method(one)
    data = rebuild_cell_data(one.cell, root)
    summary = write_explanations(
        one,
        data,
        out or results / "explain" / cell[0],
        n=n,
        ids=ids,
        columns=columns,
        same_root_expected=root is None,
    )
    if summary.note:
        console.print(f"[yellow]warning:[/] {escape(summary.note)}")
    console.print(
        f"{len(summary.images)} overlays ({summary.method}) → {escape(str(summary.out_dir))}/gallery.md"
    )
    loc = summary.localization
    if loc:
        ci = " [{:.3f}, {:.3f}]".format(*loc["pointing_ci"]) if loc.get("pointing_ci") else ""
        tol = loc.get("tolerant") or {}
        tol_text = (
            f"; within {tol['tolerance_px']:.2f} px {tol['pointing_hit_rate']:.3f} vs random"
            f" {tol['random_hit_rate']:.3f}"
            if tol
            else ""
        )
        flat = f"; {loc['flat_maps']} flat map(s) counted as misses" if loc.get("flat_maps") else ""
        console.print(
            f"pointing game {loc['pointing_hit_rate']:.3f}{ci} vs random {loc['random_hit_rate']:.3f} "
            f"on {loc['pairs']} test image–label pairs{tol_text}{flat}"
        )
        if baselines_text(loc):
            console.print(escape(baselines_text(loc)))
