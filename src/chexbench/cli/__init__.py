"""Command line: ``chexbench``. Commands are thin; the work happens in the packages.

Every module in this package except ``app`` attaches its commands to the Typer objects in
:mod:`chexbench.cli.app`; importing this package imports them all.
"""

from __future__ import annotations

import importlib
import pkgutil

from chexbench.cli.app import app

for _info in pkgutil.iter_modules(__path__):
    if _info.name != "app":
        importlib.import_module(f"{__name__}.{_info.name}")


def main() -> None:
    app()


__all__ = ["app", "main"]
