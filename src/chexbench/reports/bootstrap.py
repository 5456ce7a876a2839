"""Patient-level (cluster) bootstrap of per-label AUROC and AUPRC, shared across labels and cells.

Images of one patient are correlated, so the resampling unit is the patient (Field & Welsh
2007, cluster bootstrap): draw the test
set's patients with replacement, each image inherits its patient's count as a weight. One set
of resamples is drawn per test set (its sorted patient ids and a seed) and reused for every
label and every cell evaluated on that test set, so paired differences are computed on the
same resampled patients. The resamples give each estimate's standard error; the interval built
from it (per-label AUROC: hm-score; per-label AUPRC: logit-t-adj; macro: MOVER over its labels' intervals;
chosen by a
coverage simulation) is in ``intervals.py``
(:meth:`LabelScores.auroc_ci`, :func:`macro_ci`). ``percentile_ci`` remains for the comparison.

A resample in which a label has no positive (or no negative) weight has no AUROC: it is
recorded as NaN, *counted* (``n_degenerate``) and left out of that label's standard error
(the interval is conditional on both classes being present).

A patient-level interval needs at least two patients on each side of a label
(:data:`MIN_PATIENTS_PER_CLASS`): with one patient holding every positive (or every negative)
image, the resamples either keep that patient or lose the class, so the interval has zero
width and carries no information about other patients. Such a label keeps its point estimate
but no replicate (every resample counted as degenerate): its interval, its macro interval and
every paired Δ / p-value built on it are "not estimable" (``LabelScores.interval_note``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from chexbench.core.auroc import SortedLabel
from chexbench.core.errors import DataError
from chexbench.reports.delong import delong
from chexbench.reports.intervals import (
    FEW_POSITIVE_PATIENTS,
    class_df,
    hm_score_interval,
    logit_t_interval,
    macro_mover_interval,
    replicate_sd,
    small_sample_factor,
)

DEFAULT_N_BOOT = 2000
DEFAULT_SEED = 0
CI_LEVEL = 0.95
#: a patient-level interval needs at least this many patients with a positive and with a negative image
MIN_PATIENTS_PER_CLASS = 2


@dataclass(frozen=True)
class PatientResamples:
    """``n_boot`` patient-level resamples of one test set: ``weights`` (B, n_patients) counts."""

    patient_ids: np.ndarray  # (n_patients,) sorted unique ids (str)
    weights: np.ndarray  # (B, n_patients) float64 multinomial counts, each row sums to n_patients
    seed: int

    @property
    def n_boot(self) -> int:
        return int(self.weights.shape[0])

    def index_of(self, patient_ids: np.ndarray | pd.Series) -> np.ndarray:
        """Column index in ``weights`` of each given patient id; DataError on an unknown id."""
        ids = np.asarray(patient_ids).astype(str)
        pos = np.searchsorted(self.patient_ids, ids)
        pos_clipped = np.minimum(pos, len(self.patient_ids) - 1)
        bad = (pos >= len(self.patient_ids)) | (self.patient_ids[pos_clipped] != ids)
        if bad.any():
            raise DataError(f"patient_id '{ids[bad][0]}' is not in this test set's resamples")
        return pos


def patient_set_key(patient_ids: np.ndarray | pd.Series) -> str:
    """A short stable hash of a test set's patient set (cells with equal keys share resamples)."""
    ids = np.unique(np.asarray(patient_ids).astype(str))
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def truth_key(predictions: pd.DataFrame) -> str:
    """A short hash of a test split's (image_id, label, y_true) rows, masked values included:
    two cells are paired only when it agrees (same images *and* the same truth: two
    uncertainty policies give different truths on the same images)."""
    df = pd.DataFrame(
        {
            "image_id": predictions["image_id"].astype(str).to_numpy(),
            "label": predictions["label"].astype(str).to_numpy(),
            "y_true": predictions["y_true"].to_numpy(dtype=float),
        }
    )
    df = df.sort_values(["image_id", "label"], kind="stable")
    hashed = pd.util.hash_pandas_object(df, index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()[:16]


def draw_patient_resamples(
    patient_ids: np.ndarray | pd.Series, n_boot: int = DEFAULT_N_BOOT, seed: int = DEFAULT_SEED
) -> PatientResamples:
    """Draw ``n_boot`` resamples of the unique patients; reproducible from (patient set, seed).

    The random stream is seeded by ``seed`` and the test set's key, so a test set gets the
    same resamples whatever other test sets are analysed beside it.
    """
    ids = np.unique(np.asarray(patient_ids).astype(str))
    n = len(ids)
    if n == 0:
        raise DataError("cannot bootstrap an empty test set (no patients)")
    key = int(patient_set_key(ids), 16)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), key]))
    draws = rng.integers(0, n, size=(n_boot, n))
    offsets = (np.arange(n_boot, dtype=np.int64) * n)[:, None]
    counts = np.bincount((draws + offsets).ravel(), minlength=n_boot * n).reshape(n_boot, n)
    return PatientResamples(ids, counts.astype(np.float64), int(seed))


