"""Patient-level split rules, label-fraction sampling, caps, split hashes and leakage checks.

Everything here works on whole patients: an image's patient decides which split (and which
subsample) it belongs to, so no patient is ever on both sides of a split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np

SPLITS: tuple[str, ...] = ("train", "valid", "test")
FRONTAL_VIEWS: frozenset[str] = frozenset({"PA", "AP", "FRONTAL"})


def _sorted_unique(patient_ids: np.ndarray) -> np.ndarray:
    return np.array(sorted(set(map(str, patient_ids))), dtype=object)


def carve_patients(patient_ids: np.ndarray, fraction: float, seed: int) -> set[str]:
    """``round(fraction · P)`` patients (at least one, if any) chosen by a seeded permutation.

    The permutation is over the *sorted* unique ids, so the result depends only on the set of
    patients and the seed, never on row order.
    """
    unique = _sorted_unique(patient_ids)
    if len(unique) == 0 or fraction <= 0:
        return set()
    n = min(len(unique), max(1, int(round(fraction * len(unique)))))
    order = np.random.default_rng(seed).permutation(len(unique))
    return set(unique[order[:n]])


def assign_patient_splits(patient_ids: np.ndarray, fractions: Mapping[str, float], seed: int) -> np.ndarray:
    """Split name per row: patients permuted with ``seed``, cut by cumulative ``fractions``.

    ``fractions`` (e.g. ``{"train": 0.7, "valid": 0.1, "test": 0.2}``) must sum to 1; each
    split with a positive fraction gets at least one patient when there are enough patients.
    """
    names = list(fractions)
    shares = np.array([fractions[n] for n in names], dtype=np.float64)
    if not np.isclose(shares.sum(), 1.0):
        raise ValueError(f"split fractions must sum to 1, got {dict(fractions)}")
    unique = _sorted_unique(patient_ids)
    order = np.random.default_rng(seed).permutation(len(unique))
    bounds = np.round(np.cumsum(shares) * len(unique)).astype(int)
    counts = np.diff(np.concatenate([[0], bounds]))
    for i in range(len(counts)):  # a positive share never ends up empty while others have spares
        if shares[i] > 0 and counts[i] == 0 and counts.max() > 1:
            counts[int(np.argmax(counts))] -= 1
            counts[i] = 1
    which = np.repeat(np.arange(len(names)), counts)
    by_patient = {unique[order[k]]: names[which[k]] for k in range(len(unique))}
    return np.array([by_patient[str(p)] for p in patient_ids], dtype=object)


def sample_patients(
    patient_ids: np.ndarray,
    positives: np.ndarray,
    seed: int,
    *,
    fraction: float = 1.0,
    max_images: int = 0,
) -> np.ndarray:
    """Boolean row mask of a patient-level subsample that keeps positives of every label.

    patient_ids: (N,) per image. positives: bool (N, E), positive images of the labels that
    must stay represented (the evaluation labels). Patients are taken in a seeded permutation
    order until ``round(fraction · P)`` patients (at least one) are chosen, or — with
    ``max_images > 0`` — until the next patient would exceed that many images (at least one
    patient). Stratification: for each label with a positive patient in the pool but none in
    the sample, the first positive patient of the permutation is swapped in for the last
    chosen patient that is not needed by any other label, so the sample size stays the same;
    when every chosen patient is needed (a sample smaller than the number of labels), the
    positive patient is added, so the sample grows by at most one patient per label.
    """
    n = len(patient_ids)
    positives = np.asarray(positives, dtype=bool).reshape(n, -1)
    if n == 0:
        return np.zeros(0, dtype=bool)
    unique, inverse = np.unique(np.asarray(patient_ids, dtype=str), return_inverse=True)
    n_pat = len(unique)
    img_per_pat = np.bincount(inverse, minlength=n_pat)
    pos_per_pat = np.zeros((n_pat, positives.shape[1]), dtype=bool)
    np.logical_or.at(pos_per_pat, inverse, positives)

    order = np.random.default_rng(seed).permutation(n_pat)
    if max_images > 0:
        cum = np.cumsum(img_per_pat[order])
        k = max(1, int(np.searchsorted(cum, max_images, side="right")))
        if fraction < 1.0:
            k = min(k, max(1, int(round(fraction * n_pat))))
    else:
        k = n_pat if fraction >= 1.0 else max(1, int(round(fraction * n_pat)))
    chosen = list(order[:k])
    chosen_set = set(chosen)
    for label in range(pos_per_pat.shape[1]):
        if pos_per_pat[chosen, label].any() or not pos_per_pat[:, label].any():
            continue
        donor = next(p for p in order if pos_per_pat[p, label])
        # drop the last chosen patient whose removal loses no label's only positive patient
        for j in range(len(chosen) - 1, -1, -1):
            cand = chosen[j]
            rest = [p for p in chosen if p != cand]
            needed = pos_per_pat[cand] & ~pos_per_pat[rest].any(axis=0) if rest else pos_per_pat[cand]
            if not needed.any():
                chosen.pop(j)
                chosen_set.discard(cand)
                break
        chosen.append(donor)
        chosen_set.add(donor)
    keep = np.zeros(n_pat, dtype=bool)
    keep[list(chosen_set)] = True
    return keep[inverse]


def ids_sha256(ids: np.ndarray) -> str:
    """sha256 of the sorted ids joined by newlines: the identity of a split's membership."""
    h = hashlib.sha256()
    h.update("\n".join(sorted(map(str, ids))).encode())
    return h.hexdigest()


def patient_overlaps(splits: Mapping[str, np.ndarray]) -> dict[str, int]:
    """Count of shared patients for every pair of splits (``"train&test": 3``), zeros omitted."""
    sets = {name: set(map(str, ids)) for name, ids in splits.items()}
    names = list(sets)
    out: dict[str, int] = {}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            shared = len(sets[a] & sets[b])
            if shared:
                out[f"{a}&{b}"] = shared
    return out
