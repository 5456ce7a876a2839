"""``chexbench explain`` through the CLI: overlays and gallery for a stored cell with a saved
model; one-line errors for an unknown cell, a missing model and a foreign image id."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from chexbench.bench.cell_model import build_classifier, save_cell_model
from chexbench.bench.runner import base_record
from chexbench.bench.store import ResultStore
from chexbench.cli import app
from chexbench.core.context import RunContext
from chexbench.datasets.celldata import CellData, SplitData
from chexbench.spec.cell import CellConfig
from chexbench.spec.settings import Settings

LABELS = ["cardiomegaly", "edema"]


def _data(cell: CellConfig) -> CellData:
    rng = np.random.default_rng(0)
    n = 6
    split = SplitData(
        (rng.random((n, 32, 32)) * 255).astype(np.uint8),
        np.tile([[1.0, 0.0]], (n, 1)).astype(np.float32),
        np.array([f"img{i}" for i in range(n)]),
        np.array([f"p{i}" for i in range(n)]),
    )
    return CellData(list(LABELS), list(LABELS), split, split, split, {})


@pytest.fixture
def stored(tmp_path, monkeypatch):
    import chexbench.bench.finished as finished

    monkeypatch.setattr(finished, "build_cell_data", _data)
    results = tmp_path / "results"
    cells = {}
    for backbone, opts in (("vit_tiny", {"head": "topk", "topk": 3}), ("resnet_tiny", {})):
        cell = CellConfig(
            "scratch",
            backbone,
            "phantom-chexpert",
            "finetune",
            1.0,
            0,
            Settings(image_size=32),
            protocol_options=opts,
        )
        record = base_record(cell, torch.device("cpu")).as_dict()
        record.update(
            status="ok",
            data_json=json.dumps(
                {
                    "protocol_extra": {
                        "localization": {
                            "pairs": 4,
                            "pointing_hit_rate": 0.5,
                            "random_hit_rate": 0.1,
                            "deletion_auc": 0.2,
                            "random_deletion_auc": 0.3,
                        }
                    }
                }
            ),
        )
        predictions = pd.DataFrame(
            {
                "image_id": ["i0"],
                "patient_id": ["p0"],
                "label": [LABELS[0]],
                "y_true": [1.0],
                "y_score": [0.5],
                "split": ["test"],
            }
        )  # an ok record always has its predictions
        record.update(eval_labels_json=json.dumps(LABELS[:1]))
        ResultStore(results).write(record, predictions)
        torch.manual_seed(0)
        model = build_classifier(cell, opts.get("head", "linear"), opts, len(LABELS))
        save_cell_model(
            model,
            cell,
            RunContext(torch.device("cpu"), results, tmp_path / "cache"),
            opts,
            LABELS,
            (0.5, 0.25),
        )
        cells[backbone] = cell.cell_id
    return results, cells


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["vit_tiny", "resnet_tiny"])
def test_explain_writes_overlays_and_gallery(stored, tmp_path, backbone):
    results, cells = stored
    out = tmp_path / f"out-{backbone}"
    res = CliRunner().invoke(
        app, ["explain", "-r", str(results), "--cell", cells[backbone], "--n", "3", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    pngs = sorted(p.name for p in out.glob("0*.png"))
    assert pngs == ["00_img0.png", "01_img1.png", "02_img2.png"]
    md = (out / "gallery.md").read_text()
    assert md.count("| `img") == 3 and "pointing game 0.500 (random heatmap 0.100)" in md
    assert ("top-K patch scores" if backbone == "vit_tiny" else "Grad-CAM") in md
    with Image.open(out / "gallery.png") as im:
        assert im.size[0] > 200
    res = CliRunner().invoke(
        app, ["explain", "-r", str(results), "--cell", cells[backbone], "--ids", "img4", "--out", str(out)]
    )
    assert res.exit_code == 0 and sorted(p.name for p in out.glob("0*.png")) == [
        "00_img4.png"
    ]  # replaced, not merged


def test_explain_errors_are_one_line(stored, tmp_path):
    results, cells = stored
    runner = CliRunner()
    res = runner.invoke(app, ["explain", "-r", str(results), "--cell", "ffffffffffff"])
    assert res.exit_code == 2 and "no cell 'ffffffffffff'" in res.output
    res = runner.invoke(app, ["explain", "-r", str(results), "--cell", cells["vit_tiny"], "--ids", "nope"])
    assert res.exit_code == 2 and "'nope' is not in the cell's test split" in res.output
    (results / "models" / f"{cells['resnet_tiny']}.pt").unlink()
    res = runner.invoke(app, ["explain", "-r", str(results), "--cell", cells["resnet_tiny"]])
    assert (
        res.exit_code == 2 and "save_model = true" in res.output and len(res.output.strip().splitlines()) <= 2
    )
    assert not (results / "explain").exists()  # nothing partial


@pytest.mark.slow
def test_several_cells_are_compared_side_by_side_on_the_same_images(stored, tmp_path):
    results, cells = stored
    out = tmp_path / "cmp"
    res = CliRunner().invoke(
        app,
        [
            "explain",
            "-r",
            str(results),
            "--cell",
            cells["vit_tiny"],
            "--cell",
            cells["resnet_tiny"],
            "--n",
            "2",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    with Image.open(out / "comparison.png") as im:
        assert im.size[0] > 300 and im.size[1] > 300  # 2 images × 2 cells
    res = CliRunner().invoke(
        app, ["explain", "-r", str(results), "--cell", cells["vit_tiny"], "--cell", "ffffffffffff"]
    )
    assert res.exit_code == 2 and "no cell 'ffffffffffff'" in res.output


@pytest.mark.slow
def test_comparison_columns_name_protocol_and_head(stored, tmp_path, monkeypatch):
    """`explain --cell A --cell B`: each column is headed by its cell's protocol and head (was the head
    alone)."""
    import chexbench.explain.gallery as gallery

    results, cells = stored
    seen = {}
    monkeypatch.setattr(
        gallery,
        "save_gallery_png",
        lambda out, panels, columns, title: seen.update(panels=panels, columns=columns),
    )
    res = CliRunner().invoke(
        app,
        [
            "explain",
            "-r",
            str(results),
            "--cell",
            cells["vit_tiny"],
            "--cell",
            cells["resnet_tiny"],
            "--n",
            "2",
            "--out",
            str(tmp_path / "cmp"),
        ],
    )
    assert res.exit_code == 0, res.output
    heads = [p["title"] for p in seen["panels"][: seen["columns"]]]
    assert all(("linear probe" in t or "fine-tuning" in t) and " head" in t for t in heads), heads
    rest = [p["title"] for p in seen["panels"][seen["columns"] :]]
    assert rest and not any(" head" in t for t in rest)  # the heading once per column, not on every row
