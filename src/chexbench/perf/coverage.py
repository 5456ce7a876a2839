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
    Setting(0.05, 0.96, 400, 1),
    Setting(0.06, 0.96, 150, 4),
    Setting(0.05, 0.98, 200, 2),
    Setting(0.02, 0.90, 300, 2),
    Setting(0.03, 0.96, 200, 3),
    Setting(0.05, 0.85, 100, 5),
    Setting(0.10, 0.98, 100, 1),
    Setting(0.10, 0.90, 150, 4),
    Setting(0.02, 0.96, 600, 1),
    Setting(0.08, 0.96, 600, 2),
    Setting(0.10, 0.96, 150, 4),
    Setting(0.30, 0.76, 150, 4),
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


def _label_intervals(
    y: np.ndarray,
    s: np.ndarray,
    cluster: np.ndarray,
    n_patients: int,
    weights: np.ndarray,
    n_pos_pat: int,
    n_neg_pat: int,
) -> tuple[float, np.ndarray, dict[str, tuple[float, float]]]:
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


class _Tally:
    """Each candidate interval's hits (the truth inside) and widths over the trials of one setting, keyed by
    (target, method); ``summary`` gives (coverage, mean width, trials) per key, in first-seen order."""

    def __init__(self) -> None:
        self.hits: dict[tuple[str, str], list[float]] = {}
        self.widths: dict[tuple[str, str], list[float]] = {}

    def add(self, key: tuple[str, str], low: float, high: float, truth: float) -> None:
        self.hits.setdefault(key, []).append(float(low <= truth <= high))
        self.widths.setdefault(key, []).append(high - low)

    def summary(self) -> dict[tuple[str, str], tuple[float, float, int]]:
        out = {}
        for key, h in self.hits.items():
            w = np.asarray(self.widths[key], dtype=float)
            out[key] = (float(np.mean(h)), float(np.nanmean(w)) if np.isfinite(w).any() else np.nan, len(h))
        return out


def label_coverage(
    settings: tuple[Setting, ...] | None = None, n_trials: int = 300, n_boot: int = 2000, seed: int = 0
) -> pd.DataFrame:
    """One row per (setting, method, target ∈ {auroc, delta}): coverage, mean width, trials."""
    settings = DEFAULT_GRID if settings is None else settings
    rows = []
    for i, st in enumerate(settings):
        rng = np.random.default_rng(np.random.SeedSequence([seed, i]))
        cluster = np.repeat(np.arange(st.n_patients), st.per_patient)
        mu_a, mu_b = _mu(st.auroc), _mu(st.auroc - DELTA_GAP)
        true_delta = st.auroc - (st.auroc - DELTA_GAP)
        tally = _Tally()
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
            point_a, reps_a, ivs = _label_intervals(
                y, s_a, cluster, st.n_patients, weights, n_pos_pat, n_neg_pat
            )
            for m, (lo, hi) in ivs.items():
                tally.add(("auroc", m), lo, hi, st.auroc)
            point_b = float(
                SortedLabel(y, s_b, cluster, st.n_patients).evaluate(np.ones((1, st.n_patients)))[0][0]
            )
            reps_b = SortedLabel(y, s_b, cluster, st.n_patients).evaluate(weights)[0]
            d_reps = reps_a - reps_b
            d = point_a - point_b
            df = intervals.class_df(n_pos_pat, n_neg_pat)
            se = intervals.replicate_sd(d_reps)
            adj = se * np.sqrt(intervals.small_sample_factor(min(n_pos_pat, n_neg_pat)))
            k = min(n_pos_pat, n_neg_pat)
            ok = np.isfinite(reps_a) & np.isfinite(reps_b)
            r = (
                float(np.corrcoef(reps_a[ok], reps_b[ok])[0, 1])
                if np.std(reps_a[ok]) > 0 and np.std(reps_b[ok]) > 0
                else 0.0
            )
            lt_a = intervals.logit_t_interval(point_a, reps_a, n_pos_pat, n_neg_pat, LEVEL)
            lt_b = intervals.logit_t_interval(point_b, reps_b, n_pos_pat, n_neg_pat, LEVEL)
            hm_a, hm_b = (
                _hm_score(point_a, y, s_a, cluster, reps_a, k),
                _hm_score(point_b, y, s_b, cluster, reps_b, k),
            )
            candidates = (
                ("percentile", intervals.percentile(d_reps, LEVEL)),
                ("wald-z", intervals.t_interval_and_p(d, se, float("inf"), LEVEL)[:2]),
                ("wald-t", intervals.t_interval_and_p(d, se, df, LEVEL)[:2]),
                ("wald-t-adj", intervals.t_interval_and_p(d, adj, df, LEVEL)[:2]),
                ("mover-logit-t-adj", intervals.mover(d, (point_a, *lt_a), (point_b, *lt_b), r)),
                ("mover-hm-score", intervals.mover(d, (point_a, *hm_a(LEVEL)), (point_b, *hm_b(LEVEL)), r)),
            )
            for m, (lo, hi) in candidates:
                tally.add(("delta", m), lo, hi, true_delta)
            pos_patients.append(n_pos_pat)
            done += 1
        for (target, m), (cov, width, n) in tally.summary().items():
            rows.append(
                {
                    "prevalence": st.prevalence,
                    "auroc": st.auroc,
                    "n_patients": st.n_patients,
                    "per_patient": st.per_patient,
                    "mean_pos_patients": float(np.mean(pos_patients)),
                    "min_pos_patients": int(np.min(pos_patients)),
                    "target": target,
                    "method": m,
                    "coverage": cov,
                    "mean_width": width,
                    "trials": n,
                }
            )
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class SeedSetting:
    n_seeds: int
    sd_seed: float
    sd_test: float


