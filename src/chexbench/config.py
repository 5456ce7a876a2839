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
    [protocol.linear]           # settings overrides and protocol options
    epochs = 30

    [[override]]                # settings for cells matching every key of `match`
    match = { backbone = "vit_b16", protocol = "finetune" }
    lr = 5e-5

Precedence, lowest first: [settings] < dataset < backbone < strategy < protocol < overrides
(in file order). Unknown keys are errors naming the key, the section and the file.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import json
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from chexbench.errors import ConfigError

#: bump when the meaning of a stored record changes; it is part of every cell id.
RESULTS_SCHEMA_VERSION = 1

AXES: tuple[str, ...] = ("strategy", "backbone", "dataset", "protocol", "label_fraction", "seed")
SECTIONS: tuple[str, ...] = ("dataset", "backbone", "strategy", "protocol")


@dataclass(frozen=True)
class Settings:
    """Training and data settings; every field may be set in a grid at any level."""

    epochs: int = 10
    batch_size: int = 32
    eval_batch_size: int = 128
    image_size: int = 224
    optimizer: str = "adamw"  # adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    uncertainty: str = "ignore"  # ignore | zeros | ones | mixed (CheXpert paper: U-Ones for atelectasis, edema)
    not_mentioned: str = "negative"  # negative (blank → 0, the CheXpert convention) | ignore (masked)
    views: str = "frontal"  # frontal | all
    max_train_images: int = 0  # 0: no cap; a cap makes smoke runs fast
    max_eval_images: int = 0
    pretrain_source: str = "chexpert"  # dataset whose train split is the unlabeled pretraining pool
    pretrain_seed: int = 0
    allow_leakage: bool = False  # refuse test patients in train/pretrain unless set (recorded)
    deterministic: bool = False  # torch.use_deterministic_algorithms
    num_workers: int = 0
    compile: bool = False
    amp: bool = True  # bf16 autocast on CUDA; ignored on CPU


SETTINGS_KEYS = frozenset(f.name for f in fields(Settings))

#: the meaning of every :class:`Settings` key (``chexbench list settings`` prints it; a test
#: requires one line per key, so a new key cannot go undocumented)
SETTINGS_HELP: dict[str, str] = {
    "epochs": "training epochs of the protocol (fine-tuning, or the linear probe's optimizer)",
    "batch_size": "training images per step",
    "eval_batch_size": "images per step when predicting validation and test",
    "image_size": "side of the square input image, in pixels",
    "optimizer": "optimizer of the protocol: adamw | sgd",
    "lr": "peak learning rate of the protocol (cosine schedule after warmup)",
    "weight_decay": "weight decay of the protocol",
    "warmup_epochs": "linear learning-rate warmup, in epochs",
    "uncertainty": "uncertain (-1) labels: ignore (masked) | zeros | ones | mixed (U-Ones for atelectasis and edema, U-Zeros otherwise)",
    "not_mentioned": "blank (not mentioned) labels: negative (the CheXpert convention) | ignore (masked)",
    "views": "images used: frontal | all",
    "max_train_images": "cap on the training images of a cell; 0: no cap (a cap makes smoke runs fast)",
    "max_eval_images": "cap on the validation and test images; 0: no cap",
    "pretrain_source": "dataset whose train split is the unlabeled pretraining pool of self-supervised strategies",
    "pretrain_seed": "seed of the shared pretraining run; one run per pretraining seed serves every fine-tuning seed "
    "(sweep it as an axis, \"settings.pretrain_seed\" = [0, 1], to measure pretraining variance)",
    "allow_leakage": "run even when test patients are in the training split or pretraining pool (recorded in the cell)",
    "deterministic": "torch.use_deterministic_algorithms (slower; bitwise-reproducible where torch allows)",
    "num_workers": "data-loader worker processes",
    "compile": "torch.compile the model (CUDA)",
    "amp": "bf16 autocast on CUDA; ignored on CPU",
}