@dataclass
class LabelScores:
    """One label of one cell: point estimates, resample replicates and what made them undefined."""

    label: str
    n_pos: int
    n_neg: int
    n_patients: int
    auroc: float
    auprc: float
    auroc_boot: np.ndarray  # (B,), NaN where the resample lost a class
    auprc_boot: np.ndarray
    reason: str = ""  # why the point estimate is undefined ("" when defined)
    n_pos_patients: int = 0  # patients with at least one positive image of this label
    n_neg_patients: int = 0  # patients with at least one negative image
    design_effect: float = float("nan")  # clustered / independent DeLong variance at the point (NaN: 1)
    interval_note: str = (
        ""  # why no patient-level interval exists although the point is defined ("" when it does)
    )

    @property
    def defined(self) -> bool:
        return bool(np.isfinite(self.auroc))

    @property
    def df(self) -> float:
        """Degrees of freedom of its AUROC variance (``intervals.class_df``)."""
        return class_df(self.n_pos_patients, self.n_neg_patients)

    @property
    def k(self) -> int:
        """The smaller class's patient count."""
        return min(self.n_pos_patients, self.n_neg_patients)

    @property
    def factor(self) -> float:
        """Small-sample variance factor k / (k − 1) (``intervals.small_sample_factor``)."""
        return small_sample_factor(self.k)

    @property
    def few_positive_patients(self) -> bool:
        """Fewer than ``FEW_POSITIVE_PATIENTS`` positive test patients: its interval rests on a handful."""
        return self.n_pos_patients < FEW_POSITIVE_PATIENTS

    def auroc_ci(self, level: float = CI_LEVEL) -> tuple[float, float]:
        """The chosen AUROC interval (``intervals.hm_score_interval``): Hanley–McNeil score interval on the
        label's images times a design effect, the larger of the clustered DeLong one and the adjusted
        patient-bootstrap variance's. NaN when not estimable (``interval_note``: fewer than two patients in a
        class).
        """
        if not self.defined or self.interval_note:
            return float("nan"), float("nan")
        se = replicate_sd(self.auroc_boot) * np.sqrt(self.factor)
        return hm_score_interval(self.auroc, self.n_pos, self.n_neg, self.design_effect, se, self.k, level)

    def auprc_ci(self, level: float = CI_LEVEL) -> tuple[float, float]:
        """The AUPRC interval, logit-t-adj (``intervals.logit_t_interval``): coverage by simulation ≥ 0.96 at
        rare
        labels, about 0.94 at common ones (docs/STATISTICS.md, "Several labels")."""
        if not self.defined or self.interval_note:
            return float("nan"), float("nan")
        return logit_t_interval(self.auprc, self.auprc_boot, self.n_pos_patients, self.n_neg_patients, level)

    @property
    def n_degenerate(self) -> int:
        return int(np.isnan(self.auroc_boot).sum()) if self.defined else len(self.auroc_boot)


@dataclass
class CellScores:
    """Every evaluated label of one set of predictions on one test set."""

    name: str
    labels: dict[str, LabelScores] = field(default_factory=dict)
    n_images: int = 0
    n_patients: int = 0

    def defined_labels(self) -> list[str]:
        return [k for k, v in self.labels.items() if v.defined]


