"""A synthetic results directory written through ResultStore (no training): records,
predictions with patient clustering, a failed cell, skipped cells and a pretraining log."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from chexbench.bench.store import ResultStore
from chexbench.core.atomic import atomic_write_parquet
from chexbench.spec.settings import Settings

LABELS = ["atelectasis", "cardiomegaly", "edema", "pneumothorax"]
STRENGTH = {"scratch": 0.6, "simclr": 1.4, "mocov2": 1.0}


def _record(
    cell_id: str,
    strategy: str,
    backbone: str,
    dataset: str,
    protocol: str,
    fraction: float,
    seed: int,
    status: str = "ok",
    reason: str = "",
    full_config: bool = False,
) -> dict:
    cfg = {
        "strategy": strategy,
        "backbone": backbone,
        "dataset": dataset,
        "protocol": protocol,
        "label_fraction": fraction,
        "seed": seed,
    }
    if full_config:  # a resolved config as `chexbench run` records it (the seed streams derive from it)
        cfg |= {
            "settings": {
                **dataclasses.asdict(Settings()),
                "epochs": 5,
                "image_size": 64,
                "uncertainty": "zeros",
            },
            "strategy_options": {"temperature": 0.1} if strategy == "simclr" else {},
            "backbone_options": {},
            "dataset_options": {},
            "protocol_options": {"augment": False} if protocol == "finetune" else {},
        }
    pretrained = strategy in ("simclr", "mocov2")
    init = (
        {"source": f"pretrain:{strategy}-{backbone}", "pretrain_run": f"{strategy}-{backbone}"}
        if pretrained
        else {"source": "random"}
    )
    return {
        "schema_version": 1,
        "cell_id": cell_id,
        "grid": "synthetic",
        "strategy": strategy,
        "backbone": backbone,
        "dataset": dataset,
        "protocol": protocol,
        "label_fraction": fraction,
        "seed": seed,
        "config_json": json.dumps(cfg, sort_keys=True),
        "config_hash": hashlib.sha256(cell_id.encode()).hexdigest(),
        "status": status,
        "failure_reason": reason,
        "eval_labels_json": json.dumps(LABELS),
        "macro_auroc": float("nan"),
        "macro_auprc": float("nan"),
        "metrics_json": "{}",
        "val_macro_auroc": float("nan"),
        "selected_epoch": 1,
        "init_json": json.dumps(init),
        "data_json": "{}",
        "history_json": "[]",
        "train_seconds": 1.0,
        "eval_seconds": 0.5,
        "images_per_second": 100.0,
        "peak_memory_mb": 10.0,
        "device_name": "cpu",
        "torch_version": "2.14.1",
        "timm_version": "1.0",
        "chexbench_version": "0.1.0",
        "git_sha": "",
        "created_at": "2026-01-01T00:00:00+00:00",
    }


def _truth(n_patients: int, images_per_patient: int) -> pd.DataFrame:
    """Fixed test and validation labels of one dataset (every cell shares them)."""
    rng = np.random.default_rng(12345)
    rows = []
    for split, n_pat, prefix in (("test", n_patients, "t"), ("valid", max(6, n_patients // 2), "v")):
        for p in range(n_pat):
            for i in range(images_per_patient):
                for j, label in enumerate(LABELS):
                    if label == "pneumothorax" and split == "test":
                        y = 0.0  # no positive on test: undefined, never a fake number
                    else:
                        y = float(rng.random() < 0.3 + 0.1 * j)
                    if rng.random() < 0.1:
                        y = float("nan")  # masked
                    rows.append((f"{prefix}{p:03d}_{i}", f"{prefix}p{p:03d}", label, y, split))
    return pd.DataFrame(rows, columns=["image_id", "patient_id", "label", "y_true", "split"])


def _predictions(truth: pd.DataFrame, rng: np.random.Generator, strength: float) -> pd.DataFrame:
    """Scores: label signal of ``strength`` + a per-patient effect (clustering) + image noise."""
    patients = truth["patient_id"].unique()
    effect = dict(zip(patients, rng.normal(0, 0.7, len(patients)), strict=True))
    y = truth["y_true"].fillna(0).to_numpy()
    logit = strength * y + truth["patient_id"].map(effect).to_numpy() + rng.normal(0, 1, len(truth))
    return truth.assign(y_score=1 / (1 + np.exp(-(logit - 0.8))))[
        ["image_id", "patient_id", "label", "y_true", "y_score", "split"]
    ]


def write_synthetic_results(
    root: Path,
    fractions=(1.0,),
    seeds=(0, 1),
    n_patients: int = 40,
    images_per_patient: int = 3,
    full_config: bool = False,
) -> Path:
    store = ResultStore(root)
    n = 0
    truth = _truth(n_patients, images_per_patient)
    for dataset in ("chexpert",):
        for protocol in ("finetune",):
            for backbone in ("resnet50", "vit_b16"):
                for strategy in ("scratch", "simclr", "mocov2"):
                    for fraction in fractions:
                        for seed in seeds:
                            n += 1
                            cell_id = f"c{n:011d}"
                            rng = np.random.default_rng(n)
                            s = STRENGTH[strategy] * (0.6 + 0.4 * fraction) + (
                                0.2 if backbone == "vit_b16" else 0
                            )
                            preds = _predictions(truth, rng, s)
                            store.write(
                                _record(
                                    cell_id,
                                    strategy,
                                    backbone,
                                    dataset,
                                    protocol,
                                    fraction,
                                    seed,
                                    full_config=full_config,
                                ),
                                preds,
                            )
    store.write(
        _record(
            "f00000000001",
            "mocov2",
            "vit_b16",
            "chexpert",
            "linear",
            1.0,
            0,
            "failed",
            "loss became NaN at epoch 2 step 17",
        ),
        None,
    )
    skipped = pd.DataFrame(
        [
            {
                "cell_id": "s00000000001",
                "grid": "synthetic",
                "strategy": "imagenet",
                "backbone": "resnet50",
                "dataset": "chexpert",
                "protocol": "finetune",
                "label_fraction": 1.0,
                "seed": 0,
                "reason": (
                    "imagenet: no ImageNet weights file for resnet50; put it at ~/.cache/chexbench/weights"
                ),
            }
        ]
    )
    atomic_write_parquet(skipped, root / "skipped.parquet")
    steps = np.arange(0, 200, 10)
    pre = pd.DataFrame(
        {
            "run_id": "pre1",
            "strategy": "simclr",
            "backbone": "resnet50",
            "epoch": steps // 50,
            "step": steps,
            "loss": 5 * np.exp(-steps / 80) + 1,
            "probe_auroc": np.where(steps % 50 == 0, 0.5 + steps / 800, np.nan),
        }
    )
    atomic_write_parquet(pre, root / "pretrain" / "pre1.parquet")
    return root
