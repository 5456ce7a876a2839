"""Reading native label tables with one-line errors naming the file, column and value."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from chexbench.core.errors import DataError

#: Allowed raw label values (NaN = not mentioned).
LABEL_VALUES: frozenset[float] = frozenset({1.0, 0.0, -1.0})


def read_csv_checked(
    path: Path, required: Iterable[str], dtype: dict[str, object] | None = None
) -> pd.DataFrame:
    """Read a CSV (``.csv`` or ``.csv.gz``) and check that every ``required`` column is present."""
    if not path.is_file():
        raise DataError(f"label file not found: {path}")
    try:
        df = pd.read_csv(path, dtype=dtype, low_memory=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{path}: cannot parse CSV: {first}") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column '{missing[0]}' (columns: {', '.join(map(str, df.columns))})")
    return df


def parse_label_column(df: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    """One raw label column as float64 (N,) with 1 / 0 / -1 / NaN; any other value is an error."""
    raw = df[column]
    if pd.api.types.is_numeric_dtype(raw.dtype):
        values = raw.to_numpy(dtype=np.float64, copy=True)
        blank = np.isnan(values)
    else:
        values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, copy=True)
        blank = raw.isna().to_numpy() | raw.astype(str).str.strip().eq("").to_numpy()
    bad = (np.isnan(values) & ~blank) | (~np.isnan(values) & ~np.isin(values, list(LABEL_VALUES)))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{path}: column '{column}' has unknown label value {str(raw.iloc[i])!r} on data row {i + 1} "
            "(expected 1.0, 0.0, -1.0 or blank)"
        )
    values[blank] = np.nan
    return values
