"""The configuration reference, generated from the code: every ``[settings]`` key and every
component option, with its type, bounds, default and meaning.

``chexbench list settings`` and ``chexbench list options NAME`` print it, so the reference
cannot drift from what the code accepts. Each row is read from one pydantic field: a setting's
from :data:`~chexbench.spec.settings.SETTINGS_MODEL` (built from the :class:`Settings` fields),
a component option's from its ``option_model`` (:func:`~chexbench.spec.options.option_schema`),
the same fields that validate a grid. Nothing else declares what an option means.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from typing import Any

from chexbench.spec.options import OptionInfo, option_schema
from chexbench.spec.registry import REGISTRIES
from chexbench.spec.settings import settings_schema

#: registry kinds whose components take options, with their grid section
OPTION_KINDS: dict[str, str] = {
    "strategies": "strategy",
    "backbones": "backbone",
    "datasets": "dataset",
    "protocols": "protocol",
}


@dataclass(frozen=True)
class OptionRow:
    """One documented key as ``chexbench list`` prints it: where it goes in a grid, its type
    (with choices or bounds), its default and what it means."""

    key: str
    type: str
    default: str
    meaning: str


def format_default(value: Any) -> str:
    """A default as it would be written in TOML (``None``: unset)."""
    if value is None:
        return "(unset)"
    return json.dumps(value) if not isinstance(value, str) else f'"{value}"'


def format_type(info: OptionInfo) -> str:
    """``int >= 1``, ``float > 0``, ``"adamw" | "sgd"``, ``int >= 0 | "per_seed"``: the type column."""
    if info.choices is not None:
        return " | ".join(json.dumps(c) for c in info.choices)
    return f"{info.type} {info.bounds}".strip()


def _row(info: OptionInfo) -> OptionRow:
    return OptionRow(info.name, format_type(info), format_default(info.default), info.meaning)


def settings_rows() -> list[OptionRow]:
    """Every :class:`Settings` key in declaration order."""
    return [_row(r) for r in settings_schema()]


def option_rows(component: Any) -> list[OptionRow]:
    """Every option the component accepts, with its type, default and meaning ("" when undocumented)."""
    return [_row(r) for r in option_schema(component)]


def undocumented_options() -> list[str]:
    """``kind/name: key`` for every registered option without a meaning (a test keeps this empty;
    a plugin that declares a plain ``options`` dict gets a model typed from its defaults, with no meanings).
    """
    missing = []
    for kind in OPTION_KINDS:
        for e in REGISTRIES[kind].entries():
            missing += [f"{kind}/{e.name}: {r.key}" for r in option_rows(e.obj) if not r.meaning]
    return missing


def find_components(name: str) -> list[tuple[str, Any]]:
    """``(grid section, component)`` of every registry entry called ``name``."""
    return [
        (section, REGISTRIES[kind].get(name))
        for kind, section in OPTION_KINDS.items()
        if name in REGISTRIES[kind]
    ]


def unknown_component_message(name: str) -> str:
    known = [n for kind in OPTION_KINDS for n in REGISTRIES[kind].names()]
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"no strategy, backbone, dataset or protocol named '{name}'{hint}"
