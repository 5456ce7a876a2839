"""Where chexbench keeps caches (prepared datasets, phantom data, pretraining checkpoints)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$CHEXBENCH_CACHE`` if set, else ``$XDG_CACHE_HOME/chexbench`` or ``~/.cache/chexbench``."""
    env = os.environ.get("CHEXBENCH_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "chexbench"


def repo_root() -> Path | None:
    """The source checkout holding this package (for docs/PERFORMANCE.md), if installed editable."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").exists() and (parent / "src" / "chexbench").exists():
            return parent
    return None
