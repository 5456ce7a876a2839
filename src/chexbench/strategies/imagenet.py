"""Strategy ``imagenet``: supervised ImageNet weights from a local file, loaded strictly.

Nothing is downloaded. The weights come from, in order: ``weights = "FILE"`` under
``[strategy.imagenet]`` in the grid; ``<cache>/weights/<timm name>.{safetensors,pth}``;
the local Hugging Face cache that timm fills (``timm/<timm name>``). If none exists the
cell is *skipped* (not failed) with a message saying where to put the file. The 3-channel
first convolution is summed to one channel; ViT position embeddings are resampled to the
image size; the classifier head is dropped. Every other key must match exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chexbench.errors import SkipCell
from chexbench.paths import cache_dir
from chexbench.registry import BACKBONES, STRATEGIES
from chexbench.strategies.base import InitRecord, Strategy

#: ImageNet statistics averaged over RGB: what a gray image sees after the first conv is summed
IMAGENET_GRAY_NORMALIZE = (0.449, 0.226)


def _hf_cached_file(timm_name: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(f"timm/{timm_name}", filename)
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    return None


def find_weights(backbone_name: str, options: dict[str, Any]) -> tuple[Path | None, str]:
    """The weights file to use and, if none, the message saying where to put one."""
    if options.get("weights"):
        path = Path(str(options["weights"])).expanduser()
        if path.is_file():
            return path, ""
        return None, f"weights file not found: {path} (set by [strategy.imagenet] weights)"
    spec = BACKBONES.get(backbone_name)
    tag = spec.imagenet_weights or backbone_name
    local = [cache_dir() / "weights" / f"{tag}{ext}" for ext in (".safetensors", ".pth")]
    for path in local:
        if path.is_file():
            return path, ""
    if spec.imagenet_weights:
        hf = _hf_cached_file(spec.imagenet_weights)
        if hf:
            return hf, ""
    return None, (
        f"no ImageNet weights for {backbone_name} on this machine: save a timm '{tag}' state dict to "
        f"{local[0]} (or .pth), or set weights = \"FILE\" under [strategy.imagenet]"
    )


class ImageNet(Strategy):
    name = "imagenet"
    description = "supervised ImageNet-1k weights (timm) from a local file, strict key audit"
    options: dict[str, Any] = {"weights": None}

    def unavailable_reason(self, cell) -> str | None:
        path, why = find_weights(cell.backbone, {**self.options, **cell.strategy_options})
        return None if path else why

    def init_backbone(self, backbone, cell, ctx) -> InitRecord:
        from chexbench.backbones.base import load_checkpoint, read_state_dict

        spec = BACKBONES.get(cell.backbone)
        path, why = find_weights(cell.backbone, {**self.options, **cell.strategy_options})
        if path is None:
            raise SkipCell(why)
        report = load_checkpoint(
            backbone, read_state_dict(path), spec, source=str(path), declared_unexpected=spec.head_prefixes
        )
        return InitRecord(
            source=str(path),
            loaded_keys=report.loaded_keys,
            reinitialized_keys=report.reinitialized_keys,
            notes=report.notes + [f"dropped (classifier head): {', '.join(report.dropped_keys) or 'none'}"],
            extra={"normalize": list(IMAGENET_GRAY_NORMALIZE), "dropped_keys": report.dropped_keys},
        )


STRATEGIES.add("imagenet", ImageNet(), ImageNet.description)
