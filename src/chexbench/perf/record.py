"""Recording benchmark results in docs/PERFORMANCE.md, one section per benchmark."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
from pathlib import Path

import torch

from chexbench.core.atomic import atomic_write_text
from chexbench.core.paths import repo_root

HEADER = (
    "# Performance\n\nMeasured by `chexbench bench …`; each section is rewritten when its benchmark runs"
    " again.\n"
)


def machine_description() -> str:
    dev = (
        torch.cuda.get_device_name(0)
        if torch.cuda.is_available()
        else f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    )
    return f"{dev}; Python {platform.python_version()}, torch {torch.__version__}"


def performance_file(path: str | Path | None = None) -> Path:
    if path is not None:
        return Path(path)
    root = repo_root()
    return (root / "docs" / "PERFORMANCE.md") if root else Path("PERFORMANCE.md")


def record_section(title: str, body: str, command: str, path: str | Path | None = None) -> Path:
    """Replace (or append) the ``## title`` section of PERFORMANCE.md with ``body``.

    The section states the date, the machine and the command that produced it.
    """
    file = performance_file(path)
    text = file.read_text() if file.exists() else HEADER
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = (
        f"## {title}\n\n"
        f"- machine: {machine_description()}\n- date: {stamp}\n- command: `{command}`\n\n"
        f"{body.strip()}\n\n"
    )
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip() + "\n\n" + section
    atomic_write_text(text, file)
    return file
