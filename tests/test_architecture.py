"""The architecture, checked: the layer contract of ``pyproject.toml`` holds (import-linter) and no
two modules import each other, directly or through others (docs/ARCHITECTURE.md)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp

import chexbench

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "pyproject.toml"
PACKAGE = Path(chexbench.__file__).resolve().parent


def _lint_imports(source_root: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` with the repo's contract on the ``chexbench`` package found under ``source_root``."""
    code = "from importlinter.cli import lint_imports_command; lint_imports_command()"
    env = {**os.environ, "PYTHONPATH": str(source_root)}
    return subprocess.run(
        [sys.executable, "-c", code, "--no-cache", str(CONFIG)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_layer_contract_holds(tmp_path):
    out = _lint_imports(PACKAGE.parent, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 kept, 0 broken" in out.stdout


def test_the_layer_check_fails_when_datasets_imports_the_harness(tmp_path):
    """The check can fail: a copy of the package whose ``datasets.base`` imports ``bench.store`` breaks it."""
    shutil.copytree(PACKAGE, tmp_path / "src" / "chexbench", ignore=shutil.ignore_patterns("__pycache__"))
    base = tmp_path / "src" / "chexbench" / "datasets" / "base.py"
    base.write_text(base.read_text() + "\nimport chexbench.bench.store  # noqa: E402,F401\n")
    out = _lint_imports(tmp_path / "src", tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "BROKEN" in out.stdout
    assert "chexbench.datasets is not allowed to import chexbench.bench" in out.stdout
    assert "chexbench.datasets.base -> chexbench.bench.store" in out.stdout


def test_the_contract_is_exhaustive_a_new_top_level_module_fails_it(tmp_path):
    """Every top-level module or package must have a layer: a planted ``chexbench/planted.py`` (which
    imports nothing) breaks the contract until it is named in pyproject.toml."""
    shutil.copytree(PACKAGE, tmp_path / "src" / "chexbench", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "src" / "chexbench" / "planted.py").write_text("VALUE = 1\n")
    out = _lint_imports(tmp_path / "src", tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "chexbench.planted" in out.stdout + out.stderr
    assert "exhaustive" in out.stdout + out.stderr


def test_the_tests_mirror_the_package():
    """tests/<name>/ exists for each package of src/chexbench, and every test folder names one (the
    root holds only this whole-package check and conftest.py)."""
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    tests = REPO / "tests"
    folders = {p.name for p in tests.iterdir() if p.is_dir() and p.name not in ("__pycache__", "scripts")}
    assert packages - folders == set(), f"packages without tests/<name>/: {sorted(packages - folders)}"
    assert folders - packages == set(), f"test folders that mirror no package: {sorted(folders - packages)}"
    suite = {
        Path(__file__).name,
        "test_suite_layout.py",
    }  # checks of the package as a whole, and of the suite
    loose = sorted(p.name for p in tests.glob("test_*.py") if p.name not in suite)
    assert loose == [], f"test files outside a package folder: {loose}"


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of ``graph`` (module -> modules it imports), iteratively."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def test_strongly_connected_components_find_a_cycle():
    """The cycle finder itself: a -> b -> c -> a is one component, d on its own."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert sorted(_strongly_connected(graph)) == [["a", "b", "c"], ["d"]]


def _describe(g: grimp.ImportGraph, component: list[str]) -> str:
    """One cycle through ``component``, each arrow with the line that imports."""
    first = component[0]
    second = next(m for m in sorted(g.find_modules_directly_imported_by(first)) if m in component)
    chain = [first, *g.find_shortest_chain(importer=second, imported=first)]
    arrows = []
    for importer, imported in zip(chain, chain[1:], strict=False):
        lines = [d["line_number"] for d in g.get_import_details(importer=importer, imported=imported)]
        arrows.append(f"{importer} -> {imported} (l.{', '.join(map(str, lines))})")
    return "; ".join(arrows)


def test_no_import_cycle_between_modules():
    """Every import counts, also one inside a function; ``if TYPE_CHECKING:`` imports do not (never run)."""
    g = grimp.build_graph("chexbench", include_external_packages=False, exclude_type_checking_imports=True)
    graph = {m: set(g.find_modules_directly_imported_by(m)) for m in g.modules}
    cycles = [c for c in _strongly_connected(graph) if len(c) > 1]
    assert not cycles, "import cycles:\n" + "\n".join(_describe(g, c) for c in cycles)
