"""Typed option declarations of registered components, and one-line validation of grid values.

A component (strategy, backbone, dataset, protocol) declares the options a grid may set
under ``[<section>.<name>]`` as a pydantic model next to the component::

    class MoCoOptions(PretrainOptions):
        queue_size: int = Field(65536, ge=1, description="keys in the FIFO queue of negatives")
        momentum: float = Field(0.999, ge=0, le=1, description="key-encoder EMA momentum")

    class MoCoV2(PretrainStrategy):
        option_model = MoCoOptions              # ``options`` (the plain dict it reads) follows

Each field is the one place an option is declared: its type, bounds, default and meaning
(``description``) feed grid validation, ``chexbench list options`` and the docs alike; the
component's ``options`` dict is derived from it (:class:`OptionDefaults`). Models forbid unknown
keys and are strict (``"ten"`` is not an int, ``true`` is not a number; an int is accepted where
a float is declared). A plugin that declares only a plain ``options`` dict gets a model inferred
from the defaults' types, with no meanings (see :func:`options_model`;
``chexbench.spec.reference.undocumented_options`` lists them).
:func:`option_schema` gives the machine-readable rows ``chexbench list options`` prints.
"""

from __future__ import annotations

import copy
import difflib
import json
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from pydantic.fields import FieldInfo

from chexbench.core.errors import ConfigError


class Options(BaseModel):
    """Base of every option model: unknown keys are errors, values are not coerced."""

    model_config: ClassVar[ConfigDict] = ConfigDict(extra="forbid", strict=True, frozen=True)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """``{name: default}`` of every option (the plain dict components read)."""
        return {name: copy.deepcopy(f.default) for name, f in cls.model_fields.items()}

    @classmethod
    def with_defaults(cls, name: str | None = None, **defaults: Any) -> type[Options]:
        """A subclass with other defaults for some options (types, bounds and meanings kept)."""
        fields: dict[str, Any] = {}
        for key, value in defaults.items():
            if key not in cls.model_fields:
                raise KeyError(f"{cls.__name__} has no option {key!r}")
            info = copy.copy(cls.model_fields[key])
            info.default = value
            fields[key] = (info.annotation, info)
        model = create_model(name or cls.__name__, __base__=cls, **fields)
        model.__doc__ = cls.__doc__
        return model


class OptionDefaults:
    """A component's ``options`` read from its ``option_model``: ``{name: default}`` of every field,
    a fresh copy on each read (a caller that changes it cannot change the declaration). The base
    classes of strategies, backbones, datasets and protocols set ``options = OptionDefaults()``, so
    a component declares its options once, as its ``option_model``; a plugin may still assign a
    plain ``options`` dict instead (see :func:`options_model`)."""

    def __get__(self, obj: Any, owner: type) -> dict[str, Any]:
        model = getattr(owner if obj is None else obj, "option_model", Options)
        return model.defaults()


@dataclass(frozen=True)
class OptionInfo:
    """One row of a component's option schema."""

    name: str
    type: str  # e.g. "int", "float", "str | None", "list[float]"
    default: Any
    choices: tuple[Any, ...] | None  # the allowed values of a Literal option
    bounds: str  # e.g. "> 0", ">= 1", "<= 1" (joined by ", "), "" if none
    meaning: str  # one line

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "default": self.default,
            "choices": list(self.choices) if self.choices is not None else None,
            "bounds": self.bounds,
            "meaning": self.meaning,
        }


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "choice"
    if origin is typing.Annotated:  # a union member with its own bounds (settings.pretrain_seed)
        base, *meta = typing.get_args(annotation)
        inner = [m for item in meta for m in (item.metadata if isinstance(item, FieldInfo) else [item])]
        return f"{_type_name(base)} {_bounds(inner)}".strip()
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_member_name(a) for a in typing.get_args(annotation))
    if origin in (list, tuple):  # a TOML list (a tuple field takes one too)
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return f"list[{_type_name(args[0])}]" if args else "list"
    if annotation is type(None):
        return "None"
    if annotation is Any:
        return "any"
    return getattr(annotation, "__name__", str(annotation))


def _member_name(annotation: Any) -> str:
    """A union member: a Literal spelled as its values (``"per_seed"``), any other type by name."""
    if typing.get_origin(annotation) is Literal:
        return " | ".join(json.dumps(v) for v in typing.get_args(annotation))
    return _type_name(annotation)


def _choices(annotation: Any) -> tuple[Any, ...] | None:
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) is Literal:
        return typing.get_args(annotation)
    return None


def _literal_union(annotation: Any) -> tuple[list[Any], list[str]] | None:
    """(literal choices, other type names) of a union that mixes a Literal with other types, else None."""
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return None
    literals: list[Any] = []
    others: list[str] = []
    for arg in typing.get_args(annotation):
        if typing.get_origin(arg) is Literal:
            literals += list(typing.get_args(arg))
        else:
            others.append(_type_name(arg))
    return (literals, others) if literals else None


_BOUND_SYMBOLS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))


