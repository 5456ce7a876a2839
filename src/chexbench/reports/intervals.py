"""Interval methods for AUROC, macro AUROC and paired Δ, and the one chexbench uses.

Every candidate works from the same patient-level bootstrap replicates (``bootstrap.py``), so the
resamples stay shared between labels and cells. The candidates, compared by simulation
(``chexbench bench coverage``, ``perf/coverage.py``; table in docs/STATISTICS.md):

- ``percentile``: the 2.5 / 97.5 % quantiles of the replicates (Efron & Tibshirani 1993).
- ``bca``: bias-corrected and accelerated percentile interval (Efron 1987), the acceleration from
  each patient's empirical influence on the AUROC (Obuchowski's structural components summed per
  patient, ``delong.auroc_influence``).
- ``logit-z``: Wald interval on the logit scale, logit(Â) ± z · se / (Â (1 − Â)), se the standard
  deviation of the bootstrap replicates (delta method), back-transformed: never leaves [0, 1] and is
  asymmetric where the AUROC is near 1.
- ``logit-t``: the same with a Student-t quantile on ``df = k − 1`` degrees of freedom, k =
  min(positive patients, negative patients): the variance of an AUROC is estimated from the
  smaller class, and with a handful of positive patients that estimate is itself noisy.
- ``logit-t-adj`` (used for per-label AUPRC and ECE): ``logit-t`` with the bootstrap variance times k / (k −
  1) (the
  bootstrap's plug-in variance over k clusters is (k − 1)/k of the unbiased one). The only
  candidate of the first grid that covered ≥ 0.92 in every setting (0.920–0.980), but 0.90–0.92 in
  a wider one (docs/STATISTICS.md).
- ``obuchowski-logit-z`` / ``-t``: the same on the logit scale with the clustered DeLong
  (Obuchowski 1997) standard error instead of the bootstrap one.
- ``hm-score`` (**used** for per-label AUROC): a score (Wilson-type) interval on Hanley & McNeil's
  variance function of the AUROC times a design effect (:func:`hm_score_interval`). ``logit-t-adj``
  covered 0.90–0.92 at AUROC 0.96 with 12–20 positive patients (misses one-sided: the truth below the
  lower bound) and 0.88 at worst in a wider grid; hm-score covered ≥ 0.947 at every row and seed of that
  grid (≥ 0.967 outside its easy control row; docs/STATISTICS.md), at 0.7–1.7 × logit-t-adj's width
  (conservative at high AUROC: Hanley–McNeil's model overstates a binormal AUROC's variance near 1).

At a point estimate of exactly 1 (or 0: perfect separation) every resample is perfect too, so no
variance is estimable; the logit intervals then give [(α/2)^(1/k), 1] (or its mirror) with k = min(positive
patients, negative patients): k disjoint (positive, negative) patient pairs are each ordered
correctly with probability at most AUROC, independently, so perfect separation has probability at
most AUROC^k and AUROC < (α/2)^(1/k) is rejected at one-sided level α/2.

Macro AUROC and AUPRC: MOVER for the mean of the labels' own intervals (:func:`macro_mover_interval`,
``macro-mover-hm`` for AUROC) with the correlation of the labels' shared-resample replicates. Every paired
Δ (A − B, same patients; per label and macro, AUROC and AUPRC, one seed or seed-pooled): MOVER
(:func:`mover`) from the two arms' intervals and the correlation of their estimates, p by inverting it
over the level (:func:`mover_interval_and_p`), so the interval excludes 0 exactly when p < 1 − level.
Coverage in the several-labels grid (one rare high-AUROC label): macro-mover-hm ≥ 0.97 where logit-t-adj
on the macro fell to 0.91, macro Δ on hm-score arms ≥ 0.99 (1.5–1.6 × wider) where the Wald-t form fell to
0.915, the rare label's Δ ≥ 0.975 where Wald-t fell to 0.82 (docs/STATISTICS.md).
Seed-pooled intervals widen the test-sample interval of the seed mean by the between-seed part
(:func:`widen_logit`, ``seeds.py``). The former macro logit-t-adj (:func:`macro_interval`, Satterthwaite
df over the labels) and the Wald-t Δ remain as simulation candidates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

import numpy as np
from scipy.optimize import brentq
from scipy.special import expit, logit
from scipy.stats import norm
from scipy.stats import t as student_t

CHOSEN = "hm-score"
CANDIDATES = (
    "percentile",
    "bca",
    "logit-z",
    "logit-t",
    "logit-t-adj",
    "obuchowski-logit-z",
    "obuchowski-logit-t",
    "hm-score",
)
DELTA_CANDIDATES = ("percentile", "wald-z", "wald-t", "wald-t-adj", "mover-logit-t-adj", "mover-hm-score")
#: a label with fewer positive test patients than this is flagged in score, compare and the report
FEW_POSITIVE_PATIENTS = 10


def small_sample_factor(k: int) -> float:
    """k / (k − 1) for the smaller class's k patients (1 when k ≤ 1): the bootstrap's plug-in variance of a
    mean over k clusters is (k − 1)/k of the unbiased one, and with few positive patients that class's
    component dominates an AUROC's variance."""
    return float(k / (k - 1)) if k > 1 else 1.0


