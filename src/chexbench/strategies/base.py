"""The strategy contract: how a backbone's weights are initialized before transfer.

A strategy receives a freshly built backbone (random init), the resolved cell config and a
run context, and returns an :class:`InitRecord` saying exactly what was loaded and what was
re-initialized. Self-supervised strategies own their pretraining loop; they key a shared
pretraining run by :meth:`Strategy.pretrain_key` so every cell that needs the same run
reuses one checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from chexbench.spec.options import OptionDefaults, Options

if TYPE_CHECKING:
    from chexbench.backbones.base import Backbone
    from chexbench.core.context import RunContext
    from chexbench.spec.cell import CellConfig


@dataclass
class InitRecord:
    """What a strategy did to the backbone's weights; stored in the cell record as JSON."""

    source: str  # "random", a weights file path, or "pretrain:<run id>"
    loaded_keys: int = 0
    reinitialized_keys: list[str] = field(default_factory=list)
    dropped_keys: list[str] = field(
        default_factory=list
    )  # keys of the source file not loaded (heads, momentum encoder …)
    notes: list[str] = field(default_factory=list)
    pretrain_run: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "loaded_keys": self.loaded_keys,
            "reinitialized_keys": list(self.reinitialized_keys),
            "dropped_keys": list(self.dropped_keys),
            "notes": list(self.notes),
            "pretrain_run": self.pretrain_run,
            "extra": dict(self.extra),
        }


class Strategy:
    """Base class. Subclasses are registered in ``chexbench.spec.registry.STRATEGIES``."""

    name: str = ""
    description: str = ""
    #: the options this strategy accepts under ``[strategy.<name>]`` in a grid (besides the
    #: training settings), each a pydantic field (type, bounds, default, meaning); unknown options
    #: are config errors
    option_model: ClassVar[type[Options]] = Options
    #: ``{option: default}``, derived from ``option_model``
    options = OptionDefaults()
    #: the strategy pretrains a top-K patch scorer (``init.extra["topk_scorer"]``) that a frozen
    #: linear probe with ``head = "topk"`` can use
    makes_topk_scorer: ClassVar[bool] = False

    def invalid_reason(self, cell: CellConfig) -> str | None:
        """Why this (strategy, backbone, …) combination is invalid, or None. Shown as skipped."""
        return None

    def unavailable_reason(self, cell: CellConfig) -> str | None:
        """Why the cell cannot run on this machine (e.g. no weights file), or None. Skipped, not failed."""
        return None

    def preflight(self, cell: CellConfig) -> None:
        """Check without training what can be checked for ``cell``; raise a ChexbenchError with
        one line. Called by ``bench.runner.preflight`` once per distinct configuration. The
        default checks nothing."""

    def pretrain_key(self, cell: CellConfig) -> dict[str, Any] | None:
        """The config identifying a shared pretraining run, or None if no pretraining."""
        return None

    def init_backbone(self, backbone: Backbone, cell: CellConfig, ctx: RunContext) -> InitRecord:
        raise NotImplementedError
