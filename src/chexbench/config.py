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
see :mod:`chexbench.options`), option axes against the options the grid's components declare
(an option axis applies to the components that declare it), override matches against the
grid's axis values, and ``--only`` values against them too. Errors are one line naming the
file, the section and the key, with a did-you-mean. An alias strategy (``moco_convstem``) takes
its target's table.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import tomllib
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, create_model

from chexbench.core.errors import ChexbenchError, ConfigError
from chexbench.options import OptionInfo, Options, did_you_mean, options_model, schema_of, validate_table
from chexbench.registry import BACKBONES, DATASETS, GRIDS, PROTOCOLS, STRATEGIES, RegistryError

#: bump when the meaning of a stored record changes; it is part of every cell id.
#: 2: fine-tuning trains on full batches only (the remainder batch set BatchNorm's statistics) and
#:    records its effective schedule — a cell id of version 1 would otherwise be taken as finished
#:    by a rerun and its old numbers reused under the new code.
RESULTS_SCHEMA_VERSION = 2

AXES: tuple[str, ...] = ("strategy", "backbone", "dataset", "protocol", "label_fraction", "seed")
SECTIONS: tuple[str, ...] = ("dataset", "backbone", "strategy", "protocol")


def _setting(default: Any, meaning: str, **bounds: Any) -> Any:
    """A settings field: its default, one-line meaning and bounds (read by :func:`settings_schema`)."""
    return field(default=default, metadata={"meaning": meaning, "bounds": bounds})


@dataclass(frozen=True)
class Settings:
    """Training and data settings; every field may be set in a grid at any level."""

    epochs: int = _setting(10, "training epochs of the protocol (fine-tuning or linear probe)", ge=1)
    batch_size: int = _setting(32, "training batch size", ge=1)
    eval_batch_size: int = _setting(128, "batch size of feature extraction and prediction", ge=1)
    image_size: int = _setting(224, "square input size in pixels (a multiple of the backbone's patch/stride)", ge=8)
    optimizer: Literal["adamw", "sgd"] = _setting("adamw", "optimizer of the protocol")
    lr: float = _setting(1e-3, "peak learning rate (after warmup, cosine decay)", gt=0)
    weight_decay: float = _setting(1e-4, "weight decay (decoupled for AdamW)", ge=0)
    warmup_epochs: float = _setting(1.0, "linear warmup, in epochs", ge=0)
    uncertainty: Literal["ignore", "zeros", "ones", "mixed"] = _setting(
        "ignore", "uncertain labels (-1): masked, 0, 1, or mixed (CheXpert paper: U-Ones for atelectasis, edema)"
    )
    not_mentioned: Literal["negative", "ignore"] = _setting(
        "negative", "blank labels on a dataset whose blank means not mentioned (CheXpert): negative (→ 0) or ignore (masked); other blanks stay masked"
    )
    views: Literal["frontal", "all"] = _setting("frontal", "images used: frontal (PA/AP) only, or all views")
    max_train_images: int = _setting(0, "cap on train images (whole patients; 0 = no cap)", ge=0)
    max_eval_images: int = _setting(0, "cap on valid and test images (whole patients, fixed seed; 0 = no cap)", ge=0)
    pretrain_source: str = _setting(
        "chexpert", "dataset whose train split is the unlabeled pretraining pool (checked by plan: its root must resolve)"
    )
    pretrain_seed: Annotated[int, Field(ge=0)] | Literal["per_seed"] = _setting(
        0, "seed of the shared pretraining run, or per_seed: each fine-tuning seed pretrains its own run (seed = the cell's seed)"
    )
    allow_leakage: bool = _setting(False, "run even when test patients are in train/pretraining (recorded)")
    deterministic: bool = _setting(False, "torch.use_deterministic_algorithms")
    num_workers: int = _setting(0, "data-loader worker processes", ge=0)
    compile: bool = _setting(False, "torch.compile the model")
    amp: bool = _setting(True, "bf16 autocast on CUDA; ignored on CPU")
    evaluate_on: Annotated[tuple[str, ...], Field(strict=False)] = _setting(  # a TOML list becomes a tuple
        (), "datasets whose test split each cell also predicts (external validation, on the labels both share); "
        "not part of the cell id"
    )