def percentile_ci(replicates: np.ndarray, level: float = CI_LEVEL) -> tuple[float, float]:
    """Percentile interval of the finite replicates (NaN, NaN when there are none). (B,) → 2 floats."""
    r = np.asarray(replicates, dtype=float)
    r = r[np.isfinite(r)]
    if len(r) == 0:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    lo, hi = np.quantile(r, [alpha, 1 - alpha])
    return float(lo), float(hi)


def check_prediction_frame(df: pd.DataFrame, source: str) -> None:
    """DataError naming ``source`` and the column when a long-form prediction table is malformed."""
    need = ("image_id", "patient_id", "label", "y_true", "y_score")
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {', '.join(missing)} (need {', '.join(need)})")
    for col in (
        "image_id",
        "patient_id",
    ):  # a blank id would turn into the string "nan": one fake patient / image
        blank = df[col].isna() | (df[col].astype(str).str.strip() == "")
        if blank.any():
            raise DataError(
                f"{source}: column '{col}' is empty (null or blank) in {int(blank.sum())} of {len(df)} "
                "row(s); every row needs one"
            )
    for col in ("y_true", "y_score"):
        if not pd.api.types.is_numeric_dtype(df[col]):
            raise DataError(f"{source}: column '{col}' must be numeric")
    bad_true = df["y_true"].notna() & ~df["y_true"].isin([0, 1])
    if bad_true.any():
        v = df.loc[bad_true, "y_true"].iloc[0]
        raise DataError(f"{source}: column 'y_true' must be 0, 1 or empty (masked), found {v!r}")
    bad_score = df["y_true"].notna() & ~np.isfinite(df["y_score"].to_numpy(dtype=float))
    if bad_score.any():
        raise DataError(
            f"{source}: column 'y_score' has a non-finite value at image"
            f" '{df.loc[bad_score, 'image_id'].iloc[0]}'"
        )
    patients = df.groupby(df["image_id"].astype(str), sort=False)["patient_id"].nunique()
    if (patients > 1).any():
        image = patients.index[patients > 1][0]
        ids = sorted(df.loc[df["image_id"].astype(str) == image, "patient_id"].astype(str).unique())
        raise DataError(
            f"{source}: image '{image}' appears under two patient ids ({', '.join(repr(i) for i in ids)})"
        )
    dup = df.duplicated(["image_id", "label", "split"] if "split" in df.columns else ["image_id", "label"])
    if dup.any():
        r = df.loc[dup].iloc[0]
        raise DataError(f"{source}: image '{r['image_id']}' has label '{r['label']}' twice")


def score_predictions(
    predictions: pd.DataFrame,
    resamples: PatientResamples,
    labels: list[str] | None = None,
    name: str = "",
) -> CellScores:
    """Per-label AUROC/AUPRC with replicates under ``resamples``; masked rows (NaN y_true) dropped.

    ``predictions``: long form with image_id, patient_id, label, y_true, y_score (one split).
    ``labels``: the evaluation label set (default: every label present), in report order.
    """
    df = predictions[predictions["y_true"].notna()]
    if labels is None:
        labels = list(dict.fromkeys(predictions["label"].astype(str)))
    out = CellScores(
        name=name, n_images=int(df["image_id"].nunique()), n_patients=int(df["patient_id"].nunique())
    )
    grouped = {str(k): g for k, g in df.groupby("label", sort=False)}
    n_boot = resamples.n_boot
    for label in labels:
        g = grouped.get(label)
        if g is None or len(g) == 0:
            out.labels[label] = _undefined(
                label, 0, 0, 0, n_boot, "no test image has a known value for this label"
            )
            continue
        y = g["y_true"].to_numpy(dtype=float)
        n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
        n_pat = int(g["patient_id"].nunique())
        pid = g["patient_id"].astype(str).to_numpy()
        n_pos_pat, n_neg_pat = len(np.unique(pid[y == 1])), len(np.unique(pid[y == 0]))
        if n_pos == 0 or n_neg == 0:
            why = "no positive test image" if n_pos == 0 else "no negative test image"
            out.labels[label] = _undefined(label, n_pos, n_neg, n_pat, n_boot, why, n_pos_pat, n_neg_pat)
            continue
        cluster = resamples.index_of(g["patient_id"].to_numpy())
        op = SortedLabel(y, g["y_score"].to_numpy(dtype=float), cluster, len(resamples.patient_ids))
        point_a, point_p = op.evaluate(np.ones((1, len(resamples.patient_ids))))
        note = not_estimable_note(n_pos_pat, n_neg_pat)
        if note:
            boot_a, boot_p = np.full(n_boot, np.nan), np.full(n_boot, np.nan)
        else:
            boot_a, boot_p = op.evaluate(resamples.weights)
        out.labels[label] = LabelScores(
            label,
            n_pos,
            n_neg,
            n_pat,
            float(point_a[0]),
            float(point_p[0]),
            boot_a,
            boot_p,
            n_pos_patients=n_pos_pat,
            n_neg_patients=n_neg_pat,
            design_effect=(
                float("nan") if note else design_effect(y, g["y_score"].to_numpy(dtype=float), cluster)
            ),
            interval_note=note,
        )
    return out


