"""Strategy ``scratch``: the backbone keeps timm's random initialization (the baseline)."""

from __future__ import annotations

from chexbench.strategies.base import InitRecord, Strategy


class Scratch(Strategy):
    name = "scratch"

    def init_backbone(self, backbone, cell, ctx) -> InitRecord:
        n = len(backbone.model.state_dict())
        return InitRecord(
            source="random", loaded_keys=0, notes=[f"{n} tensors at timm's default initialization"]
        )
