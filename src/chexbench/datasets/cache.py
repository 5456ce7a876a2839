"""The prepared cache: a dataset's index plus every image decoded once into a uint8 memmap.

The layout of the folder, its key, fingerprints and readers are in
:mod:`chexbench.datasets.prepared` (their names are imported here too, so ``cache.open_prepared``
and friends keep working). Decoding is in :mod:`chexbench.datasets.decode`; reuse of earlier
pixels (incremental preparation, re-indexing, smaller sizes) in :mod:`chexbench.datasets.reuse`;
checks in :mod:`chexbench.datasets.verify`.

Preparation decodes in parallel processes and works in ``<folder>.partial/``: a state file
records finished chunks, so an interrupted ``data prepare`` resumes where it stopped. Only
a complete folder is renamed to its final name, so a reader never sees a partial cache.
A lock on the folder makes concurrent runs (shards) prepare it once.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import shutil
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from chexbench.core.atomic import atomic_write_text
from chexbench.core.errors import DataError
from chexbench.core.lock import folder_lock
from chexbench.datasets.decode import decode_image
from chexbench.datasets.prepared import (
    LOADER_VERSION,
    PreparedCache,
    cache_key,
    default_prepared_dir,
    index_fingerprint,
    label_file_fingerprint,
    memmap_order,
    open_prepared,
)
from chexbench.datasets.reuse import copy_unchanged_pixels, derive, larger_prepared, reindex
from chexbench.datasets.workers import die_with_parent
from chexbench.spec.registry import DATASETS

CHUNK = 128


def _decode_chunk(task: tuple[str, tuple[int, int, int], list[int], list[str], int]) -> list[tuple[int, str]]:
    """Worker: decode the images of one chunk into the memmap; return (row, reason) failures."""
    mm_path, shape, rows, paths, size = task
    mm = np.memmap(mm_path, dtype=np.uint8, mode="r+", shape=shape)
    failures: list[tuple[int, str]] = []
    for row, path in zip(rows, paths, strict=True):
        try:
            mm[row] = decode_image(path, size)
        except FileNotFoundError:
            failures.append((row, "missing file"))
        except Exception as e:  # PIL raises many types for corrupt files; report them all
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            failures.append((row, f"{type(e).__name__}: {reason}"))
    mm.flush()
    del mm
    return failures


def prepare(
    dataset: str,
    root: Path,
    size: int,
    out: Path | None = None,
    *,
    workers: int | None = None,
    strict: bool = False,
    progress: bool | Callable[[int, int], None] = False,
    index: pd.DataFrame | None = None,
) -> PreparedCache:
    """Decode every image of ``dataset`` at ``root`` into a prepared folder (resuming if possible).

    Missing or corrupt images are skipped and listed in the manifest; with ``strict`` the
    first one is a :class:`DataError` and nothing is written under the final name.
    ``progress``: True for a Rich progress bar, or a callback ``(done, total)``.
    ``index``: prepare these rows instead of the dataset's whole index.
    """
    if size < 8:
        raise DataError(f"image size must be at least 8 pixels, got {size}")
    final = Path(out) if out is not None else default_prepared_dir(dataset, Path(root), size)
    with folder_lock(final):
        return _prepare(dataset, Path(root), size, final, workers, strict, progress, index)


@dataclass
class _Layout:
    """What one preparation decodes and where: index rows, their source paths, memmap order."""

    index: pd.DataFrame
    paths: list[str]  # source file of every index row
    order: np.ndarray  # memmap row m holds index row order[m]
    slot: np.ndarray  # index row i lives in memmap row slot[i]
    chunks: list[list[int]]  # memmap rows, CHUNK at a time
    shape: tuple[int, int, int]
    ids_hash: str
    partial: Path

    @property
    def n(self) -> int:
        return len(self.index)


def _prepare(
    dataset: str,
    root: Path,
    size: int,
    final: Path,
    workers: int | None,
    strict: bool,
    progress: bool | Callable[[int, int], None],
    index: pd.DataFrame | None,
) -> PreparedCache:
    ds = DATASETS.get(dataset)
    lay = _layout(dataset, ds, root, size, final, index)
    state = _resumable_state(lay)
    reused: set[int] = set()
    if not state:
        state, reused = _start_partial(lay, final, size)
    report, close = _progress_reporter(progress, lay.n, f"prepare {dataset} @ {size}px")
    try:
        _decode_remaining(lay, state, reused, size, workers, strict, report)
    finally:
        close()
    manifest = _write_prepared_files(lay, state, ds, dataset, root, size)
    atomic_write_text(json.dumps(manifest, indent=1), lay.partial / "manifest.json")
    (lay.partial / "state.json").unlink()
    _publish(lay.partial, final)
    return open_prepared(final)


def _layout(dataset: str, ds: Any, root: Path, size: int, final: Path, index: pd.DataFrame | None) -> _Layout:
    """Check the index and the target folder; fix the memmap order and the chunks."""
    if index is None:
        index = ds.load_index(root)
    index = index.reset_index(drop=True)
    n = len(index)
    if n == 0:
        raise DataError(f"dataset '{dataset}' at {root}: the index has no images")
    if final.exists() and not (final / "manifest.json").is_file() and any(final.iterdir()):
        raise DataError(f"{final} exists and is not a prepared cache; refusing to overwrite it")
    order = memmap_order(index)
    slot = np.empty(n, dtype=np.int64)
    slot[order] = np.arange(n)
    return _Layout(
        index=index,
        paths=[str(root / p) for p in index["path"].astype(str)],
        order=order,
        slot=slot,
        chunks=[list(range(s, min(s + CHUNK, n))) for s in range(0, n, CHUNK)],
        shape=(n, size, size),
        ids_hash=hashlib.sha256("\n".join(index["image_id"].astype(str)).encode()).hexdigest(),
        partial=final.with_name(final.name + ".partial"),
    )


def _resumable_state(lay: _Layout) -> dict[str, Any]:
    """The state of an interrupted run over the same images and shape, else ``{}``."""
    state_file = lay.partial / "state.json"
    if not state_file.is_file():
        return {}
    state = json.loads(state_file.read_text())
    if state.get("ids_sha256") != lay.ids_hash or state.get("shape") != list(lay.shape):
        return {}
    return state


def _start_partial(lay: _Layout, final: Path, size: int) -> tuple[dict[str, Any], set[int]]:
    """A fresh ``.partial`` folder with the unchanged pixels of ``final`` copied in; returns
    the new state and the memmap rows so reused."""
    shutil.rmtree(lay.partial, ignore_errors=True)
    lay.partial.mkdir(parents=True)
    mm = np.memmap(lay.partial / "images.u8", dtype=np.uint8, mode="w+", shape=lay.shape)
    reused = copy_unchanged_pixels(
        final, size, [lay.paths[i] for i in lay.order], lay.index["path"].iloc[lay.order], mm
    )
    mm.flush()
    del mm
    done = [c for c, rows in enumerate(lay.chunks) if all(m in reused for m in rows)]
    state = {
        "ids_sha256": lay.ids_hash,
        "shape": list(lay.shape),
        "done_chunks": done,
        "failures": {},
        "reused": len(reused),
    }
    atomic_write_text(json.dumps(state), lay.partial / "state.json")
    return state, reused


def _decode_remaining(
    lay: _Layout,
    state: dict[str, Any],
    reused: set[int],
    size: int,
    workers: int | None,
    strict: bool,
    report: Callable[[int, int], None],
) -> None:
    """Decode the chunks not yet done, recording each finished chunk in the state file.
    Under ``strict`` the first bad image removes the partial folder and raises."""
    state_file = lay.partial / "state.json"
    finished = set(state["done_chunks"])
    todo = [c for c in range(len(lay.chunks)) if c not in finished]
    done_images = lay.n - sum(len(lay.chunks[c]) for c in todo)
    report(done_images, lay.n)
    todo_rows = {c: [m for m in lay.chunks[c] if m not in reused] for c in todo}
    mm_path = str(lay.partial / "images.u8")
    tasks = [
        (mm_path, lay.shape, todo_rows[c], [lay.paths[lay.order[m]] for m in todo_rows[c]], size)
        for c in todo
    ]
    n_workers = max(1, min(workers or os.cpu_count() or 1, len(tasks)))
    results = _map(tasks, n_workers)
    strict_failure: tuple[int, str] | None = None
    try:
        for c, failures in zip(todo, results, strict=True):
            if failures and strict:
                strict_failure = failures[0]
                break
            for row, reason in failures:
                state["failures"][str(row)] = reason
            state["done_chunks"].append(c)
            atomic_write_text(json.dumps(state), state_file)
            done_images += len(lay.chunks[c])
            report(done_images, lay.n)
    finally:
        getattr(results, "close", lambda: None)()  # stops and joins the worker pool
    if strict_failure is not None:
        shutil.rmtree(lay.partial, ignore_errors=True)  # bad input under --strict: leave nothing behind
        row, reason = strict_failure
        raise DataError(
            f"image {lay.paths[lay.order[row]]}: {reason} (--strict; without it bad images are skipped and"
            " counted)"
        )


def _write_prepared_files(
    lay: _Layout, state: dict[str, Any], ds: Any, dataset: str, root: Path, size: int
) -> dict[str, Any]:
    """Write index, rows and sources of the images that decoded into the partial folder;
    return the manifest describing them."""
    index, order = lay.index, lay.order
    reasons = {int(order[int(m)]): why for m, why in state["failures"].items()}  # by index row
    failed_rows = sorted(reasons)
    keep = np.ones(lay.n, dtype=bool)
    keep[failed_rows] = False
    kept = np.flatnonzero(keep)
    if len(kept) == 0:
        raise DataError(
            f"dataset '{dataset}' at {root}: no image could be read (first: {lay.paths[failed_rows[0]]})"
        )
    rows = lay.slot[kept]
    index.iloc[kept].reset_index(drop=True).to_parquet(lay.partial / "index.parquet", index=False)
    np.save(lay.partial / "rows.npy", rows)
    _source_table(index.iloc[order], [lay.paths[i] for i in order]).to_parquet(
        lay.partial / "sources.parquet", index=False
    )
    skipped = [{"path": str(index["path"].iloc[r]), "reason": reasons[r]} for r in failed_rows]
    return {
        "dataset": dataset,
        "root": str(root.resolve()),
        "size": int(size),
        "loader_version": LOADER_VERSION,
        "cache_id": f"{dataset}-s{size}-{cache_key(dataset, root, size)}",
        "cache_shape": list(lay.shape),
        "aspect": "shorter side resized to size, centre crop",
        "n_index_rows": lay.n,
        "n_images": int(len(rows)),
        "n_skipped": len(skipped),
        "skipped": skipped,
        "split_counts": {k: int(v) for k, v in index.iloc[kept]["split"].value_counts().items()},
        "label_files": label_file_fingerprint(ds, root),
        "index_fingerprint": index_fingerprint(ds),
        "index_file": "index.parquet",
        "rows_file": "rows.npy",
        "index_sha256": lay.ids_hash,
        "reused_images": int(state.get("reused", 0)),
    }


def _publish(partial: Path, final: Path) -> None:
    """Rename the complete partial folder to its final name, replacing an older one."""
    if final.exists():
        old = final.with_name(final.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        shutil.rmtree(old, ignore_errors=True)
    os.replace(partial, final)


def _map(tasks: list[Any], n_workers: int) -> Any:
    if n_workers <= 1 or len(tasks) <= 1:
        return map(_decode_chunk, tasks)
    ctx = mp.get_context("fork") if sys.platform.startswith("linux") else mp.get_context()

    def gen() -> Any:
        pool = ProcessPoolExecutor(
            max_workers=n_workers, mp_context=ctx, initializer=die_with_parent, initargs=(os.getpid(),)
        )
        try:
            yield from pool.map(_decode_chunk, tasks)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    return gen()


def _source_table(index: pd.DataFrame, paths: list[str]) -> pd.DataFrame:
    sizes, mtimes = [], []
    for p in paths:
        try:
            st = os.stat(p)
            sizes.append(st.st_size)
            mtimes.append(st.st_mtime_ns)
        except OSError:
            sizes.append(-1)
            mtimes.append(-1)
    return pd.DataFrame({"path": index["path"].astype(str).to_numpy(), "size": sizes, "mtime_ns": mtimes})


def _progress_reporter(
    progress: bool | Callable[[int, int], None], total: int, title: str
) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    if callable(progress):
        return progress, lambda: None
    if not progress:
        return (lambda done, total: None), lambda: None
    bar = Progress(
        "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()
    )
    task = bar.add_task(title, total=total)
    bar.start()
    return (lambda done, _total: bar.update(task, completed=done)), bar.stop


def ensure_prepared(dataset: str, root: Path, size: int, *, progress: bool = False) -> PreparedCache:
    """The default prepared folder of ``dataset`` at ``root`` and ``size``, built if needed.

    Reused as is while its label files and index fingerprint are unchanged; when only those
    changed (new labels, another split rule) and every image file is the one that was
    decoded, the index is rebuilt over the cached pixels; otherwise everything is decoded again.
    """
    ds = DATASETS.get(dataset)
    root = Path(root)
    folder = default_prepared_dir(dataset, root, size)
    want = (label_file_fingerprint(ds, root), index_fingerprint(ds))

    def current() -> PreparedCache | None:
        if (folder / "manifest.json").is_file():
            try:
                cache = open_prepared(folder)
            except DataError:
                # Being replaced by a rebuild in another process (the folder is renamed away
                # for a moment): wait for it under the lock below and look again.
                if locked:
                    raise
                return None
            if (cache.manifest.get("label_files"), cache.manifest.get("index_fingerprint")) == want:
                return cache
        return None

    locked = False
    cache = current()
    if cache is not None:
        return cache
    if size < 8:
        raise DataError(f"image size must be at least 8 pixels, got {size}")
    with folder_lock(folder):
        locked = True
        cache = current()
        if cache is None and (folder / "manifest.json").is_file():
            cache = reindex(open_prepared(folder), ds, root, want)
        if cache is None:
            larger = larger_prepared(dataset, root, size, want)
            if larger is not None:
                return derive(larger, size, folder)
        return cache or _prepare(dataset, root, size, folder, None, False, progress, None)
