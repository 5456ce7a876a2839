"""``bench coverage``: how often each interval method covers the truth, by simulation.

Two simulations, both small enough for one core in minutes (every bootstrap is the vectorized one
the report uses):

- **Per-label AUROC and paired Δ** on clustered test sets: ``n_patients`` patients × ``per_patient``
  images; disease is a patient property (probability ``prevalence``); an image's score is
  μ·y + patient effect (sd 1.0) + image noise (sd 0.7), so the true AUROC is Φ(μ / √(2 (1.0² + 0.7²)))
  and μ is set from the wanted AUROC. Each trial draws a test set, 2000 patient resamples (as
  ``chexbench score``), and asks each candidate of ``reports/intervals.py`` whether its 95 % interval
  holds the true AUROC. Trials without a positive patient (no AUROC) are redrawn. Δ: a second model
  on the same images with its own image noise and the AUROC 0.05 lower; the interval must hold the
  true difference.
- **Seed-pooled mean**: the configuration's true mean μ (over the seed distribution), S seeds
  θ_s = μ + u_s + e_s, u_s ~ N(0, σ_seed²) (fine-tuning seed), e_s the test-sample error of seed s,
  80 % of its variance σ_test² shared by every seed (the same test patients) and 20 % its own; the
  bootstrap replicates of seed s are θ_s plus draws with the same structure (what shared patient
  resamples give). Candidates: the former two-level bootstrap and the t-based random-effects
  combination (``reports/seeds.py``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import norm

from chexbench.core.auroc import SortedLabel
from chexbench.reports import intervals
from chexbench.reports.bootstrap import design_effect
from chexbench.reports.delong import auroc_influence, delong
from chexbench.reports.seeds import combine_seeds, hierarchical_bootstrap

SD_PATIENT, SD_IMAGE = 1.0, 0.7
DELTA_GAP = 0.05
LEVEL = 0.95


@dataclass(frozen=True)
class Setting:
    prevalence: float
    auroc: float
    n_patients: int
    per_patient: int


#: the first grid: prevalence × AUROC at two test-set shapes, and the issue's hard cases
FIRST_GRID = tuple(
    [Setting(p, a, 150, 4) for p in (0.05, 0.1, 0.3) for a in (0.76, 0.9, 0.96)]
    + [Setting(p, a, 400, 1) for p in (0.05, 0.3) for a in (0.76, 0.96)]
    + [Setting(0.03, 0.9, 300, 3), Setting(0.06, 0.96, 150, 4)]
)
#: the published grid: prevalence 2–10 %, AUROC 0.85–0.98, 100–600 patients × 1–5 images, ≈ 5–48
#: positive patients (where the first grid's chosen interval fell to 0.90), and one easy control row
DEFAULT_GRID = (
    Setting(0.05, 0.96, 400, 1), Setting(0.06, 0.96, 150, 4), Setting(0.05, 0.98, 200, 2), Setting(0.02, 0.90, 300, 2),
    Setting(0.03, 0.96, 200, 3), Setting(0.05, 0.85, 100, 5), Setting(0.10, 0.98, 100, 1), Setting(0.10, 0.90, 150, 4),
    Setting(0.02, 0.96, 600, 1), Setting(0.08, 0.96, 600, 2), Setting(0.10, 0.96, 150, 4), Setting(0.30, 0.76, 150, 4),
)


def _mu(auroc: float) -> float:
    return float(norm.ppf(auroc) * np.sqrt(2 * (SD_PATIENT**2 + SD_IMAGE**2)))


def _resample_weights(rng: np.random.Generator, n: int, n_boot: int) -> np.ndarray:
    draws = rng.integers(0, n, size=(n_boot, n))
    offsets = (np.arange(n_boot, dtype=np.int64) * n)[:, None]
    return np.bincount((draws + offsets).ravel(), minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)


def _hm_score(point: float, y: np.ndarray, s: np.ndarray, cluster: np.ndarray, reps: np.ndarray, k: int):
    """level → the arm's hm-score interval (what ``LabelScores.auroc_ci`` computes)."""
    se = intervals.replicate_sd(reps) * np.sqrt(intervals.small_sample_factor(k))
    n_pos = int((y > 0.5).sum())
    deff = design_effect(y, s, cluster)
    return lambda level: intervals.hm_score_interval(point, n_pos, len(y) - n_pos, deff, se, k, level)


