"""Scoring and comparing prediction files from any model (``chexbench score`` / ``compare``).

A prediction file is CSV or Parquet in long form: ``image_id, patient_id, label, y_true,
y_score`` (``y_true`` empty/NaN = masked; an optional ``split`` column: only ``test`` rows
are scored when it has any).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import norm

from chexbench.bench.store import recorded_eval_labels
from chexbench.core.atomic import atomic_write_parquet, atomic_write_text
from chexbench.core.errors import DataError
from chexbench.reports.bootstrap import (
    CellScores,
    LabelScores,
    check_prediction_frame,
    draw_patient_resamples,
    macro_ci,
    macro_point,
    macro_replicates,
    score_predictions,
)
from chexbench.reports.compare import (
    adjust_p_values,
    paired_label_delta,
    paired_macro_delta,
    paired_mover_delta,
)
from chexbench.reports.delong import auroc_influence, influence_variance, paired_delong_test
from chexbench.reports.intervals import FEW_POSITIVE_PATIENTS

MACRO = "macro"
Z95 = float(norm.ppf(0.975))
#: above this share of degenerate resamples an interval is flagged as unreliable (as in the report)
DEGENERATE_WARN = 0.05


@dataclass(frozen=True)
class LabelChoice:
    """The labels a score or comparison averages over, and where they came from (said in the output)."""

    labels: list[str]
    source: str


def choose_labels(paths: list[Path], frames: list[pd.DataFrame], requested: str | None = None) -> LabelChoice:
    """The evaluation labels: ``requested`` ("all", or comma-separated names that every file
    must hold), else the dataset's evaluation labels recorded with the predictions (the labels
    the report's macro averages over; files recorded with different ones are an error), else
    every label of the first file."""
    present = [list(dict.fromkeys(df["label"].astype(str))) for df in frames]
    if requested is not None and requested.strip().lower() != "all":
        wanted = list(dict.fromkeys(x.strip() for x in requested.split(",") if x.strip()))
        if not wanted:
            raise DataError("--labels: give label names separated by commas, or 'all'")
        for p, have in zip(paths, present, strict=True):
            missing = [x for x in wanted if x not in have]
            if missing:
                raise DataError(
                    f"--labels: {p} has no row of label(s) {', '.join(missing)} (it has {', '.join(have)})"
                )
        return LabelChoice(wanted, "chosen with --labels")
    if requested is None:
        recorded = [recorded_eval_labels(p) for p in paths]
        found = [(p, r) for p, r in zip(paths, recorded, strict=True) if r is not None]
        if found:
            first_path, (labels, source) = found[0]
            for p, (other, _) in found[1:]:
                if other != labels:
                    raise DataError(
                        f"{first_path} and {p} were recorded with different evaluation labels "
                        f"({', '.join(labels)} vs {', '.join(other)}); choose with --labels"
                    )
            for p, have in zip(paths, present, strict=True):
                if missing := [x for x in labels if x not in have]:
                    raise DataError(
                        f"{p} has no row of the evaluation label(s) {', '.join(missing)} ({source}); "
                        "choose with --labels"
                    )
            return LabelChoice(
                labels, f"the dataset's evaluation labels, {source} (--labels all: every label)"
            )
    return LabelChoice(
        present[0],
        "every label in the file" + ("" if requested else " (no evaluation labels recorded with it)"),
    )


def degenerate_warnings(
    table: pd.DataFrame, n_boot: int, label_col: str = "label", prefix: str = ""
) -> list[str]:
    """One line per row whose interval rests on fewer resamples than it was given, as the report
    flags them: more than DEGENERATE_WARN of the resamples lost a class of a label."""
    out = []
    for r in table.itertuples(index=False):
        n = getattr(r, "n_degenerate", float("nan"))
        note = str(getattr(r, "interval_note", "") or "")
        if note or not (n_boot and np.isfinite(float(n))) or float(n) / n_boot <= DEGENERATE_WARN:
            continue
        out.append(
            f"{prefix}{getattr(r, label_col)}: {int(n)} of {n_boot} resamples ({float(n) / n_boot:.0%}) lost"
            " every positive or every negative of a label; the interval is conditional on the rest and"
            " unreliable (the test set is too small for it)"
        )
    return out


def read_prediction_file(path: str | Path) -> pd.DataFrame:
    """Read and validate a long-form prediction file; DataError naming the file on any problem."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"prediction file not found: {p}")
    try:
        if p.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(p)
        elif p.suffix.lower() in (".csv", ".gz"):
            df = pd.read_csv(p, dtype={"image_id": str, "patient_id": str, "label": str})
        else:
            raise DataError(f"{p}: expected a .csv or .parquet file")
    except DataError:
        raise
    except Exception as e:  # malformed file: one line, no traceback
        raise DataError(f"{p}: cannot read ({type(e).__name__}: {e})") from None
    check_prediction_frame(df, str(p))
    if "split" in df.columns and (df["split"] == "test").any():
        df = df[df["split"] == "test"]
    if df["y_true"].notna().sum() == 0:
        raise DataError(f"{p}: no row has a known y_true")
    return df.reset_index(drop=True)