def class_df(n_pos_patients: int, n_neg_patients: int) -> float:
    """Degrees of freedom of one label's AUROC variance: min(positive, negative patients) − 1, at least 1."""
    return float(max(min(int(n_pos_patients), int(n_neg_patients)) - 1, 1))


def satterthwaite_df(variances: Sequence[float], dfs: Sequence[float]) -> float:
    """Welch–Satterthwaite degrees of freedom of a sum of independent variance estimates (inf allowed)."""
    v = np.asarray(variances, dtype=float)
    d = np.asarray(dfs, dtype=float)
    total = float(v.sum())
    if not np.isfinite(total) or total <= 0:
        return float(np.min(d)) if len(d) else float("nan")
    denom = float(np.sum(np.where(np.isinf(d), 0.0, v**2 / np.where(np.isinf(d), 1.0, d))))
    return float("inf") if denom == 0 else total**2 / denom


def quantile(df: float, level: float) -> float:
    """Two-sided critical value: Student-t on ``df`` degrees of freedom, normal when ``df`` is infinite."""
    if not np.isfinite(df):
        return float(norm.ppf(0.5 + level / 2))
    return float(student_t.ppf(0.5 + level / 2, df))


def _finite(replicates: np.ndarray) -> np.ndarray:
    r = np.asarray(replicates, dtype=float)
    return r[np.isfinite(r)]


def replicate_sd(replicates: np.ndarray) -> float:
    """Standard deviation of the finite replicates (NaN with fewer than two)."""
    r = _finite(replicates)
    return float(np.std(r, ddof=1)) if len(r) >= 2 else float("nan")


def halfwidth(parts: Sequence[tuple[float, float]], level: float) -> float:
    """Half-width √(Σ q(df_i)² v_i) of an interval from independent variance components (v_i, df_i),
    each scaled by its own t quantile (one component: q · se). Used for seed-pooled means, where the
    between-seed variance is estimated on S − 1 degrees of freedom and the test-sample variance on many."""
    return float(np.sqrt(sum(quantile(df, level) ** 2 * v for v, df in parts if v > 0)))


def logit_wald(point: float, se: float, df: float, level: float, k: int | None = None) -> tuple[float, float]:
    """logit(point) ± q · se / (point (1 − point)), back-transformed. At a point of 0 or 1 the
    perfect-separation bound on ``k`` class pairs (module docstring); NaN when nothing is defined."""
    half = quantile(df, level) * se if np.isfinite(se) else float("nan")
    return logit_interval(point, half, level, k)


def logit_interval(point: float, half: float, level: float, k: int | None = None) -> tuple[float, float]:
    """logit(point) ± half / (point (1 − point)) back-transformed (``half`` on the AUROC scale)."""
    if not np.isfinite(point):
        return float("nan"), float("nan")
    alpha_half = (1 - level) / 2
    if point >= 1 or point <= 0:
        if not k or k < 1:
            return float("nan"), float("nan")
        bound = alpha_half ** (1 / k)
        return (bound, 1.0) if point >= 1 else (0.0, 1 - bound)
    if not np.isfinite(half):
        return float("nan"), float("nan")
    h = half / (point * (1 - point))
    centre = float(logit(point))
    return float(expit(centre - h)), float(expit(centre + h))