def _label_intervals(y: np.ndarray, s: np.ndarray, cluster: np.ndarray, n_patients: int, weights: np.ndarray,
                     n_pos_pat: int, n_neg_pat: int) -> tuple[float, np.ndarray, dict[str, tuple[float, float]]]:
    op = SortedLabel(y, s, cluster, n_patients)
    point = float(op.evaluate(np.ones((1, n_patients)))[0][0])
    reps = op.evaluate(weights)[0]
    _, psi = auroc_influence(y, s)
    influence = np.bincount(cluster, weights=psi, minlength=n_patients)
    df = intervals.class_df(n_pos_pat, n_neg_pat)
    k = min(n_pos_pat, n_neg_pat)
    try:
        se_obu = float(np.sqrt(max(delong(y, s[None, :], cluster).covariance[0, 0], 0.0)))
    except ValueError:
        se_obu = float("nan")
    se_boot = intervals.replicate_sd(reps)
    out = {
        "percentile": intervals.percentile(reps, LEVEL),
        "bca": intervals.bca(point, reps, influence, LEVEL),
        "logit-z": intervals.logit_wald(point, se_boot, float("inf"), LEVEL, k),
        "logit-t": intervals.logit_t_interval(point, reps, n_pos_pat, n_neg_pat, LEVEL, adjust=False),
        "logit-t-adj": intervals.logit_t_interval(point, reps, n_pos_pat, n_neg_pat, LEVEL),
        "obuchowski-logit-z": intervals.logit_wald(point, se_obu, float("inf"), LEVEL, k),
        "obuchowski-logit-t": intervals.logit_wald(point, se_obu, df, LEVEL, k),
        "hm-score": _hm_score(point, y, s, cluster, reps, k)(LEVEL),
    }
    return point, reps, out