DEFAULT_SEED_GRID = tuple(
    SeedSetting(s, a, b) for a, b in ((0.01, 0.003), (0.003, 0.01), (0.0, 0.005)) for s in (2, 3, 5)
)
SHARED_TEST = 0.8


def simulate_seeds(
    rng: np.random.Generator, st: SeedSetting, n_boot: int, mu: float = 0.85
) -> tuple[np.ndarray, np.ndarray]:
    """Per-seed points (S,) and shared-resample replicates (S, B) of one simulated configuration."""
    s = st.n_seeds
    shared_sd, own_sd = st.sd_test * np.sqrt(SHARED_TEST), st.sd_test * np.sqrt(1 - SHARED_TEST)
    points = mu + rng.normal(0, st.sd_seed, s) + rng.normal(0, shared_sd) + rng.normal(0, own_sd, s)
    reps = points[:, None] + rng.normal(0, shared_sd, (1, n_boot)) + rng.normal(0, own_sd, (s, n_boot))
    return points, reps


def seed_coverage(
    settings: tuple[SeedSetting, ...] | None = None,
    n_trials: int = 2000,
    n_boot: int = 500,
    seed: int = 0,
    mu: float = 0.85,
) -> pd.DataFrame:
    """One row per (setting, method): coverage of μ by the seed-pooled 95 % interval, mean width."""
    settings = DEFAULT_SEED_GRID if settings is None else settings
    rows = []
    for i, st in enumerate(settings):
        rng = np.random.default_rng(np.random.SeedSequence([seed, 7, i]))
        hits: dict[str, list[float]] = {
            "two-level bootstrap": [],
            "pooled t (Satterthwaite df)": [],
            "random-effects t": [],
        }
        widths: dict[str, list[float]] = {k: [] for k in hits}
        for _ in range(n_trials):
            points, reps = simulate_seeds(rng, st, n_boot, mu)
            old = hierarchical_bootstrap(points, reps, rng, LEVEL)
            new = combine_seeds(points, reps, df_test=float("inf"), level=LEVEL)
            pooled_df = intervals.satterthwaite_df(
                [new.test_var, new.seed_var], [float("inf"), st.n_seeds - 1]
            )
            pooled = intervals.logit_wald(
                new.mean, float(np.sqrt(new.test_var + new.seed_var)), pooled_df, LEVEL
            )
            for m, (lo, hi) in (
                ("two-level bootstrap", old),
                ("pooled t (Satterthwaite df)", pooled),
                ("random-effects t", (new.ci_low, new.ci_high)),
            ):
                hits[m].append(float(lo <= mu <= hi))
                widths[m].append(hi - lo)
        for m in hits:
            rows.append(
                {
                    "n_seeds": st.n_seeds,
                    "sd_seed": st.sd_seed,
                    "sd_test": st.sd_test,
                    "method": m,
                    "coverage": float(np.mean(hits[m])),
                    "mean_width": float(np.mean(widths[m])),
                    "trials": n_trials,
                }
            )
    return pd.DataFrame(rows)


def coverage_markdown(
    labels: pd.DataFrame, seeds: pd.DataFrame, seconds: float, n_trials: int, n_boot: int, seed_trials: int
) -> str:
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
            lines.append(
                f"| {first['prevalence']:g} | {first['auroc']:g} | {int(first['n_patients'])} ×"
                f" {int(first['per_patient'])} | {first['mean_pos_patients']:.1f},"
                f" {int(first['min_pos_patients'])} | " + " | ".join(cells) + " |"
            )
        parts.append(
            f"**{title}**: coverage of the 95 % interval (mean width) over {n_trials} trials per row, "
            f"{n_boot} patient resamples each. Monte-Carlo sd of a coverage near 0.95: "
            f"{np.sqrt(0.95 * 0.05 / n_trials):.3f}.\n\n" + "\n".join(lines) + "\n"
        )
    methods = list(dict.fromkeys(seeds["method"]))
    head = ["seeds", "seed sd", "test sd", *methods]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, g in seeds.groupby(["sd_seed", "sd_test", "n_seeds"], sort=False):
        by = {r.method: r for r in g.itertuples()}
        first = g.iloc[0]
        lines.append(
            f"| {int(first['n_seeds'])} | {first['sd_seed']:g} | {first['sd_test']:g} | "
            + " | ".join(f"{by[m].coverage:.3f} ({by[m].mean_width:.4f})" for m in methods)
            + " |"
        )
    parts.append(
        "**Seed-pooled mean** (coverage of the configuration's mean over seeds, mean width) over"
        f" {seed_trials} trials per row.\n\n" + "\n".join(lines) + "\n"
    )
    parts.append(f"Run time: {seconds:.0f} s on one thread.\n")
    return "\n".join(parts)


PARTS = ("label", "seeds", "macro", "seed-label", "seed-macro")


