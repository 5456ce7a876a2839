"""Print the runtime requirements of pyproject.toml that this python does not satisfy, one per line.

``python3 scripts/missing_requirements.py [--skip NAME …]``. Used by ``make gpu-check`` on a GPU
machine whose own python already holds a CUDA build of torch: only what it lacks is installed,
and torch itself never (``--skip torch``: a wrong torch there is reported, not replaced).
Needs only the standard library and ``packaging`` (or pip's vendored copy).
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

try:
    from packaging.requirements import Requirement
except ImportError:  # pragma: no cover - pip always carries a copy
    from pip._vendor.packaging.requirements import Requirement


def missing(pyproject: Path, skip: set[str]) -> tuple[list[str], list[str]]:
    """(requirements to install, skipped requirements that are not satisfied)."""
    deps = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["dependencies"]
    need, broken = [], []
    for text in deps:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate():
            continue
        try:
            ok = req.specifier.contains(version(req.name), prereleases=True)
        except PackageNotFoundError:
            ok = False
        if not ok:
            (broken if req.name.lower() in skip else need).append(str(req))
    return need, broken


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pyproject", type=Path, default=Path(__file__).resolve().parents[1] / "pyproject.toml")
    p.add_argument("--skip", action="append", default=[], help="never install this one; report it on stderr if unsatisfied")
    args = p.parse_args()
    need, broken = missing(args.pyproject, {s.lower() for s in args.skip})
    for req in broken:
        have = _installed(Requirement(req).name)
        print(f"{Requirement(req).name} {have} does not satisfy {req}", file=sys.stderr)
    print("\n".join(need))
    return 1 if broken else 0


def _installed(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "(not installed)"


if __name__ == "__main__":
    raise SystemExit(main())