def _settings_model() -> type[Options]:
    """The pydantic model that validates a grid's settings values (types, choices, bounds)."""
    hints = typing.get_type_hints(Settings, include_extras=True)  # keeps the bounds inside a union (pretrain_seed)
    fields_: dict[str, Any] = {}
    for f in fields(Settings):
        fields_[f.name] = (hints[f.name], Field(f.default, description=f.metadata.get("meaning", ""), **f.metadata.get("bounds", {})))
    return create_model("SettingsOptions", __base__=Options, **fields_)


SETTINGS_MODEL = _settings_model()


def settings_schema() -> list[OptionInfo]:
    """Machine-readable rows of every ``[settings]`` key (name, type, default, choices, bounds, meaning)."""
    return schema_of(SETTINGS_MODEL)


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
    "(sweep it as an axis, \"settings.pretrain_seed\" = [0, 1], to compare runs), or \"per_seed\": each fine-tuning seed "
    "pretrains its own run with the cell's seed, inside one configuration, so seed-pooled intervals include pretraining variance",
    "allow_leakage": "run even when test patients are in the training split or pretraining pool (recorded in the cell)",
    "deterministic": "torch.use_deterministic_algorithms (slower; bitwise-reproducible where torch allows)",
    "num_workers": "data-loader worker processes",
    "compile": "torch.compile the model (CUDA)",
    "amp": "bf16 autocast on CUDA; ignored on CPU",
    "evaluate_on": "external validation: datasets (registered names, e.g. [\"nih\", \"indiana\"]) whose test split each "
    "finetune/linear cell also predicts with its selected model, on the labels both share (stored under "
    "external/<cell_id>/; the report's external-validation matrix); the cell's own dataset is skipped; not part of "
    "the cell id: adding a target predicts it without retraining",
}

#: settings that do not change what a cell computes: left out of its config JSON, hence of its id
#: (``evaluate_on`` adds predictions beside the cell's own; a new target must not retrain it)
NOT_CELL_SETTINGS = frozenset({"evaluate_on"})


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
    #: dataset options of ``settings.pretrain_source`` (another dataset than the cell's) from the grid's
    #: ``[dataset.<source>]`` table, ``pretrain_root`` overriding ``root``, for a strategy that pretrains;
    #: empty when the grid has no such table or the source is the target (the cell's dataset options
    #: and ``pretrain_root`` then locate it): see ``datasets.leakage.pretrain_source_options``
    pretrain_source_options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("grid")  # the grid name does not change what the cell computes
        for key in NOT_CELL_SETTINGS:
            d["settings"].pop(key, None)
        for key in ("plugins", "pretrain_source_options"):
            if not d[key]:
                d.pop(key)  # cells without them keep the ids they had before these fields existed
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

    @property
    def effective_pretrain_seed(self) -> int:
        """The seed of this cell's pretraining run: ``settings.pretrain_seed``, or the cell's own
        (fine-tuning) seed when it is ``"per_seed"`` (one pretraining run per seed, one configuration)."""
        return self.seed if self.settings.pretrain_seed == "per_seed" else int(self.settings.pretrain_seed)

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
        settings = dict(d.get("settings", {}))
        if "evaluate_on" in settings:
            settings["evaluate_on"] = tuple(settings["evaluate_on"])
        d["settings"] = Settings(**settings)
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
    #: ``settings.evaluate_on``: target dataset → the cell the grid resolves for the same axis values on that
    #: dataset (its internal twin: its dataset options and settings define the target's test split)
    external: dict[str, CellConfig] = field(default_factory=dict)


