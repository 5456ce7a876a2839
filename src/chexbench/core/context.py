"""What a cell's code may use from its surroundings: device, folders, progress reporting, experiment
tracking."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from chexbench.core.errors import ConfigError
from chexbench.core.tracking import NullRunLog, NullTracker, RunLog, Tracker


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
    """``amp_dtype`` / ``channels_last`` / ``compile``: the fast path of the training and
    evaluation steps. ``None`` (default) means the device's policy (:func:`fast_path_for`):
    bf16 autocast and channels_last on CUDA, plain fp32 elsewhere. Set them to drive the
    CUDA fast path on a CPU (tests) or to switch it off."""

    device: torch.device
    results_dir: Path
    cache_dir: Path
    progress: StepProgress = field(default_factory=NullProgress)
    amp_dtype: torch.dtype | None = None
    channels_last: bool | None = None
    #: ``torch.compile`` the training step: set by ``chexbench run --compile``; a cell whose
    #: ``settings.compile`` is true gets a context with it set (``EvaluationProtocol.open_cell``)
    compile: bool = False
    #: experiment tracking (``chexbench.tracking``): ``tracker`` opens a run per cell and pretraining run;
    #: ``run_log`` is the run a loop logs its scalars to (the runner sets it for a cell's protocol)
    tracker: Tracker = field(default_factory=NullTracker)
    run_log: RunLog = field(default_factory=NullRunLog)

    @property
    def pretrain_dir(self) -> Path:
        """Shared pretraining runs live here, keyed by their own hash (reused across result dirs)."""
        return self.cache_dir / "pretrain"

    @property
    def fast_path(self) -> FastPath:
        """The device's policy, with this context's explicit choices on top."""
        default = fast_path_for(self.device)
        return FastPath(
            amp_dtype=self.amp_dtype if self.amp_dtype is not None else default.amp_dtype,
            channels_last=self.channels_last if self.channels_last is not None else default.channels_last,
            compile=self.compile or default.compile,
        )

    @property
    def use_amp(self) -> bool:
        return self.fast_path.amp_dtype is not None


@dataclass(frozen=True)
class FastPath:
    """How steps run: autocast dtype (``None``: fp32), channels_last memory format, ``torch.compile``."""

    amp_dtype: torch.dtype | None = None
    channels_last: bool = False
    compile: bool = False


def fast_path_for(device: torch.device) -> FastPath:
    """The default policy: bf16 autocast + channels_last on CUDA; fp32, NCHW on CPU (bf16 on a
    CPU without AMX is slower than fp32). ``torch.compile`` only when asked."""
    if device.type == "cuda":
        return FastPath(amp_dtype=torch.bfloat16, channels_last=True)
    return FastPath()


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda[:N], got '{name}'")
    return torch.device(name)