def run_coverage(
    n_trials: int = 300,
    n_boot: int = 2000,
    seed_trials: int = 2000,
    seed: int = 0,
    settings: tuple[Setting, ...] | None = None,
    parts: tuple[str, ...] = ("label", "seeds"),
    macro_trials: int = 300,
    macro_boot: int = 1000,
) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """The chosen ``parts`` of the simulation and their Markdown tables: ``label`` per-label AUROC and Δ,
    ``seeds`` the Gaussian seed-replicate model, ``macro`` several correlated labels (macro AUROC / AUPRC /
    Δ),
    ``seed-label`` / ``seed-macro`` seed-pooled per-label / macro AUROC and Δ on clustered test sets
    (``macro_trials`` trials and
    ``macro_boot`` resamples each for the last two)."""
    t0 = time.perf_counter()
    labels = label_coverage(settings, n_trials, n_boot, seed) if "label" in parts else pd.DataFrame()
    seeds = seed_coverage(n_trials=seed_trials, seed=seed) if "seeds" in parts else pd.DataFrame()
    text = (
        coverage_markdown(labels, seeds, 0.0, n_trials, n_boot, seed_trials)
        if len(labels) and len(seeds)
        else ""
    )
    text = text.rsplit("Run time:", 1)[0]
    extra = []
    if "macro" in parts:
        macro = macro_coverage(n_trials=macro_trials, n_boot=macro_boot, seed=seed)
        extra.append(
            _wide_table(
                macro,
                ["labels", "n_patients", "per_patient"],
                _macro_row_head,
                "**Several labels** (prevalence/AUROC per label; model B 0.05 lower on every label):"
                f" coverage (mean width) over {macro_trials} trials per row, {macro_boot} resamples each",
            )
        )
        labels = pd.concat([labels, macro.assign(part="macro")], ignore_index=True)
    if "seed-label" in parts:
        sl = seed_label_coverage(n_trials=macro_trials, n_boot=macro_boot, seed=seed)
        extra.append(
            _wide_table(
                sl,
                ["n_patients", "per_patient", "prevalence", "auroc", "n_seeds", "sd_seed"],
                _seed_row_head,
                "**Seed-pooled per-label AUROC and Δ** on clustered test sets: coverage of the"
                f" configuration's mean over seeds (mean width) over {macro_trials} trials per row,"
                f" {macro_boot} resamples each",
            )
        )
        seeds = pd.concat([seeds, sl.assign(part="seed-label")], ignore_index=True)
    if "seed-macro" in parts:
        sm = seed_macro_coverage(n_trials=macro_trials, n_boot=macro_boot, seed=seed)
        extra.append(
            _wide_table(
                sm,
                ["labels", "n_patients", "per_patient", "n_seeds", "sd_seed"],
                _seed_macro_row_head,
                "**Seed-pooled macro AUROC and macro Δ** on clustered test sets: coverage of the"
                f" configuration's mean over seeds (mean width) over {macro_trials} trials per row,"
                f" {macro_boot} resamples each",
                head=[
                    "labels (prevalence/AUROC)",
                    "patients × images",
                    "seeds",
                    "seed sd (per label)",
                    "test sd (macro)",
                ],
            )
        )
        seeds = pd.concat([seeds, sm.assign(part="seed-macro")], ignore_index=True)
    body = "\n".join([text, *extra])
    return labels, seeds, body + f"\nRun time: {time.perf_counter() - t0:.0f} s on one thread.\n"


def _macro_row_head(g: pd.DataFrame) -> list[str]:
    f = g.iloc[0]
    return [
        f["labels"],
        f"{int(f['n_patients'])} × {int(f['per_patient'])}",
        f"{f['mean_rare_pos_patients']:.1f}, {int(f['min_rare_pos_patients'])}",
    ]


def _seed_row_head(g: pd.DataFrame) -> list[str]:
    f = g.iloc[0]
    return [
        f"{int(f['n_patients'])} × {int(f['per_patient'])}, {f['prevalence']:g}, {f['auroc']:g}",
        str(int(f["n_seeds"])),
        f"{f['sd_seed']:.3f}",
        f"{f['sd_test']:.3f}",
    ]


def _seed_macro_row_head(g: pd.DataFrame) -> list[str]:
    f = g.iloc[0]
    return [
        f["labels"],
        f"{int(f['n_patients'])} × {int(f['per_patient'])}",
        str(int(f["n_seeds"])),
        f"{f['sd_seed']:.3f}",
        f"{f['sd_test']:.3f}",
    ]


def _wide_table(
    df: pd.DataFrame, keys: list[str], row_head, title: str, head: list[str] | None = None
) -> str:
    """One Markdown table per target: settings as rows, methods as columns, 'coverage (width)' cells."""
    parts = [title + "."]
    heads = {
        "macro": [
            "labels (prevalence/AUROC)",
            "patients × images",
            "rare label's positive patients (mean, min)",
        ],
        "seed": ["test set (patients × images, prevalence, AUROC)", "seeds", "seed sd", "test sd"],
    }
    head0 = head if head is not None else (heads["macro"] if "labels" in keys else heads["seed"])
    for target, t in df.groupby("target", sort=False):
        methods = list(dict.fromkeys(t["method"]))
        lines = ["| " + " | ".join([*head0, *methods]) + " |", "|" + "---|" * (len(head0) + len(methods))]
        for _, g in t.groupby(keys, sort=False):
            by = {r.method: r for r in g.itertuples()}
            lines.append(
                "| "
                + " | ".join(
                    [*row_head(g), *(f"{by[m].coverage:.3f} ({by[m].mean_width:.3f})" for m in methods)]
                )
                + " |"
            )
        worst = t.groupby("method", sort=False).agg(worst=("coverage", "min"), width=("mean_width", "mean"))
        summary = "; ".join(f"{m} {r.worst:.3f} ({r.width:.3f})" for m, r in worst.iterrows())
        parts.append(f"*{target}* — worst coverage (mean width) per method: {summary}\n\n" + "\n".join(lines))
    return "\n\n".join(parts) + "\n"


# ---- macro AUROC / AUPRC, macro Δ and the rare label's Δ, several correlated labels ----------------------


@dataclass(frozen=True)
class MacroSetting:
    n_patients: int
    per_patient: int
    labels: tuple[
        tuple[float, float], ...
    ]  # (prevalence, AUROC) per label; the last is the rare, high-AUROC one


