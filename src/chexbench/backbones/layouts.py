"""Published models' own checkpoint layouts, mapped strictly onto timm's names.

Each layout is a list of rules from the file's key names to timm's (:data:`RULES`); a key
either matches a rule that places it, or a rule that drops it with a reason, or the file is
refused with one line naming the keys no rule knows. After the mapping the usual strict audit
applies (:func:`chexbench.backbones.base.audit_checkpoint`): every key of the backbone must be
filled, with the right shape.

- ``torchxrayvision``: its DenseNet-121 zoo (``xrv.models.DenseNet``): ``features.*`` are
  timm's ``densenet121`` names (older files' ``norm.1``/``conv.1`` spelled ``norm1``/``conv1``);
  the 18-way ``classifier`` and its ``op_threshs`` are dropped. One input channel already.
- ``hf_transformers``: ``Dinov2Model`` / ``Dinov2WithRegistersModel`` (the names
  ``save_pretrained`` writes, and transformers 5's in-memory ``q_proj``/``o_proj`` names), also
  under ``dinov2.`` with a ``classifier`` (``Dinov2ForImageClassification``): query/key/value
  concatenated into timm's ``qkv``, ``layer_scale*.lambda1`` → ``ls*.gamma``.
- ``open_clip`` / ``openai_clip``: the image tower ``visual.*`` of a CLIP model (the text
  tower, ``logit_scale`` and OpenAI's ``input_resolution``/``context_length``/``vocab_size``
  dropped): ``conv1``, ``class_embedding``, ``positional_embedding``, ``ln_pre``,
  ``transformer.resblocks.N.{ln_1,attn.in_proj_*,attn.out_proj,ln_2,mlp.c_fc,mlp.c_proj}``,
  ``ln_post`` → timm's CLIP ViT; ``proj`` (into the joint space) dropped. An open_clip model
  whose tower is a timm model (``visual.trunk.*``, BiomedCLIP) keeps the trunk's timm names and
  drops ``visual.head.*``.
- ``mae``: facebookresearch/mae (``{"model": …}``): the encoder has timm's ViT names; the
  decoder (``decoder_*``) and ``mask_token`` are dropped.

Input normalization: each layout's published preprocessing (:func:`model_normalization`), read
from the model's own config beside the weights when there is one (``preprocessor_config.json``
of a transformers model, ``open_clip_config.json``). The cell normalizes its one channel with
the RGB averages ``u = (x - M) / S``; the library computes ``sum_c W_c * (x - m_c) / s_c (+ b)``
on the gray image repeated over RGB. For a patch embedding (a convolution with stride = kernel,
no padding) that is exactly ``(sum_c W_c S / s_c) * u + delta``, ``delta_k = sum_{c,i,j}
W_{k,c,i,j} (M - m_c) / s_c`` a constant per output channel: :func:`fold_rgb_normalization`
writes the rescaled filter and adds ``delta`` to the patch embedding's bias, or (CLIP towers have
none) to the patch tokens' position embeddings (resampling them to another grid keeps a
constant: the interpolation weights sum to 1). So every ViT layout sees exactly the library's
per-channel preprocessing of a gray image (ImageNet, OpenAI CLIP statistics included). Only a
first convolution that pads its border (a CNN stem) cannot take the offset exactly; there the
RGB filters are summed and the averaged statistics are an approximation when the channel
statistics differ (torchxrayvision's DenseNet has one channel and needs neither).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from chexbench.backbones.base import Normalization
from chexbench.core.errors import WeightsError

LAYOUTS = ("torchxrayvision", "hf_transformers", "open_clip", "openai_clip", "mae")

IMAGENET_RGB = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
OPENAI_CLIP_RGB = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
#: OpenAI CLIP's JIT archives carry these scalars beside the weights
OPENAI_METADATA = ("input_resolution", "context_length", "vocab_size")

TEXT_TOWER = "CLIP text tower / contrastive head (not the image encoder)"
PROJECTION = "projection into CLIP's joint image-text space (features are the pooled token before it)"


@dataclass
class Mapped:
    """A checkpoint in timm's names, and what was dropped from it (file key → reason)."""

    layout: str
    state: dict[str, torch.Tensor]
    dropped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# -- recognizing a layout by its keys ---------------------------------------------------------
