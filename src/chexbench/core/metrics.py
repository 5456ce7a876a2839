"""Per-label AUROC / AUPRC of a cell's predictions, with undefined labels kept honest.

Every AUROC of chexbench — the stored test metrics, validation selection of the protocols,
the linear probe's per-head selection, the pretraining probe and the reports' bootstrap — is
:mod:`chexbench.core.auroc`'s exact Mann–Whitney statistic (midranks for ties; it agrees with
scikit-learn and R's pROC, see its tests).
"""

from __future__ import annotations

import math

import numpy as np

from chexbench.core.auroc import auroc, resampled_auroc_auprc


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
        roc, prc = _auroc_auprc(t, s) if defined else (math.nan, math.nan)
        out[label] = {
            "auroc": roc,
            "auprc": prc,
            "n_pos": n_pos,
            "n_neg": n_neg,
            "defined": defined,
        }
    return out


def _auroc_auprc(y_true: np.ndarray, y_score: np.ndarray) -> tuple[float, float]:
    """AUROC and average precision of one label (n,), (n,): one sort for both."""
    roc, prc = resampled_auroc_auprc(y_true, y_score, np.arange(len(y_true)), np.ones((1, len(y_true))))
    return float(roc[0]), float(prc[0])


def macro(metrics: dict[str, dict], labels: list[str], key: str = "auroc") -> float:
    """Mean of ``key`` over ``labels`` that are defined; NaN if none is."""
    vals = [metrics[lbl][key] for lbl in labels if lbl in metrics and metrics[lbl]["defined"]]
    return float(np.mean(vals)) if vals else math.nan


def macro_auroc(y_true: np.ndarray, y_score: np.ndarray, labels: list[str], eval_labels: list[str]) -> float:
    return macro(per_label_metrics(y_true, y_score, labels), eval_labels, "auroc")


def macro_auroc_per_head(targets: np.ndarray, scores: np.ndarray, label_cols: list[int]) -> np.ndarray:
    """Macro AUROC (G,) of scores (G, N, L) against targets (N, L) (NaN = masked) over ``label_cols``.

    The same statistic as :func:`per_label_metrics` for each of the G heads; labels with one
    class only are left out; NaN for a head if none is defined.
    """
    per_label = []
    for j in label_cols:
        keep = ~np.isnan(targets[:, j])
        t = targets[keep, j]
        if not ((t == 1).any() and (t != 1).any()):
            continue
        per_label.append([auroc(t, head_scores[keep, j]) for head_scores in scores])
    return np.mean(per_label, axis=0) if per_label else np.full(scores.shape[0], np.nan)
