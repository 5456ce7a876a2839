"""Shared helper of the subgroup test: a pixel probe's AUROC by view and by sex on phantom films.

Kept out of the test module so it can be run by hand to print the gaps over seeds
(docs/PHANTOM.md, "Measured subgroup gaps")::

    python tests/datasets/phantom/phantom_subgroups.py PATIENTS SIZE DEPENDENCIES LABEL SEED [SEED ...]

and to print the cohort's label shares by view and age band under both settings (no rendering)::

    python tests/datasets/phantom/phantom_subgroups.py cohort PATIENTS SEED
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from chexbench.datasets.phantom.cohort import sample_cohort
from chexbench.datasets.phantom.dependencies import Dependencies
from chexbench.datasets.phantom.render import render_study

SITE = "nih"  # 40 % AP films: both views well represented (CheXpert: 85 % AP)


def probe_gaps(
    patients: int,
    seed: int,
    dependencies: Dependencies = "published",
    label: str = "pleural_effusion",
    size: int = 24,
) -> dict[str, float]:
    """AUROC of a logistic probe on the pixels of NIH-site phantom films, by view and by sex.

    The cohort of ``patients`` is sampled (cheap); every frontal film positive for ``label`` and
    as many negatives drawn at random (AUROC does not depend on prevalence; rendering only these
    keeps the test fast) are rendered at ``size`` px. The probe is trained on the films of even
    patients (views and sexes pooled) and scored on the odd ones. Returns each subgroup's AUROC,
    the gaps ``view_gap`` = PA − AP and ``sex_gap`` = male − female, and the test positives.
    """
    studies = [(p, s) for p in sample_cohort(SITE, patients, seed, dependencies) for s in p.studies]
    y = np.array([label in s.names for _, s in studies])
    positives, negatives = np.flatnonzero(y), np.flatnonzero(~y)
    negatives = np.random.default_rng(seed).choice(negatives, len(positives), replace=False)
    keep = np.sort(np.concatenate([positives, negatives]))
    studies, y = [studies[i] for i in keep], y[keep]
    images = np.stack([render_study(p, s, SITE, size, seed)[0].ravel() / 255.0 for p, s in studies])
    test = np.array([p.index % 2 == 1 for p, _ in studies])
    view = np.array([s.view for _, s in studies])
    female = np.array([s.female for _, s in studies])
    probe = LogisticRegression(C=0.05, max_iter=1000).fit(images[~test], y[~test])
    scores = probe.decision_function(images)
    groups = {"AP": view == "AP", "PA": view == "PA", "F": female, "M": ~female}
    out = {name: float(roc_auc_score(y[test & m], scores[test & m])) for name, m in groups.items()}
    counts = {f"positives_{name}": float(y[test & m].sum()) for name, m in groups.items()}
    return {**out, "view_gap": out["PA"] - out["AP"], "sex_gap": out["M"] - out["F"], **counts}


LABELS = ("cardiomegaly", "pleural_effusion", "support_devices", "edema", "atelectasis")


def cohort_table(site: str, patients: int, seed: int, dependencies: Dependencies) -> pd.DataFrame:
    """One row per study: view, age, sex, each of :data:`LABELS` present (drawn or not), effusion unseen."""
    studies = [s for p in sample_cohort(site, patients, seed, dependencies) for s in p.studies]
    return pd.DataFrame(
        [
            {
                "view": s.view,
                "age": s.age,
                "female": s.female,
                **{k: k in s.names for k in LABELS},
                "effusion_unseen": "pleural_effusion" in s.unseen,
            }
            for s in studies
        ]
    )


def print_cohort(patients: int, seed: int) -> None:
    """Per site and setting: AP share, AP effusions not drawn, and per label AP − PA, F − M, age bands."""
    for site in ("chexpert", "nih"):
        for dependencies in ("published", "none"):
            df = cohort_table(site, patients, seed, dependencies)  # type: ignore[arg-type]
            ap, female = df["view"] == "AP", df["female"]
            band = pd.cut(
                df["age"], [0, 40, 60, 80, 200], right=False, labels=["<40", "40-59", "60-79", "80+"]
            )
            unseen = df.loc[ap & df["pleural_effusion"], "effusion_unseen"].mean()
            print(
                f"{site} {dependencies}: {len(df)} studies, AP {ap.mean():.3f}, "
                f"AP effusions not drawn {unseen:.3f}"
            )
            for label in LABELS:
                shares = df.groupby(band, observed=True)[label].mean()
                bands = " ".join(f"{b} {v:.3f}" for b, v in shares.items())
                by_view = df.loc[ap, label].mean() - df.loc[~ap, label].mean()
                by_sex = df.loc[female, label].mean() - df.loc[~female, label].mean()
                print(f"  {label:17s} AP-PA {by_view:+.3f}  F-M {by_sex:+.3f}  {bands}")


def print_gaps(patients: int, size: int, dependencies: Dependencies, label: str, seeds: list[int]) -> None:
    """:func:`probe_gaps` for each seed, then the mean, sd and range of both gaps."""
    rows = []
    for seed in seeds:
        start = time.perf_counter()
        g = probe_gaps(patients, seed, dependencies, label, size)
        rows.append((g["view_gap"], g["sex_gap"]))
        print(
            f"seed {seed}: AP {g['AP']:.3f} PA {g['PA']:.3f} F {g['F']:.3f} M {g['M']:.3f} "
            f"PA-AP {g['view_gap']:+.3f} M-F {g['sex_gap']:+.3f} test positives AP/PA "
            f"{g['positives_AP']:.0f}/{g['positives_PA']:.0f} ({time.perf_counter() - start:.1f} s)",
            flush=True,
        )
    for name, gaps in zip(("PA-AP", "M-F"), np.array(rows).T, strict=True):
        print(
            f"{dependencies} {label} {patients} patients {size} px, {len(rows)} seeds: {name} mean "
            f"{gaps.mean():+.3f} sd {gaps.std(ddof=1):.3f} [{gaps.min():+.3f}, {gaps.max():+.3f}]"
        )


if __name__ == "__main__":
    import sys

    if sys.argv[1] == "cohort":
        print_cohort(int(sys.argv[2]), int(sys.argv[3]))
    else:
        print_gaps(
            int(sys.argv[1]),
            int(sys.argv[2]),
            sys.argv[3],
            sys.argv[4],  # type: ignore[arg-type]
            [int(a) for a in sys.argv[5:]],
        )