def few_patients_flag(ls: LabelScores) -> str:
    """The visible flag of a label with fewer than 10 positive test patients ("" otherwise)."""
    if not ls.few_positive_patients:
        return ""
    return (
        f"⚠ {ls.n_pos_patients} positive patient(s) (< {FEW_POSITIVE_PATIENTS}): interval rests on few"
        " patients"
    )


def macro_flag(scores: CellScores, labels: list[str]) -> str:
    few = [k for k in labels if scores.labels[k].few_positive_patients]
    if not few:
        return ""
    return (
        f"⚠ includes {len(few)} label(s) with < {FEW_POSITIVE_PATIENTS} positive patients ({', '.join(few)})"
    )


def _summary_rows(scores: CellScores) -> list[dict]:
    rows = []
    for name, ls in scores.labels.items():
        a_lo, a_hi = ls.auroc_ci()
        p_lo, p_hi = ls.auprc_ci()
        rows.append(
            {
                "label": name,
                "n_pos": ls.n_pos,
                "n_neg": ls.n_neg,
                "n_patients": ls.n_patients,
                "n_pos_patients": ls.n_pos_patients,
                "n_neg_patients": ls.n_neg_patients,
                "auroc": ls.auroc,
                "auroc_ci_low": a_lo,
                "auroc_ci_high": a_hi,
                "auprc": ls.auprc,
                "auprc_ci_low": p_lo,
                "auprc_ci_high": p_hi,
                "n_degenerate": ls.n_degenerate,
                "flag": few_patients_flag(ls),
                "interval_note": ls.interval_note,
                "note": ls.reason or ls.interval_note,
            }
        )
    return rows


def _macro_interval_note(scores: CellScores, labels: list[str]) -> str:
    """Why the macro has no interval ("" when it has one): one of its labels has none."""
    without = [k for k in labels if scores.labels[k].interval_note]
    return (
        f"interval not estimable: {', '.join(without)} {'has' if len(without) == 1 else 'have'} fewer than 2"
        " patients per class"
        if without
        else ""
    )


def score_file(
    path: str | Path, n_boot: int = 2000, seed: int = 0, labels: str | None = None
) -> pd.DataFrame:
    """Per-label and macro AUROC / AUPRC with 95% intervals (intervals.py: per-label AUROC hm-score, per-label
    AUPRC
    logit-t-adj on patient-level bootstrap standard errors, macro MOVER over its labels' intervals), over the
    labels of :func:`choose_labels` (by default the evaluation labels recorded with the
    predictions, as the report; the table's ``attrs["labels_source"]`` says which)."""
    df = read_prediction_file(path)
    choice = choose_labels([Path(path)], [df], labels)
    resamples = draw_patient_resamples(df["patient_id"], n_boot, seed)
    scores = score_predictions(df, resamples, choice.labels)
    rows = _summary_rows(scores)
    defined = scores.defined_labels()
    macro = {
        "label": MACRO,
        "n_pos": sum(scores.labels[k].n_pos for k in defined),
        "n_neg": sum(scores.labels[k].n_neg for k in defined),
        "n_patients": scores.n_patients,
    }
    for metric in ("auroc", "auprc"):
        lo, hi = macro_ci(scores, defined, metric)
        macro.update(
            {metric: macro_point(scores, defined, metric), f"{metric}_ci_low": lo, f"{metric}_ci_high": hi}
        )
    macro["n_degenerate"] = int(np.isnan(macro_replicates(scores, defined)).sum()) if defined else n_boot
    macro["flag"] = macro_flag(scores, defined)
    macro["interval_note"] = _macro_interval_note(scores, defined)
    macro["note"] = "; ".join(
        x
        for x in (
            f"mean over {len(defined)} defined label(s)" if defined else "no label has both classes",
            macro["interval_note"],
        )
        if x
    )
    out = pd.DataFrame([*rows, macro])
    out.attrs["labels_source"] = choice.source
    return out