def label_coverage(settings: tuple[Setting, ...] | None = None, n_trials: int = 300, n_boot: int = 2000,
                   seed: int = 0) -> pd.DataFrame:
    """One row per (setting, method, target ∈ {auroc, delta}): coverage, mean width, trials."""
    settings = DEFAULT_GRID if settings is None else settings
    rows = []
    for i, st in enumerate(settings):
        rng = np.random.default_rng(np.random.SeedSequence([seed, i]))
        cluster = np.repeat(np.arange(st.n_patients), st.per_patient)
        mu_a, mu_b = _mu(st.auroc), _mu(st.auroc - DELTA_GAP)
        true_delta = st.auroc - (st.auroc - DELTA_GAP)
        hits: dict[tuple[str, str], list[float]] = {}
        widths: dict[tuple[str, str], list[float]] = {}
        pos_patients = []
        done = 0
        while done < n_trials:
            disease = rng.random(st.n_patients) < st.prevalence
            n_pos_pat = int(disease.sum())
            if n_pos_pat == 0 or n_pos_pat == st.n_patients:
                continue
            y = disease[cluster].astype(float)
            shared = rng.normal(0, SD_PATIENT, st.n_patients)[cluster]
            s_a = mu_a * y + shared + rng.normal(0, SD_IMAGE, len(y))
            s_b = mu_b * y + shared + rng.normal(0, SD_IMAGE, len(y))
            weights = _resample_weights(rng, st.n_patients, n_boot)
            n_neg_pat = st.n_patients - n_pos_pat
            point_a, reps_a, ivs = _label_intervals(y, s_a, cluster, st.n_patients, weights, n_pos_pat, n_neg_pat)
            for m, (lo, hi) in ivs.items():
                hits.setdefault(("auroc", m), []).append(float(lo <= st.auroc <= hi))
                widths.setdefault(("auroc", m), []).append(hi - lo)
            point_b = float(SortedLabel(y, s_b, cluster, st.n_patients).evaluate(np.ones((1, st.n_patients)))[0][0])
            reps_b = SortedLabel(y, s_b, cluster, st.n_patients).evaluate(weights)[0]
            d_reps = reps_a - reps_b
            d = point_a - point_b
            df = intervals.class_df(n_pos_pat, n_neg_pat)
            se = intervals.replicate_sd(d_reps)
            adj = se * np.sqrt(intervals.small_sample_factor(min(n_pos_pat, n_neg_pat)))
            k = min(n_pos_pat, n_neg_pat)
            ok = np.isfinite(reps_a) & np.isfinite(reps_b)
            r = float(np.corrcoef(reps_a[ok], reps_b[ok])[0, 1]) if np.std(reps_a[ok]) > 0 and np.std(reps_b[ok]) > 0 else 0.0
            lt_a = intervals.logit_t_interval(point_a, reps_a, n_pos_pat, n_neg_pat, LEVEL)
            lt_b = intervals.logit_t_interval(point_b, reps_b, n_pos_pat, n_neg_pat, LEVEL)
            hm_a, hm_b = _hm_score(point_a, y, s_a, cluster, reps_a, k), _hm_score(point_b, y, s_b, cluster, reps_b, k)
            candidates = (("percentile", intervals.percentile(d_reps, LEVEL)),
                          ("wald-z", intervals.t_interval_and_p(d, se, float("inf"), LEVEL)[:2]),
                          ("wald-t", intervals.t_interval_and_p(d, se, df, LEVEL)[:2]),
                          ("wald-t-adj", intervals.t_interval_and_p(d, adj, df, LEVEL)[:2]),
                          ("mover-logit-t-adj", intervals.mover(d, (point_a, *lt_a), (point_b, *lt_b), r)),
                          ("mover-hm-score", intervals.mover(d, (point_a, *hm_a(LEVEL)), (point_b, *hm_b(LEVEL)), r)))
            for m, (lo, hi) in candidates:
                hits.setdefault(("delta", m), []).append(float(lo <= true_delta <= hi))
                widths.setdefault(("delta", m), []).append(hi - lo)
            pos_patients.append(n_pos_pat)
            done += 1
        for (target, m), h in hits.items():
            w = np.asarray(widths[(target, m)], dtype=float)
            rows.append({"prevalence": st.prevalence, "auroc": st.auroc, "n_patients": st.n_patients,
                         "per_patient": st.per_patient, "mean_pos_patients": float(np.mean(pos_patients)),
                         "min_pos_patients": int(np.min(pos_patients)), "target": target, "method": m,
                         "coverage": float(np.mean(h)), "mean_width": float(np.nanmean(w)) if np.isfinite(w).any() else np.nan,
                         "trials": len(h)})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class SeedSetting:
    n_seeds: int
    sd_seed: float
    sd_test: float


DEFAULT_SEED_GRID = tuple(SeedSetting(s, a, b) for a, b in ((0.01, 0.003), (0.003, 0.01), (0.0, 0.005)) for s in (2, 3, 5))
SHARED_TEST = 0.8


def simulate_seeds(rng: np.random.Generator, st: SeedSetting, n_boot: int, mu: float = 0.85) -> tuple[np.ndarray, np.ndarray]:
    """Per-seed points (S,) and shared-resample replicates (S, B) of one simulated configuration."""
    s = st.n_seeds
    shared_sd, own_sd = st.sd_test * np.sqrt(SHARED_TEST), st.sd_test * np.sqrt(1 - SHARED_TEST)
    points = mu + rng.normal(0, st.sd_seed, s) + rng.normal(0, shared_sd) + rng.normal(0, own_sd, s)
    reps = points[:, None] + rng.normal(0, shared_sd, (1, n_boot)) + rng.normal(0, own_sd, (s, n_boot))
    return points, reps