def _registries() -> dict[str, Any]:
    return {"strategy": STRATEGIES, "backbone": BACKBONES, "dataset": DATASETS, "protocol": PROTOCOLS}


def backbone_family(backbone: str) -> str:
    """The family of a registered backbone (its ``kind``: ``cnn``, ``vit``, …); recipes are chosen by it."""
    return str(getattr(BACKBONES.get(backbone), "kind", ""))


@dataclass
class Grid:
    name: str
    description: str
    source: str  # file path the grid came from
    axes: dict[str, list[Any]]
    settings: dict[str, Any]
    sections: dict[str, dict[str, dict[str, Any]]]  # section -> name -> raw table
    overrides: list[dict[str, Any]]
    #: strategy name -> backbone family -> options (``[strategy.NAME.recipe.FAMILY]``)
    recipes: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    excludes: list[dict[str, Any]] = field(default_factory=list)
    #: ``[settings] log``: the experiment trackers (``chexbench.tracking``); None: not set. Not a cell
    #: setting: how a run is watched never changes what it computes, so it is no part of any cell id
    log: str | list[str] | None = None

    def check_only(self, only: dict[str, list[str]] | None) -> None:
        """Every ``--only`` value must be one of the grid's values of that axis (did-you-mean otherwise)."""
        for key, wanted in (only or {}).items():
            if key not in self.axes:  # an option axis ("protocol.head") the grid does not sweep
                raise ConfigError(f"--only {key}: grid '{self.name}' has no axis {key}{did_you_mean(key, list(self.axes))} "
                                  f"(axes: {', '.join(self.axes)})")
            values = self.axes[key]
            for v in wanted:
                named = key == "strategy" and len(_with_named_instances([v], values)) > 1
                if not named and not any(_equal(have, v) for have in values):
                    shown = ", ".join(_show(x) for x in values)
                    raise ConfigError(
                        f"--only {key}={v}: not a {key} of grid '{self.name}'{did_you_mean(v, [_show(x) for x in values])} "
                        f"({key} values: {shown})"
                    )

    def cells(self, only: dict[str, list[str]] | None = None) -> list[PlannedCell]:
        """Every cell of the grid (after ``only`` filters), each marked run or skipped.

        An option axis (``"strategy.temperature"``) applies to the components that declare the
        option; a cell it does not change appears once. A cell of an alias strategy
        (``moco_convstem``) that computes exactly what its target's cell computes takes that
        cell's place: the target's is listed as skipped, with the reason.
        """
        self.check_only(only)
        registries = _registries()
        if only and "strategy" in only:  # `--only strategy=checkpoint` selects every named checkpoint
            only = {**only, "strategy": _with_named_instances(only["strategy"], self.axes["strategy"])}
        axis_names = list(self.axes)
        out: list[PlannedCell] = []
        seen: set[str] = set()
        for combo in itertools.product(*(self.axes[a] for a in axis_names)):
            values = dict(zip(axis_names, combo, strict=True))
            if only and not _matches_only(values, only):
                continue
            cell = self._resolve(values)
            if cell.cell_id in seen:  # an option axis that this cell's components do not take
                continue
            seen.add(cell.cell_id)
            reason = ""
            for axis, reg in registries.items():
                obj = reg.get(getattr(cell, axis))
                check = getattr(obj, "invalid_reason", None)
                if check is not None:
                    reason = check(cell) or ""
                    if reason:
                        break
            if not reason:
                reason = self._excluded(values)
            if not reason:
                reason = registries["strategy"].get(cell.strategy).unavailable_reason(cell) or ""
            out.append(PlannedCell(cell, "skipped" if reason else "run", reason, self._external_twins(values, cell)))
        return _alias_takes_target_cells(out)

    def _external_twins(self, values: dict[str, Any], cell: CellConfig) -> dict[str, CellConfig]:
        """``settings.evaluate_on`` of ``cell``: each target (not the cell's own dataset) → the cell this grid
        resolves for the same axis values with the target as dataset (see :class:`PlannedCell`)."""
        return {t: self._resolve({**values, "dataset": t}) for t in cell.settings.evaluate_on if t != cell.dataset}

    def _excluded(self, values: dict[str, Any]) -> str:
        """The skip reason of the first [[exclude]] table matching ``values``, or ""."""
        for i, ex in enumerate(self.excludes):
            if all(any(_equal(values.get(k), v) for v in allowed) for k, allowed in ex["match"].items()):
                return f"excluded by the grid ([[exclude]] #{i + 1})" + (f": {ex['reason']}" if ex["reason"] else "")
        return ""

    def _resolve(self, values: dict[str, Any]) -> CellConfig:
        registries = _registries()
        settings = dict(self.settings)
        options: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
        strategy = registries["strategy"].get(str(values["strategy"]))
        table_of = {s: str(values[s]) for s in SECTIONS}
        table_of["strategy"] = getattr(strategy, "alias_of", None) or table_of["strategy"]
        for section in SECTIONS:
            table = self.sections.get(section, {}).get(table_of[section], {})
            for k, v in table.items():
                if k in SETTINGS_KEYS:
                    settings[k] = v
                else:
                    options[section][k] = v
        recipe = self.recipes.get(table_of["strategy"], {}).get(backbone_family(str(values["backbone"])), {})
        options["strategy"].update(recipe)
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
            elif key in _declared_options(registries[section].get(str(values[section]))):
                options[section][key] = v
        resolved = Settings(**settings)
        options["dataset"] = self._identity_options(str(values["dataset"]), options["dataset"])
        return CellConfig(
            plugins=plugin_versions(values),
            pretrain_source_options=self._pretrain_source_options(strategy, resolved, str(values["dataset"]),
                                                                  options["dataset"], options["strategy"]),
            strategy=str(values["strategy"]),
            backbone=str(values["backbone"]),
            dataset=str(values["dataset"]),
            protocol=str(values["protocol"]),
            label_fraction=float(values["label_fraction"]),
            seed=int(values["seed"]),
            settings=resolved,
            strategy_options=options["strategy"],
            backbone_options=options["backbone"],
            dataset_options=options["dataset"],
            protocol_options=options["protocol"],
            grid=self.name,
        )


    def _pretrain_source_options(self, strategy: Any, settings: Settings, dataset: str,
                                 dataset_options: dict[str, Any], strategy_options: dict[str, Any]) -> dict[str, Any]:
        """The pretraining source's dataset options from its ``[dataset.<source>]`` table, for a strategy
        that pretrains on another dataset than the cell's; else ``{}``: the source is then read with
        what the cell already holds (its own dataset options, ``pretrain_root``), so cells of grids
        without such a table keep their ids. Read back by ``datasets.leakage.pretrain_source_options``."""
        if not _has_pretraining_run(strategy):
            return {}  # no pretraining run: the source plays no part in the cell
        source = settings.pretrain_source
        table = {k: v for k, v in self.sections.get("dataset", {}).get(source, {}).items() if k not in SETTINGS_KEYS}
        if source == dataset or not table:
            return {}
        table = self._identity_options(source, table)
        return resolve_pretrain_source_options(source, dataset, dataset_options, table, strategy_options.get("pretrain_root"))

    def _identity_options(self, dataset: str, options: dict[str, Any]) -> dict[str, Any]:
        """A dataset's options as a cell stores them: the dataset's ``identity_options`` adds what its
        id must hold beyond the grid's table (a split file's sha256, a generated phantom's ``dependencies``)."""
        hook = getattr(DATASETS.get(dataset), "identity_options", None)
        if hook is None:
            return options
        try:
            return hook(options)
        except ChexbenchError as e:
            raise ConfigError(f"{self.source}: [dataset.{dataset}] {e}") from None


