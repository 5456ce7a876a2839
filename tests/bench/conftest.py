"""Fixtures shared by the end-to-end bench tests."""

import pytest


@pytest.fixture()
def cache(tmp_path_factory, monkeypatch):
    """One chexbench cache per test session: the tiny phantom is generated and prepared once."""
    path = tmp_path_factory.getbasetemp() / "e2e-cache"
    monkeypatch.setenv("CHEXBENCH_CACHE", str(path))
    return path