def _bounds(metadata: list[Any]) -> str:
    parts = []
    for item in metadata:
        for attr, symbol in _BOUND_SYMBOLS:
            value = getattr(item, attr, None)
            if value is not None:
                parts.append(f"{symbol} {value:g}" if isinstance(value, float) else f"{symbol} {value}")
    return ", ".join(parts)


def schema_of(model: type[BaseModel]) -> list[OptionInfo]:
    """The rows of ``model``'s options, in declaration order."""
    rows = []
    for name, f in model.model_fields.items():
        rows.append(
            OptionInfo(
                name=name,
                type=_type_name(f.annotation),
                default=f.default,
                choices=_choices(f.annotation),
                bounds=_bounds(list(f.metadata)),
                meaning=(f.description or "").strip(),
            )
        )
    return rows


def _inferred_type(default: Any) -> Any:
    if default is None:
        return Any
    if isinstance(default, bool):
        return bool
    if isinstance(default, int):
        return int
    if isinstance(default, float):
        return float | int  # an int stays an int (e.g. a count where the default is a fraction)
    if isinstance(default, str):
        return str
    if isinstance(default, list):
        return list
    if isinstance(default, dict):
        return dict
    return Any


_DERIVED: dict[str, type[Options]] = {}


def options_model(component: Any) -> type[Options]:
    """The option model of a registered component: its ``option_model`` when that declares
    exactly its ``options`` with the same defaults; else a model derived from both (a plugin
    that declares only a dict, or a subclass that adds or re-defaults options in its dict):
    declared options keep their types and bounds, the others are typed from their defaults."""
    defaults = dict(getattr(component, "options", {}) or {})
    model = getattr(component, "option_model", None)
    base = model if isinstance(model, type) and issubclass(model, Options) else Options
    fields = base.model_fields
    extra = {k: v for k, v in defaults.items() if k not in fields}
    changed = {k: v for k, v in defaults.items() if k in fields and _differs(fields[k].default, v)}
    if base is not Options and not extra and not changed:
        return base
    key = json.dumps(
        [f"{base.__module__}.{base.__qualname__}", type(component).__name__, extra, changed],
        sort_keys=True,
        default=repr,
    )
    if key not in _DERIVED:
        parent = base.with_defaults(**changed) if changed else base
        new = {k: (_inferred_type(v), copy.deepcopy(v)) for k, v in extra.items()}
        _DERIVED[key] = create_model(f"{type(component).__name__}Options", __base__=parent, **new)
    return _DERIVED[key]


def _differs(a: Any, b: Any) -> bool:
    return type(a) is not type(b) or a != b


def option_schema(component: Any) -> list[OptionInfo]:
    """Machine-readable option rows of a registered component (name, type, default, choices, bounds,
    meaning)."""
    return schema_of(options_model(component))


def did_you_mean(key: str, known: Any) -> str:
    close = difflib.get_close_matches(str(key), [str(k) for k in known], n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def validation_message(error: ValidationError, model: type[BaseModel], where: str) -> str:
    """One line from the first error of ``error``: the key, what it must be, what it got."""
    e = error.errors()[0]
    key = ".".join(str(p) for p in e["loc"]) if e["loc"] else "?"
    top = str(e["loc"][0]) if e["loc"] else key
    value = e.get("input")
    if e["type"] == "extra_forbidden":
        known = list(model.model_fields)
        return (
            f"unknown key '{top}' in {where}{did_you_mean(top, known)} (known: {', '.join(known) or 'none'})"
        )
    field = model.model_fields.get(top)
    choices = _choices(field.annotation) if field is not None else None
    mixed = _literal_union(field.annotation) if field is not None else None
    if mixed is not None:
        literals, others = mixed
        return (
            f"{where} '{top}' must be one of {', '.join(repr(c) for c in literals)} or a"
            f" {' or '.join(others)}, got {value!r}"
        )
    if choices is not None:
        return (
            f"{where} '{key}' must be one of {', '.join(repr(c) for c in choices)}, got"
            f" {value!r}{did_you_mean(str(value), choices)}"
        )
    want = _type_name(field.annotation) if field is not None else "valid"
    bounds = _bounds(list(field.metadata)) if field is not None else ""
    need = want + (f" {bounds}" if bounds and e["type"] in _BOUND_ERRORS else "")
    return f"{where} '{key}' must be {need}, got {value!r}"


_BOUND_ERRORS = frozenset({"greater_than", "greater_than_equal", "less_than", "less_than_equal"})


def validate_table(
    model: type[BaseModel], table: dict[str, Any], where: str, source: str | Callable[[], str]
) -> dict[str, Any]:
    """``table`` checked against ``model`` (only the keys it sets); returns the values (an int
    declared float becomes a float). Raises ConfigError with one line naming file, section and key.
    ``source`` may be a function, called only for the message (a cell id is a hash of the whole cell)."""
    try:
        validated = model.model_validate(table)
    except ValidationError as e:
        where_from = source() if callable(source) else source
        raise ConfigError(f"{where_from}: {validation_message(e, model, where)}") from None
    return {k: getattr(validated, k) for k in table}