def resolve_pretrain_source_options(source: str, dataset: str, dataset_options: dict[str, Any],
                                    source_table: dict[str, Any], pretrain_root: Any = None) -> dict[str, Any]:
    """The dataset options that locate and define a pretraining source's data.

    The cell's own dataset options when the source is the cell's dataset; else the grid's
    ``[dataset.<source>]`` option keys (its root, a phantom's generation options; ``{}``: the
    source's defaults). ``pretrain_root`` (under ``[strategy.<name>]``) overrides ``root`` when
    set. Unset (None) values are dropped.
    """
    opts = dict(dataset_options) if source == dataset else dict(source_table)
    if pretrain_root:
        opts["root"] = str(pretrain_root)
    return {k: v for k, v in sorted(opts.items()) if v is not None}



def _has_pretraining_run(strategy: Any) -> bool:
    """Whether ``strategy`` has a pretraining run: its class overrides the contract's ``pretrain_key``
    (the base class of the strategy contract, the last class in the MRO that defines it, answers None).

    Decided from the object itself, so the spec layer needs no import of ``chexbench.strategies``."""
    owners = [cls for cls in type(strategy).__mro__ if "pretrain_key" in vars(cls)]
    return len(owners) > 1


def _with_named_instances(selected: list[str], axis: list[Any]) -> list[str]:
    """``selected`` plus the axis' named instances (aliases) of any selected strategy."""
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
    registries = {"strategy": STRATEGIES, "backbone": BACKBONES, "dataset": DATASETS, "protocol": PROTOCOLS}
    out = {}
    for axis, reg in registries.items():
        version = reg.plugin_version(str(values[axis]))
        if version is not None:
            out[axis] = version
    return out


