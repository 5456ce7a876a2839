"""``chexbench data prepare`` and ``chexbench data verify``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from chexbench.cli.app import Table, console, data_app, err_console
from chexbench.core.errors import ConfigError, DataError
from chexbench.core.paths import cache_dir
from chexbench.spec.cell import CellConfig
from chexbench.spec.registry import DATASETS


def parse_dataset_options(dataset: str, items: list[str] | None) -> dict[str, object]:
    """``["patients=200", "size=320"]`` → ``{"patients": 200, "size": 320}``, checked against the dataset's
    options."""
    allowed = set(getattr(DATASETS.get(dataset), "options", {}) or {})
    out: dict[str, object] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--option expects key=value, got '{item}'")
        if key not in allowed:
            raise ConfigError(
                f"dataset '{dataset}' has no option '{key}' (options: {', '.join(sorted(allowed))})"
            )
        value: object = raw.strip()
        for cast in (int, float):
            try:
                value = cast(raw)
                break
            except ValueError:
                continue
        out[key] = value
    return out


def _root(dataset: str, root: Path | None, options: dict[str, object] | None = None) -> Path:
    ds = DATASETS.get(dataset)
    opts = dict(options or {})
    if root:
        opts["root"] = str(root)
    try:
        return Path(ds.resolve_root(opts))
    except DataError as e:
        if root is None and not opts.get(
            "root"
        ):  # this command has the option the grid's message cannot name
            raise DataError(f"{e}, or pass --root PATH") from None
        raise


OptionList = Annotated[
    list[str] | None,
    typer.Option("--option", help="dataset option key=value (e.g. phantom patients=200); repeatable"),
]


@data_app.command("prepare")
def prepare_cmd(
    dataset: Annotated[str, typer.Argument(help="registered dataset name (chexbench list datasets)")],
    root: Annotated[Path | None, typer.Option(help="dataset root folder (native layout)")] = None,
    size: Annotated[
        int, typer.Option(help="side of the square uint8 images; runs use settings.image_size")
    ] = 256,
    out: Annotated[
        Path | None, typer.Option(help="write here instead of the cache folder that runs read")
    ] = None,
    workers: Annotated[int, typer.Option(help="decoding processes (0 = all cores)")] = 0,
    strict: Annotated[
        bool, typer.Option(help="a missing or corrupt image is fatal instead of skipped")
    ] = False,
    option: OptionList = None,
) -> None:
    """Index a dataset and decode its images once into a uint8 cache (resumable)."""
    # lazy: keeps chexbench --help fast
    from chexbench.datasets.cache import prepare

    path = _root(dataset, root, parse_dataset_options(dataset, option))
    try:
        cache = prepare(dataset, path, size, out, workers=workers or None, strict=strict, progress=True)
    except KeyboardInterrupt:
        err_console.print(
            "[yellow]interrupted[/]: finished chunks are kept; rerun the same command to resume"
        )
        raise typer.Exit(130) from None
    m = cache.manifest
    table = Table(title=f"{dataset} prepared at {size}px", show_header=False)
    table.add_row("folder", str(cache.dir))
    table.add_row("images", f"{m['n_images']:,}")
    table.add_row("patients", f"{cache.index['patient_id'].nunique():,}")
    for split, n in sorted(m["split_counts"].items()):
        table.add_row(f"split {split}", f"{n:,}")
    table.add_row("skipped", f"{m['n_skipped']:,}")
    console.print(table)
    for item in m["skipped"][:10]:
        console.print(f"[yellow]skipped[/] {item['path']}: {item['reason']}", highlight=False)
    if m["n_skipped"] > 10:
        console.print(
            f"[yellow]… {m['n_skipped'] - 10} more skipped images listed in {cache.dir / 'manifest.json'}[/]"
        )


def _find_prepared(dataset: str, root: Path | None, size: int | None, out: Path | None) -> Path:
    """The prepared folder to verify: ``--out``, else the one matching root and size (either may be left
    out)."""
    if out is not None:
        return out
    want_root = str(_root(dataset, root).resolve()) if root is not None else None
    candidates = []
    for mf in sorted((cache_dir() / "prepared").glob(f"{dataset}-s{size or '*'}-*/manifest.json")):
        m = json.loads(mf.read_text())
        if m.get("dataset") == dataset and (want_root is None or m.get("root") == want_root):
            candidates.append(mf.parent)
    at = f" at {size}px" if size else ""
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise DataError(
            f"no prepared cache of '{dataset}'{at} (run: chexbench data prepare {dataset} --root PATH)"
        )
    names = ", ".join(c.name for c in candidates)
    raise DataError(
        f"{len(candidates)} prepared caches of '{dataset}'{at} ({names}); pass --size, --root or --out"
    )


@data_app.command("verify")
def verify_cmd(
    dataset: Annotated[str, typer.Argument(help="registered dataset name")],
    root: Annotated[Path | None, typer.Option(help="dataset root the cache was prepared from")] = None,
    size: Annotated[
        int | None, typer.Option(help="image size of the cache to check (needed if several)")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="a prepared folder written with prepare --out")] = None,
    sample: Annotated[int, typer.Option(help="re-decode this many random images (0 = all)")] = 0,
) -> None:
    """Check a prepared cache against its sources (label files, file stats, re-decoded pixels)."""
    # lazy: keeps chexbench --help fast
    from chexbench.datasets.cache import open_prepared
    from chexbench.datasets.verify import verify

    folder = _find_prepared(dataset, root, size, out)
    cache = open_prepared(folder)
    report = verify(cache, root, sample=sample)
    table = Table(title=f"verify {folder}", show_header=False)
    table.add_row("images checked", f"{report.checked:,}")
    table.add_row("label files changed", str(len(report.stale_label_files)))
    table.add_row("sources missing", str(len(report.missing_sources)))
    table.add_row("sources changed (size/mtime)", str(len(report.changed_sources)))
    table.add_row("pixels differ", str(len(report.mismatched_pixels)))
    console.print(table)
    for what, items in (
        ("label file changed", report.stale_label_files),
        ("missing", report.missing_sources),
        ("changed", report.changed_sources),
        ("pixels differ", report.mismatched_pixels),
    ):
        for item in items[:5]:
            console.print(f"[red]{what}[/] {item}", highlight=False)
    if not report.ok:
        raise DataError(
            f"prepared cache {folder} does not match its sources; rerun chexbench data prepare {dataset}"
        )
    console.print("[green]ok[/]: the cache matches its sources")


@data_app.command("splits")
def splits_cmd(
    dataset: Annotated[str, typer.Argument(help="registered dataset name (chexbench list datasets)")],
    out: Annotated[Path, typer.Option(help="folder to write <dataset>-splits-<sha256[:12]>.csv into")],
    grid: Annotated[
        str | None,
        typer.Option(
            help=(
                "grid (preset or TOML file): its cells of DATASET give the seeds, label fractions, settings"
                " and options"
            )
        ),
    ] = None,
    root: Annotated[Path | None, typer.Option(help="dataset root folder (without --grid)")] = None,
    seed: Annotated[
        list[int] | None,
        typer.Option("--seed", help="fine-tuning seed (without --grid; repeatable; default 0)"),
    ] = None,
    fraction: Annotated[
        list[float] | None,
        typer.Option("--fraction", help="label fraction in (0, 1] (without --grid; repeatable; default 1)"),
    ] = None,
    size: Annotated[int, typer.Option(help="image size of the prepared cache read (without --grid)")] = 224,
    option: OptionList = None,
) -> None:
    """Write the patient-level splits and label-fraction samples the cells use, as citable split files."""
    # lazy: keeps chexbench --help fast
    from chexbench.datasets import split_files
    from chexbench.datasets.celldata import split_exports

    if dataset not in DATASETS:
        raise ConfigError(DATASETS.unknown_message(dataset))
    cells = _split_cells(dataset, grid, root, seed, fraction, option, size)
    exports = split_exports(cells)  # everything is computed before the first file is written
    for e in exports:
        path = split_files.write(e.rows, dataset, out)
        counts = e.rows["split"].value_counts()
        table = Table(title=str(path), show_header=False)
        table.add_row("sha256", split_files.file_sha256(path))
        for name in ("train", "valid", "test"):
            table.add_row(f"{name} patients", f"{int(counts.get(name, 0)):,}")
        for column in e.rows.columns[2:]:
            table.add_row(column, f"{int(e.rows[column].sum()):,} train patients")
        table.add_row("cells", f"{len(e.cells)} of grid '{e.cells[0].grid}'" if grid else "(no grid)")
        console.print(table)
        for note in split_files.nesting_notes(e.rows):
            console.print(f"[yellow]not nested[/]: {note}", highlight=False)


def _split_cells(
    dataset: str,
    grid: str | None,
    root: Path | None,
    seeds: list[int] | None,
    fractions: list[float] | None,
    option: list[str] | None,
    size: int,
) -> list[CellConfig]:
    """The cells of ``dataset`` in ``grid``, or one cell per seed and fraction with default settings."""
    from chexbench.spec.parse import load_grid
    from chexbench.spec.settings import Settings

    if grid is not None:
        given = [
            flag
            for flag, v in (
                ("--root", root),
                ("--seed", seeds),
                ("--fraction", fractions),
                ("--option", option),
            )
            if v
        ]
        if given:
            raise ConfigError(f"{', '.join(given)} cannot be combined with --grid (the grid sets them)")
        g = load_grid(grid)
        cells = [p.cell for p in g.cells() if p.cell.dataset == dataset]
        if not cells:
            raise ConfigError(
                f"grid '{g.name}' has no cell of dataset '{dataset}' (datasets:"
                f" {', '.join(map(str, g.axes['dataset']))})"
            )
        return cells
    for f in fractions or []:
        if not 0 < f <= 1:
            raise ConfigError(f"--fraction must be in (0, 1], got {f:g}")
    options = parse_dataset_options(dataset, option)
    if root is not None:
        options["root"] = str(root)
    identity = getattr(DATASETS.get(dataset), "identity_options", None)
    options = identity(options) if identity and options else options
    return [
        CellConfig(
            strategy="scratch",
            backbone="resnet50",
            dataset=dataset,
            protocol="linear",
            label_fraction=float(f),
            seed=int(s),
            settings=Settings(image_size=size),
            dataset_options=options,
        )
        for s in seeds or [0]
        for f in fractions or [1.0]
    ]
