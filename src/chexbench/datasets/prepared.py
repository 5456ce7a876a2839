"""The prepared folder: its layout, its key, the fingerprints that say whether it is up to date,
and reading it. Making one is :mod:`chexbench.datasets.cache`; reusing the pixels of an
earlier one, :mod:`chexbench.datasets.reuse`.

Layout of a prepared folder (default ``cache_dir()/prepared/<dataset>-s<size>-<key>/``, the
key hashing dataset, resolved root, size and :data:`LOADER_VERSION`)::

    manifest.json   dataset, root, size, counts, skipped images with reasons, label-file
                    sizes/mtimes, index fingerprint, names of the index and rows files
    index.parquet   the dataset index (schema of datasets/base.py) of the images that decoded
    rows.npy        int64 (N,): row of images.u8 holding index row i
    sources.parquet path, size, mtime_ns of the source image of every images.u8 row
    images.u8       raw uint8 (M, S, S), C order; M ≥ N (a skipped image keeps a zero row)

Rows of images.u8 are ordered by split (train, valid, test), frontal before lateral, so a
split's frontal images are one contiguous block (:func:`memmap_order`).
"""

from __future__ import annotations

import hashlib
import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chexbench.core.errors import DataError
from chexbench.core.paths import cache_dir
from chexbench.datasets.splits import FRONTAL_VIEWS, SPLITS

#: Bump when decoding or the index schema changes; part of every cache key.
LOADER_VERSION = 2


@dataclass
class PreparedCache:
    """An opened prepared folder. ``images[rows[i]]`` is the image of ``index.iloc[i]``."""

    dir: Path
    index: pd.DataFrame
    rows: np.ndarray  # int64 (N,)
    images: np.memmap  # uint8 (M, S, S), read-only
    manifest: dict[str, Any]

    @property
    def size(self) -> int:
        return int(self.manifest["size"])

    @property
    def cache_id(self) -> str:
        return str(self.manifest["cache_id"])


def cache_key(dataset: str, root: Path, size: int) -> str:
    payload = json.dumps([dataset, str(Path(root).resolve()), int(size), LOADER_VERSION])
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def default_prepared_dir(dataset: str, root: Path, size: int) -> Path:
    return cache_dir() / "prepared" / f"{dataset}-s{size}-{cache_key(dataset, root, size)}"


def label_file_fingerprint(dataset_obj: Any, root: Path) -> dict[str, list[int]]:
    """``{file: [size, mtime_ns]}`` of the dataset's label files.

    A dataset names them with ``label_files(root)``; without that method, every regular file
    directly inside ``root`` counts (label CSVs, split lists, archives), which covers datasets
    that delegate to the CheXpert / NIH / Indiana loaders.
    """
    declared = getattr(dataset_obj, "label_files", None)
    root = Path(root)
    files = (
        declared(root)
        if declared
        else sorted(p for p in root.iterdir() if p.is_file())
        if root.is_dir()
        else []
    )
    out: dict[str, list[int]] = {}
    for f in files:
        st = Path(f).stat()
        out[str(Path(f).resolve())] = [st.st_size, st.st_mtime_ns]
    return out


#: Modules whose constants (label tables, split fractions and seeds) shape an index.
INDEX_MODULES = (
    "chexbench.datasets.labels",
    "chexbench.datasets.chexpert",
    "chexbench.datasets.nih",
    "chexbench.datasets.indiana",
)


def index_fingerprint(dataset_obj: Any) -> str:
    """sha256 of what shapes an index besides the files: the loaders' UPPER_CASE constants
    (label mapping tables, split fractions and seeds), the dataset's labels and its module's
    constants. A change re-indexes a prepared cache without decoding its images again."""

    def plain(v: Any) -> Any:
        return sorted(v) if isinstance(v, (set, frozenset)) else str(v)

    consts = {}
    for name in dict.fromkeys((*INDEX_MODULES, type(dataset_obj).__module__)):
        mod = importlib.import_module(name)
        consts[name] = {
            k: v
            for k, v in vars(mod).items()
            if k.isupper() and isinstance(v, (int, float, str, tuple, list, dict, frozenset))
        }
    payload = [
        type(dataset_obj).__qualname__,
        list(dataset_obj.labels),
        list(dataset_obj.eval_labels),
        consts,
    ]
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=plain).encode()).hexdigest()


def open_prepared(folder: Path) -> PreparedCache:
    """Open a complete prepared folder (one with a manifest).

    Safe while another process re-indexes the folder: a re-index writes its new index and
    rows files, replaces the manifest atomically, and only then deletes the old files. A file
    the manifest names that has gone missing is therefore read again from the newer manifest;
    it is an error only when the manifest did not change meanwhile.
    """
    folder = Path(folder)
    mf = folder / "manifest.json"
    text = _read_manifest_text(mf, folder)
    while True:
        manifest = json.loads(text)
        try:
            shape = tuple(manifest["cache_shape"])
            images = np.memmap(folder / "images.u8", dtype=np.uint8, mode="r", shape=shape)
            index = pd.read_parquet(folder / manifest.get("index_file", "index.parquet"))
            rows = np.load(folder / manifest.get("rows_file", "rows.npy"))
        except FileNotFoundError as e:
            newer = _read_manifest_text(mf, folder)
            if newer == text:
                raise DataError(
                    f"prepared cache {folder}: {Path(e.filename or '?').name} named by manifest.json is"
                    " missing"
                ) from e
            text = newer  # replaced meanwhile (re-index or rebuild): read what it names now
            continue
        return PreparedCache(folder, index, rows, images, manifest)


def read_prepared_index(folder: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """The index of a prepared folder: the file its manifest names (``index.<tag>.parquet``
    after a re-index), read as safely as :func:`open_prepared` does. A folder without a
    manifest is read from ``index.parquet``."""
    folder = Path(folder)
    mf = folder / "manifest.json"
    if not mf.exists():
        return pd.read_parquet(folder / "index.parquet", columns=columns)
    text = _read_manifest_text(mf, folder)
    while True:
        name = json.loads(text).get("index_file", "index.parquet")
        try:
            return pd.read_parquet(folder / name, columns=columns)
        except FileNotFoundError as e:
            newer = _read_manifest_text(mf, folder)
            if newer == text:
                raise DataError(f"prepared cache {folder}: {name} named by manifest.json is missing") from e
            text = newer


def _read_manifest_text(mf: Path, folder: Path) -> str:
    try:
        return mf.read_text()
    except FileNotFoundError:
        raise DataError(
            f"no prepared cache at {folder} (run: chexbench data prepare DATASET --root PATH)"
        ) from None


def memmap_order(index: pd.DataFrame) -> np.ndarray:
    """Index rows in memmap order: by split (train, valid, test, other), frontal before
    lateral, then index order — so a whole split's frontal images are one contiguous block
    that a cell can use without copying."""
    rank = {name: i for i, name in enumerate(SPLITS)}
    split_rank = index["split"].astype(str).map(lambda v: rank.get(v, len(SPLITS))).to_numpy()
    lateral = ~index["view"].astype(str).isin(FRONTAL_VIEWS).to_numpy()
    return np.lexsort((np.arange(len(index)), lateral, split_rank))
