"""The report's hyperparameter tables are read from the records' configs."""

from __future__ import annotations

import json

import pandas as pd
from synthetic_store import write_synthetic_results

from chexbench.bench.store import ResultStore
from chexbench.core.atomic import atomic_write_parquet
from chexbench.reports.methods import hyperparameter_section


def _rows(text: str, first_cell: str) -> list[list[str]]:
    return [
        [c.strip() for c in ln.strip("|").split("|")]
        for ln in text.splitlines()
        if ln.startswith(f"| {first_cell}")
    ]


def test_training_table_has_one_row_per_configuration_with_the_recorded_values(tmp_path):
    root = write_synthetic_results(
        tmp_path / "results", fractions=(0.1, 1.0), seeds=(0, 1), n_patients=8, full_config=True
    )
    store = ResultStore(root)
    recs = store.records()
    # the recorded lr of one configuration differs from every default: the table must show it
    for r in recs[
        (recs["strategy"] == "simclr") & (recs["backbone"] == "vit_b16") & (recs["label_fraction"] == 1.0)
    ].itertuples():
        cfg = json.loads(r.config_json)
        cfg["settings"]["lr"] = 0.00025
        row = recs[recs["cell_id"] == r.cell_id].assign(config_json=json.dumps(cfg))
        atomic_write_parquet(row, store.record_path(r.cell_id))
    text = hyperparameter_section(store.records())
    header = _rows(text, "configuration")[0]
    for column in (
        "epochs",
        "batch",
        "lr",
        "optimizer",
        "weight decay",
        "warmup (epochs)",
        "image size",
        "uncertain labels",
        "not mentioned",
        "label fraction",
        "seeds",
        "protocol options",
    ):
        assert column in header, column
    training = [r for r in _rows(text, "") if r[0] != "configuration" and len(r) == len(header)]
    rows = {(r[0], r[2]): dict(zip(header, r, strict=True)) for r in training}
    assert len([k for k in rows if k[1] in ("0.1", "1")]) == 12  # 3 strategies × 2 backbones × 2 fractions
    simclr = rows[("SimCLR · ViT-B/16", "1")]
    assert simclr["lr"] == "0.00025" and simclr["epochs"] == "5" and simclr["uncertain labels"] == "zeros"
    assert simclr["seeds"] == "0, 1" and simclr["strategy options"] == "temperature = 0.1"
    assert rows[("SimCLR · ViT-B/16", "0.1")]["lr"] == "0.001"


def test_pretraining_table_says_which_seeds_a_run_serves_and_how_to_sweep_pretraining(tmp_path):
    root = write_synthetic_results(
        tmp_path / "results", fractions=(0.1, 1.0), seeds=(0, 1), n_patients=8, full_config=True
    )
    text = hyperparameter_section(ResultStore(root).records())
    simclr = next(r for r in _rows(text, "SimCLR · ResNet-50") if "`simclr-resnet50`" in r)
    assert simclr[-2:] == ["0, 1", "4"]  # one run: both fine-tuning seeds at both label fractions
    assert "temperature 0.1" in simclr[4] and "optimizer adamw" in simclr[4] and "epochs 100" in simclr[3]
    assert '"settings.pretrain_seed" = [0, 1, 2]' in text
    assert "Scratch · ResNet-50: `random`" in text


def test_plugins_get_a_column_and_old_records_show_missing_values(tmp_path):
    root = write_synthetic_results(tmp_path / "results", seeds=(0,), n_patients=8, full_config=True)
    store = ResultStore(root)
    recs = store.records()
    first = recs.iloc[0]
    cfg = json.loads(first.config_json)
    cfg["plugins"] = {"strategy": "cxr-plugin==1.2.0"}
    atomic_write_parquet(recs.iloc[[0]].assign(config_json=json.dumps(cfg)), store.record_path(first.cell_id))
    second = recs.iloc[1]
    old = {
        k: json.loads(second.config_json)[k]
        for k in ("strategy", "backbone", "dataset", "protocol", "label_fraction", "seed")
    }
    atomic_write_parquet(
        recs.iloc[[1]].assign(config_json=json.dumps(old)), store.record_path(second.cell_id)
    )
    text = hyperparameter_section(store.records())
    assert _rows(text, "configuration")[0][-1] == "plugins"
    assert any("strategy: cxr-plugin==1.2.0" in r for r in _rows(text, ""))
    old_row = next(r for r in _rows(text, "") if r[3] == "0" and r[4] == "—")
    assert old_row[4:13] == ["—"] * 9


def test_no_finished_cell_is_said():
    assert "No finished cells." in hyperparameter_section(pd.DataFrame(columns=["status"]))


def test_the_report_says_which_configurations_pool_pretraining_seeds(tmp_path):
    root = write_synthetic_results(
        tmp_path / "results", fractions=(1.0,), seeds=(0, 1), n_patients=8, full_config=True
    )
    store = ResultStore(root)
    recs = store.records()
    # one configuration made with pretrain_seed = "per_seed": each seed had its own pretraining run
    for r in recs[(recs["strategy"] == "simclr") & (recs["backbone"] == "resnet50")].itertuples():
        cfg = json.loads(r.config_json)
        cfg["settings"]["pretrain_seed"] = "per_seed"
        init = json.loads(r.init_json)
        init["pretrain_run"] = f"simclr-resnet50-seed{r.seed}"
        row = recs[recs["cell_id"] == r.cell_id].assign(
            config_json=json.dumps(cfg), init_json=json.dumps(init)
        )
        atomic_write_parquet(row, store.record_path(r.cell_id))
    text = hyperparameter_section(store.records())
    assert "Pretraining variance is inside the seed spread of 1 of the 4 pretrained configurations" in text
    assert "SimCLR · ResNet-50 · " in text.split("Pretraining variance is inside")[1].split("\n")[0]
    runs = [r for r in _rows(text, "SimCLR · ResNet-50") if "`simclr-resnet50-seed" in " ".join(r)]
    assert sorted(r[2] for r in runs) == ["per_seed (0)", "per_seed (1)"]


def test_the_pretraining_recipe_shown_is_the_backbone_familys(tmp_path):
    # SimCLR on a ViT runs MoCo v3's ViT optimizer recipe unless the grid says otherwise: the row must
    # not show the strategy's ResNet defaults
    root = write_synthetic_results(
        tmp_path / "results", fractions=(1.0,), seeds=(0,), n_patients=8, full_config=True
    )
    text = hyperparameter_section(ResultStore(root).records())
    vit, resnet = (
        next(
            r for r in _rows(text, label) if any(c.startswith("`") for c in r)
        )  # the pretraining table's row
        for label in ("SimCLR · ViT-B/16", "SimCLR · ResNet-50")
    )
    assert "weight_decay 0.1" in vit[4] and "warmup_epochs 40" in vit[4] and "lr 0.00015" in vit[4]
    assert "weight_decay 1e-06" in resnet[4] and "warmup_epochs 10" in resnet[4]
