"""``dependencies``: "none" writes generator version 5's files; "published" builds the real dependencies.

Under "published" (docs/PHANTOM.md, "Subgroups: what depends on what") view and age follow
the findings as in the real files, an AP (bedside) film magnifies the heart and misses some
effusions and opacities, and sex is the deliberately null variable; so a subgroup analysis
finds an AP/PA gap and no sex gap.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from phantom_subgroups import probe_gaps

from chexbench.datasets.phantom.cohort import Patient, Study, sample_cohort
from chexbench.datasets.phantom.dependencies import (
    AP_CTR_FACTOR,
    EFFUSION_SEEN_BEDSIDE,
    OPACITY_SEEN_BEDSIDE,
    seen_on_bedside_film,
    unseen_on_film,
)
from chexbench.datasets.phantom.findings import BILATERAL, Finding
from chexbench.datasets.phantom.generate import generate
from chexbench.datasets.phantom.render import render_study
from chexbench.spec.registry import DATASETS

#: sha256 (first 16 hex) over the relative path and bytes of every file but phantom_manifest.json under
#: ``out`` of
#: generate(out, (site,), patients=24, size=32, seed=7, workers=1), computed with generator
#: version 5 (commit ece6998, before the option existed)
VERSION_5_FILES = {"chexpert": "d84436a7cc8caca6", "nih": "b1576e71d4101fa2", "indiana": "bee8fc7810ef276c"}


def tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != "phantom_manifest.json":
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


@pytest.mark.parametrize("site", sorted(VERSION_5_FILES))
def test_none_writes_the_files_of_generator_version_5_and_published_does_not(tmp_path, site):
    none = generate(tmp_path / "none", (site,), patients=24, size=32, seed=7, workers=1, dependencies="none")
    assert tree_hash(none.root) == VERSION_5_FILES[site]
    published = generate(tmp_path / "published", (site,), patients=24, size=32, seed=7, workers=1)
    assert tree_hash(published.root) != VERSION_5_FILES[site]
    manifest = (published.root / site / "phantom_manifest.json").read_text()
    assert '"dependencies": "published"' in manifest and '"version": 6' in manifest


def _frame(site: str, patients: int, seed: int, dependencies: str) -> pd.DataFrame:
    """One row per study: view, age, sex and whether each finding is present (the label, seen or not)."""
    names = ("cardiomegaly", "pleural_effusion", "support_devices", "edema", "atelectasis")
    return pd.DataFrame(
        [
            {"view": s.view, "age": s.age, "female": s.female, **{n: n in s.names for n in names}}
            for p in sample_cohort(site, patients, seed, dependencies)
            for s in p.studies
        ]
    )


def _gap(df: pd.DataFrame, group: pd.Series, label: str) -> float:
    return float(df.loc[group, label].mean() - df.loc[~group, label].mean())


@pytest.fixture(scope="module")
def chexpert_cohorts() -> dict[str, pd.DataFrame]:
    return {dep: _frame("chexpert", 4000, 3, dep) for dep in ("published", "none")}


def test_ap_films_carry_more_devices_edema_effusion_and_atelectasis_only_when_published(chexpert_cohorts):
    # real CheXpert train.csv frontal images, AP − PA: devices +0.34, edema +0.28, effusion +0.14, atelectasis
    # +0.11
    published, none = chexpert_cohorts["published"], chexpert_cohorts["none"]
    minimum = {"support_devices": 0.2, "edema": 0.15, "pleural_effusion": 0.04, "atelectasis": 0.05}
    for label, least in minimum.items():
        assert _gap(published, published["view"] == "AP", label) > least, label
        assert abs(_gap(none, none["view"] == "AP", label)) < 0.05, label
    assert 0.78 < (published["view"] == "AP").mean() < 0.88  # the real 84.6 % AP kept


def test_cardiomegaly_and_effusion_rise_with_age_only_when_published(chexpert_cohorts):
    # real CheXpert, age 80+ vs under 40: cardiomegaly 0.232 vs 0.113, effusion 0.519 vs 0.331
    for dep, df in chexpert_cohorts.items():
        bands = pd.cut(df["age"], [0, 40, 60, 80, 200], right=False)
        by_band = df.groupby(bands, observed=True)[["cardiomegaly", "pleural_effusion"]].mean()
        rise = by_band.iloc[-1] - by_band.iloc[0]
        if dep == "published":
            assert rise["cardiomegaly"] > 0.04 and rise["pleural_effusion"] > 0.05, by_band
            assert (by_band.iloc[2] - by_band.iloc[0] > 0.02).all(), by_band  # 60-79 above under 40 too
        else:
            assert abs(rise["cardiomegaly"]) < 0.04 and abs(rise["pleural_effusion"]) < 0.05, by_band


def test_sex_is_the_null_variable_no_finding_or_view_depends_on_it(chexpert_cohorts):
    df = chexpert_cohorts["published"]
    female = df["female"]
    for label in ("cardiomegaly", "pleural_effusion", "support_devices", "edema", "atelectasis"):
        assert abs(_gap(df, female, label)) < 0.04, label
    assert abs((df.loc[female, "view"] == "AP").mean() - (df.loc[~female, "view"] == "AP").mean()) < 0.04


def test_nih_ap_films_carry_more_effusion_and_edema_and_sites_differ():
    nih = _frame("nih", 4000, 3, "published")
    ap = nih["view"] == "AP"
    # real NIH, AP − PA: effusion +0.052, edema +0.041
    assert _gap(nih, ap, "pleural_effusion") > 0.02 and _gap(nih, ap, "edema") > 0.015
    assert 0.33 < ap.mean() < 0.45  # real 40.0 % AP
    # sites differ in view mix and prevalence (each draws from its own real tables)
    chexpert = _frame("chexpert", 1000, 3, "published")
    assert (chexpert["view"] == "AP").mean() - ap.mean() > 0.3
    assert chexpert["pleural_effusion"].mean() - nih["pleural_effusion"].mean() > 0.2
    assert chexpert["cardiomegaly"].mean() - nih["cardiomegaly"].mean() > 0.08


def test_only_ap_films_hide_findings_at_the_published_rates():
    rng = np.random.default_rng(0)
    small, moderate, large = (Finding("pleural_effusion", s, BILATERAL, 0) for s in (0.2, 0.5, 0.9))
    consolidation = Finding("consolidation", 0.8, 0, 0)
    assert [seen_on_bedside_film(f) for f in (small, moderate, large)] == list(EFFUSION_SEEN_BEDSIDE)
    assert seen_on_bedside_film(consolidation) == OPACITY_SEEN_BEDSIDE
    assert seen_on_bedside_film(Finding("cardiomegaly", 0.8, BILATERAL, 0)) == 1.0
    assert all(not unseen_on_film("PA", (small, consolidation), rng) for _ in range(200))
    hidden = [unseen_on_film("AP", (small, large), rng) for _ in range(4000)]
    assert abs(np.mean([len(h) for h in hidden]) - (1 - 0.53) - (1 - 0.92)) < 0.04


def _render(study: Study, female: bool = False, size: int = 64) -> np.ndarray:
    return render_study(Patient(0, female, 1234, (study,)), study, "nih", size, 0)[0].astype(float)


def test_a_hidden_finding_is_not_drawn_and_keeps_its_label():
    effusion = Finding("pleural_effusion", 0.8, 0, 5)
    hidden = Study(0, 1, 60, False, "AP", False, (effusion,), unseen=frozenset({"pleural_effusion"}))
    assert "pleural_effusion" in hidden.names
    assert np.array_equal(_render(hidden), _render(Study(0, 1, 60, False, "AP", False, ())))
    assert not np.array_equal(_render(hidden), _render(Study(0, 1, 60, False, "AP", False, (effusion,))))


def test_ap_magnification_widens_the_heart_and_sex_leaves_no_trace_when_published():
    plain = Study(0, 1, 60, False, "AP", False, ())
    wide = Study(0, 1, 60, False, "AP", False, (), cardiac_magnification=AP_CTR_FACTOR[1])
    # the heart is brighter than the lung beside it: a wider heart brightens the rows through it
    assert _render(wide).sum() > _render(plain).sum()
    null_sex = Study(0, 1, 60, True, "PA", False, (), sex_in_pixels=False)
    assert np.array_equal(_render(null_sex, female=True), _render(null_sex, female=False))
    v5 = Study(0, 1, 60, True, "PA", False, ())  # version 5 ("none"): breast shadows
    assert not np.array_equal(_render(v5, female=True), _render(v5, female=False))


def test_written_files_carry_the_published_view_and_age(tmp_path):
    from chexbench.datasets.phantom.write_chexpert import split_patients

    out = generate(tmp_path / "p", ("chexpert", "nih"), patients=30, size=16, seed=4, workers=1).root
    nih = DATASETS.get("nih").load_index(out / "nih").set_index("image_id")
    for p in sample_cohort("nih", 30, 4):
        for s in p.studies:
            row = nih.loc[f"{p.index + 1:08d}_{s.number - 1:03d}.png"]
            assert (row["view"], int(row["age"]), row["sex"]) == (s.view, s.age, "F" if s.female else "M")
    chexpert = DATASETS.get("chexpert").load_index(out / "chexpert" / "CheXpert-v1.0-small")
    valid = split_patients(30, 4)
    expected = sorted(
        (s.view, s.age)
        for p in sample_cohort("chexpert", 30, 4)
        for s in (p.studies[:1] if valid[p.index] else p.studies)
    )
    frontal = chexpert[chexpert["view"].isin(["AP", "PA"])]
    assert sorted(zip(frontal["view"], frontal["age"].astype(int), strict=True)) == expected


@pytest.mark.slow
def test_a_pixel_probe_finds_an_ap_pa_gap_and_no_sex_gap():
    # a bedside AP film misses 47 / 29 / 8 % of small / moderate / large effusions (Kitazono et al.
    # 2010), a PA film none; sex is not in the pixels. NIH site, 4000 patients sampled, every
    # effusion-positive frontal film and as many negatives rendered at 24 px (~1900 films), probe
    # trained on half the patients. Seeds 0-9 (docs/PHANTOM.md, "Measured subgroup gaps"): PA - AP
    # +0.037 to +0.079 ("none": -0.034 to +0.027), male - female -0.058 to +0.045 (both settings)
    gaps = probe_gaps(patients=4000, seed=2)
    assert min(gaps[f"positives_{g}"] for g in ("AP", "PA", "F", "M")) >= 100, gaps
    assert gaps["view_gap"] > 0.03, gaps
    assert abs(gaps["sex_gap"]) < 0.07, gaps
