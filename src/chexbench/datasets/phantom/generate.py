"""Generate phantom datasets: one native-layout folder per site, written atomically.

``generate(out, sites=("chexpert",), patients=500, size=128, seed=0, dependencies="published")`` writes
``out/<site>/`` for each site (the layout of :mod:`.write_chexpert`, :mod:`.write_nih`,
:mod:`.write_indiana`) plus ``out/<site>/phantom_manifest.json``. Everything is written into
a temporary sibling folder first and renamed into place, so ``out`` is either complete or
absent. Deterministic for a seed: the same arguments give byte-identical files;
``dependencies="none"`` gives the files of generator version 5 (:mod:`.dependencies`).

A temporary folder is named ``.<final>.tmp-<host>-<pid>-<random>``. A process killed while
generating (SIGKILL, power loss) leaves it behind; the next generation next to it removes it
(:func:`remove_stale_temporaries`) when its owner is a dead process on this host, or when
nothing in it changed for :data:`STALE_AFTER_SECONDS` (owners on other hosts, older names).

A cached phantom (:func:`cached_site`) is generated under a file lock (``.<final>.lck``, the lock of
the prepared and pretraining caches): processes that need the same phantom at once (two shards, two
workers, two test workers) wait for the first to finish and read its folder, instead of each rendering
the whole site and all but one throwing it away.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chexbench.core.atomic import atomic_write_text, last_change, make_temp_dir, pid_alive
from chexbench.core.errors import ConfigError, DataError
from chexbench.core.lock import folder_lock
from chexbench.datasets.phantom.cohort import sample_cohort
from chexbench.datasets.phantom.dependencies import DEFAULT_DEPENDENCIES, Dependencies, check_dependencies
from chexbench.datasets.phantom.output import SiteTally, SiteWriter
from chexbench.datasets.phantom.write_chexpert import CheXpertWriter
from chexbench.datasets.phantom.write_indiana import IndianaWriter
from chexbench.datasets.phantom.write_nih import NIHWriter

#: bump when generated pixels or files change; part of the phantom cache key
# 5: lesions placed (side, centre, size) as the real NIH boxes are; 6: the `dependencies` option
# ("published": view, age and AP magnification follow the findings; "none": version 5's files)
GENERATOR_VERSION = 6
SITE_NAMES: tuple[str, ...] = ("chexpert", "nih", "indiana")
MAX_SIZE = 2048
#: a temporary folder untouched this long is abandoned, whoever made it (a day: generous
#: for the largest phantom on a slow shared filesystem)
STALE_AFTER_SECONDS = 24 * 3600
_TMP_NAME = re.compile(r"^\.(?P<final>.+)\.tmp-(?:(?P<host>.+)-(?P<pid>\d+)-)?[^-]+$")


def writer_for(site: str, workers: int | None = None) -> SiteWriter:
    if site == "chexpert":
        return CheXpertWriter(workers)
    if site == "nih":
        return NIHWriter(workers)
    if site == "indiana":
        return IndianaWriter(workers)
    raise ConfigError(f"unknown phantom site '{site}' (known: {', '.join(SITE_NAMES)})")


@dataclass
class GenerationResult:
    root: Path
    tallies: dict[str, SiteTally]
    seconds: float


def check_options(patients: int, size: int, seed: int, dependencies: object = DEFAULT_DEPENDENCIES) -> None:
    if not isinstance(patients, int) or isinstance(patients, bool) or patients < 1:
        raise ConfigError(f"phantom: patients must be a positive integer, got {patients!r}")
    if not isinstance(size, int) or isinstance(size, bool) or not 16 <= size <= MAX_SIZE:
        raise ConfigError(f"phantom: size must be an integer in [16, {MAX_SIZE}], got {size!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"phantom: seed must be a non-negative integer, got {seed!r}")
    check_dependencies(dependencies)


def write_site(
    root: Path,
    site: str,
    patients: int,
    size: int,
    seed: int,
    workers: int | None = None,
    dependencies: Dependencies = DEFAULT_DEPENDENCIES,
) -> SiteTally:
    """Write one site's native layout into ``root`` (which must exist); returns the tally.

    ``workers``: processes rendering images (None: one per CPU for big runs); the files do
    not depend on it.
    """
    check_options(patients, size, seed, dependencies)
    writer = writer_for(site, workers)
    cohort = sample_cohort(site, patients, seed, dependencies)
    writer.write(root, cohort, size, seed)
    manifest = {
        "generator": "chexbench phantom",
        "version": GENERATOR_VERSION,
        "site": site,
        "patients": patients,
        "size": size,
        "seed": seed,
        "dependencies": dependencies,
    }
    atomic_write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", root / "phantom_manifest.json")
    return writer.tally


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"


def _atomic_dir(final: Path) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    return make_temp_dir(final.parent, final.name, prefix=f".{final.name}.tmp-{_host()}-{os.getpid()}-")


def remove_stale_temporaries(
    parent: Path, final_name: str | None = None, now: float | None = None
) -> list[Path]:
    """Remove abandoned generation folders under ``parent`` (only those of ``final_name`` when
    given): owner pid dead on this host, or nothing changed for :data:`STALE_AFTER_SECONDS`.
    Returns the removed folders."""
    now = time.time() if now is None else now
    removed: list[Path] = []
    if not parent.is_dir():
        return removed
    for entry in parent.iterdir():
        m = _TMP_NAME.match(entry.name)
        if (
            m is None
            or (final_name is not None and m["final"] != final_name)
            or not entry.is_dir()
            or entry.is_symlink()
        ):
            continue
        mine = m["pid"] is not None and m["host"] == _host()
        if mine and int(m["pid"]) == os.getpid():
            continue
        try:
            stale = (mine and not pid_alive(int(m["pid"]))) or now - last_change(entry) > STALE_AFTER_SECONDS
        except OSError:  # removed meanwhile by another cleaner
            continue
        if stale:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def generate(
    out: str | Path,
    sites: tuple[str, ...] = ("chexpert",),
    patients: int = 500,
    size: int = 128,
    seed: int = 0,
    workers: int | None = None,
    dependencies: Dependencies = DEFAULT_DEPENDENCIES,
) -> GenerationResult:
    """Write ``out/<site>/`` for every site; ``out`` must not exist or be empty."""
    out = Path(out).expanduser()
    check_options(patients, size, seed, dependencies)
    for site in sites:
        writer_for(site)  # unknown sites fail before anything is written
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"output folder {out} exists and is not empty; choose another --out or remove it")
    start = time.perf_counter()
    remove_stale_temporaries(out.parent, out.name)
    tmp = _atomic_dir(out)
    try:
        tallies = {}
        for site in sites:
            (tmp / site).mkdir()
            tallies[site] = write_site(tmp / site, site, patients, size, seed, workers, dependencies)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return GenerationResult(out, tallies, time.perf_counter() - start)


def options_key(layout: str, options: dict[str, Any]) -> str:
    """Short hash naming a cached phantom: layout, patients, size, seed, dependencies, generator version."""
    payload = json.dumps(
        {
            "layout": layout,
            "patients": options["patients"],
            "size": options["size"],
            "seed": options["seed"],
            "version": GENERATOR_VERSION,
            "dependencies": options.get("dependencies", DEFAULT_DEPENDENCIES),
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:10]


def cached_site(cache: Path, layout: str, options: dict[str, Any]) -> Path:
    """The generated root of ``layout`` under ``cache``; generated on first use, then reused.

    One caller generates, under the folder's lock; concurrent callers wait for it and reuse its
    folder (a killed generator's lock is broken as stale, :mod:`chexbench.core.lock`). The folder is
    still written under a temporary name and renamed into place, so it is complete or absent; should
    another process rename first all the same (a lock broken by mistake), the later copy is discarded.
    """
    dependencies = options.get("dependencies", DEFAULT_DEPENDENCIES)
    check_options(options["patients"], options["size"], options["seed"], dependencies)
    final = cache / "phantom" / f"{layout}-{options_key(layout, options)}"
    if (final / "phantom_manifest.json").exists():
        return final
    with folder_lock(final):
        if not (final / "phantom_manifest.json").exists():  # not generated while this one waited
            _generate_cached(final, layout, options, dependencies)
    return final


def _generate_cached(final: Path, layout: str, options: dict[str, Any], dependencies: str) -> None:
    """Write ``final`` through a temporary folder (the caller holds its lock)."""
    remove_stale_temporaries(final.parent)  # every abandoned phantom of the cache, not only this one
    tmp = _atomic_dir(final)
    try:
        write_site(
            tmp, layout, options["patients"], options["size"], options["seed"], dependencies=dependencies
        )
        try:
            os.replace(tmp, final)
        except OSError:
            if not (final / "phantom_manifest.json").exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process finished first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
