"""Reusing prepared pixels instead of decoding again.

- :func:`copy_unchanged_pixels` — incremental preparation: images whose file is unchanged
  (size and mtime) are copied from the previous prepared folder;
- :func:`reindex` — new labels or split rules over the same files: only the index is rebuilt;
- :func:`derive` — a smaller size from a larger prepared folder, by resizing cached pixels.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chexbench.core.atomic import atomic_path, atomic_write_text
from chexbench.core.paths import cache_dir
from chexbench.datasets.decode import resize_square
from chexbench.datasets.prepared import (
    LOADER_VERSION,
    PreparedCache,
    cache_key,
    default_prepared_dir,
    open_prepared,
)


def copy_unchanged_pixels(
    final: Path, size: int, abs_paths: list[str], rel_paths: pd.Series, out: np.memmap
) -> set[int]:
    """Incremental preparation: copy into ``out`` the pixels of every image the previous
    prepared folder at ``final`` decoded from a file that is unchanged (size and mtime).
    Returns the memmap rows filled."""
    if not (final / "manifest.json").is_file():
        return set()
    try:
        old = open_prepared(final)
        sources = pd.read_parquet(final / "sources.parquet")
    except (OSError, ValueError, KeyError):
        return set()
    if (
        old.size != size
        or old.manifest.get("loader_version") != LOADER_VERSION
        or old.manifest.get("derived_from")
    ):
        return set()
    decoded = np.zeros(len(sources), dtype=bool)
    decoded[old.rows] = True
    old_row = {p: i for i, p in enumerate(sources["path"].astype(str)) if decoded[i]}
    old_stat = sources[["size", "mtime_ns"]].to_numpy(dtype=np.int64)
    filled: set[int] = set()
    for m, (rel, path) in enumerate(zip(rel_paths.astype(str), abs_paths, strict=True)):
        r = old_row.get(rel)
        if r is None:
            continue
        try:
            st = os.stat(path)
        except OSError:
            continue
        if st.st_size == old_stat[r, 0] and st.st_mtime_ns == old_stat[r, 1]:
            out[m] = old.images[r]
            filled.add(m)
    return filled


def larger_prepared(dataset: str, root: Path, size: int, want: tuple[dict, str]) -> PreparedCache | None:
    """The smallest up-to-date default prepared folder of the same dataset and root above ``size``."""
    found = []
    for mf in (cache_dir() / "prepared").glob(f"{dataset}-s*-*/manifest.json"):
        try:
            m = json.loads(mf.read_text())
        except (OSError, ValueError):
            continue
        if (
            m.get("root") == str(Path(root).resolve())
            and int(m.get("size", 0)) > size
            and m.get("loader_version") == LOADER_VERSION
            and not m.get("derived_from")
            and (m.get("label_files"), m.get("index_fingerprint")) == want
            and mf.parent == default_prepared_dir(dataset, root, int(m["size"]))
        ):
            found.append((int(m["size"]), mf.parent))
    return open_prepared(min(found)[1]) if found else None


def derive(source: PreparedCache, size: int, final: Path) -> PreparedCache:
    """A prepared folder at ``size`` made by resizing a larger one's pixels (no decoding).

    The crop region is the same (centre square of the shorter side), so the result differs
    from a direct decode only by the second resampling; the manifest says ``derived_from``.
    """
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    shape = (source.images.shape[0], size, size)
    out = np.memmap(partial / "images.u8", dtype=np.uint8, mode="w+", shape=shape)
    for row in source.rows:
        out[row] = resize_square(source.images[row], size)
    out.flush()
    del out
    m = source.manifest
    # index and rows from the opened source, not its files: another process may re-index the
    # source meanwhile and delete the files its manifest named when it was opened
    source.index.to_parquet(partial / m.get("index_file", "index.parquet"), index=False)
    np.save(partial / m.get("rows_file", "rows.npy"), np.asarray(source.rows, dtype=np.int64))
    shutil.copy2(source.dir / "sources.parquet", partial / "sources.parquet")
    manifest = {
        **m,
        "size": int(size),
        "cache_id": f"{m['dataset']}-s{size}-{cache_key(m['dataset'], Path(m['root']), size)}",
        "cache_shape": list(shape),
        "derived_from": {"cache_id": m["cache_id"], "size": int(m["size"])},
    }
    atomic_write_text(json.dumps(manifest, indent=1), partial / "manifest.json")
    if final.exists():
        shutil.rmtree(final)
    os.replace(partial, final)
    return open_prepared(final)


def reindex(cache: PreparedCache, ds: Any, root: Path, want: tuple[dict, str]) -> PreparedCache | None:
    """Rebuild the index over cached pixels, or None when some image file is new or changed."""
    index = ds.load_index(root).reset_index(drop=True)
    sources = pd.read_parquet(cache.dir / "sources.parquet")
    row_of = {p: i for i, p in enumerate(sources["path"].astype(str))}
    old_stat = sources[["size", "mtime_ns"]].to_numpy(dtype=np.int64)
    decoded = np.zeros(len(sources), dtype=bool)
    decoded[cache.rows] = True
    rows, keep, skipped = [], [], []
    reasons = {s["path"]: s["reason"] for s in cache.manifest.get("skipped", [])}
    for p in index["path"].astype(str):
        r = row_of.get(p)
        if r is None:
            return None
        try:
            st = os.stat(root / p)
            stat = [st.st_size, st.st_mtime_ns]
        except OSError:
            stat = [-1, -1]
        if stat != old_stat[r].tolist():
            return None
        keep.append(bool(decoded[r]))
        if decoded[r]:
            rows.append(r)
        else:
            skipped.append({"path": p, "reason": reasons.get(p, "skipped when prepared")})
    kept = index[np.array(keep, dtype=bool)].reset_index(drop=True)
    # The files are named by everything that shapes them (label files and loader constants),
    # and written beside their final names then renamed: a process still reading the current
    # index never sees it rewritten in place or half-written.
    tag = hashlib.sha256(json.dumps([want[0], want[1]], sort_keys=True).encode()).hexdigest()[:12]
    with atomic_path(cache.dir / f"index.{tag}.parquet") as tmp:
        kept.to_parquet(tmp, index=False)
    with atomic_path(cache.dir / f"rows.{tag}.npy") as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.array(rows, dtype=np.int64))
    old_files = (
        cache.manifest.get("index_file", "index.parquet"),
        cache.manifest.get("rows_file", "rows.npy"),
    )
    manifest = {
        **cache.manifest,
        "label_files": want[0],
        "index_fingerprint": want[1],
        "index_file": f"index.{tag}.parquet",
        "rows_file": f"rows.{tag}.npy",
        "n_images": len(rows),
        "n_skipped": len(skipped),
        "skipped": skipped,
        "split_counts": {k: int(v) for k, v in kept["split"].value_counts().items()},
        "reindexed": True,
    }
    atomic_write_text(json.dumps(manifest, indent=1), cache.dir / "manifest.json")
    for name in old_files:
        if name not in (manifest["index_file"], manifest["rows_file"]):
            (cache.dir / name).unlink(missing_ok=True)
    return open_prepared(cache.dir)