@dataclass
class Comparison:
    """Paired comparisons of several prediction files on their common test rows."""

    table: pd.DataFrame  # one row per (pair, label) and one macro row per pair
    models: list[str]  # display names, in the order given
    pairs: list[tuple[str, str]]  # (A, B): Δ = A − B
    n_rows: int  # (image, label) rows compared
    n_patients: int
    rows_of: dict[str, int]  # each model's (image, label) rows in its file
    lost: dict[str, int]  # rows of each file left out (only with on_shared)
    family: str  # the comparison family and correction, in words
    labels_source: str = ""  # which labels were compared and why (choose_labels)
    labels: list[str] | None = None


def _row_keys(df: pd.DataFrame) -> pd.Index:
    return pd.MultiIndex.from_arrays([df["image_id"].astype(str), df["label"].astype(str)])


def align_predictions(
    frames: dict[str, pd.DataFrame], on_shared: bool = False
) -> tuple[pd.DataFrame, dict[str, int]]:
    """One wide table (image_id, label, patient_id, y_true, one y_score column per model) of the
    rows every model covers. Different row sets are an error unless ``on_shared``; patient ids and
    ``y_true`` (masked or not included) must agree. Returns the table and the rows each model lost."""
    names = list(frames)
    keys = {n: _row_keys(df) for n, df in frames.items()}
    shared = keys[names[0]]
    for n in names[1:]:
        shared = shared.intersection(keys[n])
    lost = {n: int(len(keys[n]) - len(shared)) for n in names}
    if len(shared) == 0:
        raise DataError(f"{' and '.join(names)} share no (image_id, label) row: not the same test set")
    if any(lost.values()) and not on_shared:
        counts = ", ".join(f"{len(keys[n])} in {n}" for n in names)
        raise DataError(
            f"the prediction files cover different test rows ((image, label) rows: {counts}; {len(shared)}"
            " shared); pass --on-shared to compare on the shared rows only"
        )
    base_name = names[0]
    base = frames[base_name][keys[base_name].isin(shared)]
    out = base[["image_id", "label", "patient_id", "y_true"]].astype(
        {"image_id": str, "label": str, "patient_id": str}
    )
    out = out.reset_index(drop=True)
    index = _row_keys(out)
    for n in names:
        df = frames[n]
        other = df.set_index(keys[n]).loc[index]
        pid = other["patient_id"].astype(str).to_numpy()
        bad = pid != out["patient_id"].to_numpy()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"image '{out['image_id'].iloc[i]}' has patient id '{out['patient_id'].iloc[i]}' in"
                f" {base_name} but '{pid[i]}' in {n}"
            )
        y = other["y_true"].to_numpy(dtype=float)
        y0 = out["y_true"].to_numpy(dtype=float)
        differ = ~((y == y0) | (np.isnan(y) & np.isnan(y0)))
        if differ.any():
            i = int(np.flatnonzero(differ)[0])
            raise DataError(
                f"image '{out['image_id'].iloc[i]}' label '{out['label'].iloc[i]}': y_true differs between"
                f" {base_name} ({y0[i]:g}) and {n} ({y[i]:g}); the files are not paired (another label"
                " policy?)"
            )
        out[f"y_score::{n}"] = other["y_score"].to_numpy(dtype=float)
    return out, lost