#: labels on the same patients; the last one rare with a high AUROC (it dominates the macro's variance)
DEFAULT_MACRO_GRID = (
    MacroSetting(400, 1, ((0.3, 0.76), (0.15, 0.85), (0.1, 0.9), (0.03, 0.97))),
    MacroSetting(150, 4, ((0.3, 0.76), (0.15, 0.85), (0.1, 0.9), (0.05, 0.96))),
    MacroSetting(300, 2, ((0.2, 0.8), (0.1, 0.9), (0.06, 0.93), (0.02, 0.98))),
    MacroSetting(600, 1, ((0.3, 0.76), (0.15, 0.85), (0.1, 0.9), (0.02, 0.96))),
    # two labels: the rare one carries most of the macro's variance (appended: earlier rows keep their draws)
    MacroSetting(300, 2, ((0.3, 0.8), (0.04, 0.96))),
)
RHO_DISEASE, RHO_SCORE = (
    0.3,
    0.5,
)  # latent correlation of the labels' diseases / of their patient and image effects
LABEL_AUPRC = "every label's auprc (lowest over the labels)"
MACRO_AUROC_CANDIDATES = ("logit-t-adj", "hm-var-logit", "macro-mover-logit-t-adj", "macro-mover-hm")
MACRO_DELTA_CANDIDATES = ("wald-t-adj", "mover-macro-logit-t-adj", "mover-macro-hm", "mover-labels-hm")


def true_average_precision(prevalence: float, auroc: float) -> float:
    """Population AUPRC (∫ precision d recall) of the simulation's binormal image scores at ``prevalence``."""
    sd = float(np.sqrt(SD_PATIENT**2 + SD_IMAGE**2))
    mu = _mu(auroc)
    t = np.linspace(-8 * sd, mu + 8 * sd, 40001)
    tpr, fpr = norm.sf((t - mu) / sd), norm.sf(t / sd)
    ppv = prevalence * tpr / np.maximum(prevalence * tpr + (1 - prevalence) * fpr, 1e-300)
    dens = norm.pdf((t - mu) / sd) / sd
    return float(np.sum(ppv * dens) * (t[1] - t[0]))


def _correlated_normal(rng: np.random.Generator, shape: tuple[int, int], rho: float) -> np.ndarray:
    """(n, L) standard normals with correlation ``rho`` between columns."""
    return np.sqrt(rho) * rng.normal(size=(shape[0], 1)) + np.sqrt(1 - rho) * rng.normal(size=shape)


def _hm_var_logit(points, arms_info, corr, level) -> tuple[float, float]:
    """Simulation-only candidate: Wald on the logit scale with the macro variance Σ_ij R_ij √(D_i V_HM,i D_j
    V_HM,j) / L²."""
    sd = np.array(
        [
            np.sqrt(max(d, 1.0) * intervals.hanley_mcneil_variance(p, m, n))
            for p, (m, n, d) in zip(points, arms_info, strict=True)
        ]
    )
    macro = float(np.mean(points))
    se = float(np.sqrt(max(sd @ corr @ sd, 0.0))) / len(points)
    return intervals.logit_wald(macro, se, float("inf"), level)


