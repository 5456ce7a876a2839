"""The configuration reference, generated from the code: every ``[settings]`` key and every
component option, with its default and its meaning.

``chexbench list settings`` and ``chexbench list options NAME`` print it, so the reference
cannot drift from what the code accepts. A component declares its options as
``options = {name: default}`` and their meanings as ``option_help = {name: meaning}``; each
class declares the meanings of the options it introduces, and :func:`option_meanings`
merges them along the class hierarchy (so a subclass inherits its base's meanings).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, fields
from typing import Any

from chexbench.spec.settings import Settings, SETTINGS_HELP
from chexbench.spec.registry import REGISTRIES

#: registry kinds whose components take options, with their grid section
OPTION_KINDS: dict[str, str] = {"strategies": "strategy", "backbones": "backbone", "datasets": "dataset", "protocols": "protocol"}


@dataclass(frozen=True)
class OptionRow:
    """One documented key: where it goes in a grid, its default and what it means."""

    key: str
    default: str
    meaning: str


def format_default(value: Any) -> str:
    """A default as it would be written in TOML (``None``: unset)."""
    if value is None:
        return "(unset)"
    return json.dumps(value) if not isinstance(value, str) else f'"{value}"'


def settings_rows() -> list[OptionRow]:
    """Every :class:`Settings` key in declaration order."""
    return [OptionRow(f.name, format_default(f.default), SETTINGS_HELP.get(f.name, "")) for f in fields(Settings)]


def option_meanings(component: Any) -> dict[str, str]:
    """``option_help`` merged over the component's class hierarchy (subclasses win) and the instance."""
    merged: dict[str, str] = {}
    for cls in reversed(type(component).__mro__):
        merged.update(cls.__dict__.get("option_help", {}) or {})
    merged.update(component.__dict__.get("option_help", {}) if hasattr(component, "__dict__") else {})
    return merged


def option_rows(component: Any) -> list[OptionRow]:
    """Every option the component accepts, with its default and meaning ("" when undocumented)."""
    meanings = option_meanings(component)
    options = getattr(component, "options", {}) or {}
    return [OptionRow(k, format_default(v), meanings.get(k, "")) for k, v in options.items()]


def undocumented_options() -> list[str]:
    """``kind/name: key`` for every registered option without a meaning (a test keeps this empty)."""
    missing = []
    for kind in OPTION_KINDS:
        for e in REGISTRIES[kind].entries():
            missing += [f"{kind}/{e.name}: {r.key}" for r in option_rows(e.obj) if not r.meaning]
    return missing


def find_components(name: str) -> list[tuple[str, Any]]:
    """``(grid section, component)`` of every registry entry called ``name``."""
    return [(section, REGISTRIES[kind].get(name)) for kind, section in OPTION_KINDS.items() if name in REGISTRIES[kind]]


def unknown_component_message(name: str) -> str:
    known = [n for kind in OPTION_KINDS for n in REGISTRIES[kind].names()]
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"no strategy, backbone, dataset or protocol named '{name}'{hint}"
