"""The suite's own layout under xdist (tests/conftest.py): the heavy-module table names real files, and the
worksteal layout gives every worker a share that starts with its heavy modules, balanced longest first."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# loaded by its path: `import conftest` may find another folder's conftest.py (tests/strategies has one)
_spec = importlib.util.spec_from_file_location("suite_conftest", ROOT / "tests" / "conftest.py")
suite_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(suite_conftest)
HEAVY_MODULES, worksteal_layout = suite_conftest.HEAVY_MODULES, suite_conftest.worksteal_layout


def test_every_heavy_module_named_exists():
    # a renamed or moved module would silently lose its place at the head of a share
    assert [p for p in HEAVY_MODULES if not (ROOT / p).is_file()] == []


def test_worksteal_layout_starts_each_share_with_its_heavy_modules_longest_first_balanced():
    modules = {f"light{i}": [f"light{i}::t{j}" for j in range(5)] for i in range(6)}
    modules.update({"a": ["a::1", "a::2"], "b": ["b::1"], "c": ["c::1"], "d": ["d::1", "d::2"]})
    seconds = {p: 0 for p in modules} | {"a": 100, "b": 60, "c": 55, "d": 40}
    order = worksteal_layout(modules, seconds, workers=2)
    assert sorted(order) == sorted(t for its in modules.values() for t in its)  # every test once
    first, second = order[: len(order) // 2], order[len(order) // 2 :]  # worksteal's two shares
    assert first[:2] == ["a::1", "a::2"] and first[2:4] == [
        "d::1",
        "d::2",
    ]  # 100 + 40 (a module's tests together)
    assert second[:2] == ["b::1", "c::1"]  # 60 + 55
    lights = [t for t in order if t.startswith("light")]
    assert lights == [t for i in range(6) for t in modules[f"light{i}"]]  # light tests keep file order


def test_worksteal_layout_of_three_workers_cuts_the_shares_worksteal_cuts():
    modules = {"x": ["x::1"], "y": ["y::1"], "z": ["z::1"]} | {f"l{i}": [f"l{i}::t"] for i in range(8)}
    seconds = {p: 0 for p in modules} | {"x": 30, "y": 20, "z": 10}
    order = worksteal_layout(modules, seconds, workers=3)
    # 11 tests: worksteal hands out 11 // 3 = 3, then 8 // 2 = 4, then 4
    assert order[0] == "x::1" and order[3] == "y::1" and order[7] == "z::1"
