"""Strategy ``scratch``: the backbone keeps timm's random initialization (the baseline)."""

from __future__ import annotations

from chexbench.spec.registry import STRATEGIES
from chexbench.strategies.base import InitRecord, Strategy


@STRATEGIES.register
class Scratch(Strategy):
    name = "scratch"
    description = "random initialization (timm defaults); the baseline every strategy is compared with"

    def init_backbone(self, backbone, cell, ctx) -> InitRecord:
        n = len(backbone.model.state_dict())
        return InitRecord(source="random", loaded_keys=0, notes=[f"{n} tensors at timm's default initialization"])
