"""The backbone contract and weight loading with a key audit.

A :class:`BackboneSpec` (registered instance) builds a :class:`Backbone`: a timm model with
one input channel and no classifier, exposing pooled features ``(B, D)`` and, for ViTs,
patch tokens ``(B, N, D)`` with their grid shape. Foreign checkpoints (ImageNet,
self-supervised encoders) are mapped onto it by :func:`load_checkpoint`, which refuses any
missing or unexpected key that is not declared, and reports what it adapted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import timm
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, resolve_data_config
from timm.models import get_pretrained_cfg
from torch import nn

from chexbench.backbones.foreign import read_checkpoint
from chexbench.core.errors import WeightsError
from chexbench.spec.options import OptionDefaults, Options

if TYPE_CHECKING:
    from chexbench.spec.cell import CellConfig


class Backbone(nn.Module):
    """A feature extractor: ``forward(x)`` with ``x`` (B, 1, H, W) float → pooled features (B, D)."""

    def __init__(self, model: nn.Module, spec: BackboneSpec, image_size: int):
        super().__init__()
        self.model = model
        self.spec_name = spec.name
        self.kind = spec.kind
        self.image_size = image_size
        self.num_features: int = int(model.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    @property
    def is_vit(self) -> bool:
        return self.kind == "vit"

    def token_grid(self) -> tuple[int, int]:
        """(rows, cols) of the patch-token grid (ViTs only)."""
        if not self.is_vit:
            raise TypeError(f"{self.spec_name} has no patch tokens")
        return tuple(self.model.patch_embed.grid_size)  # type: ignore[return-value]

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens (B, N, D) after the final norm, prefix (class/register) tokens removed."""
        if not self.is_vit:
            raise TypeError(f"{self.spec_name} has no patch tokens")
        tokens = self.model.forward_features(x)
        return tokens[:, self.model.num_prefix_tokens :]


@dataclass(frozen=True)
class Normalization:
    """One-channel input normalization ``(x - mean) / std`` on [0, 1] pixels, and where it came from."""

    mean: float
    std: float
    source: str

    def pair(self) -> tuple[float, float]:
        return (self.mean, self.std)

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "source": self.source}


def timm_normalization(timm_name: str | None) -> Normalization:
    """RGB-averaged mean/std of timm's pretrained config ``timm_name`` (timm's ImageNet default if None)."""
    if timm_name is None:
        mean, std, source = IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, "timm IMAGENET_DEFAULT_MEAN/STD"
    else:
        cfg = get_pretrained_cfg(timm_name)
        if cfg is None:
            raise WeightsError(f"timm has no pretrained config '{timm_name}' (timm {_timm_version()})")
        data = resolve_data_config(pretrained_cfg=cfg.to_dict())
        mean, std, source = data["mean"], data["std"], f"timm pretrained_cfg {timm_name}"
    return Normalization(
        round(sum(mean) / len(mean), 6), round(sum(std) / len(std), 6), f"{source}, averaged over RGB"
    )


def _timm_version() -> str:
    return timm.__version__


@dataclass
class LoadReport:
    """What :func:`load_checkpoint` did; becomes part of a cell's init record."""

    loaded_keys: int = 0
    dropped_keys: list[str] = field(default_factory=list)  # declared unexpected keys (e.g. classifier head)
    reinitialized_keys: list[str] = field(default_factory=list)  # declared missing keys
    notes: list[str] = field(default_factory=list)


