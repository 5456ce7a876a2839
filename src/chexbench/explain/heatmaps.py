"""Heatmaps of where a classifier looked, and their overlays.

Four explainers, chosen by the model (:func:`explain_method`):

- ``topk_scores`` — a ViT with the top-K head: the patch scorer's scores on the token grid,
  upsampled bilinearly to the image; the K selected patches are returned for outlining.
  Class-agnostic (one map per image).
- ``topk_classwise`` — a ViT with the class-specific top-K head: the explained label's own
  patch logits on the token grid; its K pooled patches are returned for outlining.
- ``gradcam`` — a CNN: Grad-CAM (Selvaraju et al. 2017) on the last convolutional stage:
  ``ReLU(Σ_c α_c A_c)`` with ``α_c`` the spatial mean of ∂logit/∂A_c, upsampled to the image.
  Our own implementation with a forward hook (activation) and a tensor hook (its gradient).
- ``vit_gradcam`` — a plain ViT classifier (the baseline a user gets anyway): Grad-CAM on the
  patch tokens entering the last block's attention (``blocks[-1].norm1``, as pytorch-grad-cam
  does for ViTs: the class token is read from there), ``ReLU(Σ_d α_d A_{n,d})`` with ``α_d`` the
  token mean of ∂logit/∂A_{·,d}, on the token grid.

Every map is scaled to [0, 1] per image (min–max) **unless it is flat**: a map on a 1×1 grid,
or one whose range is within :data:`~chexbench.explain.maxima.FLAT_RTOL` of its magnitude
(an all-zero Grad-CAM after its ReLU, the scores of a constant model), is returned as zeros and
flagged in ``Explanation.flat`` — never stretched into a false hot spot. The model is any
``nn.Module`` with a ``backbone`` attribute mapping (B, 1, H, W) to logits (B, L).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from chexbench.core.atomic import atomic_path
from chexbench.explain.maxima import FLAT_RTOL, is_flat, maximum_points
from chexbench.strategies.topk import ClasswiseTopKClassifier, TopKBackbone


@dataclass
class Explanation:
    heat: np.ndarray  # (B, H, W) float32 in [0, 1]; zeros where flat
    method: str  # "topk_scores" | "topk_classwise" | "gradcam" | "vit_gradcam"
    topk_indices: np.ndarray | None = None  # (B, K) token indices, highest score first
    grid: tuple[int, int] | None = None  # (rows, cols) of the map before upsampling (token grid or CAM size)
    flat: np.ndarray | None = None  # (B,) bool: the map is degenerate (no maximum to point with)
    origin: str = "patch"  # where the cells sit on the image (cell_origin): "patch" or "padded"


def explain_method(model: nn.Module) -> str | None:
    """The heatmap method for ``model``: ``topk_classwise``, ``topk_scores``, ``gradcam`` (CNN),
    ``vit_gradcam`` (plain ViT), None otherwise."""
    if isinstance(model, ClasswiseTopKClassifier):
        return "topk_classwise"
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, TopKBackbone):
        return "topk_scores"
    if getattr(backbone, "kind", None) == "cnn":
        return "gradcam"
    if getattr(backbone, "kind", None) == "vit" and hasattr(getattr(backbone, "model", None), "blocks"):
        return "vit_gradcam"
    return None


def flat_maps(maps: torch.Tensor, rtol: float = FLAT_RTOL) -> torch.Tensor:
    """(B, h, w) → (B,) bool: a map on a 1×1 grid, not finite, or with range ≤ rtol × magnitude."""
    flat = maps.flatten(1).double()
    lo, hi = flat.min(1).values, flat.max(1).values
    scale = torch.maximum(hi.abs(), lo.abs())
    out = (hi - lo <= rtol * scale) | ~torch.isfinite(flat).all(1)
    if maps.shape[-2:].numel() <= 1:
        out = torch.ones_like(out)
    return out


def normalize_maps(maps: torch.Tensor, flat: torch.Tensor | None = None) -> torch.Tensor:
    """Per-map min–max to [0, 1]: (B, H, W) → (B, H, W); flat maps (``flat`` (B,), default:
    :func:`flat_maps` of ``maps``) become zeros instead of being stretched."""
    flat = flat_maps(maps) if flat is None else flat.to(maps.device)
    flat_in = maps.flatten(1)
    lo, hi = flat_in.min(1).values, flat_in.max(1).values
    span = (hi - lo).clamp(min=1e-12)
    out = (flat_in - lo[:, None]) / span[:, None]
    keep = ((hi - lo) > 1e-12) & ~flat
    return torch.where(keep[:, None], out, torch.zeros_like(out)).view_as(maps)


def cell_origin(backbone: nn.Module) -> str:
    """Where a backbone's map cell sits on the image: ``"patch"`` — a patchify ViT, cell i is the patch
    of pixels ``[s·i, s·i + s)``, centred at ``s·i + s/2``; ``"padded"`` — a stack of 'same'-padded
    stride-2 convolutions (ResNets, convolutional stems), whose cell i is centred on pixel ``s·i``
    (each such layer maps output j to the centre of input 2j), half a cell up-left of a patch's centre."""
    inner = getattr(backbone, "model", backbone)
    proj = getattr(getattr(inner, "patch_embed", None), "proj", None)
    if (
        isinstance(proj, nn.Conv2d)
        and proj.kernel_size == proj.stride
        and proj.stride[0] > 1
        and proj.padding == (0, 0)
    ):
        return "patch"
    return "padded"


