"""``bench stats``: the vectorized patient-level bootstrap vs a scikit-learn loop on the same resamples."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score

from chexbench.core.auroc import SortedLabel
from chexbench.reports.bootstrap import draw_patient_resamples


@dataclass(frozen=True)
class StatsBenchmark:
    n_boot: int
    n_labels: int
    n_images: int
    n_patients: int
    ours_seconds: float  # all labels × all resamples, AUROC and AUPRC, sorting included (mean of 2 runs)
    sklearn_seconds: float  # roc_auc_score loop, measured on ``sklearn_resamples`` resamples
    sklearn_resamples: int
    max_abs_diff: float  # over every (label, resample) the sklearn loop evaluated
    n_degenerate: int
    load_before: float = float("nan")  # 1-minute load average when the run started / ended
    load_after: float = float("nan")

    @property
    def sklearn_seconds_full(self) -> float:
        """sklearn seconds scaled to all resamples (equal to the measurement when it ran them all)."""
        return self.sklearn_seconds * self.n_boot / self.sklearn_resamples

    @property
    def speedup(self) -> float:
        return self.sklearn_seconds_full / self.ours_seconds


def synthetic_test_set(n_images: int, n_patients: int, n_labels: int, seed: int = 0):
    """Images (n_images,) of patients (each holds ≥ 1), labels with prevalence 1–30%, 5% masked,
    scores rounded to 3 decimals (many ties) and a per-patient effect. Returns
    (patient_ids (n,), y_true (L, n) with NaN masked, y_score (L, n))."""
    rng = np.random.default_rng(seed)
    patient = np.concatenate([np.arange(n_patients), rng.integers(0, n_patients, n_images - n_patients)])
    patient_ids = np.array([f"p{p:06d}" for p in patient])
    prevalence = np.linspace(0.01, 0.3, n_labels)
    effect = rng.normal(0, 0.8, n_patients)[patient]
    y = (rng.random((n_labels, n_images)) < prevalence[:, None]).astype(float)
    score = 1 / (1 + np.exp(-(1.2 * y + effect + rng.normal(0, 1, (n_labels, n_images)) - 2)))
    score = np.round(score, 3)
    y[rng.random((n_labels, n_images)) < 0.05] = np.nan
    return patient_ids, y, score


def run_stats_benchmark(
    n_boot: int = 2000,
    n_labels: int = 14,
    n_images: int = 20_000,
    n_patients: int = 6_000,
    seed: int = 0,
    sklearn_resamples: int | None = None,
) -> StatsBenchmark:
    """Time both on the same resamples; ``sklearn_resamples`` limits the (slow) loop to the first N."""
    if n_images < n_patients:
        raise ValueError("need at least one image per patient")
    patient_ids, y, score = synthetic_test_set(n_images, n_patients, n_labels, seed)
    load_before = _load_average()

    def vectorized() -> tuple[np.ndarray, np.ndarray, float]:
        t0 = time.perf_counter()
        resamples = draw_patient_resamples(patient_ids, n_boot, seed)
        cluster = resamples.index_of(patient_ids)
        out = np.empty((n_labels, n_boot))
        for j in range(n_labels):
            keep = ~np.isnan(y[j])
            op = SortedLabel(y[j, keep], score[j, keep], cluster[keep], n_patients)
            out[j] = op.evaluate(resamples.weights)[0]
        return out, resamples, time.perf_counter() - t0

    # timed before and after the sklearn loop; the mean is reported, so a change of machine
    # load during the (long) loop biases neither side much
    ours, resamples, before = vectorized()
    cluster = resamples.index_of(patient_ids)

    n_sk = n_boot if sklearn_resamples is None else max(1, min(n_boot, sklearn_resamples))
    ref = np.full((n_labels, n_sk), np.nan)
    t0 = time.perf_counter()
    for j in range(n_labels):
        keep = ~np.isnan(y[j])
        yj, sj, cj = y[j, keep], score[j, keep], cluster[keep]
        for b in range(n_sk):
            w = resamples.weights[b, cj]
            if w[yj == 1].sum() > 0 and w[yj == 0].sum() > 0:
                ref[j, b] = roc_auc_score(yj, sj, sample_weight=w)
    sklearn_seconds = time.perf_counter() - t0
    again, _, after = vectorized()
    if not np.array_equal(np.isnan(again), np.isnan(ours)) or not np.allclose(
        again, ours, equal_nan=True, rtol=0, atol=0
    ):
        raise AssertionError("the vectorized bootstrap is not deterministic")
    ours_seconds = (before + after) / 2
    sub = ours[:, :n_sk]
    if not np.array_equal(np.isnan(sub), np.isnan(ref)):
        raise AssertionError("degenerate resamples differ between the two implementations")
    finite = np.isfinite(ref)
    diff = float(np.max(np.abs(sub[finite] - ref[finite]))) if finite.any() else float("nan")
    return StatsBenchmark(
        n_boot,
        n_labels,
        n_images,
        n_patients,
        ours_seconds,
        sklearn_seconds,
        n_sk,
        diff,
        int(np.isnan(ours).sum()),
        load_before,
        _load_average(),
    )


def _load_average() -> float:
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return float("nan")


def benchmark_markdown(b: StatsBenchmark) -> str:
    measured = (
        "all resamples"
        if b.sklearn_resamples == b.n_boot
        else (f"the first {b.sklearn_resamples} resamples, scaled ×{b.n_boot / b.sklearn_resamples:g} to all")
    )
    return (
        f"Patient-level bootstrap of AUROC: {b.n_boot} resamples × {b.n_labels} labels × {b.n_images:,}"
        f" images from {b.n_patients:,} patients (5% of labels masked, scores rounded to 3 decimals: heavy"
        " ties).\n\n| implementation | seconds | note |\n|---|---|---|\n| chexbench"
        f" (`core.auroc.SortedLabel`, sort once per label, sparse group sums) | {b.ours_seconds:.2f} | AUROC"
        " and AUPRC together; resample drawing and sorting included; mean of a run before and one after the"
        f" loop |\n| scikit-learn `roc_auc_score(sample_weight=…)` loop | {b.sklearn_seconds_full:.2f} |"
        f" AUROC only; measured on {measured} |\n\nSpeed-up: **{b.speedup:.0f}×**. Max |Δ AUROC| over every"
        f" compared (label, resample): **{b.max_abs_diff:.1e}**. Degenerate resamples (a label without"
        f" positives or negatives): {b.n_degenerate}, identical in both.\n\nOne thread each. 1-minute load"
        f" average at start / end: {b.load_before:.1f} / {b.load_after:.1f} (a shared machine: other"
        f" processes competed for the {os.cpu_count()} cores, slowing both sides).\n"
    )