def macro_coverage(
    settings: tuple[MacroSetting, ...] | None = None, n_trials: int = 300, n_boot: int = 1000, seed: int = 0
) -> pd.DataFrame:
    """One row per (setting, target, method): macro AUROC, macro AUPRC, macro Δ AUROC, the rare label's
    AUROC Δ and AUPRC, over ``n_trials`` test sets in which every label has ≥ 2 positive patients (below
    that chexbench prints no interval). Model B: every label's AUROC 0.05 lower, same patient effects."""
    settings = DEFAULT_MACRO_GRID if settings is None else settings
    rows = []
    for i, st in enumerate(settings):
        rng = np.random.default_rng(np.random.SeedSequence([seed, 11, i]))
        n_lab = len(st.labels)
        prev = np.array([p for p, _ in st.labels])
        auc = np.array([a for _, a in st.labels])
        mu_a, mu_b = np.array([_mu(a) for a in auc]), np.array([_mu(a - DELTA_GAP) for a in auc])
        true = {
            "macro auroc": float(auc.mean()),
            "macro delta": DELTA_GAP,
            "rare delta": DELTA_GAP,
            "macro auprc": float(np.mean([true_average_precision(p, a) for p, a in st.labels])),
            "rare auprc": true_average_precision(*st.labels[-1]),
            "rare auprc delta": (
                true_average_precision(*st.labels[-1])
                - true_average_precision(st.labels[-1][0], st.labels[-1][1] - DELTA_GAP)
            ),
            "macro auprc delta": float(
                np.mean(
                    [
                        true_average_precision(p, a) - true_average_precision(p, a - DELTA_GAP)
                        for p, a in st.labels
                    ]
                )
            ),
        }
        cluster = np.repeat(np.arange(st.n_patients), st.per_patient)
        tally = _Tally()
        rare_pos = []
        done = 0
        while done < n_trials:
            latent = _correlated_normal(rng, (st.n_patients, n_lab), RHO_DISEASE)
            disease = latent < norm.ppf(prev)
            n_pos_pat = disease.sum(axis=0)
            if (n_pos_pat < 2).any() or (st.n_patients - n_pos_pat < 2).any():
                continue
            patient = _correlated_normal(rng, (st.n_patients, n_lab), RHO_SCORE)[cluster] * SD_PATIENT
            weights = _resample_weights(rng, st.n_patients, n_boot)
            arm: dict[str, dict] = {"a": {}, "b": {}}
            for name, mus in (("a", mu_a), ("b", mu_b)):
                noise = _correlated_normal(rng, (len(cluster), n_lab), RHO_SCORE) * SD_IMAGE
                pts, reps, preps, ppts, hm, lt, lt_p, info = [], [], [], [], [], [], [], []
                for j in range(n_lab):
                    y = disease[cluster, j].astype(float)
                    s = mus[j] * y + patient[:, j] + noise[:, j]
                    op = SortedLabel(y, s, cluster, st.n_patients)
                    (pa,), (pp,) = op.evaluate(np.ones((1, st.n_patients)))
                    ra, rp = op.evaluate(weights)
                    npp, nnp = int(n_pos_pat[j]), int(st.n_patients - n_pos_pat[j])
                    k = min(npp, nnp)
                    hm_arm = _hm_score(float(pa), y, s, cluster, ra, k)
                    se = intervals.replicate_sd(ra) * np.sqrt(intervals.small_sample_factor(k))
                    m = int(y.sum())
                    deff = design_effect(y, s, cluster)
                    vhat = intervals.hanley_mcneil_variance(float(pa), m, len(y) - m)
                    d = max(deff if np.isfinite(deff) else 1.0, se**2 / vhat if vhat > 0 else 1.0)
                    (
                        pts.append(float(pa)),
                        ppts.append(float(pp)),
                        reps.append(ra),
                        preps.append(rp),
                        info.append((m, len(y) - m, d)),
                    )
                    hm.append(hm_arm)
                    lt.append(
                        lambda lev, p=float(pa), r=ra, a_=npp, b_=nnp: intervals.logit_t_interval(
                            p, r, a_, b_, lev
                        )
                    )
                    lt_p.append(
                        lambda lev, p=float(pp), r=rp, a_=npp, b_=nnp: intervals.logit_t_interval(
                            p, r, a_, b_, lev
                        )
                    )
                arm[name] = {
                    "pts": pts,
                    "reps": reps,
                    "ppts": ppts,
                    "preps": preps,
                    "hm": hm,
                    "lt": lt,
                    "lt_p": lt_p,
                    "info": info,
                }
            dfs = [intervals.class_df(int(n), st.n_patients - int(n)) for n in n_pos_pat]
            ks = [min(int(n), st.n_patients - int(n)) for n in n_pos_pat]
            out: dict[str, dict[str, tuple[float, float]]] = {}
            A, B = arm["a"], arm["b"]
            macro_a, macro_b = float(np.mean(A["pts"])), float(np.mean(B["pts"]))
            mreps_a, mreps_b = np.mean(A["reps"], axis=0), np.mean(B["reps"], axis=0)
            corr_a = intervals.replicate_corr(A["reps"])
            hm_macro_a = intervals.macro_mover_interval(A["pts"], A["hm"], A["reps"], LEVEL)
            hm_macro_b = intervals.macro_mover_interval(B["pts"], B["hm"], B["reps"], LEVEL)
            lt_macro_a = intervals.macro_mover_interval(A["pts"], A["lt"], A["reps"], LEVEL)
            lt_macro_b = intervals.macro_mover_interval(B["pts"], B["lt"], B["reps"], LEVEL)
            out["macro auroc"] = {
                "logit-t-adj": intervals.macro_interval(macro_a, mreps_a, A["reps"], dfs, ks, LEVEL),
                "hm-var-logit": _hm_var_logit(A["pts"], A["info"], corr_a, LEVEL),
                "macro-mover-logit-t-adj": lt_macro_a,
                "macro-mover-hm": hm_macro_a,
            }
            d_reps = [ra - rb for ra, rb in zip(A["reps"], B["reps"], strict=True)]
            dfac, ddf = intervals.macro_factor(d_reps, ks), intervals.macro_df(d_reps, dfs)
            md = macro_a - macro_b
            r_macro = intervals.replicate_corr([mreps_a, mreps_b])[0, 1]
            big = intervals.replicate_corr([*A["reps"], *B["reps"]])
            c = np.r_[np.full(n_lab, 1 / n_lab), np.full(n_lab, -1 / n_lab)]
            hm_all = [f(LEVEL) for f in (*A["hm"], *B["hm"])]
            out["macro delta"] = {
                "wald-t-adj": intervals.t_interval_and_p(
                    md, intervals.replicate_sd(mreps_a - mreps_b) * np.sqrt(dfac), ddf, LEVEL
                )[:2],
                "mover-macro-logit-t-adj": intervals.mover(
                    md, (macro_a, *lt_macro_a), (macro_b, *lt_macro_b), r_macro
                ),
                "mover-macro-hm": intervals.mover(
                    md, (macro_a, *hm_macro_a), (macro_b, *hm_macro_b), r_macro
                ),
                "mover-labels-hm": intervals.mover_sum(
                    c, [*A["pts"], *B["pts"]], [b[0] for b in hm_all], [b[1] for b in hm_all], big
                ),
            }
            ra, rb = A["reps"][-1], B["reps"][-1]
            rd = A["pts"][-1] - B["pts"][-1]
            r_rare = intervals.replicate_corr([ra, rb])[0, 1]
            out["rare delta"] = {
                "wald-t-adj": intervals.t_interval_and_p(
                    rd,
                    intervals.replicate_sd(ra - rb) * np.sqrt(intervals.small_sample_factor(ks[-1])),
                    dfs[-1],
                    LEVEL,
                )[:2],
                "mover-hm-score": intervals.mover(
                    rd, (A["pts"][-1], *A["hm"][-1](LEVEL)), (B["pts"][-1], *B["hm"][-1](LEVEL)), r_rare
                ),
            }
            pmacro_a, pmacro_b = float(np.mean(A["ppts"])), float(np.mean(B["ppts"]))
            pm_reps_a, pm_reps_b = np.mean(A["preps"], axis=0), np.mean(B["preps"], axis=0)
            plt_a = intervals.macro_mover_interval(A["ppts"], A["lt_p"], A["preps"], LEVEL)
            plt_b = intervals.macro_mover_interval(B["ppts"], B["lt_p"], B["preps"], LEVEL)
            pa_r, pb_r = A["ppts"][-1], B["ppts"][-1]
            out["rare auprc delta"] = {
                "wald-t-adj": intervals.t_interval_and_p(
                    pa_r - pb_r,
                    intervals.replicate_sd(A["preps"][-1] - B["preps"][-1])
                    * np.sqrt(intervals.small_sample_factor(ks[-1])),
                    dfs[-1],
                    LEVEL,
                )[:2],
                "mover-logit-t-adj": intervals.mover(
                    pa_r - pb_r,
                    (pa_r, *A["lt_p"][-1](LEVEL)),
                    (pb_r, *B["lt_p"][-1](LEVEL)),
                    intervals.replicate_corr([A["preps"][-1], B["preps"][-1]])[0, 1],
                ),
            }
            out["rare auprc"] = {
                "percentile": intervals.percentile(A["preps"][-1], LEVEL),
                "logit-t-adj": A["lt_p"][-1](LEVEL),
            }
            out["macro auprc"] = {
                "logit-t-adj": intervals.macro_interval(pmacro_a, pm_reps_a, A["preps"], dfs, ks, LEVEL),
                "macro-mover-logit-t-adj": plt_a,
            }
            pd_reps = [x - y for x, y in zip(A["preps"], B["preps"], strict=True)]
            pdelta = pmacro_a - pmacro_b
            out["macro auprc delta"] = {
                "wald-t-adj": intervals.t_interval_and_p(
                    pdelta,
                    intervals.replicate_sd(pm_reps_a - pm_reps_b)
                    * np.sqrt(intervals.macro_factor(pd_reps, ks)),
                    intervals.macro_df(pd_reps, dfs),
                    LEVEL,
                )[:2],
                "mover-macro-logit-t-adj": intervals.mover(
                    pdelta,
                    (pmacro_a, *plt_a),
                    (pmacro_b, *plt_b),
                    intervals.replicate_corr([pm_reps_a, pm_reps_b])[0, 1],
                ),
            }
            for j in range(
                n_lab
            ):  # every label's own AUPRC interval (draws nothing: earlier targets unchanged)
                true[f"{LABEL_AUPRC} {j}"] = true.get(
                    f"{LABEL_AUPRC} {j}", true_average_precision(*st.labels[j])
                )
                out[f"{LABEL_AUPRC} {j}"] = {
                    "percentile": intervals.percentile(A["preps"][j], LEVEL),
                    "logit-t-adj": A["lt_p"][j](LEVEL),
                }
            for target, ivs in out.items():
                for m, (lo, hi) in ivs.items():
                    tally.add((target, m), lo, hi, true[target])
            rare_pos.append(int(n_pos_pat[-1]))
            done += 1
        desc = ", ".join(f"{p:g}/{a:g}" for p, a in st.labels)
        summary = tally.summary()
        for m in (
            "percentile",
            "logit-t-adj",
        ):  # every label's AUPRC: the lowest coverage over the labels, mean width
            per = [summary.pop((f"{LABEL_AUPRC} {j}", m)) for j in range(n_lab)]
            summary[(LABEL_AUPRC, m)] = (
                min(c for c, _, _ in per),
                float(np.mean([w for _, w, _ in per])),
                per[0][2],
            )
        for (target, m), (cov, width, n) in summary.items():
            rows.append(
                {
                    "labels": desc,
                    "n_patients": st.n_patients,
                    "per_patient": st.per_patient,
                    "mean_rare_pos_patients": float(np.mean(rare_pos)),
                    "min_rare_pos_patients": int(np.min(rare_pos)),
                    "target": target,
                    "method": m,
                    "coverage": cov,
                    "mean_width": width,
                    "trials": n,
                }
            )
    return pd.DataFrame(rows)


