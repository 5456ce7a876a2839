"""AUROC and AUPRC, exact with ties, for one sample or for thousands of weighted resamples at once.

A bootstrap resample of a test set is a vector of non-negative integer weights (how often
each patient was drawn). Every image inherits its patient's weight, so the resampled AUROC
is the weighted Mann–Whitney statistic (Hanley & McNeil 1982)

    AUROC = Σ_{i pos, j neg} w_i w_j ( [s_i > s_j] + ½ [s_i = s_j] ) / (W_pos · W_neg)

and the resampled AUPRC is the weighted average precision (the step-wise sum of
scikit-learn's ``average_precision_score``)

    AP = Σ_k (TP_k − TP_{k−1}) / TP_total · TP_k / (TP_k + FP_k)    over descending thresholds k.

Both only need, per *tie group of scores that holds a positive*, the positive weight in the
group and the negative weight below, tied with, and above it. The images are sorted once;
those group sums for all resamples are one sparse × dense product
``(3K+1 × patients) @ (patients × resamples)``. Sums of integer weights are exact in float64,
so AUROC is exact up to the final division (it agrees with scikit-learn to ~1e-15).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

#: target number of float64 cells in one chunk of the (3K+1) × resamples intermediate
_CHUNK_CELLS = 250_000


def auroc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """AUROC with exact midrank tie handling; NaN when ``y_true`` lacks a class. Shapes (n,)."""
    y = np.asarray(y_true, dtype=float)
    cluster = np.arange(len(y))
    return float(resampled_auroc_auprc(y, y_score, cluster, np.ones((1, len(y))))[0][0])


def average_precision(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Average precision (= scikit-learn's); NaN when ``y_true`` lacks a class. Shapes (n,)."""
    y = np.asarray(y_true, dtype=float)
    cluster = np.arange(len(y))
    return float(resampled_auroc_auprc(y, y_score, cluster, np.ones((1, len(y))))[1][0])


class SortedLabel:
    """One label's test images, sorted once, as the sparse group-sum operator over patients.

    ``y_true`` (n,) in {0, 1}, ``y_score`` (n,), ``cluster`` (n,) int index of each image's
    patient in ``0..n_clusters-1``.
    """

    def __init__(self, y_true: np.ndarray, y_score: np.ndarray, cluster: np.ndarray, n_clusters: int):
        y = np.asarray(y_true, dtype=float)
        s = np.asarray(y_score, dtype=float)
        c = np.asarray(cluster, dtype=np.int64)
        if not (len(y) == len(s) == len(c)):
            raise ValueError("y_true, y_score and cluster must have the same length")
        if np.isnan(y).any() or np.isnan(s).any():
            raise ValueError("y_true and y_score must not contain NaN (drop masked rows first)")
        order = np.argsort(s, kind="stable")
        s, y, c = s[order], y[order] > 0.5, c[order]
        group = np.concatenate([[0], np.cumsum(np.diff(s) != 0)]) if len(s) else np.zeros(0, np.int64)
        pos_groups = np.unique(group[y])
        k = len(pos_groups)
        slot = np.searchsorted(pos_groups, group, side="left")  # positive groups strictly below
        in_pos_group = np.zeros(len(s), dtype=bool)
        inside = slot < k
        in_pos_group[inside] = pos_groups[slot[inside]] == group[inside]
        # rows: P_k (positives of group k) | T_k (negatives tied with group k) | S_k (negatives
        # above positive group k-1 and below group k; S_K: above every positive)
        row = np.where(y, slot, np.where(in_pos_group, k + slot, 2 * k + slot))
        self.n_groups = k
        self.n_pos = int(y.sum())
        self.n_neg = int((~y).sum())
        self.operator = sp.csr_matrix(
            (np.ones(len(s)), (row, c)), shape=(3 * k + 1, n_clusters)
        )  # duplicate entries are summed: images of one patient in one row

    def evaluate(self, cluster_weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """AUROC and AUPRC under each weight vector; ``cluster_weights`` (B, n_clusters) → two (B,).

        A resample with no positive or no negative weight yields NaN (counted by the caller).
        """
        w = np.asarray(cluster_weights, dtype=float)
        b_total = w.shape[0]
        k = self.n_groups
        out_auroc = np.full(b_total, np.nan)
        out_auprc = np.full(b_total, np.nan)
        if k == 0 or self.n_neg == 0:
            return out_auroc, out_auprc
        step = max(1, _CHUNK_CELLS // (3 * k + 1))
        for b0 in range(0, b_total, step):
            sums = self.operator @ np.ascontiguousarray(w[b0 : b0 + step].T)  # (3K+1, b)
            pos, tie, above = sums[:k], sums[k : 2 * k], sums[2 * k :]
            w_pos = pos.sum(axis=0)
            w_neg = tie.sum(axis=0) + above.sum(axis=0)
            # negatives at or below positive group k (ties included): S_0..S_k + T_0..T_k
            neg_cum = np.cumsum(above[:k] + tie, axis=0)
            # AUROC numerator: Σ_k P_k (negatives strictly below + ½ tied) = Σ_k P_k (neg_cum_k − ½ T_k)
            numerator = np.einsum("kb,kb->b", pos, neg_cum) - 0.5 * np.einsum("kb,kb->b", pos, tie)
            # AP, thresholds at positive groups from the top: TP_k = W_pos − Σ_{s<k} P_s, FP_k = W_neg −
            # below_k
            tp = np.cumsum(pos, axis=0)
            tp -= pos
            np.subtract(w_pos, tp, out=tp)
            called = np.subtract(tie, neg_cum, out=neg_cum)
            called += w_neg
            called += tp
            np.divide(tp, called, out=tp, where=called > 0)  # called == 0 only where tp == 0
            ap_sum = np.einsum("kb,kb->b", pos, tp)
            ok = (w_pos > 0) & (w_neg > 0)
            with np.errstate(invalid="ignore", divide="ignore"):
                out_auroc[b0 : b0 + step] = np.where(ok, numerator / (w_pos * w_neg), np.nan)
                out_auprc[b0 : b0 + step] = np.where(ok, ap_sum / w_pos, np.nan)
        return out_auroc, out_auprc


def resampled_auroc_auprc(
    y_true: np.ndarray, y_score: np.ndarray, cluster: np.ndarray, cluster_weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """AUROC and AUPRC of one label under every resample: (n,), (n,), (n,), (B, C) → (B,), (B,)."""
    w = np.atleast_2d(np.asarray(cluster_weights, dtype=float))
    return SortedLabel(y_true, y_score, cluster, w.shape[1]).evaluate(w)
