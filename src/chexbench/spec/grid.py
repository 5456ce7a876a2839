"""A parsed grid and its resolution into cells: precedence of [settings] < dataset < backbone <
strategy (< recipe) < protocol < overrides < option axes, exclusions, ``--only``, external twins."""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from chexbench.core.errors import ChexbenchError, ConfigError
from chexbench.spec.cell import AXES, SECTIONS, CellConfig
from chexbench.spec.options import did_you_mean, options_model
from chexbench.spec.registry import BACKBONES, DATASETS, PROTOCOLS, STRATEGIES
from chexbench.spec.settings import SETTINGS_KEYS, Settings


class PlanStatus(StrEnum):
    """A planned cell runs, or is skipped with its reason."""

    RUN = "run"
    SKIPPED = "skipped"


@dataclass
class PlannedCell:
    cell: CellConfig
    status: PlanStatus
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
                raise ConfigError(
                    f"--only {key}: grid '{self.name}' has no axis {key}{did_you_mean(key, list(self.axes))} "
                    f"(axes: {', '.join(self.axes)})"
                )
            values = self.axes[key]
            for v in wanted:
                named = key == "strategy" and len(_with_named_instances([v], values)) > 1
                if not named and not any(_equal(have, v) for have in values):
                    shown = ", ".join(_show(x) for x in values)
                    raise ConfigError(
                        f"--only {key}={v}: not a {key} of grid"
                        f" '{self.name}'{did_you_mean(v, [_show(x) for x in values])} ({key} values: {shown})"
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
            out.append(
                PlannedCell(
                    cell,
                    PlanStatus.SKIPPED if reason else PlanStatus.RUN,
                    reason,
                    self._external_twins(values, cell),
                )
            )
        return _alias_takes_target_cells(out)

    def _external_twins(self, values: dict[str, Any], cell: CellConfig) -> dict[str, CellConfig]:
        """``settings.evaluate_on`` of ``cell``: each target (not the cell's own dataset) → the cell this grid
        resolves for the same axis values with the target as dataset (see :class:`PlannedCell`)."""
        return {
            t: self._resolve({**values, "dataset": t}) for t in cell.settings.evaluate_on if t != cell.dataset
        }

    def _excluded(self, values: dict[str, Any]) -> str:
        """The skip reason of the first [[exclude]] table matching ``values``, or ""."""
        for i, ex in enumerate(self.excludes):
            if all(any(_equal(values.get(k), v) for v in allowed) for k, allowed in ex["match"].items()):
                return f"excluded by the grid ([[exclude]] #{i + 1})" + (
                    f": {ex['reason']}" if ex["reason"] else ""
                )
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
            if all(
                _equal(values.get(k), v)
                or (k == "strategy" and str(values[k]) in _with_named_instances([str(v)], [values[k]]))
                for k, v in ov["match"].items()
            ):
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
            pretrain_source_options=self._pretrain_source_options(
                strategy, resolved, str(values["dataset"]), options["dataset"], options["strategy"]
            ),
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

    def _pretrain_source_options(
        self,
        strategy: Any,
        settings: Settings,
        dataset: str,
        dataset_options: dict[str, Any],
        strategy_options: dict[str, Any],
    ) -> dict[str, Any]:
        """The pretraining source's dataset options from its ``[dataset.<source>]`` table, for a strategy
        that pretrains on another dataset than the cell's; else ``{}``: the source is then read with
        what the cell already holds (its own dataset options, ``pretrain_root``), so cells of grids
        without such a table keep their ids. Read back by ``datasets.leakage.pretrain_source_options``."""
        if not _has_pretraining_run(strategy):
            return {}  # no pretraining run: the source plays no part in the cell
        source = settings.pretrain_source
        table = {
            k: v
            for k, v in self.sections.get("dataset", {}).get(source, {}).items()
            if k not in SETTINGS_KEYS
        }
        if source == dataset or not table:
            return {}
        table = self._identity_options(source, table)
        return resolve_pretrain_source_options(
            source, dataset, dataset_options, table, strategy_options.get("pretrain_root")
        )

    def _identity_options(self, dataset: str, options: dict[str, Any]) -> dict[str, Any]:
        """A dataset's options as a cell stores them: the dataset's ``identity_options`` adds what its
        id must hold beyond the grid's table (a split file's sha256, a generated phantom's ``dependencies``).
        """
        hook = getattr(DATASETS.get(dataset), "identity_options", None)
        if hook is None:
            return options
        try:
            return hook(options)
        except ChexbenchError as e:
            raise ConfigError(f"{self.source}: [dataset.{dataset}] {e}") from None


def resolve_pretrain_source_options(
    source: str,
    dataset: str,
    dataset_options: dict[str, Any],
    source_table: dict[str, Any],
    pretrain_root: Any = None,
) -> dict[str, Any]:
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
            out += [
                str(a)
                for a in axis
                if str(a) != v and str(a) in STRATEGIES and STRATEGIES.get(str(a)) is STRATEGIES.get(v)
            ]
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
        if p.status != PlanStatus.RUN or not target:
            continue
        twin = by_id.get(dataclasses.replace(p.cell, strategy=target).cell_id)
        if twin is not None and twin.status == PlanStatus.RUN:
            twin.status = PlanStatus.SKIPPED
            twin.reason = (
                f"runs as {p.cell.strategy}, the study's name for {target} on {p.cell.backbone} (same"
                " computation)"
            )
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
            raise ConfigError(
                f"--only: unknown axis '{key}'{did_you_mean(key, AXES)} (axes: {', '.join(AXES)}, or an"
                " option axis such as protocol.head)"
            )
        values = [v.strip() for v in value.split(",") if v.strip()]
        if not values:
            raise ConfigError(f"--only {key}= names no value")
        out.setdefault(key, []).extend(values)
    return out
