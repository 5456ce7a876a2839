"""``chexbench data augment-preview``: a PNG of contrastive view pairs, to look at the augmentation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from chexbench.cli.app import console, data_app
from chexbench.core.atomic import atomic_path
from chexbench.core.errors import ConfigError
from chexbench.spec.registry import STRATEGIES


def _parse_options(strategy: str, items: list[str] | None) -> dict[str, object]:
    allowed = dict(getattr(STRATEGIES.get(strategy), "options", {}) or {})
    out: dict[str, object] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or key not in allowed:
            raise ConfigError(
                f"--option expects key=value with a {strategy} option ({', '.join(sorted(allowed))}), got"
                f" '{item}'"
            )
        out[key] = type(allowed[key])(raw) if isinstance(allowed[key], (int, float)) else raw
    return out


@data_app.command("augment-preview")
def augment_preview_cmd(
    out: Annotated[Path, typer.Option(help="PNG file to write")] = Path("augment_preview.png"),
    dataset: Annotated[str, typer.Option(help="dataset whose train images are shown")] = "phantom-chexpert",
    strategy: Annotated[
        str, typer.Option(help="self-supervised strategy whose augmentation options apply")
    ] = "simclr",
    size: Annotated[int, typer.Option(help="image side in pixels")] = 128,
    pairs: Annotated[int, typer.Option(help="number of images (rows)")] = 6,
    seed: Annotated[int, typer.Option(help="augmentation seed")] = 0,
    option: Annotated[
        list[str] | None,
        typer.Option("--option", help="strategy option key=value, e.g. flip_p=0.5; repeatable"),
    ] = None,
) -> None:
    """Write OUT: each row an image of DATASET's train split, then two augmented views of it."""
    # lazy: keeps chexbench --help fast
    import torch
    from PIL import Image

    from chexbench.datasets.celldata import pretrain_pool
    from chexbench.spec.cell import CellConfig
    from chexbench.spec.settings import Settings

    # lazy: keeps chexbench --help fast
    from chexbench.strategies.augment import preview_pairs
    from chexbench.strategies.pretrain import view_augment

    opts = {**STRATEGIES.get(strategy).options, **_parse_options(strategy, option)}
    cell = CellConfig(
        strategy,
        "resnet_tiny",
        dataset,
        "linear",
        1.0,
        seed,
        Settings(image_size=size, pretrain_source=dataset),
    )
    images, _ = pretrain_pool(cell, max_images=4 * pairs)  # whole patients: ask for more, show `pairs`
    sheet = preview_pairs(torch.as_tensor(images[:pairs]), view_augment(opts), seed)
    with atomic_path(out) as tmp:
        Image.fromarray(sheet.numpy()).save(tmp, format="PNG")
    console.print(f"wrote {out} ({len(images[:pairs])} rows: original | view 1 | view 2)")
