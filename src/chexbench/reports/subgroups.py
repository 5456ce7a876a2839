"""Subgroups: per-label AUROC by sex, age band, view or site, and the largest gap between subgroups.

A prediction file carries each image's attributes (``datasets.base.SUBGROUP_COLUMNS``). For one
variable, each subgroup is the rows whose image has that value (age: in a band of :data:`AGE_BANDS`);
rows without a value (sex ``U``, view ``UNKNOWN``, age NaN, blank) belong to no subgroup and are counted.

- **Per subgroup**: every label's AUROC with the project's per-label interval (``LabelScores.auroc_ci``:
  hm-score), scored on the subgroup's rows under the patient resamples of the whole test set (so every
  subgroup's replicates come from the same resampled patients); positives and patients per subgroup; a
  ⚠ flag where a subgroup has fewer than ``FEW_POSITIVE_PATIENTS`` positive patients.
- **Gaps**: for every label, every pair of subgroups whose AUROCs have an interval; Δ = the higher AUROC
  minus the lower, with a 95 % interval and a two-sided p, both by MOVER on the two subgroups' hm-score
  intervals (Zou & Donner 2008; ``intervals.mover_interval_and_p``):

  ====================================================  ======================================================
  the two subgroups' rows of that label                 test
  ====================================================  ======================================================
  share no patient (sex; age bands of one visit each)   **independent**: MOVER with correlation 0 (two
                                                        independent samples; Newcombe 2006's unpaired form)
  share a patient (AP and PA images of one patient;     **patient bootstrap**: both AUROCs recomputed on each
  a patient aged across a band boundary)                resample of the patients, MOVER with the correlation
  of
                                                        those replicates (``compare.paired_label_delta``)
  ====================================================  ======================================================

  The table keeps each label's **largest** gap. Its multiplicity: Holm (statsmodels) over every pair of
  every label of the variable, so the largest gap's corrected p accounts for picking it among the pairs
  (with two subgroups: Holm over the labels).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from chexbench.core.errors import DataError
from chexbench.datasets.base import SUBGROUP_COLUMNS
from chexbench.reports.bootstrap import (
    LabelScores,
    PatientResamples,
    draw_patient_resamples,
    score_predictions,
)
from chexbench.reports.compare import adjust_p_values, paired_label_delta
from chexbench.reports.intervals import FEW_POSITIVE_PATIENTS, mover_interval_and_p
from chexbench.reports.score import (
    align_predictions,
    choose_labels,
    label_pair_columns,
    read_compared_files,
    read_prediction_file,
)

#: the variables ``--by`` accepts (the prediction file's column of the same name)
VARIABLES: tuple[str, ...] = SUBGROUP_COLUMNS
#: age bands in years: [low, high) and their names
AGE_BANDS: tuple[tuple[float, float, str], ...] = (
    (0.0, 40.0, "<40"),
    (40.0, 60.0, "40–59"),
    (60.0, 80.0, "60–79"),
    (80.0, float("inf"), "≥80"),
)
#: values that say "unknown" (no subgroup), compared case-insensitively after stripping
UNKNOWN_VALUES = frozenset({"", "u", "unknown", "nan", "none", "null"})
INDEPENDENT = "independent (no shared patient)"
PATIENT_BOOTSTRAP = "patient bootstrap (shared patients)"

SUBGROUP_COLUMNS_OUT = (
    "variable",
    "subgroup",
    "label",
    "n_images",
    "n_pos",
    "n_neg",
    "n_patients",
    "n_pos_patients",
    "n_neg_patients",
    "auroc",
    "auroc_ci_low",
    "auroc_ci_high",
    "n_degenerate",
    "flag",
    "note",
)
GAP_COLUMNS = (
    "variable",
    "label",
    "higher",
    "lower",
    "auroc_higher",
    "auroc_lower",
    "gap",
    "gap_ci_low",
    "gap_ci_high",
    "p_value",
    "p_holm",
    "test",
    "shared_patients",
    "n_pairs",
    "flag",
    "note",
)


def check_variable(by: str) -> str:
    """``by`` if it is a subgroup variable, else one clear error listing them."""
    if by not in VARIABLES:
        raise DataError(f"--by {by}: choose one of {', '.join(VARIABLES)}")
    return by


def age_band(age: pd.Series) -> pd.Series:
    """The band name of each age in years (NaN, negative or non-numeric: NaN)."""
    years = pd.to_numeric(age, errors="coerce")
    out = pd.Series(np.nan, index=age.index, dtype=object)
    for low, high, name in AGE_BANDS:
        out[(years >= low) & (years < high)] = name
    return out


def subgroup_values(df: pd.DataFrame, by: str, source: str) -> pd.Series:
    """Each row's subgroup for ``by`` (NaN: no value). DataError naming ``source`` and the column when the
    file does not carry it."""
    check_variable(by)
    if by not in df.columns:
        raise DataError(
            f"{source}: no column '{by}' for --by {by} (it has {', '.join(map(str, df.columns))}); "
            "predictions written before subgroup columns existed lack it: rerun the cell, or add the column"
        )
    if by == "age":
        return age_band(df[by])
    values = df[by].astype(object).where(df[by].notna())
    text = values.astype(str).str.strip()
    return text.where(values.notna() & ~text.str.lower().isin(UNKNOWN_VALUES))


def subgroup_order(by: str, values: pd.Series) -> list[str]:
    """The subgroups present, in a fixed order (age: by band; else sorted)."""
    present = set(values.dropna().astype(str))
    if by == "age":
        return [name for _, _, name in AGE_BANDS if name in present]
    return sorted(present)


@dataclass
class SubgroupAnalysis:
    """One variable of one set of predictions: per-subgroup scores, the table and the largest gaps."""

    variable: str
    subgroups: list[str]
    scores: dict[str, dict[str, LabelScores]]  # subgroup → label → scores
    table: pd.DataFrame  # SUBGROUP_COLUMNS_OUT, one row per subgroup × label
    gaps: pd.DataFrame  # GAP_COLUMNS, one row per label: its largest gap
    n_without: int  # images with no value for the variable (in no subgroup)


def _label_row(by: str, group: str, ls: LabelScores, n_images: int) -> dict:
    lo, hi = ls.auroc_ci()
    flag = (
        f"⚠ {ls.n_pos_patients} positive patient(s) (< {FEW_POSITIVE_PATIENTS})"
        if ls.n_pos_patients < FEW_POSITIVE_PATIENTS
        else ""
    )
    return {
        "variable": by,
        "subgroup": group,
        "label": ls.label,
        "n_images": n_images,
        "n_pos": ls.n_pos,
        "n_neg": ls.n_neg,
        "n_patients": ls.n_patients,
        "n_pos_patients": ls.n_pos_patients,
        "n_neg_patients": ls.n_neg_patients,
        "auroc": ls.auroc,
        "auroc_ci_low": lo,
        "auroc_ci_high": hi,
        "n_degenerate": ls.n_degenerate,
        "flag": flag,
        "note": ls.reason or ls.interval_note,
    }


def _label_patients(rows: pd.DataFrame, label: str) -> set[str]:
    known = rows[(rows["label"].astype(str) == label) & rows["y_true"].notna()]
    return set(known["patient_id"].astype(str))


def pair_gap(a: LabelScores, b: LabelScores, shared_patients: int) -> dict:
    """Δ = A − B of one label between two subgroups: MOVER on their hm-score intervals, independent
    (correlation 0) when they share no patient, else with the correlation of their patient-bootstrap
    replicates (``compare.paired_label_delta``). Returns delta, ci_low, ci_high, p_value, test."""
    if shared_patients > 0:
        d = paired_label_delta(a, b)
        return {
            "delta": d.delta,
            "ci_low": d.ci_low,
            "ci_high": d.ci_high,
            "p_value": d.p_value,
            "test": PATIENT_BOOTSTRAP,
        }
    lo, hi, p = mover_interval_and_p(a.auroc, b.auroc, a.auroc_ci, b.auroc_ci, 0.0)
    return {
        "delta": a.auroc - b.auroc,
        "ci_low": max(lo, -1.0),
        "ci_high": min(hi, 1.0),
        "p_value": p,
        "test": INDEPENDENT,
    }


def analyse_subgroups(
    predictions: pd.DataFrame,
    by: str,
    resamples: PatientResamples,
    labels: list[str],
    source: str = "predictions",
) -> SubgroupAnalysis:
    """Per-subgroup AUROC of every label in ``labels`` and each label's largest gap between subgroups.

    ``predictions``: one split's long-form rows with the column ``by``; ``resamples``: the patient
    resamples of that whole split (every subgroup is scored under them)."""
    values = subgroup_values(predictions, by, source)
    groups = subgroup_order(by, values)
    n_without = int(predictions.loc[values.isna(), "image_id"].nunique())
    scores: dict[str, dict[str, LabelScores]] = {}
    rows, patients = [], {}
    for g in groups:
        part = predictions[(values == g).to_numpy()]
        scores[g] = score_predictions(part, resamples, labels, name=g).labels
        n_images = int(part.loc[part["y_true"].notna(), "image_id"].nunique())
        rows.extend(_label_row(by, g, scores[g][k], n_images) for k in labels)
        patients[g] = {k: _label_patients(part, k) for k in labels}
    table = pd.DataFrame(rows, columns=list(SUBGROUP_COLUMNS_OUT))
    pairs = []
    for label in labels:
        usable = [g for g in groups if scores[g][label].defined and not scores[g][label].interval_note]
        for g1, g2 in combinations(usable, 2):
            hi_g, lo_g = (g1, g2) if scores[g1][label].auroc >= scores[g2][label].auroc else (g2, g1)
            shared = len(patients[hi_g][label] & patients[lo_g][label])
            gap = pair_gap(scores[hi_g][label], scores[lo_g][label], shared)
            few = [g for g in (hi_g, lo_g) if scores[g][label].n_pos_patients < FEW_POSITIVE_PATIENTS]
            pairs.append(
                {
                    "variable": by,
                    "label": label,
                    "higher": hi_g,
                    "lower": lo_g,
                    "auroc_higher": scores[hi_g][label].auroc,
                    "auroc_lower": scores[lo_g][label].auroc,
                    "gap": gap["delta"],
                    "gap_ci_low": gap["ci_low"],
                    "gap_ci_high": gap["ci_high"],
                    "p_value": gap["p_value"],
                    "test": gap["test"],
                    "shared_patients": shared,
                    "flag": f"⚠ {', '.join(few)}: < {FEW_POSITIVE_PATIENTS} positive patients" if few else "",
                }
            )
    all_pairs = pd.DataFrame(pairs)
    gaps = _largest_gaps(all_pairs, labels, by, scores, groups)
    return SubgroupAnalysis(by, groups, scores, table, gaps, n_without)


def _largest_gaps(
    all_pairs: pd.DataFrame,
    labels: list[str],
    by: str,
    scores: dict[str, dict[str, LabelScores]],
    groups: list[str],
) -> pd.DataFrame:
    """Each label's largest gap, with Holm over every pair of every label (the family the largest is picked
    from)."""
    if all_pairs.empty:
        out = []
    else:
        all_pairs["p_holm"] = adjust_p_values(all_pairs["p_value"], "holm")
        all_pairs["n_pairs"] = all_pairs.groupby("label")["label"].transform("size")
        family = int(all_pairs["p_value"].notna().sum())
        out = []
        for _, g in all_pairs.groupby("label", sort=False):
            best = g.loc[g["gap"].idxmax()].to_dict()
            best["note"] = (
                f"largest of {int(best['n_pairs'])} pair(s); Holm over {family} pair(s) of {len(labels)}"
                " label(s)"
            )
            out.append(best)
    have = {r["label"] for r in out}
    for label in labels:
        if label not in have:
            usable = [g for g in groups if scores[g][label].defined and not scores[g][label].interval_note]
            out.append(
                {
                    "variable": by,
                    "label": label,
                    "n_pairs": 0,
                    "note": f"no gap: {len(usable)} subgroup(s) with an interval (needs 2)",
                    "flag": "",
                    "test": "",
                    "shared_patients": 0,
                }
            )
    order = {k: i for i, k in enumerate(labels)}
    frame = pd.DataFrame(out).reindex(columns=list(GAP_COLUMNS))
    return frame.sort_values("label", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)


def score_file_by(
    path: str | Path, by: str, n_boot: int = 2000, seed: int = 0, labels: str | None = None
) -> tuple[SubgroupAnalysis, str]:
    """``chexbench score PRED --by VAR``: the subgroup analysis of one prediction file (test rows), over the
    labels ``score`` would use; returns it and where the labels came from."""
    check_variable(by)
    df = read_prediction_file(path)
    subgroup_values(df, by, str(path))  # the missing-column error before any work
    choice = choose_labels([Path(path)], [df], labels)
    resamples = draw_patient_resamples(df["patient_id"], n_boot, seed)
    return analyse_subgroups(df, by, resamples, choice.labels, str(path)), choice.source


@dataclass
class SubgroupComparison:
    """``chexbench compare --by``: per pair of models, the paired Δ (A − B) in each subgroup; each model's
    gaps."""

    variable: str
    table: pd.DataFrame  # one row per pair × subgroup × label
    analyses: dict[str, SubgroupAnalysis]  # model → its own subgroup analysis
    labels_source: str
    family: str


def compare_files_by(
    paths: list[str | Path],
    by: str,
    baseline: str | Path | None = None,
    on_shared: bool = False,
    n_boot: int = 2000,
    seed: int = 0,
    labels: str | None = None,
) -> SubgroupComparison:
    """Paired ΔAUROC (A − B) of every pair of prediction files (or each vs ``baseline``) within each subgroup
    of ``by`` (``compare.paired_label_delta``: MOVER on the hm-score arms, same patient resamples), Holm and
    BH over every (pair, subgroup, label); and each model's own subgroup table and largest gaps. Every
    file must carry the column, with the same value for an image in each."""
    check_variable(by)
    paths, frames = read_compared_files(paths, baseline)
    names = list(frames)
    for df, p in zip(frames.values(), paths, strict=True):
        subgroup_values(df, by, str(p))
    choice = choose_labels(paths, list(frames.values()), labels)
    frames = {
        n: df[df["label"].astype(str).isin(choice.labels)].reset_index(drop=True) for n, df in frames.items()
    }
    j, _ = align_predictions(frames, on_shared)
    key = pd.MultiIndex.from_arrays([j["image_id"], j["label"]])
    for df, p in zip(frames.values(), paths, strict=True):
        v = df.set_index(pd.MultiIndex.from_arrays([df["image_id"].astype(str), df["label"].astype(str)]))[by]
        v = v.loc[key]
        if by not in j.columns:
            j[by] = v.to_numpy()
            first = p
            continue
        same = (v.to_numpy() == j[by].to_numpy()) | (pd.isna(v.to_numpy()) & pd.isna(j[by].to_numpy()))
        if not same.all():
            i = int(np.flatnonzero(~same)[0])
            raise DataError(
                f"image '{j['image_id'].iloc[i]}': column '{by}' is {j[by].iloc[i]!r} in {first} but "
                f"{v.iloc[i]!r} in {p}"
            )
    resamples = draw_patient_resamples(j["patient_id"], n_boot, seed)
    truth = j[["image_id", "patient_id", "label", "y_true", by]]
    analyses = {
        n: analyse_subgroups(truth.assign(y_score=j[f"y_score::{n}"]), by, resamples, choice.labels, n)
        for n in names
    }
    if baseline is not None:
        base = names[paths.index(Path(baseline))]
        pairs = [(n, base) for n in names if n != base]
    else:
        pairs = [(names[i], names[k]) for i in range(len(names)) for k in range(i + 1, len(names))]
    rows = []
    for a, b in pairs:
        sa, sb = analyses[a], analyses[b]
        for g in sa.subgroups:
            for label in choice.labels:
                la, lb = sa.scores[g][label], sb.scores[g][label]
                row = {
                    "model_a": a,
                    "model_b": b,
                    "variable": by,
                    "subgroup": g,
                    "label": label,
                    **label_pair_columns(la, lb),
                }
                if not la.defined or la.interval_note:
                    rows.append({**row, "delta": la.auroc - lb.auroc, "note": la.reason or la.interval_note})
                    continue
                d = paired_label_delta(la, lb)
                rows.append(
                    {
                        **row,
                        "delta": d.delta,
                        "delta_ci_low": d.ci_low,
                        "delta_ci_high": d.ci_high,
                        "p_value": d.p_value,
                        "n_degenerate": d.n_degenerate,
                        "note": "",
                    }
                )
    table = pd.DataFrame(rows)
    for col in ("delta_ci_low", "delta_ci_high", "p_value", "n_degenerate"):
        if col not in table.columns:
            table[col] = np.nan
    table["p_holm"] = adjust_p_values(table["p_value"], "holm") if len(table) else []
    table["p_bh"] = adjust_p_values(table["p_value"], "bh") if len(table) else []
    n = int(table["p_value"].notna().sum()) if len(table) else 0
    family = (
        f"Within-subgroup comparisons: {len(pairs)} pair(s) × subgroups of {by} × labels; Holm and "
        f"Benjamini–Hochberg over the {n} with a p (statsmodels multipletests)."
    )
    return SubgroupComparison(by, table, analyses, choice.source, family)