def detect(tensors: dict[str, torch.Tensor]) -> str | None:
    """The published layout ``tensors`` are in, or None (then the generic prefix search applies)."""
    keys = set(tensors)
    if any(k.endswith("embeddings.patch_embeddings.projection.weight") for k in keys):
        return "hf_transformers"
    if (
        {"visual.conv1.weight", "visual.class_embedding"} <= keys
        or any(k.startswith("visual.trunk.") for k in keys)
        or ({"conv1.weight", "class_embedding", "ln_post.weight"} <= keys)
    ):
        return "openai_clip" if any(k in keys for k in OPENAI_METADATA) else "open_clip"
    conv0, head = tensors.get("features.conv0.weight"), tensors.get("classifier.weight")
    one_channel = conv0 is not None and conv0.ndim == 4 and conv0.shape[1] == 1
    if (
        one_channel
        and any(k.startswith("features.denseblock1.") for k in keys)
        and ("op_threshs" in keys or head is not None and head.shape[0] == 18)  # the zoo's 18 pathologies
    ):
        return "torchxrayvision"
    if any(k.startswith(("decoder_blocks.", "decoder_embed.")) for k in keys):
        return "mae"
    return None


# -- the rules ---------------------------------------------------------------------------------
Rule = tuple[
    str, "str | None", str
]  # (regex on the file key, timm key template or None = dropped, reason if dropped)

_XRV: list[Rule] = [
    (
        r"^features\.(.*)\.(norm|relu|conv)\.([12])\.(weight|bias|running_mean|running_var|num_batches_tracked)$",
        r"features.\1.\2\3.\4",
        "",
    ),
    (r"^(features\..*)$", r"\1", ""),
    (r"^classifier\..*$", None, "torchxrayvision's 18-pathology classifier head"),
    (r"^op_threshs$", None, "operating-point thresholds of that classifier head"),
]

_HF_BLOCK = r"^encoder\.layer\.(\d+)\."
_HF: list[Rule] = [
    (r"^embeddings\.cls_token$", "cls_token", ""),
    (r"^embeddings\.register_tokens$", "reg_token", ""),
    (r"^embeddings\.position_embeddings$", "pos_embed", ""),
    (r"^embeddings\.patch_embeddings\.projection\.(weight|bias)$", r"patch_embed.proj.\1", ""),
    (
        r"^embeddings\.mask_token$",
        None,
        "mask token of masked-image pretraining (no patch is masked when features are taken)",
    ),
    (_HF_BLOCK + r"(norm1|norm2)\.(weight|bias)$", r"blocks.\1.\2.\3", ""),
    (_HF_BLOCK + r"attention\.attention\.(query|key|value)\.(weight|bias)$", r"blocks.\1.attn.\2.\3", ""),
    (_HF_BLOCK + r"attention\.(q|k|v)_proj\.(weight|bias)$", r"blocks.\1.attn.\2.\3", ""),
    (_HF_BLOCK + r"attention\.(?:output\.dense|o_proj)\.(weight|bias)$", r"blocks.\1.attn.proj.\2", ""),
    (_HF_BLOCK + r"layer_scale([12])\.lambda1$", r"blocks.\1.ls\2.gamma", ""),
    (_HF_BLOCK + r"mlp\.(fc1|fc2)\.(weight|bias)$", r"blocks.\1.mlp.\2.\3", ""),
    (r"^layernorm\.(weight|bias)$", r"norm.\1", ""),
    (r"^classifier\..*$", None, "image-classification head of the transformers model"),
]

_CLIP_BLOCK = r"^transformer\.resblocks\.(\d+)\."
_CLIP: list[Rule] = [
    (r"^class_embedding$", "cls_token", ""),
    (r"^positional_embedding$", "pos_embed", ""),
    (r"^conv1\.weight$", "patch_embed.proj.weight", ""),
    (r"^ln_pre\.(weight|bias)$", r"norm_pre.\1", ""),
    (_CLIP_BLOCK + r"ln_([12])\.(weight|bias)$", r"blocks.\1.norm\2.\3", ""),
    (_CLIP_BLOCK + r"attn\.in_proj_(weight|bias)$", r"blocks.\1.attn.qkv.\2", ""),
    (_CLIP_BLOCK + r"attn\.out_proj\.(weight|bias)$", r"blocks.\1.attn.proj.\2", ""),
    (_CLIP_BLOCK + r"mlp\.c_fc\.(weight|bias)$", r"blocks.\1.mlp.fc1.\2", ""),
    (_CLIP_BLOCK + r"mlp\.c_proj\.(weight|bias)$", r"blocks.\1.mlp.fc2.\2", ""),
    (_CLIP_BLOCK + r"ls_([12])\.gamma$", r"blocks.\1.ls\2.gamma", ""),
    (r"^ln_post\.(weight|bias)$", r"norm.\1", ""),
    (r"^proj$", None, PROJECTION),
]
_CLIP_TIMM_TOWER: list[Rule] = [
    (r"^trunk\.(.*)$", r"\1", ""),
    (r"^head\..*$", None, PROJECTION),
]