def logit_t_interval(
    point: float,
    replicates: np.ndarray,
    n_pos_patients: int,
    n_neg_patients: int,
    level: float = 0.95,
    adjust: bool = True,
) -> tuple[float, float]:
    """The chosen per-label AUROC interval (``logit-t-adj``): bootstrap se × √(k/(k − 1)), t on k − 1 df,
    k = min(positive, negative patients), on the logit scale (``adjust=False``: the ``logit-t`` candidate)."""
    k = min(int(n_pos_patients), int(n_neg_patients))
    factor = small_sample_factor(k) if adjust else 1.0
    return logit_wald(
        point, replicate_sd(replicates) * np.sqrt(factor), class_df(n_pos_patients, n_neg_patients), level, k
    )


def macro_interval(
    point: float,
    replicates: np.ndarray,
    label_replicates: Sequence[np.ndarray],
    label_dfs: Sequence[float],
    label_ks: Sequence[int],
    level: float = 0.95,
) -> tuple[float, float]:
    """Macro (mean over L labels) logit-t-adj interval: se of the macro replicates × √(the labels'
    variance-weighted small-sample factor), Satterthwaite df over the labels' variances (each on its own
    df); the smallest class patient count of its labels is used only at a macro of exactly 0 or 1."""
    factor = macro_factor(label_replicates, label_ks)
    return logit_wald(
        point,
        replicate_sd(replicates) * np.sqrt(factor),
        macro_df(label_replicates, label_dfs),
        level,
        min(label_ks, default=0),
    )


def macro_factor(label_replicates: Sequence[np.ndarray], label_ks: Sequence[int]) -> float:
    """Variance-weighted mean of the labels' :func:`small_sample_factor` (1 when no variance)."""
    v = np.array([replicate_sd(r) ** 2 for r in label_replicates], dtype=float)
    v = np.where(np.isfinite(v), v, 0.0)
    f = np.array([small_sample_factor(int(k)) for k in label_ks], dtype=float)
    return float(np.sum(v * f) / np.sum(v)) if np.sum(v) > 0 else 1.0


def macro_df(label_replicates: Sequence[np.ndarray], label_dfs: Sequence[float]) -> float:
    """Satterthwaite degrees of freedom of a mean over labels from each label's replicates and df."""
    if not label_replicates:
        return float("nan")
    variances = [replicate_sd(r) ** 2 for r in label_replicates]
    variances = [v if np.isfinite(v) else 0.0 for v in variances]
    return satterthwaite_df(variances, label_dfs)


def t_interval_and_p(delta: float, se: float, df: float, level: float = 0.95) -> tuple[float, float, float]:
    """(low, high, two-sided p) of Δ ± q · se with q the t quantile on ``df``; p = 2 P(T_df ≥ |Δ|/se)."""
    return interval_and_p(delta, [(se**2 if np.isfinite(se) else float("nan"), df)], level)


def interval_and_p(
    delta: float, parts: Sequence[tuple[float, float]], level: float = 0.95
) -> tuple[float, float, float]:
    """(low, high, two-sided p) of Δ ± :func:`halfwidth` (parts: (variance, df) components).

    p is the level at which the half-width equals |Δ| (one component: 2 P(T_df ≥ |Δ|/se)), so the
    interval excludes 0 exactly when p < 1 − level: both come from one comparison of |Δ| with the
    half-width, and the float rounding at the boundary is settled by that comparison. All variances 0:
    the interval is the point and p is 1 when Δ = 0, else NaN (no p from no variance)."""
    nan = float("nan")
    if not np.isfinite(delta) or any(not np.isfinite(v) or np.isnan(df) for v, df in parts):
        return nan, nan, nan
    half = halfwidth(parts, level)
    if half <= 0:
        return delta, delta, (1.0 if delta == 0 else nan)
    live = [(v, df) for v, df in parts if v > 0]
    if len(live) == 1:
        v, df = live[0]
        stat = abs(delta) / np.sqrt(v)
        p = float(2 * (norm.sf(stat) if math.isinf(df) else student_t.sf(stat, df)))
    elif delta == 0:
        p = 1.0
    else:

        def excess(alpha: float) -> float:
            return halfwidth(live, 1 - alpha) - abs(delta)

        lo_alpha = 1e-12
        p = (
            lo_alpha
            if excess(lo_alpha) < 0
            else float(brentq(excess, lo_alpha, 1 - 1e-12, xtol=1e-14, rtol=1e-12))
        )
    excludes = abs(delta) > half
    alpha = float(1 - Fraction(level).limit_denominator(10**6))  # 0.05 exactly, not the float 1 - 0.95
    if excludes and p >= alpha:
        p = float(np.nextafter(alpha, 0))
    elif not excludes and p < alpha:
        p = alpha
    return delta - half, delta + half, min(1.0, p)