#: per-axis pixel coordinates of the cells' centres (rows' y, columns' x), or a rule of :func:`cell_origin`
Placement = str | tuple[np.ndarray, np.ndarray]


def rule_centres(cells: int, n: int, origin: str, first: float | None = None) -> np.ndarray:
    """Centres (pixel coordinates, a pixel's centre at p + ½) of ``cells`` cells over ``n`` pixels by a rule
    of
    :func:`cell_origin`: ``s·i + s/2`` for patches; ``s·i + ½`` for padded convolutions, except the first cell
    (``first``, when given): its receptive field is cut by the zero padding, so it looks further in than pixel
    0.
    """
    s = n / cells
    c = np.arange(cells, dtype=np.float64) * s + (s / 2 if origin == "patch" else 0.5)
    if origin != "patch" and first is not None and cells > 1:
        c[0] = min(max(first, 0.0), c[1] - 0.25 * s)  # stays before the second cell
    return c


def cell_centres(
    backbone: nn.Module, size: tuple[int, int], grid: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Where each cell of ``backbone``'s (rows, cols) map looks on an image of ``size``: its receptive field's
    centroid, edges included. A patchify ViT's cell is its patch (exact). In a stack of padded stride-2
    convolutions cell i is centred on pixel s·i — the far edge included (the last cell's field ends inside the
    image) — but the first cell's field is cut by the zero padding at the near edge: its centroid is measured
    (:func:`first_cell_centroid`) — at 64 px 3.8 px for the ConvStem, 2.8 for a ResNet, not 0.5."""
    rule = cell_origin(backbone)
    if rule == "patch":
        return rule_centres(grid[0], size[0], rule), rule_centres(grid[1], size[1], rule)
    fy, fx = first_cell_centroid(backbone, size)
    return rule_centres(grid[0], size[0], rule, fy), rule_centres(grid[1], size[1], rule, fx)


def _cell_layer(backbone: nn.Module) -> nn.Module:
    """The module whose output is the backbone's map grid: a ViT's patch embedding (stem), else the last conv
    stage."""
    inner = getattr(backbone, "model", backbone)
    return inner.patch_embed if hasattr(inner, "patch_embed") else last_conv_stage(backbone)


def first_cell_centroid(backbone: nn.Module, size: tuple[int, int], probes: int = 4) -> tuple[float, float]:
    """(y, x) centroid of |∂ cell (0, 0) / ∂ input| — the first cell's receptive field as this network weighs
    it — averaged over ``probes`` fixed uniform-noise images (eval mode; cached on the backbone per size)."""
    cache = backbone.__dict__.setdefault("_first_cell_centroid", {})
    key = tuple(int(v) for v in size)
    if key in cache:
        return cache[key]
    layer = _cell_layer(backbone)
    seen: dict[str, torch.Tensor] = {}
    handle = layer.register_forward_hook(lambda _m, _i, out: seen.__setitem__("out", out))
    was_training = backbone.training
    backbone.eval()
    try:
        param = next(backbone.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        gen = torch.Generator().manual_seed(0)
        with torch.enable_grad():
            x = torch.rand(probes, 1, *key, generator=gen).to(device).requires_grad_(True)
            backbone(x)
            out = seen["out"]  # (B, C, h, w) or tokens (B, N, D), the cell (0, 0) first either way
            cell = out[:, :, 0, 0] if out.dim() == 4 else out[:, 0, :]
            cell.float().sum().backward()
    finally:
        handle.remove()
        backbone.train(was_training)
    g = x.grad.detach().abs().double().sum(dim=(0, 1)).cpu()  # (H, W)
    total = float(g.sum())
    if total <= 0 or not np.isfinite(total):  # a dead corner (no gradient): the rule's centre
        cache[key] = (0.5, 0.5)
        return cache[key]
    ys, xs = torch.arange(key[0], dtype=torch.float64) + 0.5, torch.arange(key[1], dtype=torch.float64) + 0.5
    cache[key] = (float((g.sum(1) * ys).sum()) / total, float((g.sum(0) * xs).sum()) / total)
    return cache[key]


def _pad_edges(maps: torch.Tensor) -> torch.Tensor:
    """(B, 1, h, w) → (B, 1, h + 2, w + 2): one virtual cell beyond each edge (one cell spacing out) holding
    the
    smaller of the edge cell and its inner neighbour — an edge maximum falls off towards the border and stays
    a
    point at its cell's centre; an edge below its neighbour is held flat; a zero edge adds no heat."""

    def pad(m: torch.Tensor, dim: int) -> torch.Tensor:
        n = m.shape[dim]
        first, last = m.narrow(dim, 0, 1), m.narrow(dim, n - 1, 1)
        if n > 1:
            first, last = (
                torch.minimum(first, m.narrow(dim, 1, 1)),
                torch.minimum(last, m.narrow(dim, n - 2, 1)),
            )
        return torch.cat([first, m, last], dim)

    return pad(pad(maps, -1), -2)


def upsample(maps: torch.Tensor, size: tuple[int, int], origin: Placement = "patch") -> torch.Tensor:
    """(B, h, w) → (B, H, W), bilinear between the cells' centres on the image: ``origin`` is a rule of
    :func:`cell_origin` (``"patch"``: cell i at ``s·i + s/2``; ``"padded"``: at ``s·i + ½``) or the per-axis
    centres
    of :func:`cell_centres`. Between the outermost centres and the border the map runs to a virtual edge cell
    (:func:`_pad_edges`): clamping there made an edge maximum a plateau up to the border, whose centroid was
    2–16 px
    from the cell's centre (ConvStem's last cell at 60.0 px instead of 56.5 at 64 px)."""
    maps = maps[:, None].float()
    (h, w), (H, W) = maps.shape[-2:], size
    cy, cx = (rule_centres(h, H, origin), rule_centres(w, W, origin)) if isinstance(origin, str) else origin

    def coords(n: int, centres: np.ndarray) -> torch.Tensor:
        c = np.asarray(centres, dtype=np.float64)
        step_lo, step_hi = (c[1] - c[0], c[-1] - c[-2]) if len(c) > 1 else (float(n), float(n))
        ext = np.concatenate([[c[0] - step_lo], c, [c[-1] + step_hi]])  # virtual cells one step out: a mirror
        u = np.interp(np.arange(n, dtype=np.float64) + 0.5, ext, np.arange(len(ext), dtype=np.float64))
        return torch.as_tensor(
            2 * u / (len(ext) - 1) - 1, dtype=torch.float32, device=maps.device
        )  # align_corners=True

    gy, gx = torch.meshgrid(coords(H, cy), coords(W, cx), indexing="ij")
    grid = torch.stack([gx, gy], -1).expand(maps.shape[0], H, W, 2)
    return F.grid_sample(_pad_edges(maps), grid, mode="bilinear", padding_mode="border", align_corners=True)[
        :, 0
    ]


def _finish(
    coarse: torch.Tensor,
    size: tuple[int, int],
    method: str,
    indices: torch.Tensor | None = None,
    backbone: nn.Module | None = None,
) -> Explanation:
    """Coarse maps (B, h, w) → flagged, upsampled (cells at ``backbone``'s receptive-field centres,
    :func:`cell_centres`), normalized :class:`Explanation`."""
    flat = flat_maps(coarse)
    grid = tuple(coarse.shape[-2:])
    origin = "padded" if backbone is None else cell_origin(backbone)
    centres = cell_centres(backbone, size, grid) if backbone is not None else origin
    heat = normalize_maps(upsample(coarse, size, centres), flat)
    return Explanation(
        heat.detach().cpu().numpy().astype(np.float32),
        method,
        None if indices is None else indices.cpu().numpy(),
        grid,
        flat.cpu().numpy(),
        origin,
    )


@torch.no_grad()
def topk_heatmaps(model: nn.Module, x: torch.Tensor) -> Explanation:
    """Score maps of a top-K ViT classifier for x (B, 1, H, W)."""
    grid, idx = model.backbone.score_map(x)  # (B, rows, cols), (B, K)
    return _finish(grid, tuple(x.shape[-2:]), "topk_scores", idx, model.backbone)


@torch.no_grad()
def classwise_heatmaps(model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> Explanation:
    """Each image's label's patch logits for a class-specific top-K classifier: x (B, 1, H, W), labels
    (B,)."""
    grid, idx = model.class_maps(x, labels)  # (B, rows, cols), (B, K)
    return _finish(grid, tuple(x.shape[-2:]), "topk_classwise", idx, model.backbone)


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


def activation_and_gradient(
    model: nn.Module, layer: nn.Module, x: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Output of ``layer`` and the gradient of the chosen logits (one label per image) with respect to
    it, in float32, from one forward and backward of ``model`` in eval mode (its mode restored after)."""
    saved: dict[str, torch.Tensor] = {}

    def keep(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        saved["act"] = output
        output.register_hook(lambda g: saved.__setitem__("grad", g))

    handle = layer.register_forward_hook(keep)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            x = x.detach().clone().requires_grad_(True)  # a graph even when the backbone is frozen
            logits = model(x).float()  # (B, L)
            logits.gather(1, labels.view(-1, 1).to(logits.device)).sum().backward()
    finally:
        handle.remove()
        model.train(was_training)
    return saved["act"].detach().float(), saved["grad"].float()


class GradCAM:
    """Grad-CAM on ``layer`` of ``model`` (Selvaraju et al. 2017): call with x (B, 1, H, W) and
    one label index per image (B,) → maps (B, H, W) in [0, 1]."""

    def __init__(self, model: nn.Module, layer: nn.Module | None = None):
        self.model = model
        self.layer = layer if layer is not None else last_conv_stage(model.backbone)

    def __call__(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        act, grad = activation_and_gradient(self.model, self.layer, x, labels)  # (B, C, h, w)
        alpha = grad.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
        self.coarse = torch.relu((alpha * act).sum(1))  # (B, h, w)
        size = tuple(x.shape[-2:])
        centres = cell_centres(self.model.backbone, size, tuple(self.coarse.shape[-2:]))
        return normalize_maps(upsample(self.coarse, size, centres), flat_maps(self.coarse))


def vit_last_block_input(model: nn.Module) -> nn.Module:
    """The module whose output is the last ViT block's normalized input tokens (``blocks[-1].norm1``)."""
    inner = model.backbone.model
    return inner.blocks[-1].norm1


class ViTGradCAM:
    """Grad-CAM on the patch tokens of a plain ViT classifier: call with x (B, 1, H, W) and labels (B,)
    → coarse maps (B, rows, cols) ≥ 0 on the token grid."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.layer = vit_last_block_input(model)
        self.prefix = int(getattr(model.backbone.model, "num_prefix_tokens", 1))
        self.grid = tuple(model.backbone.model.patch_embed.grid_size)

    def __call__(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        act, grad = activation_and_gradient(self.model, self.layer, x, labels)
        act, grad = act[:, self.prefix :], grad[:, self.prefix :]  # (B, N, D) patch tokens only
        alpha = grad.mean(dim=1, keepdim=True)  # (B, 1, D)
        cam = torch.relu((alpha * act).sum(-1))  # (B, N)
        return cam.view(-1, *self.grid)


def explain(model: nn.Module, x: torch.Tensor, labels: torch.Tensor | None = None) -> Explanation:
    """Heatmaps for x (B, 1, H, W); ``labels`` (B,) picks the class for class-specific methods
    (Grad-CAM; default: each image's highest logit)."""
    method = explain_method(model)
    if method == "topk_scores":
        return topk_heatmaps(model, x)
    if method is None:
        raise TypeError("no heatmap for this model: needs a ViT or a CNN backbone")
    if labels is None:
        with torch.no_grad():
            model.eval()
            labels = model(x).argmax(1)
    if method == "topk_classwise":
        return classwise_heatmaps(model, x, labels)
    if method == "gradcam":
        cam = GradCAM(model)
        cam(x, labels)
        return _finish(
            cam.coarse, tuple(x.shape[-2:]), "gradcam", backbone=model.backbone
        )  # a CNN's last stage
    return _finish(ViTGradCAM(model)(x, labels), tuple(x.shape[-2:]), "vit_gradcam", backbone=model.backbone)


# -- rendering ------------------------------------------------------------------------------
def overlay_rgb(
    image: np.ndarray, heat: np.ndarray, alpha: float = 0.8, cmap: str = "jet", top_fraction: float = 0.15
) -> np.ndarray:
    """uint8 gray (H, W) + heat (H, W) in [0, 1] → uint8 RGB (H, W, 3). Only the hottest
    ``top_fraction`` of the pixels is coloured (colour and weight rising from that quantile to
    the maximum, weight at most ``alpha``), so the radiograph stays readable and the region
    the model ranks highest stands out whatever the spread of its scores."""
    heat = np.clip(np.asarray(heat, dtype=np.float64), 0, 1)
    floor = float(np.quantile(heat, 1.0 - top_fraction))
    top = float(heat.max())
    rel = np.clip((heat - floor) / max(top - floor, 1e-9), 0, 1) if top > floor else np.zeros_like(heat)
    w = alpha * np.sqrt(rel)[..., None]
    import matplotlib  # here, not at the top: a grid run imports this module but draws nothing

    colors = matplotlib.colormaps[cmap](0.35 + 0.65 * rel)[
        ..., :3
    ]  # (H, W, 3): cyan at the edge → red at the maximum
    gray = np.repeat(image[..., None].astype(np.float32) / 255.0, 3, axis=2)
    return (np.clip((1 - w) * gray + w * colors, 0, 1) * 255).astype(np.uint8)


def patch_rects(
    indices: np.ndarray, grid: tuple[int, int], size: tuple[int, int], origin: str = "patch"
) -> list[tuple[float, float, float, float]]:
    """Token indices → (x0, y0, w, h) rectangles in image pixels (row-major token order), one cell
    around each cell's centre (:func:`cell_origin`: a padded convolution's cell is shifted half a cell)."""
    rows, cols = grid
    ph, pw = size[0] / rows, size[1] / cols
    dy, dx = (0.0, 0.0) if origin == "patch" else (0.5 - ph / 2, 0.5 - pw / 2)
    return [
        (float(i % cols) * pw + dx, float(i // cols) * ph + dy, pw, ph) for i in np.asarray(indices).tolist()
    ]


def draw_panel(
    ax: Any,
    image: np.ndarray,
    heat: np.ndarray,
    *,
    patches: list[tuple[float, float, float, float]] = (),
    boxes: list[tuple[float, float, float, float]] = (),
    title: str = "",
    flat: bool = False,
) -> None:
    """One overlay on a matplotlib axis: heat, top-K patches (white), ground-truth boxes (lime, x0 y0 x1 y1).
    A flat map is not drawn (no heat, no maximum): the panel says "flat map" instead."""
    from matplotlib.patches import Rectangle

    h, w = image.shape
    flat = flat or is_flat(heat)
    if flat:
        ax.imshow(image, cmap="gray", vmin=0, vmax=255, extent=(0, w, h, 0))
        ax.text(w / 2, h / 2, "flat map", color="yellow", ha="center", va="center", fontsize=8)
    else:
        ax.imshow(overlay_rgb(image, heat), extent=(0, w, h, 0), interpolation="bilinear")
    for x0, y0, pw, ph in patches:
        ax.add_patch(Rectangle((x0, y0), pw, ph, fill=False, edgecolor="white", linewidth=0.8, alpha=0.9))
    for x0, y0, x1, y1 in boxes:
        ax.add_patch(
            Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="lime", linewidth=1.6, linestyle="--")
        )
    for y, x in [] if flat else maximum_points(heat):
        ax.plot([x], [y], marker="+", color="white", markersize=9, markeredgewidth=2)
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=7)


def save_overlay_png(
    path: str | Path,
    image: np.ndarray,
    heat: np.ndarray,
    *,
    patches=(),
    boxes=(),
    title: str = "",
    flat: bool = False,
) -> None:
    """Image beside its overlay, one PNG (written to a temp name, then renamed)."""
    plt = _pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(5.2, 2.9), dpi=130)
    h, w = image.shape
    axes[0].imshow(image, cmap="gray", vmin=0, vmax=255, extent=(0, w, h, 0))
    axes[0].set_xticks([])
    axes[0].set_yticks([])
    axes[0].set_title("image", fontsize=7)
    draw_panel(axes[1], image, heat, patches=patches, boxes=boxes, title=title, flat=flat)
    fig.tight_layout()
    _save_fig(fig, Path(path))


def save_gallery_png(
    path: str | Path, panels: list[dict[str, Any]], columns: int = 4, title: str = ""
) -> None:
    """A grid of overlays; each panel is a dict of ``image``, ``heat`` and optional ``patches``, ``boxes``,
    ``title``."""
    plt = _pyplot()

    columns = max(1, min(columns, len(panels)))
    rows = max(1, -(-len(panels) // columns))
    fig, axes = plt.subplots(
        rows, columns, figsize=(2.3 * columns, 2.5 * rows + (0.3 if title else 0)), dpi=130, squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    for ax, p in zip(axes.flat, panels, strict=False):
        ax.axis("on")
        draw_panel(
            ax,
            p["image"],
            p["heat"],
            patches=p.get("patches", ()),
            boxes=p.get("boxes", ()),
            title=p.get("title", ""),
            flat=bool(p.get("flat", False)),
        )
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _save_fig(fig, Path(path))


def _pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend unless one was chosen (imported on first drawing)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save_fig(fig: Any, path: Path) -> None:
    plt = _pyplot()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
