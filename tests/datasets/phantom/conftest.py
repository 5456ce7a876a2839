"""A small phantom of every site, generated once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from chexbench.datasets.phantom.generate import GenerationResult, generate

SMALL = {"patients": 40, "size": 48, "seed": 3}


@pytest.fixture(scope="session")
def small_phantom(tmp_path_factory: pytest.TempPathFactory) -> GenerationResult:
    out = tmp_path_factory.mktemp("phantom") / "out"
    return generate(out, ("chexpert", "nih", "indiana"), workers=1, **SMALL)


@pytest.fixture(scope="session")
def phantom_root(small_phantom: GenerationResult) -> Path:
    return small_phantom.root