_MAE: list[Rule] = [
    (r"^mask_token$", None, "MAE decoder's mask token (pretraining only)"),
    (r"^decoder_.*$", None, "MAE decoder (pretraining only)"),
    (r"^(.*)$", r"\1", ""),  # the encoder: timm's ViT names; the audit checks them
]


def _apply(
    rules: list[Rule], tensors: dict[str, torch.Tensor], layout: str, source: str, prefix: str = ""
) -> Mapped:
    out = Mapped(layout, {})
    unknown = []
    compiled = [(re.compile(p), t, r) for p, t, r in rules]
    for key, value in tensors.items():
        for pattern, target, reason in compiled:
            m = pattern.match(key)
            if m is None:
                continue
            if target is None:
                out.dropped[prefix + key] = reason
            else:
                out.state[m.expand(target)] = value
            break
        else:
            unknown.append(prefix + key)
    if unknown:
        shown = ", ".join(unknown[:6]) + (", …" if len(unknown) > 6 else "")
        raise WeightsError(f"{source}: keys the {layout} layout does not know: [{shown}] ({len(unknown)})")
    return out


# -- per layout --------------------------------------------------------------------------------
def convert(layout: str, tensors: dict[str, torch.Tensor], model: nn.Module, source: str) -> Mapped:
    """``tensors`` (a file in ``layout``) in timm's names for ``model``; raises WeightsError with one line."""
    converters: dict[str, Callable[..., Mapped]] = {
        "torchxrayvision": _torchxrayvision,
        "hf_transformers": _hf_transformers,
        "open_clip": _clip,
        "openai_clip": _clip,
        "mae": _mae,
    }
    return converters[layout](tensors, model, source, layout)


def _torchxrayvision(tensors, model, source, layout) -> Mapped:
    if not any(k.startswith("features.") for k in tensors):
        raise WeightsError(
            f"{source}: format 'torchxrayvision' expects DenseNet keys features.* (found"
            f" {_first(list(tensors))})"
        )
    out = _apply(_XRV, tensors, layout, source)
    out.notes.append("layout torchxrayvision (DenseNet features.* kept, 18-way classifier dropped)")
    return out


def _hf_transformers(tensors, model, source, layout) -> Mapped:
    prefix = "dinov2." if any(k.startswith("dinov2.") for k in tensors) else ""
    inner = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    if "embeddings.patch_embeddings.projection.weight" not in inner:
        raise WeightsError(
            f"{source}: format 'hf_transformers' expects a Dinov2 model's keys "
            f"(embeddings.patch_embeddings.projection.weight; found {_first(list(tensors))})"
        )
    out = _apply(_HF, inner, layout, source, prefix)
    for k in tensors:  # Dinov2ForImageClassification: the head sits beside the dinov2. prefix
        if prefix and not k.startswith(prefix):
            if not k.startswith("classifier."):
                raise WeightsError(f"{source}: keys the hf_transformers layout does not know: [{k}]")
            out.dropped[k] = "image-classification head of the transformers model"
    _fuse_qkv(out.state, source)
    n_reg = int(out.state["reg_token"].shape[1]) if "reg_token" in out.state else 0
    want_reg = int(model.reg_token.shape[1]) if getattr(model, "reg_token", None) is not None else 0
    if n_reg != want_reg:
        raise WeightsError(
            f"{source}: the checkpoint has {n_reg} register tokens (embeddings.register_tokens), "
            f"the backbone {want_reg}: use {'vit_b14_reg4_dinov2' if n_reg else 'vit_b14_dinov2'}"
        )
    _hf_position_embeddings(out, model)
    out.notes.insert(
        0,
        f"layout hf_transformers (Dinov2{'WithRegisters' if n_reg else ''}Model names → timm"
        + (f", keys under '{prefix}'" if prefix else "")
        + ")",
    )
    return out