def _alias_takes_target_cells(planned: list[PlannedCell]) -> list[PlannedCell]:
    """Mark skipped each runnable cell that a runnable alias cell computes identically."""
    by_id = {p.cell.cell_id: p for p in planned}
    for p in planned:
        target = getattr(STRATEGIES.get(p.cell.strategy), "alias_of", None)
        if p.status != "run" or not target:
            continue
        twin = by_id.get(dataclasses.replace(p.cell, strategy=target).cell_id)
        if twin is not None and twin.status == "run":
            twin.status = "skipped"
            twin.reason = f"runs as {p.cell.strategy}, the study's name for {target} on {p.cell.backbone} (same computation)"
    return planned


def _declared_options(component: Any) -> set[str]:
    return set(options_model(component).model_fields)


def _show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


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
    """``["strategy=scratch,simclr", "seed=0"]`` → ``{"strategy": ["scratch", "simclr"], "seed": ["0"]}``;
    an option axis of the grid works too (``protocol.head=topk_classwise``).

    Values are checked against a grid's axes by :meth:`Grid.cells` (:meth:`Grid.check_only`).
    """
    out: dict[str, list[str]] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--only expects key=value, got '{item}'")
        key, value = item.split("=", 1)
        key = key.strip()
        option_axis = "." in key and key.split(".", 1)[0] in (*SECTIONS, "settings")  # "protocol.head"
        if key not in AXES and not option_axis:
            raise ConfigError(f"--only: unknown axis '{key}'{did_you_mean(key, AXES)} (axes: {', '.join(AXES)}, or an option axis such as protocol.head)")
        values = [v.strip() for v in value.split(",") if v.strip()]
        if not values:
            raise ConfigError(f"--only {key}= names no value")
        out.setdefault(key, []).extend(values)
    return out


def _check_keys(table: dict[str, Any], allowed: Any, where: str, source: str) -> None:
    for k in table:
        if k not in allowed:
            raise ConfigError(f"{source}: unknown key '{k}' in {where}{did_you_mean(k, allowed)}")