def seed_coverage(settings: tuple[SeedSetting, ...] | None = None, n_trials: int = 2000, n_boot: int = 500,
                  seed: int = 0, mu: float = 0.85) -> pd.DataFrame:
    """One row per (setting, method): coverage of μ by the seed-pooled 95 % interval, mean width."""
    settings = DEFAULT_SEED_GRID if settings is None else settings
    rows = []
    for i, st in enumerate(settings):
        rng = np.random.default_rng(np.random.SeedSequence([seed, 7, i]))
        hits: dict[str, list[float]] = {"two-level bootstrap": [], "pooled t (Satterthwaite df)": [], "random-effects t": []}
        widths: dict[str, list[float]] = {k: [] for k in hits}
        for _ in range(n_trials):
            points, reps = simulate_seeds(rng, st, n_boot, mu)
            old = hierarchical_bootstrap(points, reps, rng, LEVEL)
            new = combine_seeds(points, reps, df_test=float("inf"), level=LEVEL)
            pooled_df = intervals.satterthwaite_df([new.test_var, new.seed_var], [float("inf"), st.n_seeds - 1])
            pooled = intervals.logit_wald(new.mean, float(np.sqrt(new.test_var + new.seed_var)), pooled_df, LEVEL)
            for m, (lo, hi) in (("two-level bootstrap", old), ("pooled t (Satterthwaite df)", pooled),
                                ("random-effects t", (new.ci_low, new.ci_high))):
                hits[m].append(float(lo <= mu <= hi))
                widths[m].append(hi - lo)
        for m in hits:
            rows.append({"n_seeds": st.n_seeds, "sd_seed": st.sd_seed, "sd_test": st.sd_test, "method": m,
                         "coverage": float(np.mean(hits[m])), "mean_width": float(np.mean(widths[m])), "trials": n_trials})
    return pd.DataFrame(rows)


def coverage_markdown(labels: pd.DataFrame, seeds: pd.DataFrame, seconds: float, n_trials: int, n_boot: int,
                      seed_trials: int) -> str:
    """The two coverage tables as Markdown (methods as columns, settings as rows)."""
    parts = []
    for target, title in (("auroc", "Per-label AUROC"), ("delta", "Paired Δ AUROC (A − B, true Δ = 0.05)")):
        t = labels[labels["target"] == target]
        order = intervals.CANDIDATES if target == "auroc" else intervals.DELTA_CANDIDATES
        methods = [m for m in order if m in set(t["method"])]
        head = ["prevalence", "AUROC", "patients × images", "positive patients (mean, min)", *methods]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for _, g in t.groupby(["n_patients", "per_patient", "prevalence", "auroc"], sort=False):
            by = {r.method: r for r in g.itertuples()}
            first = g.iloc[0]
            cells = [f"{by[m].coverage:.3f} ({by[m].mean_width:.3f})" if m in by else "—" for m in methods]
            lines.append(f"| {first['prevalence']:g} | {first['auroc']:g} | {int(first['n_patients'])} × {int(first['per_patient'])} | "
                         f"{first['mean_pos_patients']:.1f}, {int(first['min_pos_patients'])} | " + " | ".join(cells) + " |")
        parts.append(f"**{title}**: coverage of the 95 % interval (mean width) over {n_trials} trials per row, "
                     f"{n_boot} patient resamples each. Monte-Carlo sd of a coverage near 0.95: "
                     f"{np.sqrt(0.95 * 0.05 / n_trials):.3f}.\n\n" + "\n".join(lines) + "\n")
    methods = list(dict.fromkeys(seeds["method"]))
    head = ["seeds", "seed sd", "test sd", *methods]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, g in seeds.groupby(["sd_seed", "sd_test", "n_seeds"], sort=False):
        by = {r.method: r for r in g.itertuples()}
        first = g.iloc[0]
        lines.append(f"| {int(first['n_seeds'])} | {first['sd_seed']:g} | {first['sd_test']:g} | "
                     + " | ".join(f"{by[m].coverage:.3f} ({by[m].mean_width:.4f})" for m in methods) + " |")
    parts.append(f"**Seed-pooled mean** (coverage of the configuration's mean over seeds, mean width) over {seed_trials} "
                 "trials per row.\n\n" + "\n".join(lines) + "\n")
    parts.append(f"Run time: {seconds:.0f} s on one thread.\n")
    return "\n".join(parts)


def run_coverage(n_trials: int = 300, n_boot: int = 2000, seed_trials: int = 2000, seed: int = 0,
                 settings: tuple[Setting, ...] | None = None) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    t0 = time.perf_counter()
    labels = label_coverage(settings, n_trials, n_boot, seed)
    seeds = seed_coverage(n_trials=seed_trials, seed=seed)
    return labels, seeds, coverage_markdown(labels, seeds, time.perf_counter() - t0, n_trials, n_boot, seed_trials)