def _fuse_qkv(state: dict[str, torch.Tensor], source: str) -> None:
    """``blocks.N.attn.{query,key,value|q,k,v}.X`` → timm's ``blocks.N.attn.qkv.X`` (rows q, k, v)."""
    names = {"query": "q", "key": "k", "value": "v", "q": "q", "k": "k", "v": "v"}
    parts: dict[str, dict[str, torch.Tensor]] = {}
    pattern = re.compile(r"^(blocks\.\d+\.attn)\.(query|key|value|q|k|v)\.(weight|bias)$")
    for key in list(state):
        m = pattern.match(key)
        if m:
            parts.setdefault(f"{m[1]}.qkv.{m[3]}", {})[names[m[2]]] = state.pop(key)
    for target, qkv in parts.items():
        if set(qkv) != {"q", "k", "v"}:
            raise WeightsError(f"{source}: {target}: query/key/value incomplete (found {sorted(qkv)})")
        state[target] = torch.cat([qkv["q"], qkv["k"], qkv["v"]], dim=0)


def _hf_position_embeddings(out: Mapped, model: nn.Module) -> None:
    """transformers' position embeddings (class position first) → timm's, resampled as transformers does.

    transformers interpolates the patch positions at every forward to the input's grid
    (bicubic, ``align_corners=False``, in float32; antialiased in
    ``Dinov2WithRegistersEmbeddings`` but not in ``Dinov2Embeddings``, as of transformers 5);
    done once here the same way, the features equal its forward at that size. timm's register variant adds no
    position to prefix tokens: the class
    position is added to the class token (what transformers' forward adds to it).
    """
    pos = out.state["pos_embed"]
    cls_pos, patch_pos = pos[:, :1], pos[:, 1:]
    n = patch_pos.shape[1]
    side = int(round(n**0.5))
    grid = tuple(model.patch_embed.grid_size)
    if side * side != n:
        raise WeightsError(f"embeddings.position_embeddings: {n} patch positions are not a square grid")
    if (side, side) != grid:
        dim = patch_pos.shape[-1]
        img = patch_pos.reshape(1, side, side, dim).permute(0, 3, 1, 2).float()
        antialias = "reg_token" in out.state
        img = nn.functional.interpolate(
            img, size=grid, mode="bicubic", align_corners=False, antialias=antialias
        )
        patch_pos = img.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], dim).to(pos.dtype)
        out.notes.append(
            f"pos_embed resampled {side}×{side}→{grid[0]}×{grid[1]}"
            f" (bicubic{', antialiased' if antialias else ''}, as transformers' forward)"
        )
    if getattr(model, "no_embed_class", False):
        out.state["cls_token"] = out.state["cls_token"] + cls_pos
        out.state["pos_embed"] = patch_pos
        out.notes.append(
            "class position embedding added to the class token (timm's register ViT embeds patches only)"
        )
    else:
        out.state["pos_embed"] = torch.cat([cls_pos, patch_pos], dim=1)


def _clip(tensors, model, source, layout) -> Mapped:
    if any(k.startswith("visual.") for k in tensors):
        prefix = "visual."
    elif "conv1.weight" in tensors or any(k.startswith("trunk.") for k in tensors):
        prefix = ""  # the image tower's own state dict (model.visual.state_dict())
    else:
        raise WeightsError(
            f"{source}: format '{layout}' expects a CLIP image tower under visual. (found"
            f" {_first(list(tensors))})"
        )
    tower = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    timm_tower = any(k.startswith("trunk.") for k in tower)
    out = _apply(_CLIP_TIMM_TOWER if timm_tower else _CLIP, tower, layout, source, prefix)
    for k in tensors:
        if not k.startswith(prefix):
            out.dropped[k] = "OpenAI CLIP metadata" if k in OPENAI_METADATA else TEXT_TOWER
    if not timm_tower:
        if "cls_token" in out.state:
            out.state["cls_token"] = out.state["cls_token"].reshape(1, 1, -1)
        if "pos_embed" in out.state:
            out.state["pos_embed"] = out.state["pos_embed"].unsqueeze(0)
    kind = (
        "timm trunk (visual.trunk.*)"
        if timm_tower
        else "visual transformer (visual.conv1, transformer.resblocks …)"
    )
    out.notes.insert(0, f"layout {layout}: image tower, {kind} → timm; text tower and projection dropped")
    return out


