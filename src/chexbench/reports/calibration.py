"""Calibration and an operating point chosen on validation, reported beside AUROC.

- Expected calibration error (Naeini et al. 2015; Guo et al. 2017): 15 equal-width bins of the
  predicted probability, ECE = Σ_bins (n_bin / n) · |mean(y) − mean(p)|, per label on test, with a
  patient-level bootstrap interval on the same resamples as AUROC's (:func:`ece_replicates`).
- Operating point: the threshold maximizing Youden's J = sensitivity + specificity − 1
  (Youden 1950) on the *validation* split, then sensitivity and specificity at that threshold
  on test (never chosen on test). A label without both classes on validation has none.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

N_BINS = 15


@dataclass(frozen=True)
class Reliability:
    """Per-bin counts, mean predicted probability and observed frequency; (n_bins,) arrays."""

    edges: np.ndarray  # (n_bins + 1,)
    count: np.ndarray
    mean_predicted: np.ndarray  # NaN for empty bins
    observed: np.ndarray  # NaN for empty bins
    ece: float


def reliability(y_true: np.ndarray, y_prob: np.ndarray, n_bins: int = N_BINS) -> Reliability:
    """Reliability table and ECE of probabilities ``y_prob`` (n,) for outcomes ``y_true`` (n,) in {0,1}."""
    y = np.asarray(y_true, dtype=float)
    p = np.asarray(y_prob, dtype=float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    if len(y) == 0:
        nan = np.full(n_bins, np.nan)
        return Reliability(edges, np.zeros(n_bins, int), nan, nan.copy(), float("nan"))
    if p.min() < 0 or p.max() > 1:
        raise ValueError("ECE needs probabilities in [0, 1]")
    bin_of = np.clip(np.digitize(p, edges[1:-1], right=True), 0, n_bins - 1)  # bins (a, b], first [0, b]
    count = np.bincount(bin_of, minlength=n_bins)
    sum_p = np.bincount(bin_of, weights=p, minlength=n_bins)
    sum_y = np.bincount(bin_of, weights=y, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.where(count > 0, sum_p / count, np.nan)
        obs = np.where(count > 0, sum_y / count, np.nan)
    ece = float(np.nansum(count / len(y) * np.abs(obs - mean_p)))
    return Reliability(edges, count, mean_p, obs, ece)


def ece_replicates(
    y_true: np.ndarray, y_prob: np.ndarray, cluster: np.ndarray, weights: np.ndarray, n_bins: int = N_BINS
) -> np.ndarray:
    """ECE under each patient resample, as AUROC's intervals are drawn (bootstrap.py): ``weights``
    (B, n_patients) counts of each patient in each resample, ``cluster`` (n,) the column of each
    row's patient. Per bin, n_b · |mean(y) − mean(p)| = |Σy − Σp|, so ECE_b = Σ_bins |W·Sy − W·Sp| / Σ W·C
    with Sy, Sp, C the per-(patient, bin) sums and counts. → (B,), NaN where a resample holds no row."""
    y = np.asarray(y_true, dtype=float)
    p = np.asarray(y_prob, dtype=float)
    w = np.asarray(weights, dtype=float)
    n_clusters = w.shape[1]
    if len(y) == 0:
        return np.full(w.shape[0], np.nan)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    key = np.asarray(cluster, dtype=np.int64) * n_bins + np.clip(
        np.digitize(p, edges[1:-1], right=True), 0, n_bins - 1
    )
    size = n_clusters * n_bins
    count = np.bincount(key, minlength=size).reshape(n_clusters, n_bins).astype(float)
    sum_p = np.bincount(key, weights=p, minlength=size).reshape(n_clusters, n_bins)
    sum_y = np.bincount(key, weights=y, minlength=size).reshape(n_clusters, n_bins)
    total = (w @ count).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, np.abs(w @ sum_y - w @ sum_p).sum(axis=1) / total, np.nan)


def cell_ece_replicates(test: pd.DataFrame, resamples, labels: list[str]) -> dict[str, np.ndarray]:
    """Per label: test ECE under the test set's patient resamples (:func:`ece_replicates`); a label
    whose scores are not probabilities, or without test rows, is left out."""
    df = test[test["y_true"].notna()]
    out: dict[str, np.ndarray] = {}
    if len(df) == 0 or df["y_score"].min() < 0 or df["y_score"].max() > 1:
        return out
    for label, g in df.groupby(df["label"].astype(str), sort=False):
        if label in labels:
            out[label] = ece_replicates(
                g["y_true"].to_numpy(dtype=float),
                g["y_score"].to_numpy(dtype=float),
                resamples.index_of(g["patient_id"].to_numpy()),
                resamples.weights,
            )
    return out


def expected_calibration_error(y_true: np.ndarray, y_prob: np.ndarray, n_bins: int = N_BINS) -> float:
    return reliability(y_true, y_prob, n_bins).ece


def youden_threshold(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Threshold t (predict positive when score ≥ t) maximizing sensitivity + specificity − 1.

    Candidate thresholds are the distinct scores; among equal J the largest threshold wins
    (the most specific). NaN without both classes. Shapes (n,).
    """
    y = np.asarray(y_true, dtype=float) > 0.5
    s = np.asarray(y_score, dtype=float)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last_of_value = np.r_[s[1:] != s[:-1], True]  # threshold = this score: everything up to here is called
    tp = np.cumsum(y)[last_of_value]
    fp = np.cumsum(~y)[last_of_value]
    j = tp / n_pos - fp / n_neg
    return float(s[last_of_value][int(np.argmax(j))])  # argmax: first = largest threshold


def sensitivity_specificity(y_true: np.ndarray, y_score: np.ndarray, threshold: float) -> tuple[float, float]:
    y = np.asarray(y_true, dtype=float) > 0.5
    called = np.asarray(y_score, dtype=float) >= threshold
    sens = float(called[y].mean()) if y.any() else float("nan")
    spec = float((~called[~y]).mean()) if (~y).any() else float("nan")
    return sens, spec


def cell_calibration(predictions: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """Per label: test ECE, the validation-chosen threshold and test sensitivity / specificity."""
    df = predictions[predictions["y_true"].notna()]
    split = df["split"].to_numpy() if "split" in df.columns else np.full(len(df), "test")
    probabilities = bool(len(df) == 0 or (df["y_score"].min() >= 0 and df["y_score"].max() <= 1))
    y_all, s_all = df["y_true"].to_numpy(dtype=float), df["y_score"].to_numpy(dtype=float)
    rows_of = {str(k): v for k, v in df.groupby("label", sort=False).indices.items()} if len(df) else {}
    empty = np.zeros(0, dtype=np.int64)
    out = []
    for label in labels:
        idx = rows_of.get(label, empty)
        test, valid = idx[split[idx] == "test"], idx[split[idx] == "valid"]
        note = []
        ece = float("nan")
        if not probabilities:
            note.append("scores are not probabilities: no ECE")
        elif len(test):
            ece = expected_calibration_error(y_all[test], s_all[test])
        thr = youden_threshold(y_all[valid], s_all[valid]) if len(valid) else float("nan")
        sens = spec = float("nan")
        if np.isfinite(thr):
            sens, spec = sensitivity_specificity(y_all[test], s_all[test], thr)
        else:
            note.append(
                "no operating point: validation lacks a class" if len(valid) else "no validation predictions"
            )
        out.append(
            {
                "label": label,
                "ece": ece,
                "threshold": thr,
                "sensitivity": sens,
                "specificity": spec,
                "note": "; ".join(note),
            }
        )
    return pd.DataFrame(out, columns=["label", "ece", "threshold", "sensitivity", "specificity", "note"])
