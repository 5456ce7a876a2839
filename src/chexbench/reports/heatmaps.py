"""Heatmaps of where a classifier looked, and their overlays.

Two explainers, chosen by the model (:func:`explain_method`):

- ``topk_scores`` — a ViT with the top-K head: the patch scorer's scores on the token grid,
  upsampled bilinearly to the image; the K selected patches are returned for outlining.
  Class-agnostic (one map per image).
- ``gradcam`` — a CNN: Grad-CAM (Selvaraju et al. 2017) on the last convolutional stage:
  ``ReLU(Σ_c α_c A_c)`` with ``α_c`` the spatial mean of ∂logit/∂A_c, upsampled to the image.
  Our own implementation with a forward hook (activation) and a tensor hook (its gradient).

Every map is scaled to [0, 1] per image (min–max; a constant map becomes zeros). The model
is any ``nn.Module`` with a ``backbone`` attribute mapping (B, 1, H, W) to logits (B, L).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Explanation:
    heat: np.ndarray  # (B, H, W) float32 in [0, 1]
    method: str  # "topk_scores" | "gradcam"
    topk_indices: np.ndarray | None = None  # (B, K) token indices, highest score first
    grid: tuple[int, int] | None = None  # token grid (rows, cols) of the indices


def explain_method(model: nn.Module) -> str | None:
    """``topk_scores`` for a top-K ViT, ``gradcam`` for a CNN, None otherwise."""
    from chexbench.strategies.topk import TopKBackbone

    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, TopKBackbone):
        return "topk_scores"
    if getattr(backbone, "kind", None) == "cnn":
        return "gradcam"
    return None


def normalize_maps(maps: torch.Tensor) -> torch.Tensor:
    """Per-map min–max to [0, 1]: (B, H, W) → (B, H, W); constant maps become zeros."""
    flat = maps.flatten(1)
    lo, hi = flat.min(1).values, flat.max(1).values
    span = (hi - lo).clamp(min=1e-12)
    out = (flat - lo[:, None]) / span[:, None]
    return torch.where((hi - lo)[:, None] > 1e-12, out, torch.zeros_like(out)).view_as(maps)


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, h, w) → (B, H, W), bilinear (align_corners=False: each cell's centre keeps its value)."""
    return F.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]


@torch.no_grad()
def topk_heatmaps(model: nn.Module, x: torch.Tensor) -> Explanation:
    """Score maps of a top-K ViT classifier for x (B, 1, H, W)."""
    backbone = model.backbone
    grid, idx = backbone.score_map(x)  # (B, rows, cols), (B, K)
    heat = normalize_maps(upsample(grid, tuple(x.shape[-2:])))
    return Explanation(heat.cpu().numpy().astype(np.float32), "topk_scores", idx.cpu().numpy(), tuple(grid.shape[1:]))


def last_conv_stage(module: nn.Module) -> nn.Module:
    """The last convolutional stage of a CNN: ``layer4`` (timm/torchvision ResNets) if present,
    else the last child that contains a convolution."""
    inner = getattr(module, "model", module)
    if hasattr(inner, "layer4"):
        return inner.layer4
    stages = [m for m in inner.children() if any(isinstance(c, nn.Conv2d) for c in m.modules())]
    if not stages:
        raise TypeError(f"{type(inner).__name__} has no convolutional stage for Grad-CAM")
    return stages[-1]


