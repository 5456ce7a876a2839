"""``data verify``: a prepared cache checked against its sources."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from chexbench.datasets.decode import decode_image, resize_square
from chexbench.datasets.prepared import PreparedCache, label_file_fingerprint
from chexbench.spec.registry import DATASETS


def expected_pixels(cache: PreparedCache, path: Path) -> np.ndarray:
    """What the cache should hold for a source file: a direct decode, or decode + resize if derived."""
    derived = cache.manifest.get("derived_from")
    if derived:
        return resize_square(decode_image(path, int(derived["size"])), cache.size)
    return decode_image(path, cache.size)


@dataclass
class VerifyReport:
    checked: int
    changed_sources: list[str]  # size or mtime differs from the manifest
    missing_sources: list[str]
    mismatched_pixels: list[str]  # re-decoding gives different pixels
    stale_label_files: list[str]

    @property
    def ok(self) -> bool:
        return not (
            self.changed_sources or self.missing_sources or self.mismatched_pixels or self.stale_label_files
        )


def verify(cache: PreparedCache, root: Path | None = None, sample: int = 0, seed: int = 0) -> VerifyReport:
    """Check a prepared cache against its sources: label files, file stats, and re-decoded pixels.

    ``sample > 0`` re-decodes that many images chosen with ``seed`` (all by default).
    """
    root = Path(root) if root is not None else Path(cache.manifest["root"])
    stale = []
    try:
        now = label_file_fingerprint(DATASETS.get(cache.manifest["dataset"]), root)
    except OSError:
        now = {}
    for f, stat in cache.manifest.get("label_files", {}).items():
        if now.get(f) != stat:
            stale.append(f)
    sources = pd.read_parquet(cache.dir / "sources.parquet")
    n = len(cache.index)
    pick = (
        np.arange(n)
        if sample <= 0 or sample >= n
        else np.sort(np.random.default_rng(seed).choice(n, sample, replace=False))
    )
    changed, missing, mismatched = [], [], []
    for i in pick:
        rel = str(cache.index["path"].iloc[i])
        row = int(cache.rows[i])
        src = root / rel
        try:
            st = src.stat()
        except OSError:
            missing.append(rel)
            continue
        if [st.st_size, st.st_mtime_ns] != [
            int(sources["size"].iloc[row]),
            int(sources["mtime_ns"].iloc[row]),
        ]:
            changed.append(rel)
        try:
            same = np.array_equal(expected_pixels(cache, src), cache.images[row])
        except Exception:
            same = False
        if not same:
            mismatched.append(rel)
    return VerifyReport(len(pick), changed, missing, mismatched, stale)