def _check_settings(table: dict[str, Any], where: str, source: str) -> dict[str, Any]:
    """Settings values checked for type, choices and bounds; ``pretrain_source`` must be a dataset."""
    _check_keys(table, SETTINGS_KEYS, where, source)
    out = validate_table(SETTINGS_MODEL, table, where, source)
    if "pretrain_source" in out and out["pretrain_source"] not in DATASETS:
        raise ConfigError(f"{source}: {where} 'pretrain_source': {DATASETS.unknown_message(out['pretrain_source'])}")
    for name in out.get("evaluate_on", ()):
        if name not in DATASETS:
            raise ConfigError(f"{source}: {where} 'evaluate_on': {DATASETS.unknown_message(name)}")
    if len(set(out.get("evaluate_on", ()))) != len(out.get("evaluate_on", ())):
        raise ConfigError(f"{source}: {where} 'evaluate_on' lists a dataset twice: {list(out['evaluate_on'])}")
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
                raise ConfigError(f"{source}: {where}: {key} is not part of a cell (it adds predictions beside each cell's own); "
                                  f"set it under [settings] instead of sweeping it")
            for v in vals:
                _check_settings({key: v}, where, source)
            continue
        if key in SETTINGS_KEYS:
            raise ConfigError(f"{source}: {where}: '{key}' is a setting; sweep it as \"settings.{key}\"")
        takers = [registries[section].get(name) for name in axes[section]]
        takers = [c for c in takers if key in _declared_options(c)]
        if not takers:
            known = sorted(set().union(*(_declared_options(registries[section].get(n)) for n in axes[section])))
            raise ConfigError(
                f"{source}: {where}: no {section} of the grid ({', '.join(axes[section])}) has an option '{key}'"
                f"{did_you_mean(key, known)}"
            )
        for c in takers:
            for v in vals:
                _check_options(c, {key: v}, f"{where} (option of {section} {c.name})", source)
    return axes


def _same_value(a: Any, b: Any) -> bool:
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def _parse_sections(raw: dict[str, Any], source: str) -> tuple[dict[str, dict[str, dict[str, Any]]], dict[str, dict[str, dict[str, Any]]]]:
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
                raise ConfigError(f"{source}: [{section}.{name}]: {registries[section].unknown_message(name)}")
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
                    raise ConfigError(f"{source}: {where} recipe must be a table of [{where[1:-1]}.recipe.FAMILY] tables")
                recipes[name] = {}
                for family, opts in recipe.items():
                    if family not in families:
                        raise ConfigError(
                            f"{source}: [{section}.{name}.recipe.{family}]: unknown backbone family '{family}'"
                            f"{did_you_mean(family, families)} (families: {', '.join(families)})"
                        )
                    if not _is_table(opts):
                        raise ConfigError(f"{source}: [{section}.{name}.recipe.{family}] must be a table")
                    recipes[name][family] = _check_options(obj, opts, f"[{section}.{name}.recipe.{family}]", source)
            declared = _declared_options(obj)
            _check_keys(table, SETTINGS_KEYS | declared, where, source)
            st = _check_settings({k: v for k, v in table.items() if k in SETTINGS_KEYS}, where, source)
            opts = _check_options(obj, {k: v for k, v in table.items() if k not in SETTINGS_KEYS}, where, source)
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
                    f"{source}: {where} match {key} = {value!r} matches no cell: not among the grid's {key} values "
                    f"({', '.join(shown)}){did_you_mean(str(value), shown)}"
                )
        rest = {k: v for k, v in ov.items() if k != "match"}
        for k in rest:
            if k not in SETTINGS_KEYS and any(k in _declared_options(e.obj) for r in _registries().values() for e in r.entries()):
                raise ConfigError(
                    f"{source}: {where}: '{k}' is a component option; [[override]] sets settings only — "
                    f"set options under [SECTION.NAME] (or [strategy.NAME.recipe.FAMILY])"
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
    if log is not None and not (isinstance(log, str) or (isinstance(log, list) and all(isinstance(x, str) for x in log))):
        raise ConfigError(f"{source}: [settings] log must be a string such as \"tensorboard,mlflow\" or \"none\", got {log!r}")
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