# ---- seed-pooled per-label AUROC and its Δ on clustered test sets, with seed variance ----------------------


@dataclass(frozen=True)
class SeedLabelSetting:
    n_patients: int
    per_patient: int
    prevalence: float
    auroc: float
    n_seeds: int
    sd_seed: float  # between-seed sd of a seed's true AUROC (approximately; set on the probit scale)


#: two test-set shapes (test sd ≈ 0.02 and 0.04), seed sd ≈ 2 × and ¼ × the test sd, 2 / 3 / 5 seeds
DEFAULT_SEED_LABEL_GRID = tuple(
    SeedLabelSetting(n, per, prev, auc, s, sd)
    for (n, per, prev, auc, sds) in ((400, 1, 0.05, 0.96, (0.04, 0.005)), (150, 4, 0.1, 0.85, (0.08, 0.01)))
    for sd in sds
    for s in (2, 3, 5)
)
SEED_LABEL_CANDIDATES = ("logit-t-adj + seed", "hm-score + seed")
SEED_DELTA_CANDIDATES = ("wald components", "mover-seed-hm")


def _seed_auroc_moments(auroc: float, sd_seed: float) -> tuple[float, float, float]:
    """(probit-scale sd of μ, true mean AUROC over seeds, true sd over seeds) for a seed shift on μ whose
    AUROC-scale sd is ``sd_seed`` to first order (Gauss–Hermite quadrature for the exact moments)."""
    scale = np.sqrt(2 * (SD_PATIENT**2 + SD_IMAGE**2))
    sd_mu = sd_seed * scale / norm.pdf(norm.ppf(auroc))
    x, w = np.polynomial.hermite_e.hermegauss(60)
    w = w / w.sum()
    a = norm.cdf((_mu(auroc) + sd_mu * x) / scale)
    mean = float(w @ a)
    return float(sd_mu), mean, float(np.sqrt(w @ (a - mean) ** 2))


