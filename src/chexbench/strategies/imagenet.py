"""Strategy ``imagenet``: supervised ImageNet weights from a local file, loaded strictly.

Nothing is downloaded during a run (``chexbench weights fetch`` does that, when asked). The
weights come from, in order: ``weights = "FILE"`` under ``[strategy.imagenet]`` in the grid;
``<cache>/weights/<timm name>.{safetensors,pth}``; the local Hugging Face cache that timm
fills (``timm/<timm name>``). A backbone that declares no ImageNet checkpoint (the ConvStem
ViT, the CPU-size variants) is *not applicable*; a declared checkpoint that is not on this
machine makes the cell *skipped* (not failed) with the command that fetches it. The
3-channel first convolution is summed to one channel; ViT position embeddings are resampled
to the image size; the classifier head is dropped. Every other key must match exactly.

Inputs are normalized as the weights were trained: timm's pretrained config of the declared
checkpoint (ResNet-50 ``a1_in1k``: ImageNet mean/std; ViT-B ``augreg2``: 0.5/0.5), averaged
over RGB, recorded in the cell's init record and used for training, evaluation, features and
heatmaps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from chexbench.backbones.base import audit_checkpoint, load_checkpoint, read_state_dict
from chexbench.backbones.foreign import check_once, file_sha256
from chexbench.backbones.imagenet_weights import find_local, local_candidates
from chexbench.core.errors import SkipCell
from chexbench.spec.options import Options
from chexbench.spec.registry import BACKBONES
from chexbench.strategies.base import InitRecord, Strategy


def not_applicable_reason(backbone_name: str) -> str | None:
    """Why ``imagenet`` does not apply to this backbone (it declares no ImageNet checkpoint), or None."""
    if BACKBONES.get(backbone_name).has_imagenet_weights:
        return None
    return (
        f"not applicable: {backbone_name} has no ImageNet weights (its architecture declares no pretrained"
        " checkpoint)"
    )


def find_weights(backbone_name: str, options: dict[str, Any]) -> tuple[Path | None, str]:
    """The weights file to use and, if none, the message saying how to get one."""
    if options.get("weights"):
        path = Path(str(options["weights"])).expanduser()
        if path.is_file():
            return path, ""
        return None, f"weights file not found: {path} (set by [strategy.imagenet] weights)"
    spec = BACKBONES.get(backbone_name)
    if not spec.has_imagenet_weights:
        return None, not_applicable_reason(backbone_name) or ""
    found = find_local(spec.imagenet_weights)
    if found:
        return found, ""
    return None, (
        f"no ImageNet weights for {backbone_name} on this machine: run `chexbench weights fetch"
        f" {backbone_name}` "
        f'(stores {local_candidates(spec.imagenet_weights)[0]}), or set weights = "FILE" under'
        " [strategy.imagenet]"
    )


class ImageNetOptions(Options):
    weights: str | None = Field(
        None,
        description=(
            "local timm checkpoint (.safetensors / .pth) of this backbone's ImageNet weights; "
            "unset: ~/.cache/chexbench/weights/<timm name>.safetensors or timm's local Hugging Face cache"
        ),
    )


class ImageNet(Strategy):
    name = "imagenet"
    option_model = ImageNetOptions

    def invalid_reason(self, cell) -> str | None:
        if {**self.options, **cell.strategy_options}.get("weights"):
            return None  # the grid names a file: the user says it fits
        return not_applicable_reason(cell.backbone)

    def unavailable_reason(self, cell) -> str | None:
        path, why = find_weights(cell.backbone, {**self.options, **cell.strategy_options})
        return None if path else why

    def preflight(self, cell) -> None:
        """A weights file that does not fit the backbone is refused before anything runs (one line)."""
        if self.invalid_reason(cell):
            return
        path, _ = find_weights(cell.backbone, {**self.options, **cell.strategy_options})
        if path is None:
            return  # skipped with its reason, not an error
        spec = BACKBONES.get(cell.backbone)

        def check() -> None:
            with torch.device("meta"):
                backbone = spec.build(cell.settings.image_size, cell.backbone_options)
            audit_checkpoint(
                backbone.model,
                read_state_dict(path),
                spec,
                source=str(path),
                declared_unexpected=spec.head_prefixes,
            )

        check_once(
            path, (cell.backbone, cell.settings.image_size, sorted(cell.backbone_options.items())), check
        )

    def init_backbone(self, backbone, cell, ctx) -> InitRecord:
        spec = BACKBONES.get(cell.backbone)
        path, why = find_weights(cell.backbone, {**self.options, **cell.strategy_options})
        if path is None:
            raise SkipCell(why)
        report = load_checkpoint(
            backbone, read_state_dict(path), spec, source=str(path), declared_unexpected=spec.head_prefixes
        )
        norm = spec.imagenet_normalize()
        return InitRecord(
            source=str(path),
            loaded_keys=report.loaded_keys,
            reinitialized_keys=report.reinitialized_keys,
            dropped_keys=report.dropped_keys,
            notes=report.notes
            + [
                f"dropped (classifier head): {', '.join(report.dropped_keys) or 'none'}",
                f"normalize {norm.mean:g}/{norm.std:g} ({norm.source})",
            ],
            extra={
                "normalize": list(norm.pair()),
                "normalize_source": norm.source,
                "imagenet_weights": spec.imagenet_weights,
                "weights_sha256": file_sha256(path),
                "dropped_keys": report.dropped_keys,
            },
        )