class GradCAM:
    """Grad-CAM on ``layer`` of ``model`` (Selvaraju et al. 2017): call with x (B, 1, H, W) and
    one label index per image (B,) → maps (B, H, W) in [0, 1]."""

    def __init__(self, model: nn.Module, layer: nn.Module | None = None):
        self.model = model
        self.layer = layer if layer is not None else last_conv_stage(model.backbone)

    def __call__(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        saved: dict[str, torch.Tensor] = {}

        def keep(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            saved["act"] = output
            output.register_hook(lambda g: saved.__setitem__("grad", g))

        handle = self.layer.register_forward_hook(keep)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.enable_grad():
                x = x.detach().clone().requires_grad_(True)  # a graph even when the backbone is frozen
                logits = self.model(x).float()  # (B, L)
                chosen = logits.gather(1, labels.view(-1, 1).to(logits.device)).sum()
                chosen.backward()
        finally:
            handle.remove()
            self.model.train(was_training)
        act, grad = saved["act"].detach().float(), saved["grad"].float()  # (B, C, h, w)
        alpha = grad.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
        cam = torch.relu((alpha * act).sum(1))  # (B, h, w)
        return normalize_maps(upsample(cam, tuple(x.shape[-2:])))


def explain(model: nn.Module, x: torch.Tensor, labels: torch.Tensor | None = None) -> Explanation:
    """Heatmaps for x (B, 1, H, W); ``labels`` (B,) picks the class for class-specific methods
    (Grad-CAM; default: each image's highest logit)."""
    method = explain_method(model)
    if method == "topk_scores":
        return topk_heatmaps(model, x)
    if method == "gradcam":
        if labels is None:
            with torch.no_grad():
                model.eval()
                labels = model(x).argmax(1)
        heat = GradCAM(model)(x, labels)
        return Explanation(heat.cpu().numpy().astype(np.float32), "gradcam")
    raise TypeError("no heatmap for this model: needs a ViT with head = topk or a CNN backbone")


# -- rendering ------------------------------------------------------------------------------
def overlay_rgb(image: np.ndarray, heat: np.ndarray, alpha: float = 0.8, cmap: str = "jet", top_fraction: float = 0.15) -> np.ndarray:
    """uint8 gray (H, W) + heat (H, W) in [0, 1] → uint8 RGB (H, W, 3). Only the hottest
    ``top_fraction`` of the pixels is coloured (colour and weight rising from that quantile to
    the maximum, weight at most ``alpha``), so the radiograph stays readable and the region
    the model ranks highest stands out whatever the spread of its scores."""
    import matplotlib

    heat = np.clip(np.asarray(heat, dtype=np.float64), 0, 1)
    floor = float(np.quantile(heat, 1.0 - top_fraction))
    top = float(heat.max())
    rel = np.clip((heat - floor) / max(top - floor, 1e-9), 0, 1) if top > floor else np.zeros_like(heat)
    w = alpha * np.sqrt(rel)[..., None]
    colors = matplotlib.colormaps[cmap](0.35 + 0.65 * rel)[..., :3]  # (H, W, 3): cyan at the edge → red at the maximum
    gray = np.repeat(image[..., None].astype(np.float32) / 255.0, 3, axis=2)
    return (np.clip((1 - w) * gray + w * colors, 0, 1) * 255).astype(np.uint8)


def patch_rects(indices: np.ndarray, grid: tuple[int, int], size: tuple[int, int]) -> list[tuple[float, float, float, float]]:
    """Token indices → (x0, y0, w, h) rectangles in image pixels (row-major token order)."""
    rows, cols = grid
    ph, pw = size[0] / rows, size[1] / cols
    return [(float(i % cols) * pw, float(i // cols) * ph, pw, ph) for i in np.asarray(indices).tolist()]


def draw_panel(ax: Any, image: np.ndarray, heat: np.ndarray, *, patches: list[tuple[float, float, float, float]] = (),
               boxes: list[tuple[float, float, float, float]] = (), title: str = "") -> None:
    """One overlay on a matplotlib axis: heat, top-K patches (white), ground-truth boxes (lime, x0 y0 x1 y1)."""
    from matplotlib.patches import Rectangle

    h, w = image.shape
    ax.imshow(overlay_rgb(image, heat), extent=(0, w, h, 0), interpolation="bilinear")
    for x0, y0, pw, ph in patches:
        ax.add_patch(Rectangle((x0, y0), pw, ph, fill=False, edgecolor="white", linewidth=0.8, alpha=0.9))
    for x0, y0, x1, y1 in boxes:
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="lime", linewidth=1.6, linestyle="--"))
    from chexbench.bench.localization import maximum_point

    y, x = maximum_point(heat)
    ax.plot([x], [y], marker="+", color="white", markersize=9, markeredgewidth=2)
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=7)


def save_overlay_png(path: str | Path, image: np.ndarray, heat: np.ndarray, *, patches=(), boxes=(), title: str = "") -> None:
    """Image beside its overlay, one PNG (written to a temp name, then renamed)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(5.2, 2.9), dpi=130)
    h, w = image.shape
    axes[0].imshow(image, cmap="gray", vmin=0, vmax=255, extent=(0, w, h, 0))
    axes[0].set_xticks([])
    axes[0].set_yticks([])
    axes[0].set_title("image", fontsize=7)
    draw_panel(axes[1], image, heat, patches=patches, boxes=boxes, title=title)
    fig.tight_layout()
    _save_fig(fig, Path(path))


def save_gallery_png(path: str | Path, panels: list[dict[str, Any]], columns: int = 4, title: str = "") -> None:
    """A grid of overlays; each panel is a dict of ``image``, ``heat`` and optional ``patches``, ``boxes``, ``title``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    columns = max(1, min(columns, len(panels)))
    rows = max(1, -(-len(panels) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.3 * columns, 2.5 * rows + (0.3 if title else 0)), dpi=130, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, p in zip(axes.flat, panels, strict=False):
        ax.axis("on")
        draw_panel(ax, p["image"], p["heat"], patches=p.get("patches", ()), boxes=p.get("boxes", ()), title=p.get("title", ""))
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _save_fig(fig, Path(path))


def _save_fig(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    from chexbench.atomic import atomic_path

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
