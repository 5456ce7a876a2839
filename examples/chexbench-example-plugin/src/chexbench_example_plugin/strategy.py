"""Strategy ``orthogonal``: every convolution and linear layer of the backbone starts from an
orthogonal weight matrix (Saxe et al. 2014), biases at zero, norms at identity.

A strategy receives the freshly built backbone (random init), the resolved cell config and a
run context, changes the weights in place, and returns an ``InitRecord`` saying what it did;
the record is stored with every cell.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from chexbench.spec.options import Options
from chexbench.strategies.base import InitRecord, Strategy


class OrthogonalOptions(Options):
    """What a grid may set under [strategy.orthogonal]: each option's type, bounds, default and
    meaning, declared once (`chexbench list options orthogonal` prints them; a grid is checked
    against them)."""

    gain: float = Field(1.0, gt=0, description="scale of the orthogonal matrices (1.0: norm-preserving)")


class Orthogonal(Strategy):
    name = "orthogonal"
    display_name = "Orthogonal init"  # what figures and tables call it
    description = "orthogonal initialization of every conv / linear weight (Saxe et al. 2014), no pretraining"
    option_model = OrthogonalOptions  # self.options ({"gain": 1.0}) follows from it

    def init_backbone(self, backbone, cell, ctx) -> InitRecord:
        gain = float({**self.options, **cell.strategy_options}["gain"])
        generator = torch.Generator().manual_seed(cell.seed)
        changed = 0
        with torch.no_grad():
            for module in backbone.modules():
                if isinstance(module, (nn.Conv2d, nn.Linear)):
                    nn.init.orthogonal_(module.weight, gain=gain, generator=generator)
                    if module.bias is not None:
                        module.bias.zero_()
                    changed += 1
        return InitRecord(source="random", notes=[f"orthogonal init (gain {gain:g}) of {changed} conv/linear layers"])


def register(registry) -> None:
    """Entry point ``chexbench.strategies``: called with chexbench's strategy registry."""
    registry.add(Orthogonal.name, Orthogonal(), Orthogonal.description)
