"""Packaged grid presets: every ``*.toml`` here is registered by its stem (``smoke``, ``full``)."""

import tomllib
from pathlib import Path

from chexbench.spec.registry import GRIDS

for _path in sorted(Path(__file__).parent.glob("*.toml")):
    _desc = tomllib.loads(_path.read_text()).get("description", "")
    GRIDS.add(_path.stem, _path, _desc)
