"""A timm ViT split in two halves, so a method can act on its tokens: embed, then encode.

``embed_patches`` turns an image of any size (a multiple of the patch size) into patch tokens
with their position embedding (resampled bicubically when the grid differs from the model's,
as DINO's reference code does for its small local crops); ``encode_tokens`` runs any subset of
those tokens (MAE's visible ones) through the prefix tokens, the blocks, the final norm and
the model's pooling. ``encode_tokens(embed_patches(x))`` equals ``vit(x)`` at the model's size
(tested), so the weights trained through these halves are those the backbone uses.
"""

from __future__ import annotations

import torch
from timm.layers import resample_abs_pos_embed
from torch import nn


def patch_size(vit: nn.Module) -> int:
    return int(vit.patch_embed.patch_size[0])


def embed_patches(vit: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Patch tokens of ``x`` (B, C, H, W) with position embedding added: (B, N, D), and the prefix
    tokens' position embedding (1, P, D) (P = 0 for a model whose prefix tokens have none)."""
    pe = vit.patch_embed
    if hasattr(pe, "proj"):  # timm's PatchEmbed: the conv, flattened, its norm (any size)
        tokens = pe.norm(pe.proj(x).flatten(2).transpose(1, 2))
    else:  # a stem that returns (B, N, D) at any multiple of its stride (ConvStem)
        tokens = pe(x)
    p = patch_size(vit)
    grid = (x.shape[-2] // p, x.shape[-1] // p)
    n_prefix = 0 if vit.no_embed_class else vit.num_prefix_tokens
    pos = vit.pos_embed
    if grid != tuple(pe.grid_size):
        pos = resample_abs_pos_embed(
            pos, new_size=list(grid), old_size=list(pe.grid_size), num_prefix_tokens=n_prefix
        )
    return tokens + pos[:, n_prefix:], pos[:, :n_prefix]


def encode_tokens(
    vit: nn.Module, tokens: torch.Tensor, prefix_pos: torch.Tensor, pooled: bool = True
) -> torch.Tensor:
    """``tokens`` (B, n, D) (position embedding included) → pooled features (B, D), or all tokens
    after the final norm (B, P + n, D) with ``pooled=False``."""
    prefix = []
    if vit.cls_token is not None:
        prefix.append(vit.cls_token.expand(tokens.shape[0], -1, -1))
    if getattr(vit, "reg_token", None) is not None:
        prefix.append(vit.reg_token.expand(tokens.shape[0], -1, -1))
    if prefix:
        pre = torch.cat(prefix, dim=1)
        if prefix_pos.shape[1]:
            pre = pre + prefix_pos
        tokens = torch.cat([pre, tokens], dim=1)
    x = vit.norm_pre(vit.pos_drop(tokens))
    x = vit.norm(vit.blocks(x))
    return vit.forward_head(x, pre_logits=True) if pooled else x


def vit_features(vit: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Pooled features (B, D) of ``x`` at any size that is a multiple of the patch size."""
    return encode_tokens(vit, *embed_patches(vit, x))