def not_estimable_note(n_pos_pat: int, n_neg_pat: int) -> str:
    """Why a label with ``n_pos_pat`` patients with a positive image and ``n_neg_pat`` with a negative one
    allows no patient-level interval: fewer than :data:`MIN_PATIENTS_PER_CLASS` of either ("" if it allows
    one).
    """
    if min(n_pos_pat, n_neg_pat) >= MIN_PATIENTS_PER_CLASS:
        return ""
    return (
        f"interval not estimable: {n_pos_pat} patient(s) with a positive and {n_neg_pat} with a negative"
        f" image (a patient-level interval needs at least {MIN_PATIENTS_PER_CLASS} of each)"
    )


def design_effect(y: np.ndarray, s: np.ndarray, cluster: np.ndarray) -> float:
    """Clustered (Obuchowski) over independent (DeLong) AUROC variance at the point: what the patients'
    correlated images add. Fewer than two positive (or negative) patients: the positive (negative) images
    per patient of that class (as if its images were copies); no independent variance (perfect order): NaN."""
    y = np.asarray(y, dtype=float)
    v_iid = float(delong(y, s[None, :]).covariance[0, 0])
    try:
        v_clu = float(delong(y, s[None, :], cluster).covariance[0, 0])
    except ValueError:
        pos, neg = y > 0.5, y <= 0.5
        per = [pos.sum() / len(np.unique(cluster[pos])), neg.sum() / len(np.unique(cluster[neg]))]
        return float(max(per))
    return v_clu / v_iid if v_iid > 0 else float("nan")


def _undefined(
    label: str,
    n_pos: int,
    n_neg: int,
    n_pat: int,
    n_boot: int,
    reason: str,
    n_pos_pat: int = 0,
    n_neg_pat: int = 0,
) -> LabelScores:
    nan = np.full(n_boot, np.nan)
    return LabelScores(
        label, n_pos, n_neg, n_pat, float("nan"), float("nan"), nan, nan.copy(), reason, n_pos_pat, n_neg_pat
    )


def macro_replicates(cell: CellScores, labels: list[str], metric: str = "auroc") -> np.ndarray:
    """Mean over ``labels`` per resample; NaN where any of them lost a class. → (B,)."""
    arrays = [getattr(cell.labels[k], f"{metric}_boot") for k in labels]
    if not arrays:
        return np.full(0, np.nan)
    return np.mean(np.vstack(arrays), axis=0)  # NaN propagates: degenerate resample


def macro_point(cell: CellScores, labels: list[str], metric: str = "auroc") -> float:
    vals = [getattr(cell.labels[k], metric) for k in labels]
    return float(np.mean(vals)) if vals else float("nan")


def macro_k(cell: CellScores, labels: list[str]) -> int:
    return min((cell.labels[k].k for k in labels), default=0)


def macro_ci(
    cell: CellScores, labels: list[str], metric: str = "auroc", level: float = CI_LEVEL
) -> tuple[float, float]:
    """The chosen macro interval (``intervals.macro_mover_interval``): MOVER for the mean of the labels' own
    intervals (AUROC: hm-score; AUPRC: logit-t-adj) with the correlation of their shared-resample replicates.
    """
    if not labels:
        return float("nan"), float("nan")
    return macro_mover_interval(
        [getattr(cell.labels[k], metric) for k in labels],
        [getattr(cell.labels[k], f"{metric}_ci") for k in labels],
        [getattr(cell.labels[k], f"{metric}_boot") for k in labels],
        level,
    )