def seed_label_coverage(
    settings: tuple[SeedLabelSetting, ...] | None = None,
    n_trials: int = 300,
    n_boot: int = 500,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per (setting, target ∈ {auroc, delta}, method): coverage of a configuration's mean AUROC over
    fine-tuning seeds by the seed-pooled interval on a clustered test set, and of Δ between two such
    configurations (B 0.05 lower, own seeds) on the same patients. Seed s of a configuration shifts its score
    separation μ by a seed effect; its images share the patient effect with every seed and both
    configurations and half their image noise with the configuration's other seeds."""
    from chexbench.reports.bootstrap import LabelScores
    from chexbench.reports.seeds import combine_seeds, paired_seed_delta, with_label_interval

    settings = DEFAULT_SEED_LABEL_GRID if settings is None else settings
    rows = []
    for i, st in enumerate(settings):
        rng = np.random.default_rng(np.random.SeedSequence([seed, 13, i]))
        sd_mu_a, true_a, sd_a = _seed_auroc_moments(st.auroc, st.sd_seed)
        sd_mu_b, true_b, _ = _seed_auroc_moments(st.auroc - DELTA_GAP, st.sd_seed)
        cluster = np.repeat(np.arange(st.n_patients), st.per_patient)
        tally = _Tally()
        test_sd = []
        done = 0
        while done < n_trials:
            disease = rng.random(st.n_patients) < st.prevalence
            npp = int(disease.sum())
            if npp < 2 or st.n_patients - npp < 2:
                continue
            y = disease[cluster].astype(float)
            m = int(y.sum())
            shared = rng.normal(0, SD_PATIENT, st.n_patients)[cluster]
            weights = _resample_weights(rng, st.n_patients, n_boot)
            k = min(npp, st.n_patients - npp)
            arms = {}
            for name, auc, sd_mu in (("a", st.auroc, sd_mu_a), ("b", st.auroc - DELTA_GAP, sd_mu_b)):
                noise_shared = rng.normal(0, SD_IMAGE * np.sqrt(0.5), len(y))
                pts, reps, first = [], [], None
                for _ in range(st.n_seeds):
                    s = (
                        (_mu(auc) + rng.normal(0, sd_mu)) * y
                        + shared
                        + noise_shared
                        + rng.normal(0, SD_IMAGE * np.sqrt(0.5), len(y))
                    )
                    op = SortedLabel(y, s, cluster, st.n_patients)
                    pts.append(float(op.evaluate(np.ones((1, st.n_patients)))[0][0]))
                    reps.append(op.evaluate(weights)[0])
                    if first is None:
                        first = LabelScores(
                            "sim",
                            m,
                            len(y) - m,
                            st.n_patients,
                            pts[0],
                            float("nan"),
                            reps[0],
                            reps[0],
                            n_pos_patients=npp,
                            n_neg_patients=st.n_patients - npp,
                            design_effect=design_effect(y, s, cluster),
                        )
                plain = combine_seeds(pts, reps, df_test=first.df, k=k, factor_test=first.factor)
                arms[name] = (plain, with_label_interval(plain, first))
            (plain_a, hm_a), (plain_b, hm_b) = arms["a"], arms["b"]
            test_sd.append(intervals.replicate_sd(plain_a.replicates))
            for mth, s_ in (("logit-t-adj + seed", plain_a), ("hm-score + seed", hm_a)):
                tally.add(("auroc", mth), s_.ci_low, s_.ci_high, true_a)
            d_old = _wald_components_delta(plain_a, plain_b)
            d_new = paired_seed_delta(hm_a, hm_b)
            for mth, (lo, hi) in (
                ("wald components", d_old),
                ("mover-seed-hm", (d_new.ci_low, d_new.ci_high)),
            ):
                tally.add(("delta", mth), lo, hi, true_a - true_b)
            done += 1
        for (target, mth), (cov, width, n) in tally.summary().items():
            rows.append(
                {
                    "n_patients": st.n_patients,
                    "per_patient": st.per_patient,
                    "prevalence": st.prevalence,
                    "auroc": st.auroc,
                    "n_seeds": st.n_seeds,
                    "sd_seed": sd_a,
                    "sd_test": float(np.nanmean(test_sd)),
                    "target": target,
                    "method": mth,
                    "coverage": cov,
                    "mean_width": width,
                    "trials": n,
                }
            )
    return pd.DataFrame(rows)


def _wald_components_delta(a, b) -> tuple[float, float]:
    """The former seed-pooled Δ (simulation only): Δ ± √(q² V_test(Δ) k/(k − 1) + t²_{S_A−1} s²_A/S_A +
    t²_{S_B−1} s²_B/S_B)."""
    d = np.asarray(a.replicates) - np.asarray(b.replicates)
    test_var = intervals.replicate_sd(d) ** 2 * max(a.factor_test, b.factor_test)
    parts = [(test_var, min(a.df_test, b.df_test)), *a.parts[1:], *b.parts[1:]]
    lo, hi, _ = intervals.interval_and_p(a.mean - b.mean, parts, LEVEL)
    return lo, hi


# ---- seed-pooled macro AUROC and its Δ (the report's leaderboard numbers), with seed variance
# ---------------


@dataclass(frozen=True)
class SeedMacroSetting:
    n_patients: int
    per_patient: int
    labels: tuple[tuple[float, float], ...]  # (prevalence, AUROC) per label; the last rare with a high AUROC
    n_seeds: int
    sd_seed: float  # between-seed sd of each label's true AUROC (approximately), correlated 0.5 across labels


#: three labels on 300 patients × 2 images, seed sd above (0.03) and below (0.003) the macro's test sd, 2 / 3
#: / 5 seeds
DEFAULT_SEED_MACRO_GRID = tuple(
    SeedMacroSetting(300, 2, ((0.3, 0.8), (0.15, 0.85), (0.05, 0.96)), s, sd)
    for sd in (0.03, 0.003)
    for s in (2, 3, 5)
)
SEED_MACRO_CANDIDATES = ("logit-t-adj + seed", "mover-hm + seed")
SEED_MACRO_DELTA_CANDIDATES = ("wald components", "mover-seed-macro-hm")
RHO_SEED = (
    0.5  # correlation of a seed's effects on the labels (a seed that helps one label tends to help all)
)


def seed_macro_coverage(
    settings: tuple[SeedMacroSetting, ...] | None = None,
    n_trials: int = 150,
    n_boot: int = 500,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per (setting, target ∈ {macro auroc, macro delta}, method): coverage of a configuration's mean
    macro AUROC over seeds by the report's seed-pooled macro interval (``leaderboard._summaries``: per label
    ``seeds.with_label_interval``, the macro ``seeds.with_macro_interval``) and of the macro Δ between two
    configurations (``seeds.paired_seed_delta``; B 0.05 lower on every label, own seeds), beside the former
    forms (logit-t-adj with Satterthwaite df over the labels, Wald components). Data as
    ``seed_label_coverage``
    with correlated labels as ``macro_coverage``."""
    from chexbench.reports.bootstrap import LabelScores
    from chexbench.reports.seeds import (
        combine_seeds,
        paired_seed_delta,
        with_label_interval,
        with_macro_interval,
    )

    settings = DEFAULT_SEED_MACRO_GRID if settings is None else settings
    rows = []
    for i, st in enumerate(settings):
        rng = np.random.default_rng(np.random.SeedSequence([seed, 17, i]))
        n_lab = len(st.labels)
        prev = np.array([p for p, _ in st.labels])
        moments = {
            name: [_seed_auroc_moments(a - gap, st.sd_seed) for _, a in st.labels]
            for name, gap in (("a", 0.0), ("b", DELTA_GAP))
        }
        true_a = float(np.mean([m[1] for m in moments["a"]]))
        true_d = true_a - float(np.mean([m[1] for m in moments["b"]]))
        cluster = np.repeat(np.arange(st.n_patients), st.per_patient)
        tally = _Tally()
        test_sd = []
        done = 0
        while done < n_trials:
            disease = _correlated_normal(rng, (st.n_patients, n_lab), RHO_DISEASE) < norm.ppf(prev)
            n_pos = disease.sum(axis=0)
            if (n_pos < 2).any() or (st.n_patients - n_pos < 2).any():
                continue
            patient = _correlated_normal(rng, (st.n_patients, n_lab), RHO_SCORE)[cluster] * SD_PATIENT
            weights = _resample_weights(rng, st.n_patients, n_boot)
            arms = {}
            for name in ("a", "b"):
                noise_shared = (
                    _correlated_normal(rng, (len(cluster), n_lab), RHO_SCORE) * SD_IMAGE * np.sqrt(0.5)
                )
                seed_effect = _correlated_normal(rng, (st.n_seeds, n_lab), RHO_SEED)
                pts = np.zeros((st.n_seeds, n_lab))
                reps = np.zeros((st.n_seeds, n_lab, n_boot))
                firsts = []
                for s_i in range(st.n_seeds):
                    noise = noise_shared + _correlated_normal(
                        rng, (len(cluster), n_lab), RHO_SCORE
                    ) * SD_IMAGE * np.sqrt(0.5)
                    for j, (_, auc) in enumerate(st.labels):
                        y = disease[cluster, j].astype(float)
                        mu = (
                            _mu(auc - (DELTA_GAP if name == "b" else 0.0))
                            + moments[name][j][0] * seed_effect[s_i, j]
                        )
                        sc = mu * y + patient[:, j] + noise[:, j]
                        op = SortedLabel(y, sc, cluster, st.n_patients)
                        pts[s_i, j] = float(op.evaluate(np.ones((1, st.n_patients)))[0][0])
                        reps[s_i, j] = op.evaluate(weights)[0]
                        if s_i == 0:
                            m = int(y.sum())
                            firsts.append(
                                LabelScores(
                                    f"l{j}",
                                    m,
                                    len(y) - m,
                                    st.n_patients,
                                    pts[0, j],
                                    float("nan"),
                                    reps[0, j],
                                    reps[0, j],
                                    n_pos_patients=int(n_pos[j]),
                                    n_neg_patients=int(st.n_patients - n_pos[j]),
                                    design_effect=design_effect(y, sc, cluster),
                                )
                            )
                labels = [
                    with_label_interval(
                        combine_seeds(pts[:, j], reps[:, j], df_test=f.df, k=f.k, factor_test=f.factor), f
                    )
                    for j, f in enumerate(firsts)
                ]
                first_reps = [reps[0, j] for j in range(n_lab)]
                old = combine_seeds(
                    pts.mean(axis=1),
                    reps.mean(axis=1),
                    k=min(f.k for f in firsts),
                    df_test=intervals.macro_df(first_reps, [f.df for f in firsts]),
                    factor_test=intervals.macro_factor(first_reps, [f.k for f in firsts]),
                )
                new = with_macro_interval(
                    combine_seeds(pts.mean(axis=1), reps.mean(axis=1), k=min(f.k for f in firsts)), labels
                )
                arms[name] = (old, new)
            (old_a, new_a), (old_b, new_b) = arms["a"], arms["b"]
            test_sd.append(intervals.replicate_sd(new_a.replicates))
            for mth, s_ in (("logit-t-adj + seed", old_a), ("mover-hm + seed", new_a)):
                tally.add(("macro auroc", mth), s_.ci_low, s_.ci_high, true_a)
            d_new = paired_seed_delta(new_a, new_b)
            for mth, (lo, hi) in (
                ("wald components", _wald_components_delta(old_a, old_b)),
                ("mover-seed-macro-hm", (d_new.ci_low, d_new.ci_high)),
            ):
                tally.add(("macro delta", mth), lo, hi, true_d)
            done += 1
        desc = ", ".join(f"{p:g}/{a:g}" for p, a in st.labels)
        for (target, mth), (cov, width, n) in tally.summary().items():
            rows.append(
                {
                    "labels": desc,
                    "n_patients": st.n_patients,
                    "per_patient": st.per_patient,
                    "n_seeds": st.n_seeds,
                    "sd_seed": float(np.mean([m[2] for m in moments["a"]])),
                    "sd_test": float(np.nanmean(test_sd)),
                    "target": target,
                    "method": mth,
                    "coverage": cov,
                    "mean_width": width,
                    "trials": n,
                }
            )
    return pd.DataFrame(rows)
