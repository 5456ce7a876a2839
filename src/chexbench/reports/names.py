"""Names in words for figures and manuscript tables: "SimCLR · ResNet-50 · 10% labels".

One table for every built-in strategy, backbone, dataset and protocol. A component (a plugin
too) may declare its own ``display_name`` attribute, which wins; a name that is in neither
(e.g. a plugin that is not installed where the report is written) is shown as it is.
"""

from __future__ import annotations

import math

from chexbench.spec.registry import BACKBONES, DATASETS, PROTOCOLS, STRATEGIES

#: display names of the built-in components, by axis
DISPLAY_NAMES: dict[str, dict[str, str]] = {
    "strategy": {
        "scratch": "Scratch",
        "imagenet": "ImageNet",
        "simclr": "SimCLR",
        "mocov2": "MoCo-v2",
        "moco_convstem": "MoCo-v2 (ConvStem)",
        "simclr_topk": "SimCLR top-K",
        "mocov2_topk": "MoCo-v2 top-K",
        "checkpoint": "Checkpoint",
    },
    "backbone": {
        "resnet50": "ResNet-50",
        "resnet_tiny": "ResNet-10 (tiny)",
        "vit_b16": "ViT-B/16",
        "vit_tiny": "ViT (tiny)",
        "vit_b16_convstem": "ConvStem ViT-B",
        "vit_convstem_tiny": "ConvStem ViT (tiny)",
    },
    "dataset": {
        "chexpert": "CheXpert",
        "nih": "NIH ChestX-ray14",
        "indiana": "Indiana/OpenI",
        "phantom-chexpert": "Phantom (CheXpert layout)",
        "phantom-nih": "Phantom (NIH layout)",
        "phantom-indiana": "Phantom (Indiana layout)",
    },
    "protocol": {"linear": "linear probe", "finetune": "fine-tuning"},
}


def display_name(axis: str, name: str) -> str:
    """The words for ``name`` on ``axis`` (strategy, backbone, dataset, protocol)."""
    registry = {"strategy": STRATEGIES, "backbone": BACKBONES, "dataset": DATASETS, "protocol": PROTOCOLS}[
        axis
    ]
    declared = getattr(registry.get(name), "display_name", "") if name in registry else ""
    return str(declared or DISPLAY_NAMES[axis].get(name, name))


def fraction_words(fraction: float) -> str:
    """``0.1`` → ``"10% labels"``, ``0.005`` → ``"0.5% labels"``."""
    pct = 100 * float(fraction)
    if not math.isfinite(pct):
        return "n/a"
    return f"{pct:.3g}% labels"


def config_label(strategy: str, backbone: str | None = None, label_fraction: float | None = None) -> str:
    """``"SimCLR · ResNet-50 · 10% labels"`` (the parts given)."""
    parts = [display_name("strategy", strategy)]
    if backbone is not None:
        parts.append(display_name("backbone", backbone))
    if label_fraction is not None:
        parts.append(fraction_words(label_fraction))
    return " · ".join(parts)


def row_label(row, backbone: bool = True, fraction: bool = True) -> str:
    """A leaderboard row in words: the strategy, the keys that tell configurations with the same
    axes apart (its ``configuration_label`` beyond the strategy, e.g. ``strategy.temperature=0.1``),
    then the backbone and the label budget: ``"SimCLR · strategy.temperature=0.1 · ResNet-50 · 10% labels"``.
    """
    strategy = str(row.strategy)
    label = str(getattr(row, "configuration_label", strategy) or strategy)
    extra = label[len(strategy) :].lstrip(" ·") if label.startswith(strategy) else ""
    parts = [display_name("strategy", strategy)] + ([extra] if extra else [])
    if backbone:
        parts.append(display_name("backbone", str(row.backbone)))
    if fraction:
        parts.append(fraction_words(float(row.label_fraction)))
    return " · ".join(parts)


def setting_label(dataset: str, protocol: str) -> str:
    """``"CheXpert · fine-tuning"``."""
    return f"{display_name('dataset', dataset)} · {display_name('protocol', protocol)}"
