"""One resolved cell: :class:`CellConfig`, its id and configuration hash (what makes two cells the
same computation, and which cells are seeds of one configuration)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from chexbench.spec.settings import NOT_CELL_SETTINGS, Settings

#: bump when the meaning of a stored record changes; it is part of every cell id.
#: 2: fine-tuning trains on full batches only (the remainder batch set BatchNorm's statistics) and
#:    records its effective schedule — a cell id of version 1 would otherwise be taken as finished
#:    by a rerun and its old numbers reused under the new code.
RESULTS_SCHEMA_VERSION = 2

AXES: tuple[str, ...] = ("strategy", "backbone", "dataset", "protocol", "label_fraction", "seed")
SECTIONS: tuple[str, ...] = ("dataset", "backbone", "strategy", "protocol")


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
_GRID_PREFIX = {
    "settings": "settings",
    "strategy_options": "strategy",
    "backbone_options": "backbone",
    "dataset_options": "dataset",
    "protocol_options": "protocol",
}


def configuration_hash(config: dict[str, Any]) -> str:
    """sha256 of a resolved config dict (``CellConfig.to_dict()`` or a record's parsed
    ``config_json``) without its seed and grid name: the identity of a configuration."""
    rest = {k: v for k, v in config.items() if k not in NOT_CONFIGURATION_KEYS}
    return hashlib.sha256(
        json.dumps(rest, sort_keys=True, separators=(",", ":"), default=str).encode()
    ).hexdigest()


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
