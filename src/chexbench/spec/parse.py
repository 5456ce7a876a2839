"""Typed configuration: grid files (TOML) resolved into one :class:`CellConfig` per cell.

A grid file looks like this (every section is optional except ``[axes]``)::

    name = "mygrid"
    description = "what this grid asks"

    [axes]                      # the cartesian product of these is the set of cells
    strategy = ["scratch", "simclr"]
    backbone = ["resnet50"]
    dataset = ["chexpert"]
    protocol = ["finetune", "linear"]
    label_fraction = [0.1, 1.0]
    seed = [0, 1, 2]
    # extra axes sweep one option: "strategy.temperature" = [0.1, 0.2]

    [settings]                  # defaults for every cell (see Settings for every key)
    epochs = 10
    lr = 1e-3

    [dataset.chexpert]          # settings overrides and dataset options (e.g. root)
    root = "/data/CheXpert-v1.0-small"
    [backbone.vit_b16]          # settings overrides and backbone options
    lr = 1e-4
    [strategy.simclr]           # settings overrides and strategy options
    temperature = 0.1
    [strategy.simclr.recipe.vit]   # options for backbones of one family (the backbone's ``kind``)
    pretrain_lr = 1.5e-4
    [protocol.linear]           # settings overrides and protocol options
    epochs = 30

    [[override]]                # settings for cells matching every key of `match`
    match = { backbone = "vit_b16", protocol = "finetune" }
    lr = 5e-5

Precedence, lowest first: [settings] < dataset < backbone < strategy (< its recipe for the
cell's backbone family) < protocol < overrides (in file order) < option axes.

Everything is checked when the grid is read, before any cell exists: unknown keys, every
value's type, choices and bounds (:class:`Settings` fields and each component's option model,
see :mod:`chexbench.spec.options`), option axes against the options the grid's components declare
(an option axis applies to the components that declare it), override matches against the
grid's axis values, and ``--only`` values against them too. Errors are one line naming the
file, the section and the key, with a did-you-mean. An alias strategy (``moco_convstem``) takes
its target's table.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from chexbench.core.errors import ConfigError
from chexbench.spec.cell import AXES, SECTIONS
from chexbench.spec.grid import (
    Grid,
    _declared_options,
    _equal,
    _registries,
    _show,
    _with_named_instances,
    backbone_family,
)
from chexbench.spec.options import did_you_mean, options_model, validate_table
from chexbench.spec.registry import DATASETS, GRIDS, STRATEGIES, RegistryError
from chexbench.spec.settings import NOT_CELL_SETTINGS, SETTINGS_KEYS, SETTINGS_MODEL


def _check_keys(table: dict[str, Any], allowed: Any, where: str, source: str) -> None:
    for k in table:
        if k not in allowed:
            raise ConfigError(f"{source}: unknown key '{k}' in {where}{did_you_mean(k, allowed)}")


def _check_settings(table: dict[str, Any], where: str, source: str) -> dict[str, Any]:
    """Settings values checked for type, choices and bounds; ``pretrain_source`` must be a dataset."""
    _check_keys(table, SETTINGS_KEYS, where, source)
    out = validate_table(SETTINGS_MODEL, table, where, source)
    if "pretrain_source" in out and out["pretrain_source"] not in DATASETS:
        raise ConfigError(
            f"{source}: {where} 'pretrain_source': {DATASETS.unknown_message(out['pretrain_source'])}"
        )
    for name in out.get("evaluate_on", ()):
        if name not in DATASETS:
            raise ConfigError(f"{source}: {where} 'evaluate_on': {DATASETS.unknown_message(name)}")
    if len(set(out.get("evaluate_on", ()))) != len(out.get("evaluate_on", ())):
        raise ConfigError(
            f"{source}: {where} 'evaluate_on' lists a dataset twice: {list(out['evaluate_on'])}"
        )
    return out


def _check_options(component: Any, table: dict[str, Any], where: str, source: str) -> dict[str, Any]:
    return validate_table(options_model(component), table, where, source)


def load_grid(name_or_path: str) -> Grid:
    """Load a packaged grid preset by name (``smoke``, ``full``) or a TOML file by path."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ConfigError(f"grid file not found: {path}")
        source = str(path)
        text = path.read_text()
    else:
        if name_or_path not in GRIDS:
            raise ConfigError(GRIDS.unknown_message(name_or_path) + " (or give a path to a .toml file)")
        path = GRIDS.get(name_or_path)
        source = str(path)
        text = Path(path).read_text()
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: invalid TOML: {e}") from None
    return parse_grid(raw, source, default_name=path.stem)


