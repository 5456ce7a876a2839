"""Per-label AUROC / AUPRC of a cell's test predictions (scikit-learn), with undefined labels kept honest."""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


def per_label_metrics(y_true: np.ndarray, y_score: np.ndarray, labels: list[str]) -> dict[str, dict]:
    """``y_true`` (N, L) with NaN = masked, ``y_score`` (N, L) → per-label metrics.

    A label whose unmasked test targets hold only one class has no AUROC: it is reported
    with ``defined = False`` and NaN metrics, never a made-up 0.5.
    """
    out: dict[str, dict] = {}
    for j, label in enumerate(labels):
        keep = ~np.isnan(y_true[:, j])
        t, s = y_true[keep, j], y_score[keep, j]
        n_pos, n_neg = int((t == 1).sum()), int((t == 0).sum())
        defined = n_pos > 0 and n_neg > 0
        out[label] = {
            "auroc": float(roc_auc_score(t, s)) if defined else math.nan,
            "auprc": float(average_precision_score(t, s)) if defined else math.nan,
            "n_pos": n_pos,
            "n_neg": n_neg,
            "defined": defined,
        }
    return out


def macro(metrics: dict[str, dict], labels: list[str], key: str = "auroc") -> float:
    """Mean of ``key`` over ``labels`` that are defined; NaN if none is."""
    vals = [metrics[lbl][key] for lbl in labels if lbl in metrics and metrics[lbl]["defined"]]
    return float(np.mean(vals)) if vals else math.nan


def macro_auroc(y_true: np.ndarray, y_score: np.ndarray, labels: list[str], eval_labels: list[str]) -> float:
    return macro(per_label_metrics(y_true, y_score, labels), eval_labels, "auroc")
