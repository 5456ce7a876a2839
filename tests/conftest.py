"""Suite-wide settings.

Under pytest-xdist (``make test`` runs ``-n auto``) every worker is one process on one core: torch's
intra-op pool is capped at one thread there, and so are the subprocesses the tests start (they
inherit the environment), so two workers on a 2-core machine do not fight over four threads. xdist's workers also inherit
COLUMNS=80 / LINES=24 from execnet, which would make the CLI's console measure an 80-column
"terminal" instead of taking the pipe width the tests check: they are removed.
"""

import os

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")
    for _var in ("COLUMNS", "LINES"):
        os.environ.pop(_var, None)
    import torch

    torch.set_num_threads(1)


@pytest.fixture()
def cache(tmp_path_factory, monkeypatch):
    """One chexbench cache per test session (per xdist worker): a tiny phantom is generated and prepared once."""
    path = tmp_path_factory.getbasetemp() / "e2e-cache"
    monkeypatch.setenv("CHEXBENCH_CACHE", str(path))
    return path
