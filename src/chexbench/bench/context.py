"""What a cell's code may use from its surroundings: device, folders, progress reporting."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch


class StepProgress(Protocol):
    def start(self, description: str, total: int) -> None: ...
    def advance(self, n: int = 1) -> None: ...
    def message(self, text: str) -> None: ...


class NullProgress:
    def start(self, description: str, total: int) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass

    def message(self, text: str) -> None:
        pass


@dataclass
class RunContext:
    device: torch.device
    results_dir: Path
    cache_dir: Path
    progress: StepProgress = field(default_factory=NullProgress)

    @property
    def pretrain_dir(self) -> Path:
        """Shared pretraining runs live here, keyed by their own hash (reused across result dirs)."""
        return self.cache_dir / "pretrain"

    @property
    def use_amp(self) -> bool:
        return self.device.type == "cuda"


def resolve_device(name: str) -> torch.device:
    from chexbench.errors import ConfigError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda[:N], got '{name}'")
    return torch.device(name)
