"""DeLong's analytic AUROC covariance, by the fast midrank algorithm, and its clustered variant.

- DeLong, DeLong & Clarke-Pearson (1988): the AUROCs of k scores on the same images are
  asymptotically normal with a covariance built from the *placement values* (structural
  components) of each positive and each negative image.
- Sun & Xu (2014, IEEE SPL 21:1389): those placements from three midrank computations, so
  the whole covariance costs O(k · n log n) instead of O(k · m · n).
- Obuchowski (1997, Biometrics 53:567): with clusters (patients holding several images),
  the placements are summed per cluster and the variance gains a positive–negative
  cross term. With one image per cluster it equals DeLong.

DeLong assumes independent images. On test sets where patients hold several correlated
images it is too narrow; chexbench reports it only as a cross-check beside the
patient-level bootstrap (the primary interval), together with the clustered variant.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm, rankdata


@dataclass(frozen=True)
class DeLongResult:
    auroc: np.ndarray  # (k,)
    covariance: np.ndarray  # (k, k)


@dataclass(frozen=True)
class DeLongTest:
    """Paired test of AUROC_a − AUROC_b."""

    delta: float
    se: float
    ci_low: float
    ci_high: float
    p_value: float


def _placements(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUROC (k,), placements of positives (k, m) and of negatives (k, n) by midranks (Sun & Xu 2014)."""
    y = np.asarray(y_true, dtype=float) > 0.5
    s = np.atleast_2d(np.asarray(scores, dtype=float))
    m, n = int(y.sum()), int((~y).sum())
    if m == 0 or n == 0:
        raise ValueError("DeLong needs at least one positive and one negative")
    x, z = s[:, y], s[:, ~y]
    tx = rankdata(x, axis=1)  # midranks among positives
    ty = rankdata(z, axis=1)  # midranks among negatives
    tz = rankdata(np.concatenate([x, z], axis=1), axis=1)  # midranks among all
    auc = (tz[:, :m].sum(axis=1) / m - (m + 1) / 2) / n
    v_pos = (tz[:, :m] - tx) / n  # per positive: fraction of negatives scored below (ties ½)
    v_neg = 1 - (tz[:, m:] - ty) / m  # per negative: fraction of positives scored above (ties ½)
    return auc, v_pos, v_neg


def delong(y_true: np.ndarray, scores: np.ndarray, cluster: np.ndarray | None = None) -> DeLongResult:
    """AUROCs and their covariance for ``scores`` (k, n) on labels ``y_true`` (n,).

    ``cluster`` (n,) patient of each image: Obuchowski's clustered covariance; None: DeLong.
    """
    y = np.asarray(y_true, dtype=float) > 0.5
    auc, v_pos, v_neg = _placements(y, scores)
    m, n = v_pos.shape[1], v_neg.shape[1]
    if cluster is None:
        cov = _cov(v_pos) / m + _cov(v_neg) / n
        return DeLongResult(auc, cov)
    c = np.unique(np.asarray(cluster), return_inverse=True)[1]
    n_clusters = int(c.max()) + 1
    c_pos, c_neg = c[y], c[~y]
    k = len(auc)
    sum_pos = np.zeros((k, n_clusters))
    sum_neg = np.zeros((k, n_clusters))
    for r in range(k):
        sum_pos[r] = np.bincount(c_pos, weights=v_pos[r], minlength=n_clusters)
        sum_neg[r] = np.bincount(c_neg, weights=v_neg[r], minlength=n_clusters)
    m_i = np.bincount(c_pos, minlength=n_clusters)
    n_i = np.bincount(c_neg, minlength=n_clusters)
    dev_pos = sum_pos - auc[:, None] * m_i[None, :]  # (k, I)
    dev_neg = sum_neg - auc[:, None] * n_i[None, :]
    i_pos, i_neg = int((m_i > 0).sum()), int((n_i > 0).sum())
    if i_pos < 2 or i_neg < 2:
        raise ValueError("clustered DeLong needs at least two clusters with positives and two with negatives")
    s10 = i_pos / ((i_pos - 1) * m) * dev_pos @ dev_pos.T
    s01 = i_neg / ((i_neg - 1) * n) * dev_neg @ dev_neg.T
    s11 = n_clusters / (n_clusters - 1) * dev_pos @ dev_neg.T
    cov = s10 / m + s01 / n + (s11 + s11.T) / (m * n)
    return DeLongResult(auc, cov)


def _cov(v: np.ndarray) -> np.ndarray:
    """Sample covariance of the rows of ``v`` (k, m) → (k, k); zero with a single column."""
    if v.shape[1] < 2:
        return np.zeros((v.shape[0], v.shape[0]))
    return np.atleast_2d(np.cov(v, ddof=1))


def paired_delong_test(
    y_true: np.ndarray,
    score_a: np.ndarray,
    score_b: np.ndarray,
    cluster: np.ndarray | None = None,
    level: float = 0.95,
) -> DeLongTest:
    """Δ = AUROC(a) − AUROC(b) on the same images, normal CI and two-sided p (DeLong 1988)."""
    res = delong(y_true, np.vstack([score_a, score_b]), cluster)
    delta = float(res.auroc[0] - res.auroc[1])
    var = float(res.covariance[0, 0] + res.covariance[1, 1] - 2 * res.covariance[0, 1])
    se = float(np.sqrt(max(var, 0.0)))
    zq = float(norm.ppf(0.5 + level / 2))
    if se == 0:
        p = 1.0 if delta == 0 else 0.0
    else:
        p = float(2 * norm.sf(abs(delta) / se))
    return DeLongTest(delta, se, delta - zq * se, delta + zq * se, p)


def auroc_influence(y_true: np.ndarray, y_score: np.ndarray) -> tuple[float, np.ndarray]:
    """AUROC and each image's structural component in influence form, (n,) → float, (n,).

    ψ_i = (V10_i − θ) / m for a positive, (V01_i − θ) / n for a negative, so that
    Σ_i ψ_i² ≈ DeLong's variance (up to the factors m/(m−1), n/(n−1)) and summing ψ over a
    patient's images before squaring gives the clustered (Obuchowski) variance. Sums of ψ
    over several AUROCs on shared images give the variance of any linear combination, e.g.
    a macro AUROC or a paired Δ.
    """
    y = np.asarray(y_true, dtype=float) > 0.5
    auc, v_pos, v_neg = _placements(y, y_score)
    theta = float(auc[0])
    psi = np.empty(len(y))
    psi[y] = (v_pos[0] - theta) / v_pos.shape[1]
    psi[~y] = (v_neg[0] - theta) / v_neg.shape[1]
    return theta, psi


def influence_variance(psi: np.ndarray, cluster: np.ndarray | None = None) -> float:
    """Variance of a statistic from its per-image influence values (n,): Σ ψ² over images, or
    I/(I−1) · Σ over clusters of (Σ ψ in the cluster)² when ``cluster`` (n,) is given."""
    p = np.asarray(psi, dtype=float)
    if cluster is None:
        return float(np.sum(p**2))
    c = np.unique(np.asarray(cluster), return_inverse=True)[1]
    sums = np.bincount(c, weights=p)
    n_clusters = len(sums)
    return float(n_clusters / max(n_clusters - 1, 1) * np.sum(sums**2))