def _mae(tensors, model, source, layout) -> Mapped:
    out = _apply(_MAE, tensors, layout, source)
    out.notes.append("layout mae (encoder kept under timm's ViT names, decoder dropped)")
    return out


def activation_check(
    layout: str, model: nn.Module, weights_path: Path | None, backbone: str, source: str
) -> None:
    """Refuse a CLIP tower built with another MLP activation than the checkpoint's (not visible in keys).

    OpenAI CLIP layouts always use QuickGELU; an open_clip model says so in its
    ``open_clip_config.json`` (``model_cfg.quick_gelu``) when that file is beside the weights.
    """
    if layout not in ("open_clip", "openai_clip") or not hasattr(model, "blocks"):
        return
    quick = type(model.blocks[0].mlp.act).__name__ == "QuickGELU"
    want: bool | None = True if layout == "openai_clip" else None
    cfg = _sibling_json(weights_path, "open_clip_config.json")
    if want is None and cfg is not None:
        want = bool(cfg.get("model_cfg", {}).get("quick_gelu", False))
    if want is not None and want != quick:
        act = "quick_gelu" if want else "gelu"
        why = (
            "OpenAI CLIP towers use QuickGELU"
            if layout == "openai_clip"
            else f"open_clip_config.json says quick_gelu = {want}"
        )
        raise WeightsError(f'{source}: {why}; set act = "{act}" under [backbone.{backbone}]')


# -- input normalization -----------------------------------------------------------------------
def model_normalization(layout: str, weights_path: Path | None, folded: bool = False) -> Normalization:
    """The one-channel (mean, std) on [0, 1] pixels a ``layout`` model was trained with, and its source.

    ``folded``: the per-channel statistics were folded into the model's patch embedding
    (:func:`fold_rgb_normalization`); the source says so, else that the average is an approximation.
    """
    if layout == "torchxrayvision":
        # xrv.datasets.normalize: (2 x / 255 - 1) · 1024, i.e. (x01 − 0.5) / (1 / 2048)
        return Normalization(0.5, 1 / 2048, "torchxrayvision's pixel range [-1024, 1024]")
    rgb, source = _rgb(layout, weights_path)
    mean, std = (list(map(float, v)) for v in rgb)
    spread = max(mean) - min(mean) > 1e-6 or max(std) - min(std) > 1e-6
    if folded:
        note = (
            "; the per-channel statistics folded exactly into the patch embedding (filters rescaled, offset"
            " added)"
        )
    elif spread:
        note = (
            " (channel statistics differ: an approximation for gray images, the first convolution pads its"
            " border so the per-channel offsets cannot be folded exactly)"
        )
    else:
        note = ""
    return Normalization(
        round(sum(mean) / len(mean), 6),
        round(sum(std) / len(std), 6),
        f"{source} {[round(m, 4) for m in mean]}/{[round(s, 4) for s in std]}, averaged over RGB{note}",
    )


def rgb_statistics(layout: str, weights_path: Path | None) -> tuple[list[float], list[float]] | None:
    """The per-channel (mean, std) of a ``layout`` model's RGB preprocessing; None for a one-channel
    layout."""
    if layout == "torchxrayvision":
        return None
    rgb = _rgb(layout, weights_path)[0]
    return [float(v) for v in rgb[0]], [float(v) for v in rgb[1]]


def foldable(model: nn.Module) -> bool:
    """Whether ``model``'s one-channel input goes first through a ViT patch embedding (stride = kernel, no
    padding)."""
    embed = getattr(model, "patch_embed", None)
    proj = getattr(embed, "proj", None)
    return (
        isinstance(proj, nn.Conv2d)
        and proj.in_channels == 1
        and proj.groups == 1
        and tuple(proj.stride) == tuple(proj.kernel_size)
        and tuple(proj.padding) == (0, 0)
        and tuple(proj.dilation) == (1, 1)
        and proj.padding_mode == "zeros"
        and not getattr(embed, "dynamic_img_pad", False)
    )


