"""Published models' checkpoints built with each model's own library (random weights, the published
configuration), saved in that library's own format; and a fake local Hugging Face cache.

- torchxrayvision: ``xrv.models.DenseNet(weights=None)`` (DenseNet-121, 1 channel, 18 outputs).
- transformers: ``Dinov2Model`` / ``Dinov2WithRegistersModel`` at ViT-B/14 (RAD-DINO's
  configuration: image size 518, 4 registers for the register variant), ``save_pretrained``.
- open_clip: ``create_model("ViT-B-16")`` (GELU) and ``"ViT-B-32-quickgelu"`` (OpenAI's
  ViT-B/32 tower, CheXzero's), their plain state dicts as the hub and ``torch.save`` hold them.
- MAE: facebookresearch/mae has no package: its ``MaskedAutoencoderViT`` module tree rebuilt from
  timm's ``Block`` (encoder = timm's ViT-B/16 names, decoder 8 × 512), saved as ``{"model": …}``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> None:
    """Give BatchNorm non-trivial statistics and affine terms (fresh ones are the identity)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


def xrv_densenet(seed: int = 0):
    import torchxrayvision as xrv

    torch.manual_seed(seed)
    model = xrv.models.DenseNet(weights=None)
    randomize_batchnorm(model, seed)
    return model.eval()


def hf_dinov2(registers: bool, seed: int = 0, image_size: int = 518):
    from transformers import Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    torch.manual_seed(seed)
    if registers:
        model = Dinov2WithRegistersModel(
            Dinov2WithRegistersConfig(image_size=image_size, patch_size=14, num_register_tokens=4)
        )
    else:
        model = Dinov2Model(Dinov2Config(image_size=image_size))
    with torch.no_grad():  # LayerScale starts at 1 and biases at 0: give them values a load could get wrong
        for name, p in model.named_parameters():
            if name.endswith(("lambda1", "bias")) or "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def open_clip_model(name: str, seed: int = 0):
    import open_clip

    torch.manual_seed(seed)
    model = open_clip.create_model(name, pretrained=None)
    with torch.no_grad():
        for pname, p in model.visual.named_parameters():
            if "ln_" in pname or pname.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


class _MaeLike(nn.Module):
    """facebookresearch/mae ``models_mae.MaskedAutoencoderViT`` (ViT-B/16, decoder 512 × 8): its key names."""

    def __init__(self):
        import timm
        from timm.models.vision_transformer import Block

        super().__init__()
        vit = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0)
        self.patch_embed, self.cls_token, self.pos_embed, self.blocks, self.norm = (
            vit.patch_embed,
            vit.cls_token,
            vit.pos_embed,
            vit.blocks,
            vit.norm,
        )
        self.decoder_embed = nn.Linear(768, 512)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, 512))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, 197, 512), requires_grad=False)
        self.decoder_blocks = nn.ModuleList([Block(512, 16, 4.0, qkv_bias=True) for _ in range(8)])
        self.decoder_norm = nn.LayerNorm(512)
        self.decoder_pred = nn.Linear(512, 16 * 16 * 3)
        self.encoder = vit


def mae_checkpoint(path: Path, seed: int = 0) -> nn.Module:
    """Write ``{"model": MaskedAutoencoderViT.state_dict()}``; return the encoder as a timm ViT (3
    channels)."""
    torch.manual_seed(seed)
    mae = _MaeLike()
    state = {k: v for k, v in mae.state_dict().items() if not k.startswith("encoder.")}
    torch.save({"model": state, "epoch": 799, "args": None}, path)
    return mae.encoder.eval()


def fake_hub_cache(
    root: Path, repo: str, files: dict[str, bytes | str], commit: str = "a" * 40, ref: str = "main"
) -> Path:
    """huggingface_hub's cache layout: ``models--ORG--NAME/{refs/<ref>, snapshots/<commit>/<file>,
    blobs/}``."""
    repo_dir = root / f"models--{repo.replace('/', '--')}"
    snap = repo_dir / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    (repo_dir / "blobs").mkdir(exist_ok=True)
    for name, content in files.items():
        (snap / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / ref).write_text(commit)
    return snap


def preprocessor_config(mean: list[float], std: list[float]) -> str:
    return json.dumps(
        {
            "image_processor_type": "BitImageProcessor",
            "do_rescale": True,
            "rescale_factor": 1 / 255,
            "do_normalize": True,
            "image_mean": mean,
            "image_std": std,
        }
    )