def _expand_named_strategies(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """A strategy with ``named_tables`` (e.g. ``checkpoint``) declares several named instances.

    Its table(s) become one ``[strategy.NAME]`` table per instance, NAME an alias of the
    strategy, and the axis value (``checkpoint``) stands for all of them; each instance is
    then a strategy of its own in cells, records and the leaderboard.
    """
    if not isinstance(raw.get("axes"), dict):
        return raw
    tables = raw.get("strategy", {})
    axis = raw["axes"].get("strategy", [])
    axis = axis if isinstance(axis, list) else [axis]
    if not isinstance(tables, dict):
        return raw
    bases = [
        n
        for n in dict.fromkeys([*tables, *axis])
        if isinstance(n, str)
        and n in STRATEGIES
        and hasattr(STRATEGIES.get(n), "named_tables")
        and STRATEGIES.get(n).name == n
    ]
    if not bases:
        return raw
    tables, axis = dict(tables), list(axis)
    for base in bases:
        named = STRATEGIES.get(base).named_tables(tables.pop(base, None), source)
        for name, table in named.items():
            if name in tables:
                raise ConfigError(
                    f"{source}: [strategy.{name}] is given twice (as a table and as a {base} name)"
                )
            try:
                STRATEGIES.alias(name, base)
            except RegistryError as e:
                raise ConfigError(f"{source}: [strategy.{base}] name '{name}': {e}") from None
            tables[name] = table
        axis = [x for v in axis for x in (list(named) if v == base else [v])]
    return {**raw, "strategy": tables, "axes": {**raw["axes"], "strategy": list(dict.fromkeys(axis))}}


def _is_table(value: Any) -> bool:
    return isinstance(value, dict)


def _parse_axes(raw_axes: Any, source: str) -> dict[str, list[Any]]:
    registries = _registries()
    if not _is_table(raw_axes):
        raise ConfigError(f"{source}: [axes] must be a table")
    axes: dict[str, list[Any]] = {}
    for k, v in raw_axes.items():
        if k not in AXES and not ("." in k and k.split(".", 1)[0] in (*SECTIONS, "settings")):
            raise ConfigError(f"{source}: unknown key '{k}' in [axes]{did_you_mean(k, AXES)}")
        vals = v if isinstance(v, list) else [v]
        if not vals:
            raise ConfigError(f"{source}: axis '{k}' in [axes] is empty")
        for i, a in enumerate(vals):
            if any(_same_value(a, b) for b in vals[:i]):
                raise ConfigError(f"{source}: [axes] {k} lists {a!r} twice")
        axes[k] = vals
    for a in AXES:
        if a not in axes:
            if a == "label_fraction":
                axes[a] = [1.0]
            elif a == "seed":
                axes[a] = [0]
            else:
                raise ConfigError(f"{source}: [axes] needs '{a}'")
    for a in SECTIONS:
        for v in axes[a]:
            if not isinstance(v, str) or v not in registries[a]:
                raise ConfigError(f"{source}: [axes] {a}: {registries[a].unknown_message(str(v))}")
    for v in axes["label_fraction"]:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < float(v) <= 1:
            raise ConfigError(f"{source}: [axes] label_fraction values must be numbers in (0, 1], got {v!r}")
    for v in axes["seed"]:
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ConfigError(f"{source}: [axes] seed values must be integers ≥ 0, got {v!r}")
    for k, vals in axes.items():  # option axes: "settings.KEY" or "SECTION.OPTION"
        if k in AXES:
            continue
        section, key = k.split(".", 1)
        where = f"[axes] '{k}'"
        if section == "settings":
            _check_keys({key: None}, SETTINGS_KEYS, "[axes] settings.*", source)
            if key in NOT_CELL_SETTINGS:
                raise ConfigError(
                    f"{source}: {where}: {key} is not part of a cell (it adds predictions beside each cell's"
                    " own); set it under [settings] instead of sweeping it"
                )
            for v in vals:
                _check_settings({key: v}, where, source)
            continue
        if key in SETTINGS_KEYS:
            raise ConfigError(f"{source}: {where}: '{key}' is a setting; sweep it as \"settings.{key}\"")
        takers = [registries[section].get(name) for name in axes[section]]
        takers = [c for c in takers if key in _declared_options(c)]
        if not takers:
            known = sorted(
                set().union(*(_declared_options(registries[section].get(n)) for n in axes[section]))
            )
            raise ConfigError(
                f"{source}: {where}: no {section} of the grid ({', '.join(axes[section])}) has an option"
                f" '{key}'{did_you_mean(key, known)}"
            )
        for c in takers:
            for v in vals:
                _check_options(c, {key: v}, f"{where} (option of {section} {c.name})", source)
    return axes


def _same_value(a: Any, b: Any) -> bool:
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def _parse_sections(
    raw: dict[str, Any], source: str
) -> tuple[dict[str, dict[str, dict[str, Any]]], dict[str, dict[str, dict[str, Any]]]]:
    registries = _registries()
    families = sorted({backbone_family(n) for n in registries["backbone"].names()} - {""})
    sections: dict[str, dict[str, dict[str, Any]]] = {}
    recipes: dict[str, dict[str, dict[str, Any]]] = {}
    for section in SECTIONS:
        tables = raw.get(section, {})
        if not _is_table(tables):
            raise ConfigError(f"{source}: [{section}] must be a table of [{section}.NAME] tables")
        sections[section] = {}
        for name, table in tables.items():
            if name not in registries[section]:
                raise ConfigError(
                    f"{source}: [{section}.{name}]: {registries[section].unknown_message(name)}"
                )
            if not _is_table(table):
                raise ConfigError(f"{source}: [{section}.{name}] must be a table")
            obj = registries[section].get(name)
            target = getattr(obj, "alias_of", None)
            if target:
                raise ConfigError(
                    f"{source}: [{section}.{name}]: {name} is an alias of {target} (same recipe); "
                    f"set its options under [{section}.{target}]"
                )
            where = f"[{section}.{name}]"
            table = dict(table)
            if section == "strategy" and "recipe" in table and "recipe" not in _declared_options(obj):
                recipe = table.pop("recipe")
                if not _is_table(recipe):
                    raise ConfigError(
                        f"{source}: {where} recipe must be a table of [{where[1:-1]}.recipe.FAMILY] tables"
                    )
                recipes[name] = {}
                for family, opts in recipe.items():
                    if family not in families:
                        raise ConfigError(
                            f"{source}: [{section}.{name}.recipe.{family}]: unknown backbone family"
                            f" '{family}'{did_you_mean(family, families)} (families: {', '.join(families)})"
                        )
                    if not _is_table(opts):
                        raise ConfigError(f"{source}: [{section}.{name}.recipe.{family}] must be a table")
                    recipes[name][family] = _check_options(
                        obj, opts, f"[{section}.{name}.recipe.{family}]", source
                    )
            declared = _declared_options(obj)
            _check_keys(table, SETTINGS_KEYS | declared, where, source)
            st = _check_settings({k: v for k, v in table.items() if k in SETTINGS_KEYS}, where, source)
            opts = _check_options(
                obj, {k: v for k, v in table.items() if k not in SETTINGS_KEYS}, where, source
            )
            sections[section][name] = {**opts, **st}
    return sections, recipes


def _parse_overrides(raw: Any, axes: dict[str, list[Any]], source: str) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise ConfigError(f"{source}: 'override' must be an array of [[override]] tables")
    overrides = []
    for i, ov in enumerate(raw):
        where = f"[[override]] #{i + 1}"
        if not _is_table(ov) or "match" not in ov or not _is_table(ov["match"]):
            raise ConfigError(f"{source}: {where} needs a 'match' table")
        _check_keys(ov["match"], AXES, f"{where} match", source)
        for key, value in ov["match"].items():
            named = key == "strategy" and len(_with_named_instances([str(value)], axes[key])) > 1
            if not named and not any(_equal(have, value) for have in axes[key]):
                shown = [_show(x) for x in axes[key]]
                raise ConfigError(
                    f"{source}: {where} match {key} = {value!r} matches no cell: not among the grid's {key}"
                    f" values ({', '.join(shown)}){did_you_mean(str(value), shown)}"
                )
        rest = {k: v for k, v in ov.items() if k != "match"}
        for k in rest:
            if k not in SETTINGS_KEYS and any(
                k in _declared_options(e.obj) for r in _registries().values() for e in r.entries()
            ):
                raise ConfigError(
                    f"{source}: {where}: '{k}' is a component option; [[override]] sets settings only — "
                    "set options under [SECTION.NAME] (or [strategy.NAME.recipe.FAMILY])"
                )
        if not rest:
            raise ConfigError(f"{source}: {where} sets nothing besides 'match'")
        overrides.append({"match": ov["match"], "settings": _check_settings(rest, where, source)})
    return overrides


def parse_grid(raw: dict[str, Any], source: str, default_name: str = "grid") -> Grid:
    """A grid from a parsed TOML table. Everything is checked here, before any cell exists:
    axis values, every settings and option value's type, choices and bounds, option keys
    against each component's declared options, recipes and overrides. One line per error."""
    top_keys = {"name", "description", "axes", "settings", "override", "exclude", *SECTIONS}
    _check_keys(raw, top_keys, "the top level", source)
    if "axes" not in raw:
        raise ConfigError(f"{source}: missing [axes] table")
    for key in ("name", "description"):
        if key in raw and not isinstance(raw[key], str):
            raise ConfigError(f"{source}: '{key}' must be a string, got {raw[key]!r}")
    raw = _expand_named_strategies(raw, source)
    axes = _parse_axes(raw["axes"], source)
    settings_raw = raw.get("settings", {})
    if not _is_table(settings_raw):
        raise ConfigError(f"{source}: [settings] must be a table")
    settings_raw = dict(settings_raw)
    log = settings_raw.pop("log", None)
    if log is not None and not (
        isinstance(log, str) or (isinstance(log, list) and all(isinstance(x, str) for x in log))
    ):
        raise ConfigError(
            f'{source}: [settings] log must be a string such as "tensorboard,mlflow" or "none", got {log!r}'
        )
    settings = _check_settings(settings_raw, "[settings]", source)
    sections, recipes = _parse_sections(raw, source)
    overrides = _parse_overrides(raw.get("override", []), axes, source)
    excludes = _parse_excludes(raw.get("exclude", []), axes, source)
    return Grid(
        name=str(raw.get("name", default_name)),
        description=str(raw.get("description", "")),
        source=source,
        axes=axes,
        settings=settings,
        sections=sections,
        overrides=overrides,
        recipes=recipes,
        excludes=excludes,
        log=log,
    )


def _parse_excludes(raw: Any, axes: dict[str, list[Any]], source: str) -> list[dict[str, Any]]:
    """``[[exclude]]`` tables: ``match`` (axis → value or list of values of that axis), ``reason``."""
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise ConfigError(f"{source}: 'exclude' must be an array of [[exclude]] tables")
    out = []
    for i, table in enumerate(raw):
        where = f"[[exclude]] #{i + 1}"
        _check_keys(table, ("match", "reason"), where, source)
        match = table.get("match")
        if not isinstance(match, dict) or not match:
            raise ConfigError(f"{source}: {where} needs a non-empty 'match' table")
        _check_keys(match, AXES, f"{where} match", source)
        parsed = {}
        for k, v in match.items():
            values = v if isinstance(v, list) else [v]
            for value in values:  # a value the axis does not have would exclude nothing, silently
                if not any(_equal(value, a) for a in axes[k]):
                    known = [str(a) for a in axes[k]]
                    raise ConfigError(
                        f"{source}: {where} match {k} = {value!r} is not a value of axis '{k}'"
                        f"{did_you_mean(str(value), known)} (values: {', '.join(known)})"
                    )
            parsed[k] = values
        reason = table.get("reason", "")
        if not isinstance(reason, str):
            raise ConfigError(f"{source}: {where} 'reason' must be a string, got {reason!r}")
        out.append({"match": parsed, "reason": reason})
    return out
