"""``chexbench data augment-preview`` through Typer's CliRunner (pretraining pool replaced by synthetic
images)."""

from __future__ import annotations

import numpy as np
from PIL import Image
from ssl_fixtures import synth_images
from typer.testing import CliRunner

from chexbench.cli import app


def test_preview_writes_a_png_of_pairs_and_rejects_unknown_options(monkeypatch, tmp_path) -> None:
    import chexbench.datasets.celldata as celldata

    def pool(cell, max_images=0):
        images, _ = synth_images(max_images, cell.settings.image_size)
        return images, np.array([f"p{i}" for i in range(max_images)])

    monkeypatch.setattr(celldata, "pretrain_pool", pool)
    out = tmp_path / "sheet.png"
    result = CliRunner().invoke(
        app,
        [
            "data",
            "augment-preview",
            "--out",
            str(out),
            "--size",
            "32",
            "--pairs",
            "4",
            "--option",
            "flip_p=0.5",
        ],
    )
    assert result.exit_code == 0, result.output
    with Image.open(out) as im:
        assert im.size == (3 * 32 + 2, 4 * 32) and im.mode == "L"
    bad = CliRunner().invoke(
        app, ["data", "augment-preview", "--out", str(tmp_path / "x.png"), "--option", "nope=1"]
    )
    assert bad.exit_code == 2 and "nope=1" in bad.output and not (tmp_path / "x.png").exists()