@dataclass(frozen=True)
class CellConfig:
    """The fully resolved configuration of one cell: axis values, settings and options."""

    strategy: str
    backbone: str
    dataset: str
    protocol: str
    label_fraction: float
    seed: int
    settings: Settings = field(default_factory=Settings)
    strategy_options: dict[str, Any] = field(default_factory=dict)
    backbone_options: dict[str, Any] = field(default_factory=dict)
    dataset_options: dict[str, Any] = field(default_factory=dict)
    protocol_options: dict[str, Any] = field(default_factory=dict)
    grid: str = ""
    #: axis → "distribution==version" for each component that a plugin provides (empty for built-ins)
    plugins: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("grid")  # the grid name does not change what the cell computes
        if not d["plugins"]:
            d.pop("plugins")  # built-in cells keep the ids they had before plugins were versioned
        return d

    def canonical_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), default=str)

    @property
    def cell_id(self) -> str:
        """Short deterministic hash of the resolved config plus the results-schema version."""
        payload = f"v{RESULTS_SCHEMA_VERSION}:{self.canonical_json()}"
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    @property
    def config_hash(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    @property
    def configuration_hash(self) -> str:
        """sha256 of the resolved config *without* the seed: the cells that differ only in their
        fine-tuning seed share it, and only they are pooled over seeds by the report."""
        return configuration_hash(self.to_dict())

    def axis_values(self) -> dict[str, Any]:
        return {a: getattr(self, a) for a in AXES}

    def label(self) -> str:
        return (
            f"{self.strategy}/{self.backbone}/{self.dataset}/{self.protocol}"
            f"/f={self.label_fraction:g}/s={self.seed}"
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CellConfig:
        d = dict(d)
        d["settings"] = Settings(**d.get("settings", {}))
        return cls(**d)


#: keys of a resolved config that are not part of its configuration (seeds are pooled over)
NOT_CONFIGURATION_KEYS = frozenset({"seed", "grid"})
#: resolved-config sections and the grid key prefix that sets them (``strategy_options`` ← ``strategy.X``)
_GRID_PREFIX = {"settings": "settings", "strategy_options": "strategy", "backbone_options": "backbone",
                "dataset_options": "dataset", "protocol_options": "protocol"}


def configuration_hash(config: dict[str, Any]) -> str:
    """sha256 of a resolved config dict (``CellConfig.to_dict()`` or a record's parsed
    ``config_json``) without its seed and grid name: the identity of a configuration."""
    rest = {k: v for k, v in config.items() if k not in NOT_CONFIGURATION_KEYS}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def configuration_keys(config: dict[str, Any]) -> dict[str, Any]:
    """A resolved config dict flattened to grid keys, seed and grid name left out:
    ``{"strategy": "simclr", …, "settings.lr": 0.001, "strategy.temperature": 0.1, …}``."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key in NOT_CONFIGURATION_KEYS:
            continue
        if isinstance(value, dict):
            prefix = _GRID_PREFIX.get(key, key)
            for sub, v in _flatten(value, prefix).items():
                out[sub] = v
        else:
            out[key] = value
    return out


def _flatten(d: dict[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        name = f"{prefix}.{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, name))
        else:
            out[name] = v
    return out


@dataclass
class PlannedCell:
    cell: CellConfig
    status: str  # "run" | "skipped"
    reason: str = ""


@dataclass
class Grid:
    name: str
    description: str
    source: str  # file path the grid came from
    axes: dict[str, list[Any]]
    settings: dict[str, Any]
    sections: dict[str, dict[str, dict[str, Any]]]  # section -> name -> raw table
    overrides: list[dict[str, Any]]

    def cells(self, only: dict[str, list[str]] | None = None) -> list[PlannedCell]:
        """Every cell of the grid (after ``only`` filters), each marked run or skipped."""
        from chexbench.registry import BACKBONES, DATASETS, PROTOCOLS, STRATEGIES

        registries = {"strategy": STRATEGIES, "backbone": BACKBONES, "dataset": DATASETS, "protocol": PROTOCOLS}
        if only and "strategy" in only:  # `--only strategy=checkpoint` selects every named checkpoint
            only = {**only, "strategy": _with_named_instances(only["strategy"], self.axes["strategy"])}
        axis_names = list(self.axes)
        out: list[PlannedCell] = []
        for combo in itertools.product(*(self.axes[a] for a in axis_names)):
            values = dict(zip(axis_names, combo, strict=True))
            if only and not _matches_only(values, only):
                continue
            cell = self._resolve(values)
            reason = ""
            for axis, reg in registries.items():
                obj = reg.get(getattr(cell, axis))
                check = getattr(obj, "invalid_reason", None)
                if check is not None:
                    reason = check(cell) or ""
                    if reason:
                        break
            if not reason:
                reason = STRATEGIES.get(cell.strategy).unavailable_reason(cell) or ""
            out.append(PlannedCell(cell, "skipped" if reason else "run", reason))
        return out

    def _resolve(self, values: dict[str, Any]) -> CellConfig:
        settings = dict(self.settings)
        options: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
        for section in SECTIONS:
            table = self.sections.get(section, {}).get(str(values[section]), {})
            for k, v in table.items():
                if k in SETTINGS_KEYS:
                    settings[k] = v
                else:
                    options[section][k] = v
        for ov in self.overrides:  # match = {strategy = "checkpoint"} also matches each named checkpoint
            if all(_equal(values.get(k), v) or (k == "strategy" and str(values[k]) in _with_named_instances([str(v)], [values[k]]))
                   for k, v in ov["match"].items()):
                settings.update(ov["settings"])
        for axis, v in values.items():  # extra axes such as "strategy.temperature"
            if axis in AXES:
                continue
            section, key = axis.split(".", 1)
            if section == "settings":
                settings[key] = v
            else:
                options[section][key] = v
        return CellConfig(
            plugins=plugin_versions(values),
            strategy=str(values["strategy"]),
            backbone=str(values["backbone"]),
            dataset=str(values["dataset"]),
            protocol=str(values["protocol"]),
            label_fraction=float(values["label_fraction"]),
            seed=int(values["seed"]),
            settings=Settings(**settings),
            strategy_options=options["strategy"],
            backbone_options=options["backbone"],
            dataset_options=options["dataset"],
            protocol_options=options["protocol"],
            grid=self.name,
        )


def _with_named_instances(selected: list[str], axis: list[Any]) -> list[str]:
    """``selected`` plus the axis' named instances (aliases) of any selected strategy."""
    from chexbench.registry import STRATEGIES

    out = list(selected)
    for v in selected:
        if v in STRATEGIES and STRATEGIES.get(v).name == v:
            out += [str(a) for a in axis if str(a) != v and str(a) in STRATEGIES and STRATEGIES.get(str(a)) is STRATEGIES.get(v)]
    return list(dict.fromkeys(out))


def plugin_versions(values: dict[str, Any]) -> dict[str, str]:
    """``{axis: "distribution==version"}`` for the cell's components that plugins provide.

    Part of the cell's config, hence of its id: a new plugin release is a new cell, never a
    silent overwrite of results that an older release made.
    """
    from chexbench.registry import BACKBONES, DATASETS, PROTOCOLS, STRATEGIES

    registries = {"strategy": STRATEGIES, "backbone": BACKBONES, "dataset": DATASETS, "protocol": PROTOCOLS}
    out = {}
    for axis, reg in registries.items():
        version = reg.plugin_version(str(values[axis]))
        if version is not None:
            out[axis] = version
    return out


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return float(a) == float(b)
        except (TypeError, ValueError):
            return False
    return str(a) == str(b)


def _matches_only(values: dict[str, Any], only: dict[str, list[str]]) -> bool:
    return all(any(_equal(values.get(k), v) for v in allowed) for k, allowed in only.items())


def parse_only(items: list[str] | None) -> dict[str, list[str]]:
    """``["strategy=scratch,simclr", "seed=0"]`` → ``{"strategy": ["scratch", "simclr"], "seed": ["0"]}``."""
    out: dict[str, list[str]] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--only expects key=value, got '{item}'")
        key, value = item.split("=", 1)
        key = key.strip()
        if key not in AXES:
            raise ConfigError(f"--only: unknown axis '{key}'{_did_you_mean(key, AXES)} (axes: {', '.join(AXES)})")
        out.setdefault(key, []).extend(v.strip() for v in value.split(",") if v.strip())
    return out


def _did_you_mean(key: str, known: Any) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _check_keys(table: dict[str, Any], allowed: Any, where: str, source: str) -> None:
    for k in table:
        if k not in allowed:
            raise ConfigError(f"{source}: unknown key '{k}' in {where}{_did_you_mean(k, allowed)}")


_SETTINGS_TYPES: dict[str, type] = {f.name: type(f.default) for f in fields(Settings)}


def _check_settings_types(table: dict[str, Any], where: str, source: str) -> dict[str, Any]:
    out = {}
    for k, v in table.items():
        want = _SETTINGS_TYPES[k]
        if want is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if not isinstance(v, want) or (want is int and isinstance(v, bool)):
            raise ConfigError(f"{source}: {where} '{k}' must be {want.__name__}, got {v!r}")
        out[k] = v
    return out


def load_grid(name_or_path: str) -> Grid:
    """Load a packaged grid preset by name (``smoke``, ``full``) or a TOML file by path."""
    from chexbench.registry import GRIDS

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
    from chexbench.registry import STRATEGIES, RegistryError

    if not isinstance(raw.get("axes"), dict):
        return raw
    tables = raw.get("strategy", {})
    axis = raw["axes"].get("strategy", [])
    axis = axis if isinstance(axis, list) else [axis]
    if not isinstance(tables, dict):
        return raw
    bases = [n for n in dict.fromkeys([*tables, *axis]) if isinstance(n, str) and n in STRATEGIES
             and hasattr(STRATEGIES.get(n), "named_tables") and STRATEGIES.get(n).name == n]
    if not bases:
        return raw
    tables, axis = dict(tables), list(axis)
    for base in bases:
        named = STRATEGIES.get(base).named_tables(tables.pop(base, None), source)
        for name, table in named.items():
            if name in tables:
                raise ConfigError(f"{source}: [strategy.{name}] is given twice (as a table and as a {base} name)")
            try:
                STRATEGIES.alias(name, base)
            except RegistryError as e:
                raise ConfigError(f"{source}: [strategy.{base}] name '{name}': {e}") from None
            tables[name] = table
        axis = [x for v in axis for x in (list(named) if v == base else [v])]
    return {**raw, "strategy": tables, "axes": {**raw["axes"], "strategy": list(dict.fromkeys(axis))}}


def parse_grid(raw: dict[str, Any], source: str, default_name: str = "grid") -> Grid:
    from chexbench.registry import BACKBONES, DATASETS, PROTOCOLS, STRATEGIES

    registries = {"strategy": STRATEGIES, "backbone": BACKBONES, "dataset": DATASETS, "protocol": PROTOCOLS}
    top_keys = {"name", "description", "axes", "settings", "override", *SECTIONS}
    _check_keys(raw, top_keys, "the top level", source)
    if "axes" not in raw:
        raise ConfigError(f"{source}: missing [axes] table")
    raw = _expand_named_strategies(raw, source)
    axes_raw = raw["axes"]
    axes: dict[str, list[Any]] = {}
    for k, v in axes_raw.items():
        if k not in AXES and not (
            "." in k and k.split(".", 1)[0] in (*SECTIONS, "settings")
        ):
            raise ConfigError(f"{source}: unknown key '{k}' in [axes]{_did_you_mean(k, AXES)}")
        vals = v if isinstance(v, list) else [v]
        if not vals:
            raise ConfigError(f"{source}: axis '{k}' in [axes] is empty")
        axes[k] = vals
    for a in AXES:
        if a not in axes:
            if a == "label_fraction":
                axes[a] = [1.0]
            elif a == "seed":
                axes[a] = [0]
            else:
                raise ConfigError(f"{source}: [axes] needs '{a}'")
    for a in ("strategy", "backbone", "dataset", "protocol"):
        for v in axes[a]:
            if v not in registries[a]:
                raise ConfigError(f"{source}: [axes] {a}: {registries[a].unknown_message(str(v))}")
    for v in axes["label_fraction"]:
        if not isinstance(v, (int, float)) or not 0 < float(v) <= 1:
            raise ConfigError(f"{source}: [axes] label_fraction values must be in (0, 1], got {v!r}")
    for v in axes["seed"]:
        if not isinstance(v, int) or isinstance(v, bool):
            raise ConfigError(f"{source}: [axes] seed values must be integers, got {v!r}")

    settings_raw = raw.get("settings", {})
    _check_keys(settings_raw, SETTINGS_KEYS, "[settings]", source)
    settings = _check_settings_types(settings_raw, "[settings]", source)

    sections: dict[str, dict[str, dict[str, Any]]] = {}
    for section in SECTIONS:
        tables = raw.get(section, {})
        if not isinstance(tables, dict):
            raise ConfigError(f"{source}: [{section}] must be a table of [{section}.NAME] tables")
        sections[section] = {}
        for name, table in tables.items():
            if name not in registries[section]:
                raise ConfigError(f"{source}: [{section}.{name}]: {registries[section].unknown_message(name)}")
            obj = registries[section].get(name)
            allowed_opts = set(getattr(obj, "options", {}) or {})
            _check_keys(table, SETTINGS_KEYS | allowed_opts, f"[{section}.{name}]", source)
            st = _check_settings_types({k: v for k, v in table.items() if k in SETTINGS_KEYS}, f"[{section}.{name}]", source)
            sections[section][name] = {**{k: v for k, v in table.items() if k not in SETTINGS_KEYS}, **st}

    overrides = []
    for i, ov in enumerate(raw.get("override", [])):
        where = f"[[override]] #{i + 1}"
        if "match" not in ov:
            raise ConfigError(f"{source}: {where} needs a 'match' table")
        _check_keys(ov["match"], AXES, f"{where} match", source)
        rest = {k: v for k, v in ov.items() if k != "match"}
        _check_keys(rest, SETTINGS_KEYS, where, source)
        overrides.append({"match": ov["match"], "settings": _check_settings_types(rest, where, source)})

    return Grid(
        name=str(raw.get("name", default_name)),
        description=str(raw.get("description", "")),
        source=source,
        axes=axes,
        settings=settings,
        sections=sections,
        overrides=overrides,
    )
