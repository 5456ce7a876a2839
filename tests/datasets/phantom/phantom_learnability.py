"""Shared helper of the learnability tests: a small CNN trained from scratch on phantom pixels.

Kept out of the test module so it can be run by hand (``python
tests/datasets/phantom/phantom_learnability.py``)
to print per-label AUROCs and timings.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupShuffleSplit
from torch import nn

SIZE = 64


def load_frontal(
    root: Path, index: pd.DataFrame, labels: list[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frontal images (N, 1, S, S) float32 in [0, 1], targets (N, L) (drawn = 1, incl. uncertain), patient
    ids."""
    frontal = index[index["view"].isin(["AP", "PA", "FRONTAL"])].reset_index(drop=True)
    images = np.stack(
        [
            np.asarray(
                Image.open(root / p).convert("L").resize((SIZE, SIZE), Image.BILINEAR), dtype=np.float32
            )
            / 255.0
            for p in frontal["path"]
        ]
    )[:, None]
    values = frontal[labels].to_numpy(dtype=float)
    targets = ((values == 1) | (values == -1)).astype(np.float32)
    return images, targets, frontal["patient_id"].to_numpy()


def small_cnn(n_labels: int) -> nn.Module:
    def block(c_in: int, c_out: int) -> list[nn.Module]:
        return [
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        ]

    stem = [nn.Conv2d(1, 12, 5, stride=2, padding=2, bias=False), nn.BatchNorm2d(12), nn.ReLU(inplace=True)]
    return nn.Sequential(
        *stem, *block(12, 16), *block(16, 32), *block(32, 48), AvgMaxPool(), nn.Linear(96, n_labels)
    )


class AvgMaxPool(nn.Module):
    """Global average and max pooling concatenated, (B, C, H, W) → (B, 2C): max keeps small lesions."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)


def train_and_score(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    epochs: int,
    seed: int = 0,
    model: nn.Module | None = None,
) -> dict[int, float]:
    """Train from scratch (AdamW, BCE); per-label test AUROC (index → value), NaN when undefined.

    Pass a freshly built ``model`` to train several in parallel threads (the global torch seed
    is then not touched, so each run stays deterministic).
    """
    if model is None:
        torch.manual_seed(seed)
        model = small_cnn(y_train.shape[1])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    steps = epochs * int(np.ceil(len(x_train) / 64))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    gen = torch.Generator().manual_seed(seed)
    # rare findings weigh as much as common ones (BCE positive weight = negatives / positives, capped)
    pos = yt.sum(0).clamp(min=1)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=((len(yt) - pos) / pos).clamp(max=10))
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), 64):
            idx = order[i : i + 64]
            loss = loss_fn(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        scores = torch.cat(
            [model(torch.from_numpy(x_test[i : i + 256])) for i in range(0, len(x_test), 256)]
        ).numpy()
    out = {}
    for j in range(y_test.shape[1]):
        y = y_test[:, j]
        out[j] = float(roc_auc_score(y, scores[:, j])) if 0 < y.sum() < len(y) else float("nan")
    return out


def patient_split(
    patients: np.ndarray, test_size: float = 0.3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    split = GroupShuffleSplit(n_splits=1, test_size=test_size, random_state=seed)
    train, test = next(split.split(np.zeros(len(patients)), groups=patients))
    return train, test


def shuffled_within(y: np.ndarray, seed: int) -> np.ndarray:
    """Rows of ``y`` permuted (whole label vectors, so prevalence and co-occurrence stay)."""
    return y[np.random.default_rng(seed).permutation(len(y))]


if __name__ == "__main__":
    import sys
    import tempfile

    from chexbench.datasets.phantom import PHANTOM_LABELS
    from chexbench.datasets.phantom.generate import write_site
    from chexbench.spec.registry import DATASETS

    torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 2)
    patients = int(sys.argv[1]) if len(sys.argv) > 1 else 600
    epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 12
    labels = [lab for lab in PHANTOM_LABELS["chexpert"] if lab != "no_finding"]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_site(Path(tmp), "chexpert", patients, SIZE, 0)
        root = Path(tmp) / "CheXpert-v1.0-small"
        index = DATASETS.get("chexpert").load_index(root)
        x, y, pid = load_frontal(root, index, labels)
        t1 = time.perf_counter()
        tr, te = patient_split(pid)
        print(f"generated+loaded {len(x)} frontal images in {t1 - t0:.1f}s; train {len(tr)}, test {len(te)}")
        c1 = time.process_time()
        auc = train_and_score(x[tr], y[tr], x[te], y[te], epochs)
        t2 = time.perf_counter()
        print(f"train cpu {time.process_time() - c1:.1f}s")
        for j, lab in enumerate(labels):
            print(f"{lab:28s} pos={int(y[te, j].sum()):4d} auroc={auc[j]:.3f}")
        print(f"macro {np.nanmean(list(auc.values())):.3f}  train {t2 - t1:.1f}s")
        auc_s = train_and_score(x[tr], shuffled_within(y[tr], 1), x[te], y[te], epochs)
        print(f"shuffled macro {np.nanmean(list(auc_s.values())):.3f}  {time.perf_counter() - t2:.1f}s")