def read_compared_files(
    paths: list[str | Path], baseline: str | Path | None = None
) -> tuple[list[Path], dict[str, pd.DataFrame]]:
    """The files ``compare`` reads (``baseline`` appended when not among them), each read and checked, keyed
    by
    file name (by path when two names collide); one line for a file given twice or fewer than two files."""
    paths = [Path(p) for p in paths]
    if baseline is not None and Path(baseline) not in paths:
        paths.append(Path(baseline))
    if len(set(paths)) != len(paths):
        raise DataError("the same prediction file is given twice")
    if len(paths) < 2:
        raise DataError("compare needs at least two prediction files (or one and --baseline)")
    return paths, {n: read_prediction_file(p) for n, p in zip(_names(paths), paths, strict=True)}


def _names(paths: list[Path]) -> list[str]:
    short = [p.name for p in paths]
    return short if len(set(short)) == len(short) else [str(p) for p in paths]


def _macro_delong(g: pd.DataFrame, labels: list[str], a: str, b: str) -> tuple[float, float]:
    """Unclustered and patient-clustered standard errors of the macro ΔAUROC (A − B) over
    ``labels``: per-image influences summed over labels before squaring (delong.py)."""
    frames = []
    for label in labels:
        gl = g[g["label"] == label]
        y = gl["y_true"].to_numpy()
        _, psi_a = auroc_influence(y, gl[f"y_score::{a}"].to_numpy())
        _, psi_b = auroc_influence(y, gl[f"y_score::{b}"].to_numpy())
        frames.append(
            pd.DataFrame(
                {
                    "image_id": gl["image_id"].to_numpy(),
                    "patient_id": gl["patient_id"].to_numpy(),
                    "psi": (psi_a - psi_b) / len(labels),
                }
            )
        )
    psi = pd.concat(frames, ignore_index=True)
    per_image = psi.groupby("image_id", sort=True).agg(psi=("psi", "sum"), patient_id=("patient_id", "first"))
    se = float(np.sqrt(influence_variance(per_image["psi"].to_numpy())))
    se_clustered = float(
        np.sqrt(influence_variance(per_image["psi"].to_numpy(), per_image["patient_id"].to_numpy()))
    )
    return se, se_clustered


def _normal_test(delta: float, se: float) -> tuple[float, float, float]:
    """(CI low, CI high, two-sided p) of a normal test of Δ = 0."""
    if not (np.isfinite(se) and se > 0):
        return float("nan"), float("nan"), float("nan")
    return delta - Z95 * se, delta + Z95 * se, float(2 * norm.sf(abs(delta) / se))