def fold_rgb_normalization(
    state: dict[str, torch.Tensor],
    model: nn.Module,
    rgb: tuple[list[float], list[float]],
    norm: Normalization,
) -> list[str]:
    """Fold the per-channel ``rgb`` statistics into ``state``'s RGB patch embedding for the one-channel
    ``norm``.

    In place; returns notes (none when ``model`` has no foldable patch embedding or the file's is not RGB:
    then :meth:`BackboneSpec.adapt_checkpoint` sums the filters). Computed in float64.
    """
    key, bias_key = "patch_embed.proj.weight", "patch_embed.proj.bias"
    w = state.get(key)
    if w is None or w.ndim != 4 or w.shape[1] != 3 or not foldable(model):
        return []
    embed = model.patch_embed
    to_bias = bias_key in state
    if not to_bias and (
        "pos_embed" not in state or not isinstance(getattr(embed, "norm", nn.Identity()), nn.Identity)
    ):
        return []  # nowhere to add the offset before anything nonlinear: left to the summed filters
    mean = torch.tensor(rgb[0], dtype=torch.float64, device=w.device).view(1, 3, 1, 1)
    std = torch.tensor(rgb[1], dtype=torch.float64, device=w.device).view(1, 3, 1, 1)
    w64 = w.to(torch.float64)
    state[key] = (w64 * (norm.std / std)).sum(dim=1, keepdim=True).to(w.dtype)
    delta = (w64 * ((norm.mean - mean) / std)).sum(dim=(1, 2, 3))
    if to_bias:
        b = state[bias_key]
        state[bias_key] = (b.to(torch.float64) + delta).to(b.dtype)
        where = f"{bias_key} (+offset per output channel)"
    else:
        pos = state["pos_embed"]
        start = 0 if getattr(model, "no_embed_class", False) else int(model.num_prefix_tokens)
        shifted = pos.clone()
        shifted[:, start:] = (pos[:, start:].to(torch.float64) + delta).to(pos.dtype)
        state["pos_embed"] = shifted
        where = "the patch tokens' pos_embed (+offset per channel; the patch embedding has no bias)"
    return [
        f"{key}: RGB filters folded to 1 channel with the per-channel statistics "
        f"{[round(v, 4) for v in rgb[0]]}/{[round(v, 4) for v in rgb[1]]} (W_c·{norm.std:g}/s_c summed; "
        f"offset into {where}): exact for a gray image under normalize {norm.mean:g}/{norm.std:g}"
    ]


def _rgb(layout: str, weights_path: Path | None) -> tuple[tuple, str]:
    rgb, source = (
        (OPENAI_CLIP_RGB, "OpenAI CLIP mean/std")
        if layout in ("open_clip", "openai_clip")
        else (IMAGENET_RGB, "ImageNet mean/std (DINOv2's and MAE's preprocessing)")
    )
    if layout == "hf_transformers":
        cfg = _sibling_json(weights_path, "preprocessor_config.json")
        if cfg and "image_mean" in cfg and "image_std" in cfg:
            if abs(float(cfg.get("rescale_factor", 1 / 255)) * 255 - 1) > 1e-6 and cfg.get(
                "do_rescale", True
            ):
                raise WeightsError(
                    f"{weights_path}: preprocessor_config.json rescales by {cfg['rescale_factor']}, not 1/255"
                )
            rgb, source = (cfg["image_mean"], cfg["image_std"]), "the model's preprocessor_config.json"
            if cfg.get("do_normalize", True) is False:
                rgb, source = (
                    ((0.0,) * 3, (1.0,) * 3),
                    "the model's preprocessor_config.json (do_normalize false)",
                )
    if layout == "open_clip":
        cfg = _sibling_json(weights_path, "open_clip_config.json")
        pre = (cfg or {}).get("preprocess_cfg", {})
        if "mean" in pre and "std" in pre:
            rgb, source = (pre["mean"], pre["std"]), "the model's open_clip_config.json"
    return rgb, source


def _sibling_json(weights_path: Path | None, name: str) -> dict | None:
    if weights_path is None:
        return None
    path = Path(weights_path).parent / name
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError) as e:
        raise WeightsError(f"cannot read {path}: {e}") from None


def _first(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (", …" if len(keys) > n else "") if keys else "(none)"