# ---- the other candidates (simulation only) -------------------------------------------------------------


def percentile(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    r = _finite(replicates)
    if len(r) == 0:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    lo, hi = np.quantile(r, [alpha, 1 - alpha])
    return float(lo), float(hi)


def bca(
    point: float, replicates: np.ndarray, patient_influence: np.ndarray, level: float = 0.95
) -> tuple[float, float]:
    """BCa interval (Efron 1987) with acceleration a = Σ U³ / (6 (Σ U²)^{3/2}) from per-patient influence
    U."""
    r = _finite(replicates)
    if len(r) == 0 or not np.isfinite(point):
        return float("nan"), float("nan")
    below = (np.sum(r < point) + 0.5 * np.sum(r == point)) / len(r)
    below = min(max(below, 0.5 / len(r)), 1 - 0.5 / len(r))
    z0 = float(norm.ppf(below))
    u = np.asarray(patient_influence, dtype=float)
    s2 = float(np.sum(u**2))
    a = float(np.sum(u**3) / (6 * s2**1.5)) if s2 > 0 else 0.0
    alpha = (1 - level) / 2
    zq = norm.ppf([alpha, 1 - alpha])
    adj = norm.cdf(z0 + (z0 + zq) / (1 - a * (z0 + zq)))
    lo, hi = np.quantile(r, adj)
    return float(lo), float(hi)


def hanley_mcneil_variance(a: float, m: float, n: float) -> float:
    """Hanley & McNeil (1982) variance of the AUROC ``a`` with m positives and n negatives (exponential
    model)."""
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    return max((a * (1 - a) + (m - 1) * (q1 - a * a) + (n - 1) * (q2 - a * a)) / (m * n), 0.0)


def hm_score_interval(
    point: float, n_pos: int, n_neg: int, design_effect: float, se_boot: float, k: int, level: float = 0.95
) -> tuple[float, float]:
    """The chosen per-label AUROC interval (``hm-score``): the set of A with (Â − A)² ≤ z² · D · V_HM(A; m,
    n).

    V_HM is Hanley & McNeil's (1982) variance as a function of the AUROC on the label's m positive and
    n negative *images*; the design effect D = max(clustered / independent DeLong variance at Â (Obuchowski
    1997: what the patient clustering adds), se_boot² / V_HM(Â) (the adjusted patient-bootstrap variance
    relative to the model's)). The variance is a model's, evaluated at each candidate A, not the sample's:
    at high AUROC with few positive patients the sample's variance (bootstrap or DeLong) is small exactly
    when Â came out too high — its placements lack the rare badly-ranked positive — which is why Wald
    intervals on it (logit-t-adj) missed on the low side (docs/STATISTICS.md). Newcombe (2006) recommends
    this score form for the AUROC. At a point of 0 or 1 the perfect-separation bound on ``k`` pairs."""
    if not np.isfinite(point):
        return float("nan"), float("nan")
    if point >= 1 or point <= 0:
        return logit_interval(point, float("nan"), level, k)
    v_hat = hanley_mcneil_variance(point, n_pos, n_neg)
    d = design_effect if np.isfinite(design_effect) and design_effect > 0 else 1.0
    if v_hat > 0 and np.isfinite(se_boot):
        d = max(d, se_boot**2 / v_hat)
    z2 = float(norm.ppf(0.5 + level / 2)) ** 2

    def f(a: float) -> float:
        return (point - a) ** 2 - z2 * d * hanley_mcneil_variance(a, n_pos, n_neg)

    lo = 0.0 if f(0.0) <= 0 else float(brentq(f, 0.0, point, xtol=1e-12))
    hi = 1.0 if f(1.0) <= 0 else float(brentq(f, point, 1.0, xtol=1e-12))
    return lo, hi


def mover(
    delta: float, a: tuple[float, float, float], b: tuple[float, float, float], r: float
) -> tuple[float, float]:
    """MOVER interval of Δ = A − B (Zou & Donner 2008; Newcombe 2006 for AUROCs) from each arm's
    (point, low, high) and the correlation r of the arms' estimates (shared patient resamples):
    L = Δ − √((Â − l_A)² + (u_B − B̂)² − 2 r (Â − l_A)(u_B − B̂)), U likewise (:func:`mover_sum` with
    weights (1, −1); ``delta`` is Â − B̂)."""
    (pa, la, ua), (pb, lb, ub) = a, b
    r = float(r) if np.isfinite(r) else 0.0
    low, high = mover_sum([1.0, -1.0], [pa, pb], [la, lb], [ua, ub], np.array([[1.0, r], [r, 1.0]]))
    return delta - (pa - pb - low), delta + (high - (pa - pb))


def mover_sum(
    weights: Sequence[float],
    points: Sequence[float],
    lows: Sequence[float],
    highs: Sequence[float],
    corr: np.ndarray,
) -> tuple[float, float]:
    """MOVER interval of the linear combination Σ c_i θ_i (Zou & Donner 2008, Zou 2008 for sums) from each
    component's (point θ̂_i, low l_i, high u_i) and the correlation matrix R (L×L) of the estimates.

    The lower bound's distance of component i is e_i = c_i θ̂_i − min(c_i l_i, c_i u_i) (the side of its own
    interval that lowers the sum), the upper one's f_i = max(c_i l_i, c_i u_i) − c_i θ̂_i; then
    L = Σ c_i θ̂_i − √(Σ_ij s_ij R_ij e_i e_j), U = Σ c_i θ̂_i + √(Σ_ij s_ij R_ij f_i f_j), s_ij = sign(c_i
    c_j).
    With independent components this is √(Σ e_i²), with perfectly correlated ones of one sign Σ e_i.
    Macro AUROC: c_i = 1/L over the labels' hm-score intervals; a paired Δ: (1, −1) over the two arms."""
    c = np.asarray(weights, dtype=float)
    p, lo, hi = (np.asarray(x, dtype=float) for x in (points, lows, highs))
    point = float(c @ p)
    if not (np.isfinite(point) and np.isfinite(lo).all() and np.isfinite(hi).all()):
        return float("nan"), float("nan")
    r = np.where(np.isfinite(corr), np.asarray(corr, dtype=float), 0.0)
    np.fill_diagonal(r, 1.0)
    signed = r * np.sign(np.outer(c, c))
    e = c * p - np.minimum(c * lo, c * hi)
    f = np.maximum(c * lo, c * hi) - c * p
    return point - math.sqrt(max(float(e @ signed @ e), 0.0)), point + math.sqrt(
        max(float(f @ signed @ f), 0.0)
    )


def replicate_corr(replicates: Sequence[np.ndarray]) -> np.ndarray:
    """Correlation matrix (L×L) of L estimates from their shared-resample replicates (rows where every one is
    finite); a constant replicate row is uncorrelated with the others."""
    reps = np.vstack([np.asarray(r, dtype=float) for r in replicates])
    ok = np.isfinite(reps).all(axis=0)
    out = np.eye(len(reps))
    if ok.sum() < 2:
        return out
    x = reps[:, ok]
    sd = x.std(axis=1)
    live = sd > 0
    if live.sum() >= 2:
        out[np.ix_(live, live)] = np.corrcoef(x[live])
    return out


def macro_mover_interval(
    points: Sequence[float], arms: Sequence, replicates: Sequence[np.ndarray], level: float = 0.95
) -> tuple[float, float]:
    """The chosen macro interval (``macro-mover-hm``): MOVER for the mean of L labels from each label's own
    interval at ``level`` (``arms``: level → (low, high); per-label AUROC: hm-score) and the correlation of
    the
    labels' shared-resample replicates (:func:`mover_sum` with c_i = 1/L). It inherits each label's score
    interval (a rare high-AUROC label keeps its asymmetric, model-variance bounds) and the bootstrap's
    between-label correlation."""
    if not len(points):
        return float("nan"), float("nan")
    bounds = [arm(level) for arm in arms]
    c = np.full(len(points), 1.0 / len(points))
    return mover_sum(c, points, [b[0] for b in bounds], [b[1] for b in bounds], replicate_corr(replicates))


def widen_logit(point: float, low: float, high: float, half: float) -> tuple[float, float]:
    """Each side of (low, high) around ``point`` widened in quadrature on the logit scale by a further
    independent component of half-width ``half`` (on the point's scale, delta method):
    logit L' = logit p − √((logit p − logit L)² + h²), h = half / (p (1 − p)), likewise U'. The seed-pooled
    intervals add their between-seed part this way; with a logit-Wald test part it equals the one interval
    logit p ± √(q² V + t² s²/S) / (p (1 − p)). ``half`` 0, or a point of 0 or 1: (low, high) unchanged."""
    if not (np.isfinite(point) and np.isfinite(low) and np.isfinite(high)) or half <= 0 or not 0 < point < 1:
        return low, high
    with np.errstate(divide="ignore"):
        c, lo, hi = (float(logit(x)) for x in (point, low, high))
    h = half / (point * (1 - point))
    return float(expit(c - math.hypot(c - lo, h))), float(expit(c + math.hypot(hi - c, h)))


def mover_interval_and_p(
    point_a: float, point_b: float, arm_a, arm_b, r: float, level: float = 0.95
) -> tuple[float, float, float]:
    """(low, high, two-sided p) of the MOVER Δ interval; ``arm_a``/``arm_b``: level → (low, high) of each arm.

    p is the smallest 1 − level whose interval excludes 0 (found by root finding over the level), so the
    interval excludes 0 exactly when p < 1 − level, boundary settled as in :func:`interval_and_p`."""
    nan = float("nan")
    delta = float(point_a - point_b)

    def at(lev: float) -> tuple[float, float]:
        la, ua = arm_a(lev)
        lb, ub = arm_b(lev)
        return mover(delta, (point_a, la, ua), (point_b, lb, ub), r)

    lo, hi = at(level)
    if not (np.isfinite(delta) and np.isfinite(lo) and np.isfinite(hi)):
        return nan, nan, nan
    if delta == 0:
        p = 1.0
    else:

        def inside(alpha: float) -> float:  # > 0 while the interval at level 1 − alpha still excludes 0
            lo_, hi_ = at(1 - alpha)
            return lo_ if delta > 0 else -hi_

        tiny = 1e-10
        if inside(tiny) > 0:
            p = tiny
        elif inside(1 - tiny) <= 0:
            p = 1.0
        else:
            p = float(brentq(inside, tiny, 1 - tiny, xtol=1e-12))
    excludes = lo > 0 or hi < 0
    alpha = float(1 - Fraction(level).limit_denominator(10**6))
    if excludes and p >= alpha:
        p = float(np.nextafter(alpha, 0))
    elif not excludes and p < alpha:
        p = alpha
    return lo, hi, min(1.0, p)


def score_interval(
    point: float, se: float, m: float, n: float, df: float, level: float = 0.95, k: int | None = None
) -> tuple[float, float]:
    """Score-type (Wilson-like) AUROC interval: the set of A with (Â − A)² ≤ q² · D · V_HM(A; m, n), where
    V_HM is Hanley & McNeil's variance as a function of the AUROC (on m positive and n negative patients)
    and D = se² / V_HM(Â) the design effect measured at the estimate (clustering, the real score
    distribution). The variance is taken at each candidate A, not at Â: an Â that came out too close to 1
    has a small variance at Â but not at the lower bound, which is what a Wald interval misses."""
    if not np.isfinite(point):
        return float("nan"), float("nan")
    if point >= 1 or point <= 0 or not (np.isfinite(se) and se > 0):
        return logit_wald(point, se, df, level, k)
    v_hat = hanley_mcneil_variance(point, m, n)
    if v_hat <= 0:
        return logit_wald(point, se, df, level, k)
    c = quantile(df, level) ** 2 * se**2 / v_hat

    def f(a: float) -> float:
        return (point - a) ** 2 - c * hanley_mcneil_variance(a, m, n)

    lo = 0.0 if f(0.0) <= 0 else float(brentq(f, 0.0, point))
    hi = 1.0 if f(1.0) <= 0 else float(brentq(f, point, 1.0))
    return lo, hi