def compare_predictions(
    paths: list[str | Path],
    baseline: str | Path | None = None,
    on_shared: bool = False,
    n_boot: int = 2000,
    seed: int = 0,
    labels: str | None = None,
) -> Comparison:
    """Paired ΔAUROC and ΔAUPRC for every pair of prediction files (or each vs ``baseline``) on
    their common test rows, with the same patient resamples for every model: bootstrap CI and p
    (primary), DeLong and clustered DeLong (cross-checks, per label and macro); Holm and BH over
    the per-label comparisons of all pairs, Holm over the macro comparisons of all pairs."""
    paths, frames = read_compared_files(paths, baseline)
    names = list(frames)
    choice = choose_labels(paths, list(frames.values()), labels)
    frames = {
        n: df[df["label"].astype(str).isin(choice.labels)].reset_index(drop=True) for n, df in frames.items()
    }
    rows_of = {n: len(df) for n, df in frames.items()}
    j, lost = align_predictions(frames, on_shared)
    resamples = draw_patient_resamples(j["patient_id"], n_boot, seed)
    truth = j[["image_id", "patient_id", "label", "y_true"]]
    scores = {
        n: score_predictions(truth.assign(y_score=j[f"y_score::{n}"]), resamples, choice.labels, name=n)
        for n in names
    }
    if baseline is not None:
        base_name = names[paths.index(Path(baseline))]
        pairs = [(n, base_name) for n in names if n != base_name]
        family = f"each of the {len(pairs)} model(s) vs the baseline {base_name}"
    else:
        pairs = [(names[i], names[k]) for i in range(len(names)) for k in range(i + 1, len(names))]
        family = f"all {len(pairs)} pair(s) of the {len(names)} models"
    known = j[j["y_true"].notna()]
    groups = {str(k): g for k, g in known.groupby("label", sort=False)}
    rows = []
    for a, b in pairs:
        sa, sb = scores[a], scores[b]
        for label, la in sa.labels.items():
            rows.append(_label_row(a, b, label, la, sb.labels[label], groups.get(label)))
        defined = sa.defined_labels()
        if defined:
            rows.append(_macro_row(a, b, sa, sb, defined, known))
    table = pd.DataFrame(rows)
    for col in (
        "delta_ci_low",
        "delta_ci_high",
        "p_value",
        "n_degenerate",
        "delong_p",
        "clustered_delong_p",
        "auprc_delta",
        "auprc_delta_ci_low",
        "auprc_delta_ci_high",
    ):
        if col not in table.columns:
            table[col] = np.nan
    table["interval_note"] = table["interval_note"].fillna("") if "interval_note" in table.columns else ""
    is_macro = table["label"] == MACRO
    table["p_holm"] = np.nan
    table["p_bh"] = np.nan
    table.loc[~is_macro, "p_holm"] = adjust_p_values(table.loc[~is_macro, "p_value"], "holm")
    table.loc[~is_macro, "p_bh"] = adjust_p_values(table.loc[~is_macro, "p_value"], "bh")
    table.loc[is_macro, "p_holm"] = adjust_p_values(table.loc[is_macro, "p_value"], "holm")
    table.loc[is_macro, "p_bh"] = adjust_p_values(table.loc[is_macro, "p_value"], "bh")
    n_macro = int(is_macro.sum())
    n_label = int(table.loc[~is_macro, "p_value"].notna().sum())
    family_text = (
        f"Comparisons: {family}. Corrections (statsmodels multipletests): Holm over the {n_macro} macro "
        f"comparison(s); Holm and Benjamini–Hochberg over the {n_label} per-label comparison(s) of all pairs."
    )
    return Comparison(
        table,
        names,
        pairs,
        int(len(j)),
        int(j["patient_id"].nunique()),
        rows_of,
        lost,
        family_text,
        choice.source,
        list(choice.labels),
    )


def label_pair_columns(la: LabelScores, lb: LabelScores) -> dict:
    """The columns of one label scored by two models on the same images: counts (from ``la``: both
    score the same rows), the few-patients flag, and each model's AUROC with its interval."""
    a_lo, a_hi = la.auroc_ci()
    b_lo, b_hi = lb.auroc_ci()
    return {
        "n_pos": la.n_pos,
        "n_neg": la.n_neg,
        "n_patients": la.n_patients,
        "n_pos_patients": la.n_pos_patients,
        "flag": few_patients_flag(la),
        "auroc_a": la.auroc,
        "auroc_a_ci_low": a_lo,
        "auroc_a_ci_high": a_hi,
        "auroc_b": lb.auroc,
        "auroc_b_ci_low": b_lo,
        "auroc_b_ci_high": b_hi,
    }


def _label_row(a: str, b: str, label: str, la: LabelScores, lb: LabelScores, g: pd.DataFrame | None) -> dict:
    row = {
        "model_a": a,
        "model_b": b,
        "label": label,
        **label_pair_columns(la, lb),
        "auprc_a": la.auprc,
        "auprc_b": lb.auprc,
    }
    if not la.defined or g is None:
        return {**row, "delta": np.nan, "note": la.reason}
    if (
        la.interval_note
    ):  # fewer than 2 patients per class: no interval, no p (DeLong's included), only the point Δ
        return {
            **row,
            "delta": la.auroc - lb.auroc,
            "auprc_delta": la.auprc - lb.auprc,
            "n_degenerate": len(la.auroc_boot),
            "interval_note": la.interval_note,
            "note": la.interval_note,
        }
    d = paired_label_delta(la, lb)
    dp = paired_mover_delta(la.auprc, lb.auprc, la.auprc_ci, lb.auprc_ci, la.auprc_boot, lb.auprc_boot)
    y, s1, s2 = g["y_true"].to_numpy(), g[f"y_score::{a}"].to_numpy(), g[f"y_score::{b}"].to_numpy()
    dl = paired_delong_test(y, s1, s2)
    try:
        dc = paired_delong_test(y, s1, s2, cluster=g["patient_id"].to_numpy())
        dc_p, dc_lo, dc_hi = dc.p_value, dc.ci_low, dc.ci_high
    except ValueError:
        dc_p = dc_lo = dc_hi = np.nan
    return {
        **row,
        "delta": d.delta,
        "delta_ci_low": d.ci_low,
        "delta_ci_high": d.ci_high,
        "p_value": d.p_value,
        "auprc_delta": dp.delta,
        "auprc_delta_ci_low": dp.ci_low,
        "auprc_delta_ci_high": dp.ci_high,
        "auprc_p_value": dp.p_value,
        "n_degenerate": d.n_degenerate,
        "delong_ci_low": dl.ci_low,
        "delong_ci_high": dl.ci_high,
        "delong_p": dl.p_value,
        "clustered_delong_ci_low": dc_lo,
        "clustered_delong_ci_high": dc_hi,
        "clustered_delong_p": dc_p,
        "note": "",
    }


