"""Strategy ``mae``: masked autoencoder (He et al. 2022, "Masked Autoencoders Are Scalable
Vision Learners"). ViTs with a patchify stem only.

Each image (one view: a random resized crop, area ≥ ``crop_scale_min``, as MAE's only
augmentation) is cut into patches; a random ``mask_ratio`` (75 %) of them is dropped per
image (a random permutation from the run's generator, sec. 3 "Masking"), and the encoder sees
**only the visible patches** (with their position embedding) and its class token. A small
decoder (``decoder_depth`` transformer blocks of width ``decoder_dim``) gets the encoded
visible tokens plus a shared, learned mask token at every masked position, adds its own
position embedding, and predicts each patch's pixels; the loss is the MSE against the
per-patch normalized pixels on the masked patches only
(:func:`~chexbench.strategies.losses.mae_loss`). The decoder is discarded before transfer.

**Why not a conv-stem ViT.** A convolutional stem mixes neighbouring pixels before there are
patches (three or four 3×3 stride-2 convolutions: each token's receptive field reaches into
the adjacent patches), and its BatchNorm pools statistics over the whole image; masking its
output tokens would still let masked pixels into the visible tokens. MAE on such a stem needs
masked convolutions (ConvMAE, Gao et al. 2022), which is another method: ``mae`` refuses
those backbones (the plan shows why) and every CNN.
Departures: learned position embeddings in the decoder (the paper's are fixed sin-cos), the
encoder's own (learned) ones unchanged.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field
from timm.models.vision_transformer import Block
from torch import nn

from chexbench.core.distributed import local_rows
from chexbench.spec.registry import BACKBONES
from chexbench.strategies.augment import ViewAugment, random_resized_crop
from chexbench.strategies.losses import mae_loss
from chexbench.strategies.pretrain import PretrainOptions, PretrainStrategy
from chexbench.strategies.vit_tokens import embed_patches, encode_tokens, patch_size


class MAEOptions(PretrainOptions):
    """MAE's options, over the common pretraining options."""

    mask_ratio: float = Field(
        0.75, gt=0, lt=1, description="fraction of patches masked (hidden from the encoder) per image"
    )
    decoder_dim: int = Field(512, ge=1, description="width of the decoder")
    decoder_depth: int = Field(8, ge=1, description="transformer blocks of the decoder")
    decoder_heads: int = Field(16, ge=1, description="attention heads of the decoder")
    norm_pix_loss: bool = Field(
        True, description="regress per-patch normalized pixels (the paper's better target)"
    )


MAE_OPTION_MODEL = MAEOptions.with_defaults(
    "MAEOptions",
    pretrain_optimizer="adamw",
    pretrain_lr=1.5e-4,
    pretrain_weight_decay=0.05,
    pretrain_warmup_epochs=40.0,
    crop_scale_min=0.2,
)
#: MAE's pretraining recipe (He et al. 2022, appendix A.1, table 8): AdamW (β2 0.95) base lr 1.5e-4 × B/256,
#: wd 0.05, 40 warmup epochs, cosine decay, random resized crop (0.2-1) only, mask ratio 0.75,
#: decoder 8 blocks × 512
MAE_VIT_RECIPE: dict[str, Any] = {
    "pretrain_optimizer": "adamw",
    "pretrain_lr": 1.5e-4,
    "pretrain_weight_decay": 0.05,
    "pretrain_warmup_epochs": 40.0,
    "crop_scale_min": 0.2,
    "mask_ratio": 0.75,
}


def random_masking(b: int, n: int, ratio: float, generator: torch.Generator | None, device: torch.device):
    """Per image a random subset of ``n − round(n·ratio)`` (at least one) visible patches.

    Returns ``keep`` (B, n_keep) the visible patch indices, sorted, and ``mask`` (B, N) 1 where masked."""
    n_keep = max(1, n - int(round(n * ratio)))
    noise = torch.rand(b, n, generator=generator).to(device, non_blocking=True)
    keep = noise.argsort(dim=1)[:, :n_keep].sort(dim=1).values
    mask = torch.ones(b, n, device=device)
    mask.scatter_(1, keep, 0.0)
    return keep, mask


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, H, W) → (B, N, p·p·C), patches in row-major order (the token order of a ViT)."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)