class BackboneSpec:
    """Registered description of an architecture. Subclasses implement ``create``."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    kind: ClassVar[str] = "cnn"  # "cnn" | "vit"
    #: timm name (with pretrained tag) whose ImageNet checkpoint fits this architecture, if any
    imagenet_weights: ClassVar[str | None] = None
    #: key prefixes of a foreign checkpoint's classifier head: dropped on load, recorded
    head_prefixes: ClassVar[tuple[str, ...]] = ()
    #: keys of the first convolution, adapted from 3 input channels to 1 by summing
    first_conv_keys: ClassVar[tuple[str, ...]] = ()
    #: image sizes must be a multiple of this
    size_multiple: ClassVar[int] = 32
    #: image size at which ``chexbench list backbones`` profiles parameters and GFLOPs (the size it is built
    #: for)
    profile_size: ClassVar[int] = 224
    #: the options a grid may set under [backbone.<name>], each a pydantic field (type, bounds, default,
    #: meaning)
    option_model: ClassVar[type[Options]] = Options
    #: ``{option: default}``, derived from ``option_model``
    options = OptionDefaults()

    def create(self, image_size: int, options: dict[str, Any]) -> nn.Module:
        raise NotImplementedError

    def build(self, image_size: int, options: dict[str, Any] | None = None) -> Backbone:
        opts = {**self.options, **(options or {})}
        if image_size % self.size_multiple:
            raise ValueError(
                f"{self.name}: image size {image_size} is not a multiple of {self.size_multiple}"
            )
        return Backbone(self.create(image_size, opts), self, image_size)

    @property
    def has_imagenet_weights(self) -> bool:
        """Whether this architecture declares an ImageNet checkpoint (else ``imagenet`` does not apply)."""
        return bool(self.imagenet_weights)

    def imagenet_normalize(self) -> Normalization:
        """The input normalization the declared ImageNet weights were trained with.

        Read from timm's pretrained config of :attr:`imagenet_weights` (in timm's code: no
        download), averaged over RGB: with the first convolution summed to one channel, a gray
        image stands for R = G = B. Architectures without a declared checkpoint get timm's
        ImageNet default statistics, said so in ``source``.
        """
        return timm_normalization(self.imagenet_weights)

    def invalid_reason(self, cell: CellConfig) -> str | None:
        size = cell.settings.image_size
        if size % self.size_multiple:
            return f"{self.name} needs an image size that is a multiple of {self.size_multiple} (got {size})"
        return None

    def preflight(self, cell: CellConfig) -> None:
        """Check without training what can be checked for ``cell``; raise a ChexbenchError with
        one line. Called by ``bench.runner.preflight`` once per distinct configuration. The
        default checks nothing."""

    def adapt_checkpoint(
        self, state: dict[str, torch.Tensor], model: nn.Module
    ) -> tuple[dict[str, torch.Tensor], list[str]]:
        """Map a foreign checkpoint's tensors onto ``model``: 3→1 channel first conv, and
        (for ViTs) position embeddings resampled to this image size. Returns notes."""
        notes = []
        target = model.state_dict()
        state = dict(state)
        for key in self.first_conv_keys:
            if key in state and key in target and state[key].shape[1] == 3 and target[key].shape[1] == 1:
                # Summing over RGB makes the filter's response to a gray image (R=G=B) identical.
                state[key] = state[key].sum(dim=1, keepdim=True)
                notes.append(f"{key}: RGB filters summed to 1 channel")
        return state, notes


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file (``.pth``/``.pt``/``.bin``).

    Never runs code from the file (:func:`chexbench.backbones.foreign.read_checkpoint`);
    common wrappers are unwrapped (``state_dict``, ``model`` …); nothing else is guessed.
    """
    return read_checkpoint(path)[0]


def load_checkpoint(
    backbone: Backbone,
    state: dict[str, torch.Tensor],
    spec: BackboneSpec,
    *,
    source: str,
    declared_unexpected: tuple[str, ...] = (),
    declared_missing: tuple[str, ...] = (),
) -> LoadReport:
    """Load ``state`` into ``backbone.model`` strictly, after ``spec.adapt_checkpoint``.

    Keys starting with a prefix in ``declared_unexpected`` (e.g. a classifier head) are
    dropped; keys of the model starting with a prefix in ``declared_missing`` keep their
    fresh initialization. Any other missing or unexpected key, or any shape mismatch, is a
    :class:`WeightsError` naming the keys — never a silent partial load.
    """
    report, filtered = audit_checkpoint(
        backbone.model,
        state,
        spec,
        source=source,
        declared_unexpected=declared_unexpected,
        declared_missing=declared_missing,
    )
    model = backbone.model
    model.load_state_dict({**model.state_dict(), **filtered}, strict=True)
    return report


def audit_checkpoint(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    spec: BackboneSpec,
    *,
    source: str,
    declared_unexpected: tuple[str, ...] = (),
    declared_missing: tuple[str, ...] = (),
) -> tuple[LoadReport, dict[str, torch.Tensor]]:
    """The checks of :func:`load_checkpoint` without loading: the report and the tensors to load.

    ``model`` may live on the meta device (a pre-run check needs only its keys and shapes).
    """
    state, notes = spec.adapt_checkpoint(state, model)
    target = model.state_dict()
    report = LoadReport(notes=notes)
    unexpected = [k for k in state if k not in target]
    missing = [k for k in target if k not in state]
    bad_unexpected = [k for k in unexpected if not k.startswith(declared_unexpected or ("\0",))]
    bad_missing = [k for k in missing if not k.startswith(declared_missing or ("\0",))]
    mismatched = [
        f"{k} {tuple(state[k].shape)}→{tuple(target[k].shape)}"
        for k in state
        if k in target and state[k].shape != target[k].shape
    ]
    problems = []
    if bad_missing:
        problems.append(f"missing keys {_short(bad_missing)}")
    if bad_unexpected:
        problems.append(f"unexpected keys {_short(bad_unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches {_short(mismatched)}")
    if problems:
        raise WeightsError(f"checkpoint {source} does not fit {spec.name}: " + "; ".join(problems))
    report.dropped_keys = sorted(unexpected)
    report.reinitialized_keys = sorted(missing)
    filtered = {k: v for k, v in state.items() if k in target}
    report.loaded_keys = len(filtered)
    return report, filtered


def _short(keys: list[str], n: int = 6) -> str:
    shown = ", ".join(keys[:n])
    return f"[{shown}{', …' if len(keys) > n else ''}] ({len(keys)})"