def _macro_row(
    a: str, b: str, sa: CellScores, sb: CellScores, defined: list[str], known: pd.DataFrame
) -> dict:
    row = {
        "model_a": a,
        "model_b": b,
        "label": MACRO,
        "n_patients": sa.n_patients,
        "flag": macro_flag(sa, defined),
    }
    for m, s in (("a", sa), ("b", sb)):
        lo, hi = macro_ci(s, defined)
        row.update(
            {
                f"auroc_{m}": macro_point(s, defined),
                f"auroc_{m}_ci_low": lo,
                f"auroc_{m}_ci_high": hi,
                f"auprc_{m}": macro_point(s, defined, "auprc"),
            }
        )
    d, dp = paired_macro_delta(sa, sb, defined), paired_macro_delta(sa, sb, defined, "auprc")
    note = _macro_interval_note(sa, defined)
    if note:  # a label without a patient-level interval: the macro has none either, nor a p-value
        return {
            **row,
            "delta": macro_point(sa, defined) - macro_point(sb, defined),
            "auprc_delta": macro_point(sa, defined, "auprc") - macro_point(sb, defined, "auprc"),
            "n_degenerate": d.n_degenerate,
            "interval_note": note,
            "note": f"mean over {len(defined)} defined label(s); {note}",
        }
    try:
        se, se_c = _macro_delong(known[known["label"].isin(defined)], defined, a, b)
    except ValueError:
        se = se_c = float("nan")
    dl_lo, dl_hi, dl_p = _normal_test(d.delta, se)
    dc_lo, dc_hi, dc_p = _normal_test(d.delta, se_c)
    return {
        **row,
        "delta": d.delta,
        "delta_ci_low": d.ci_low,
        "delta_ci_high": d.ci_high,
        "p_value": d.p_value,
        "auprc_delta": dp.delta,
        "auprc_delta_ci_low": dp.ci_low,
        "auprc_delta_ci_high": dp.ci_high,
        "auprc_p_value": dp.p_value,
        "n_degenerate": d.n_degenerate,
        "delong_ci_low": dl_lo,
        "delong_ci_high": dl_hi,
        "delong_p": dl_p,
        "clustered_delong_ci_low": dc_lo,
        "clustered_delong_ci_high": dc_hi,
        "clustered_delong_p": dc_p,
        "note": f"mean over {len(defined)} defined label(s)",
    }


def compare_files(
    path_a: str | Path,
    path_b: str | Path,
    n_boot: int = 2000,
    seed: int = 0,
    on_shared: bool = False,
    labels: str | None = None,
) -> pd.DataFrame:
    """Paired Δ (A − B) per label and macro (see :func:`compare_predictions`), as one table."""
    return compare_predictions(
        [path_a, path_b], n_boot=n_boot, seed=seed, on_shared=on_shared, labels=labels
    ).table


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` as CSV or Parquet (by suffix), atomically."""
    p = Path(path)
    if p.suffix.lower() in (".parquet", ".pq"):
        atomic_write_parquet(df, p)
    elif p.suffix.lower() == ".csv":
        atomic_write_text(df.to_csv(index=False), p)
    else:
        raise DataError(f"--out {p}: expected a .csv or .parquet file name")
    return p
