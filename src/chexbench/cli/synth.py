"""``chexbench data synth``: phantom radiographs in native layouts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from chexbench.cli.app import Table, console, data_app
from chexbench.core.errors import ConfigError


def parse_sites(text: str) -> tuple[str, ...]:
    # lazy: keeps chexbench --help fast
    from chexbench.datasets.phantom.generate import SITE_NAMES

    sites = tuple(s.strip() for s in text.split(",") if s.strip())
    if not sites:
        raise ConfigError("--sites is empty (choose from chexpert, nih, indiana)")
    for s in sites:
        if s not in SITE_NAMES:
            raise ConfigError(f"--sites: unknown site '{s}' (known: {', '.join(SITE_NAMES)})")
    if len(set(sites)) != len(sites):
        raise ConfigError(f"--sites lists a site twice: {text}")
    return sites


@data_app.command("synth")
def synth_cmd(
    out: Annotated[
        Path, typer.Option(help="output folder (must not exist or be empty); one sub-folder per site")
    ],
    sites: Annotated[
        str, typer.Option(help="comma-separated: chexpert, nih, indiana")
    ] = "chexpert,nih,indiana",
    patients: Annotated[int, typer.Option(help="patients per site (each with 1-5 studies)")] = 200,
    size: Annotated[int, typer.Option(help="image width in pixels")] = 256,
    seed: Annotated[int, typer.Option(help="random seed; same seed, same bytes")] = 0,
    preview: Annotated[
        bool, typer.Option(help="also write OUT/contact_sheet.png, a labelled tile per finding")
    ] = False,
    workers: Annotated[int, typer.Option(help="processes (0: one per CPU for big runs)")] = 0,
    dependencies: Annotated[
        str,
        typer.Option(
            help='"published": view, age and AP magnification follow the findings as in the real data; '
            '"none": independent (generator version 5\'s files)'
        ),
    ] = "published",
) -> None:
    """Phantom chest radiographs written in the CheXpert, NIH and Indiana native layouts."""
    # lazy: keeps chexbench --help fast
    from chexbench.datasets.phantom.generate import generate

    site_list = parse_sites(sites)
    result = generate(
        out,
        site_list,
        patients=patients,
        size=size,
        seed=seed,
        workers=workers or None,
        dependencies=dependencies,
    )  # type: ignore[arg-type]  # checked by generate
    table = Table(title=f"phantom data in {result.root} ({result.seconds:.1f} s)")
    for col in ("site", "images", "patients", "studies", "boxes", "folder"):
        table.add_column(col, justify="left" if col in ("site", "folder") else "right")
    for site, tally in result.tallies.items():
        table.add_row(
            site,
            str(tally.images),
            str(len(tally.patients)),
            str(tally.studies),
            str(tally.boxes),
            str(result.root / site),
        )
    console.print(table)
    prevalence = Table(title="label prevalence (share of frontal images showing each finding)")
    prevalence.add_column("finding")
    for site in result.tallies:
        prevalence.add_column(site, justify="right")
    found = sorted({lab for t in result.tallies.values() for lab in t.positives})
    for lab in found:
        prevalence.add_row(lab, *(f"{t.prevalence().get(lab, 0.0):.1%}" for t in result.tallies.values()))
    console.print(prevalence)
    if preview:
        # lazy: keeps chexbench --help fast
        from chexbench.datasets.phantom.preview import contact_sheet

        sheet = contact_sheet(result.root / "contact_sheet.png", site_list, size=max(size, 128), seed=seed)
        console.print(f"contact sheet: {sheet}")
