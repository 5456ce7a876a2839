"""Suite-wide settings.

Under pytest-xdist (``make test`` runs ``-n auto``) every worker is one process on one core: torch's
intra-op pool is capped at one thread there, and so are the subprocesses the tests start (they
inherit the environment), so two workers on a 2-core machine do not fight over four threads. xdist's workers
also inherit
COLUMNS=80 / LINES=24 from execnet, which would make the CLI's console measure an 80-column
"terminal" instead of taking the pipe width the tests check: they are removed.

Two things keep ``make test`` inside its budget on two cores (issue 28):
- one warm cache for the whole session (:func:`cache`): every xdist worker's end-to-end tests read
  and fill the same folder, so each tiny phantom is generated and prepared once, not once per worker;
- the heaviest test modules start first, spread over the workers (:func:`pytest_collection_modifyitems`),
  so that no worker is left alone with a two-minute test at the end while the other idles.
"""

import os
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_var, "1")
    for _var in ("COLUMNS", "LINES"):
        os.environ.pop(_var, None)
    import torch

    torch.set_num_threads(1)


def session_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The end-to-end cache of this test session, one folder for all xdist workers.

    A worker's base temp folder is ``<session>/popen-gwN``; the cache lives in ``<session>``. Workers
    share it the way chexbench's own workers share a cache: a phantom is generated into a temporary
    folder and renamed (a concurrent loser discards its copy), a prepared cache and a pretraining run
    are made under their file locks, so no test sees another one's half-made files. No test using it
    edits or deletes what is in it (checked for every user of :func:`cache` when it became shared)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    return base / "e2e-cache"


@pytest.fixture()
def cache(tmp_path_factory, monkeypatch):
    """The session's shared chexbench cache (:func:`session_cache_dir`): a tiny phantom is generated and
    prepared
    once per session, not once per worker."""
    path = session_cache_dir(tmp_path_factory)
    monkeypatch.setenv("CHEXBENCH_CACHE", str(path))
    return path


#: Seconds each of the heaviest test modules took within `make test` (fresh clone, 2 xdist workers, shared
#: 2-core CPU, 2026-12-07, `--durations`), fixtures included; the rest take a few seconds or less. Only the
#: ORDER of the suite depends on these numbers (which modules start first, on which worker), never a result:
#: a stale number costs some wall time, nothing else. A module marked slow that is not listed counts as 10 s.
HEAVY_MODULES = {
    "tests/strategies/test_ssl_beats_scratch.py": 101,
    "tests/bench/test_distributed_e2e.py": 41,  # 61 s with two torchrun launches; one since (-33 % alone)
    "tests/strategies/test_ssl_methods_beat_scratch.py": 58,
    "tests/bench/test_workers_e2e.py": 44,
    "tests/bench/test_shard_e2e.py": 39,
    "tests/spec/test_example_plugin.py": 30,  # 62 s with a subprocess per command; two since (-45 % alone)
    "tests/strategies/test_published_models.py": 27,
    "tests/bench/test_rank_failure.py": 27,
    "tests/datasets/phantom/test_phantom_learnability.py": 22,
    "tests/bench/test_submit.py": 20,
    "tests/perf/test_gpu_check.py": 14,
    "tests/datasets/test_cache.py": 17,
    "tests/core/test_distributed.py": 15,
    "tests/tracking/test_trackers.py": 9,
    "tests/reports/test_figures.py": 9,
    "tests/reports/test_html_browser.py": 9,
}
SLOW_MODULE_SECONDS = 10


def _module_seconds(path: str, items: list[pytest.Item]) -> float:
    if path in HEAVY_MODULES:
        return HEAVY_MODULES[path]
    return SLOW_MODULE_SECONDS if any(item.get_closest_marker("slow") for item in items) else 0.0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist's ``--dist worksteal`` (``make test``), lay the collection out so that each worker's share
    starts with its heavy modules.

    worksteal hands worker i the next ``len(left) // (n - i)`` tests of the collection, in order, and a worker
    that runs dry steals from the END of another's queue. Left in file order, a 100-s module could start on
    one worker when the other has seconds left (a long tail on one core). Here the heavy modules are dealt to
    the workers longest first, each to the least loaded (LPT), and each worker's share begins with them; the
    light tests fill the rest, and are what gets stolen. A module's tests stay together, so a module-scoped
    fixture is built once. Every worker computes the same order (xdist requires identical collections).
    Without
    xdist the file order is kept."""
    workers = int(getattr(config, "workerinput", {}).get("workercount", 1))
    if workers < 2:  # (a worker's own `dist` option reads "no": the layout assumes make test's worksteal)
        return
    root = Path(str(config.rootpath))
    modules: dict[str, list[pytest.Item]] = {}
    for item in items:
        path = Path(str(item.path))
        modules.setdefault(
            path.relative_to(root).as_posix() if path.is_relative_to(root) else path.as_posix(), []
        ).append(item)
    seconds = {path: _module_seconds(path, its) for path, its in modules.items()}
    items[:] = worksteal_layout(modules, seconds, workers)


def worksteal_layout(modules: dict[str, list], seconds: dict[str, float], workers: int) -> list:
    """The tests of ``modules`` (path → its tests, in file order) in the order that gives each of ``workers``
    worksteal workers a share beginning with its heavy modules (``seconds`` > 0, dealt longest first to the
    least loaded share), then light tests in file order up to the share's size."""
    heavy = sorted((p for p in modules if seconds[p] > 0), key=lambda p: -seconds[p])
    light = [item for p, its in modules.items() if seconds[p] == 0 for item in its]
    shares: list[list] = [[] for _ in range(workers)]
    load = [0.0] * workers
    for path in heavy:
        k = load.index(min(load))
        shares[k].extend(modules[path])
        load[k] += seconds[path]
    # the share sizes worksteal will cut; light tests fill each share up to its size, in file order
    left, sizes = sum(len(its) for its in modules.values()), []
    for i in range(workers):
        sizes.append(left // (workers - i))
        left -= sizes[-1]
    for share, size in zip(shares, sizes, strict=True):
        take = max(0, size - len(share))
        share.extend(light[:take])
        light = light[take:]
    shares[-1].extend(light)  # only where heavy modules alone overfill a share
    return [item for share in shares for item in share]
