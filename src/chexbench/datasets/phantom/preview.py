"""A labelled contact sheet of phantom radiographs: one tile per finding and site.

Tiles are rendered directly (same code path as the written files) for a fixed set of
example studies — a normal chest, then one study per drawn finding at high severity — so a
person can check that lungs are dark, bones and mediastinum bright and each finding visible
where its box says.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from chexbench.core.atomic import atomic_path
from chexbench.datasets.phantom.cohort import Patient, Study
from chexbench.datasets.phantom.findings import BILATERAL, DRAWN_FINDINGS, Finding
from chexbench.datasets.phantom.render import render_study

TILE = 192
CAPTION = 14


def example_studies(seed: int) -> list[tuple[str, Patient, Study]]:
    """(caption, patient, study) for a normal chest and each drawn finding."""
    out = []
    for k, name in enumerate(("normal", *DRAWN_FINDINGS)):
        rng = np.random.default_rng([seed, 99, k])
        findings = (
            ()
            if name == "normal"
            else (
                Finding(
                    name,
                    0.85,
                    BILATERAL if name == "pleural_effusion" else int(rng.integers(2)),
                    int(rng.integers(2**31)),
                ),
            )
        )
        female = bool(k % 2)
        study = Study(k, 1, 60, female, "PA", False, findings)
        out.append((name, Patient(k, female, int(rng.integers(2**31)), (study,)), study))
    return out


def _tile(image: np.ndarray, boxes: list, caption: str) -> Image.Image:
    h, w = image.shape
    scale = TILE / max(h, w)
    tile = Image.fromarray(image).convert("RGB").resize((round(w * scale), round(h * scale)), Image.BILINEAR)
    canvas = Image.new("RGB", (TILE, TILE + CAPTION), (0, 0, 0))
    canvas.paste(tile, ((TILE - tile.width) // 2, 0))
    draw = ImageDraw.Draw(canvas)
    ox = (TILE - tile.width) // 2
    for b in boxes:
        draw.rectangle(
            [ox + b.x * scale, b.y * scale, ox + (b.x + b.w) * scale, (b.y + b.h) * scale],
            outline=(255, 64, 64),
        )
    draw.text((3, TILE + 1), caption, fill=(255, 255, 0))
    return canvas


def contact_sheet(
    path: str | Path,
    sites: tuple[str, ...] = ("chexpert", "nih", "indiana"),
    size: int = 256,
    seed: int = 0,
    lateral: bool = True,
) -> Path:
    """Write a PNG grid: one row per site (finding tiles), plus lateral views of the first site."""
    rows = []
    examples = example_studies(seed)
    for site in sites:
        tiles = []
        for caption, patient, study in examples:
            image, boxes = render_study(patient, study, site, size, seed)
            tiles.append(_tile(image, boxes, f"{site}: {caption}"))
        rows.append(tiles)
    if lateral:
        tiles = []
        for caption, patient, study in examples:
            image, boxes = render_study(patient, study, sites[0], size, seed, view="lateral")
            tiles.append(_tile(image, boxes, f"lateral: {caption}"))
        rows.append(tiles)
    n_cols = max(len(r) for r in rows)
    # wrap each site's row into lines of 10 tiles
    per_line = min(10, n_cols)
    lines = [r[i : i + per_line] for r in rows for i in range(0, len(r), per_line)]
    sheet = Image.new("RGB", (per_line * TILE, len(lines) * (TILE + CAPTION)), (0, 0, 0))
    for i, line in enumerate(lines):
        for j, tile in enumerate(line):
            sheet.paste(tile, (j * TILE, i * (TILE + CAPTION)))
    path = Path(path)
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
    return path