class MAEModel(nn.Module):
    """ViT encoder on visible patches + small decoder; ``loss(view, progress, generator)``."""

    def __init__(self, encoder: nn.Module, opts: dict[str, Any]):
        super().__init__()
        self.encoder = encoder
        vit = encoder.model
        self.patch = patch_size(vit)
        n = int(vit.patch_embed.num_patches)
        dim, dec = encoder.num_features, int(opts["decoder_dim"])
        self.mask_ratio = float(opts["mask_ratio"])
        self.norm_pix = bool(opts["norm_pix_loss"])
        self.crop_scale_min = float(opts["crop_scale_min"])
        self.decoder_embed = nn.Linear(dim, dec)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dec))
        self.decoder_pos = nn.Parameter(torch.zeros(1, 1 + n, dec))
        self.decoder_blocks = nn.Sequential(
            *[
                Block(dec, int(opts["decoder_heads"]), mlp_ratio=4.0, qkv_bias=True)
                for _ in range(int(opts["decoder_depth"]))
            ]
        )
        self.decoder_norm = nn.LayerNorm(dec)
        self.decoder_pred = nn.Linear(dec, self.patch * self.patch * 1)
        nn.init.normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.decoder_pos, std=0.02)

    def make_views(
        self,
        x01: torch.Tensor,
        aug: ViewAugment,
        generator: torch.Generator | None,
        normalize: tuple[float, float],
    ):
        """One view: MAE's random resized crop (no intensity changes), normalized."""
        x = random_resized_crop(x01, (self.crop_scale_min, 1.0), aug.crop_ratio, 0.0, aug.flip_p, generator)
        mean, sd = normalize
        return ((x - mean) / sd,)

    def encode_visible(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """All tokens after the encoder (B, P + n_keep, D) for the visible patches ``keep`` (B, n_keep) of
        ``x``."""
        tokens, prefix_pos = embed_patches(self.encoder.model, x)  # (B, N, D)
        visible = torch.gather(tokens, 1, keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
        return encode_tokens(self.encoder.model, visible, prefix_pos, pooled=False)

    def loss(
        self, x: torch.Tensor, progress: float = 0.0, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        x = local_rows(x)
        b = x.shape[0]
        n = (x.shape[-2] // self.patch) * (x.shape[-1] // self.patch)
        keep, mask = random_masking(b, n, self.mask_ratio, generator, x.device)
        latent = self.encode_visible(x, keep)  # (B, P + n_keep, D)
        n_prefix = latent.shape[1] - keep.shape[1]
        y = self.decoder_embed(latent)
        full = self.mask_token.expand(b, n, -1).clone()  # every position a mask token …
        full.scatter_(
            1, keep.unsqueeze(-1).expand(-1, -1, y.shape[-1]), y[:, n_prefix:]
        )  # … but the visible ones
        z = torch.cat([y[:, :1], full], dim=1) + self.decoder_pos  # the class token leads, as in MAE
        z = self.decoder_norm(self.decoder_blocks(z))
        pred = self.decoder_pred(z[:, 1:])  # (B, N, p²)
        return mae_loss(pred, patchify(x, self.patch), mask, self.norm_pix)


class MAE(PretrainStrategy):
    name = "mae"
    option_model = MAE_OPTION_MODEL
    #: the meanings of its own options, from their field descriptions (declared once)
    recipes: ClassVar[dict[str, dict[str, Any]]] = {"vit": MAE_VIT_RECIPE}

    def invalid_reason(self, cell) -> str | None:
        spec = BACKBONES.get(cell.backbone)
        if getattr(spec, "kind", "") != "vit":
            return f"mae masks the patches of a ViT; {cell.backbone} is not one"
        if getattr(spec, "conv_stem", False):
            return (
                f"mae needs a patchify ViT: {cell.backbone}'s convolutional stem mixes neighbouring patches"
                " and normalizes over the whole image before masking, so masked pixels would reach the"
                " encoder"
            )
        return None

    def build_model(self, encoder, opts, pool_size, generator):
        model = MAEModel(encoder, opts)
        n = int(encoder.model.patch_embed.num_patches)
        notes = [f"MAE: {n - max(1, n - int(round(n * model.mask_ratio)))} of {n} patches masked per image"]
        return model, notes
