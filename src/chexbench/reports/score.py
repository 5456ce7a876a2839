"""Scoring and comparing prediction files from any model (``chexbench score`` / ``compare``).

A prediction file is CSV or Parquet in long form: ``image_id, patient_id, label, y_true,
y_score`` (``y_true`` empty/NaN = masked; an optional ``split`` column: only ``test`` rows
are scored when it has any).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from chexbench.bench.store import atomic_write_parquet, atomic_write_text
from chexbench.errors import DataError
from chexbench.reports.bootstrap import (
    CellScores,
    check_prediction_frame,
    draw_patient_resamples,
    macro_point,
    macro_replicates,
    percentile_ci,
    score_predictions,
)
from chexbench.reports.compare import adjust_p_values, paired_delta
from chexbench.reports.delong import paired_delong_test

MACRO = "macro"


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


def _summary_rows(scores: CellScores) -> list[dict]:
    rows = []
    for name, ls in scores.labels.items():
        a_lo, a_hi = percentile_ci(ls.auroc_boot)
        p_lo, p_hi = percentile_ci(ls.auprc_boot)
        rows.append({"label": name, "n_pos": ls.n_pos, "n_neg": ls.n_neg, "n_patients": ls.n_patients,
                     "auroc": ls.auroc, "auroc_ci_low": a_lo, "auroc_ci_high": a_hi,
                     "auprc": ls.auprc, "auprc_ci_low": p_lo, "auprc_ci_high": p_hi,
                     "n_degenerate": ls.n_degenerate, "note": ls.reason})
    return rows


def score_file(path: str | Path, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per-label and macro AUROC / AUPRC with patient-level bootstrap 95% intervals."""
    df = read_prediction_file(path)
    resamples = draw_patient_resamples(df["patient_id"], n_boot, seed)
    scores = score_predictions(df, resamples)
    rows = _summary_rows(scores)
    defined = scores.defined_labels()
    macro = {"label": MACRO, "n_pos": sum(scores.labels[k].n_pos for k in defined),
             "n_neg": sum(scores.labels[k].n_neg for k in defined), "n_patients": scores.n_patients}
    for metric in ("auroc", "auprc"):
        reps = macro_replicates(scores, defined, metric)
        lo, hi = percentile_ci(reps)
        macro.update({metric: macro_point(scores, defined, metric), f"{metric}_ci_low": lo, f"{metric}_ci_high": hi})
    macro["n_degenerate"] = int(np.isnan(macro_replicates(scores, defined)).sum()) if defined else n_boot
    macro["note"] = f"mean over {len(defined)} defined label(s)" if defined else "no label has both classes"
    return pd.DataFrame([*rows, macro])


def align_pair(a: pd.DataFrame, b: pd.DataFrame, name_a: str, name_b: str) -> pd.DataFrame:
    """Inner join of two prediction tables on (image_id, label); y_true and patient_id must agree."""
    cols = ["image_id", "label", "patient_id", "y_true", "y_score"]
    j = a[cols].merge(b[cols], on=["image_id", "label"], suffixes=("_a", "_b"), how="inner")
    if j.empty:
        raise DataError(f"{name_a} and {name_b} share no (image_id, label) row: not the same test set")
    bad = j["patient_id_a"].astype(str) != j["patient_id_b"].astype(str)
    if bad.any():
        raise DataError(f"image '{j.loc[bad, 'image_id'].iloc[0]}' has different patient_id in {name_a} and {name_b}")
    both = j["y_true_a"].notna() & j["y_true_b"].notna()
    bad = both & (j["y_true_a"] != j["y_true_b"])
    if bad.any():
        r = j.loc[bad].iloc[0]
        raise DataError(f"image '{r['image_id']}' label '{r['label']}': y_true differs between {name_a} and {name_b}")
    j = j[both]
    return j.rename(columns={"patient_id_a": "patient_id", "y_true_a": "y_true"}).drop(columns=["patient_id_b", "y_true_b"])


def compare_files(path_a: str | Path, path_b: str | Path, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Paired Δ (A − B) per label and macro on the shared images: bootstrap CI and p (primary),
    Holm / BH over this pair's per-label family, DeLong and clustered DeLong as cross-checks."""
    a, b = read_prediction_file(path_a), read_prediction_file(path_b)
    j = align_pair(a, b, str(path_a), str(path_b))
    resamples = draw_patient_resamples(j["patient_id"], n_boot, seed)
    base = j[["image_id", "patient_id", "label", "y_true"]]
    sa = score_predictions(base.assign(y_score=j["y_score_a"]), resamples, name="A")
    sb = score_predictions(base.assign(y_score=j["y_score_b"]), resamples, name="B")
    rows = []
    groups = {str(k): g for k, g in j.groupby("label", sort=False)}
    for label, la in sa.labels.items():
        lb = sb.labels[label]
        row = {"label": label, "n_pos": la.n_pos, "n_neg": la.n_neg, "n_patients": la.n_patients,
               "auroc_a": la.auroc, "auroc_b": lb.auroc}
        if not la.defined:
            rows.append({**row, "delta": np.nan, "note": la.reason})
            continue
        d = paired_delta(la.auroc, lb.auroc, la.auroc_boot, lb.auroc_boot)
        g = groups[label]
        y, s1, s2 = g["y_true"].to_numpy(), g["y_score_a"].to_numpy(), g["y_score_b"].to_numpy()
        dl = paired_delong_test(y, s1, s2)
        try:
            dc = paired_delong_test(y, s1, s2, cluster=g["patient_id"].to_numpy())
            dc_p, dc_lo, dc_hi = dc.p_value, dc.ci_low, dc.ci_high
        except ValueError:
            dc_p = dc_lo = dc_hi = np.nan
        rows.append({**row, "delta": d.delta, "delta_ci_low": d.ci_low, "delta_ci_high": d.ci_high, "p_value": d.p_value,
                     "n_degenerate": d.n_degenerate, "delong_ci_low": dl.ci_low, "delong_ci_high": dl.ci_high,
                     "delong_p": dl.p_value, "clustered_delong_ci_low": dc_lo, "clustered_delong_ci_high": dc_hi,
                     "clustered_delong_p": dc_p, "note": ""})
    out = pd.DataFrame(rows)
    for col in ("delta_ci_low", "delta_ci_high", "p_value", "n_degenerate", "delong_p", "clustered_delong_p"):
        if col not in out.columns:
            out[col] = np.nan
    out["p_holm"] = adjust_p_values(out["p_value"], "holm")
    out["p_bh"] = adjust_p_values(out["p_value"], "bh")
    defined = sa.defined_labels()
    if defined:
        d = paired_delta(macro_point(sa, defined), macro_point(sb, defined),
                         macro_replicates(sa, defined), macro_replicates(sb, defined))
        macro = {"label": MACRO, "n_patients": sa.n_patients, "auroc_a": macro_point(sa, defined),
                 "auroc_b": macro_point(sb, defined), "delta": d.delta, "delta_ci_low": d.ci_low,
                 "delta_ci_high": d.ci_high, "p_value": d.p_value, "n_degenerate": d.n_degenerate,
                 "note": f"mean over {len(defined)} defined label(s); primary test (no correction needed)"}
        out = pd.concat([out, pd.DataFrame([macro])], ignore_index=True)
    return out


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
