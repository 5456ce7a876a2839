"""``chexbench bench data``: PIL decode vs prepared-cache loader, written to docs/PERFORMANCE.md."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from chexbench.cli.app import bench_app, console
from chexbench.cli.data import OptionList, _root, parse_dataset_options

DEFAULT_DATASET = "phantom-chexpert"


@bench_app.command("data")
def bench_data_cmd(
    dataset: Annotated[str, typer.Argument(help="registered dataset to read")] = DEFAULT_DATASET,
    root: Annotated[Path | None, typer.Option(help="dataset root (default: the dataset's own default)")] = None,
    size: Annotated[int, typer.Option(help="image side after resizing")] = 224,
    images: Annotated[int, typer.Option(help="how many frontal images to read")] = 256,
    batch_size: Annotated[int, typer.Option(help="images per batch")] = 32,
    epochs: Annotated[int, typer.Option(help="passes over the images per path")] = 2,
    output: Annotated[Path | None, typer.Option(help="PERFORMANCE.md to update (default: docs/PERFORMANCE.md)")] = None,
    option: OptionList = None,
) -> None:
    """Images/s of (a) PIL decode + resize and (b) the uint8 cache loader, same images and order."""
    # lazy: keeps chexbench --help fast
    from chexbench.perf.loader import measure_loaders
    from chexbench.perf.record import record_section
    options = parse_dataset_options(dataset, option)
    path = _root(dataset, root, options)
    result = measure_loaders(dataset, path, size, images, batch_size, epochs)
    body = result.markdown()
    command = f"chexbench bench data {dataset}" + (f" --root {shlex.quote(str(root))}" if root else "")
    command += f" --size {size} --images {images} --batch-size {batch_size} --epochs {epochs}"
    command += "".join(f" --option {shlex.quote(o)}" for o in option or [])
    file = record_section("Data loading: PIL decode vs prepared cache", body, command, output)
    console.print(body, highlight=False)
    console.print(f"written to {file}")
