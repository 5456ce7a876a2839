"""Strategy ``dino``: DINO (Caron et al. 2021, "Emerging Properties in Self-Supervised Vision
Transformers"), self-distillation with no labels.

A student (encoder + DINO head) is trained to match, on every crop, the output distribution
that a teacher — the student's exponential moving average, momentum rising from
``momentum`` to 1 on a cosine — gives the *other* global crops
(:func:`~chexbench.strategies.losses.dino_loss`). Collapse is avoided by **centring** the
teacher's logits with a running mean ``c`` (momentum ``center_momentum``, eq. 4) and
**sharpening** them with a low teacher temperature that warms up linearly from
``warmup_teacher_temp`` to ``teacher_temp`` over ``warmup_teacher_temp_epochs`` epochs.
Multi-crop (sec. 3.1): 2 global crops of area in [``crop_scale_min``, 1] at full size and
``local_crops`` local crops of area in [``local_crop_scale_min``, ``crop_scale_min``] at
96/224 of the size (rounded to the patch size), drawn on the device like every view here;
the teacher sees only the global crops. A ViT sees a local crop through its position
embedding resampled to the smaller grid (:mod:`chexbench.strategies.vit_tokens`), as in
DINO's code. The head: 3-layer MLP (GELU) to a ``proj_dim`` bottleneck, L2-normalized, then
a weight-normalized linear layer with its norm fixed to 1 (``norm_last_layer``) to
``out_dim`` prototypes. Departures: weight decay fixed (the paper raises it 0.04 → 0.4 on a
cosine), no frozen last layer in the first epoch, the radiograph views of
:mod:`chexbench.strategies.augment` instead of colour jitter and solarization.
``centering = false`` exists to show collapse (the monitors must catch it). ``use_bn_in_head``
(an option of DINO's code, off by default as for their ViTs) puts BatchNorm after the head's
hidden layers; at CPU scale it is what keeps the teacher from collapsing (docs/SELF_SUPERVISED.md).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from chexbench.core import distributed as D
from chexbench.strategies.augment import ViewAugment, contrastive_view
from chexbench.strategies.losses import dino_center_update, dino_loss
from chexbench.strategies.momentum import cosine_momentum, momentum_update
from chexbench.strategies.pretrain import PretrainOptions, PretrainStrategy
from chexbench.strategies.vit_tokens import vit_features

#: DINO's local crops are 96 px beside 224 px global crops
LOCAL_SIZE_RATIO = 96 / 224


class DINOOptions(PretrainOptions):
    """DINO's options, over the common pretraining options (``crop_scale_min`` is the global crops' smallest
    area)."""

    out_dim: int = Field(65536, ge=2, description="prototypes K of the DINO head's last layer")
    student_temp: float = Field(0.1, gt=0, description="student softmax temperature τ_s")
    teacher_temp: float = Field(0.04, gt=0, description="teacher softmax temperature τ_t after its warmup")
    warmup_teacher_temp: float = Field(
        0.04, gt=0, description="teacher temperature at the start of its linear warmup"
    )
    warmup_teacher_temp_epochs: float = Field(
        0.0, ge=0, description="epochs of the teacher-temperature warmup"
    )
    center_momentum: float = Field(
        0.9, ge=0, le=1, description="momentum of the teacher centre's running mean"
    )
    centering: bool = Field(
        True, description="centre the teacher's logits (false only to demonstrate collapse)"
    )
    momentum: float = Field(
        0.996, ge=0, le=1, description="teacher EMA momentum at the start; rises to 1 on a cosine"
    )
    local_crops: int = Field(8, ge=0, description="local (small) crops per image beside the 2 global crops")
    local_crop_scale_min: float = Field(
        0.05, gt=0, le=1, description="smallest area fraction of a local crop"
    )
    use_bn_in_head: bool = Field(
        False, description="BatchNorm after the head's hidden layers (an option of DINO's code)"
    )


DINO_OPTION_MODEL = DINOOptions.with_defaults(
    "DINOOptions",
    proj_dim=256,
    proj_hidden_dim=2048,
    crop_scale_min=0.4,
    grad_clip=3.0,
    pretrain_optimizer="adamw",
    pretrain_lr=5e-4,
    pretrain_weight_decay=0.04,
    pretrain_warmup_epochs=10.0,
)
#: DINO on a ViT (Caron et al. 2021, sec. 4 / appendix and the ViT-S/16 recipe of their code):
#: AdamW lr 5e-4 × B/256, wd 0.04, 10 warmup epochs, grad clip 3, teacher momentum 0.996 → 1,
#: teacher temperature 0.04 → 0.07 over 30 epochs, global crops of area ≥ 0.4, local 0.05-0.4
DINO_VIT_RECIPE: dict[str, Any] = {
    "pretrain_optimizer": "adamw",
    "pretrain_lr": 5e-4,
    "pretrain_weight_decay": 0.04,
    "pretrain_warmup_epochs": 10.0,
    "teacher_temp": 0.07,
    "warmup_teacher_temp": 0.04,
    "warmup_teacher_temp_epochs": 30.0,
    "crop_scale_min": 0.4,
    "local_crop_scale_min": 0.05,
}
#: DINO on a ResNet-50 (their code's ResNet-50 command): SGD lr 0.03, wd 1e-4, global crops of area
#: ≥ 0.14, local crops 0.05-0.14, teacher temperature 0.04
DINO_RESNET_RECIPE: dict[str, Any] = {
    "pretrain_optimizer": "sgd",
    "pretrain_lr": 0.03,
    "pretrain_weight_decay": 1e-4,
    "pretrain_warmup_epochs": 10.0,
    "teacher_temp": 0.04,
    "warmup_teacher_temp": 0.04,
    "warmup_teacher_temp_epochs": 0.0,
    "crop_scale_min": 0.14,
    "local_crop_scale_min": 0.05,
}


class DINOHead(nn.Module):
    """``(B, in_dim) → (B, K)``: MLP (GELU) to a bottleneck, L2-normalized, then cosine to K unit prototypes
    (the weight-normalized last layer with its norm fixed to 1). ``bottleneck(x)`` is the normalized (B,
    proj_dim).
    """

    def __init__(
        self, in_dim: int, hidden_dim: int, bottleneck_dim: int, out_dim: int, batch_norm: bool = False
    ):
        super().__init__()

        def hidden(d_in: int) -> list[nn.Module]:
            return [
                nn.Linear(d_in, hidden_dim),
                *([nn.BatchNorm1d(hidden_dim)] if batch_norm else []),
                nn.GELU(),
            ]

        self.mlp = nn.Sequential(*hidden(in_dim), *hidden(hidden_dim), nn.Linear(hidden_dim, bottleneck_dim))
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.prototypes = nn.Parameter(torch.randn(out_dim, bottleneck_dim) * 0.02)

    def bottleneck(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(x), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bottleneck(x) @ F.normalize(self.prototypes, dim=-1).T


def local_crop_size(image_size: int, multiple: int) -> int:
    """96/224 of ``image_size``, rounded to a multiple of ``multiple`` (the ViT patch), at least one."""
    return max(multiple, int(round(image_size * LOCAL_SIZE_RATIO / multiple)) * multiple)


class DINOModel(nn.Module):
    """Student encoder + head, EMA teacher encoder + head, centre; ``loss(globals, locals, progress)``."""

    def __init__(self, encoder: nn.Module, opts: dict[str, Any]):
        super().__init__()
        self.encoder = encoder
        self.head = DINOHead(
            encoder.num_features,
            int(opts["proj_hidden_dim"]),
            int(opts["proj_dim"]),
            int(opts["out_dim"]),
            bool(opts.get("use_bn_in_head", False)),
        )
        self.teacher_encoder = copy.deepcopy(encoder)
        self.teacher_head = copy.deepcopy(self.head)
        for p in [*self.teacher_encoder.parameters(), *self.teacher_head.parameters()]:
            p.requires_grad_(False)
        self.register_buffer("center", torch.zeros(1, int(opts["out_dim"])))
        self.opts = {k: opts[k] for k in DINOOptions.model_fields if k in opts}
        self.epochs = int(opts["pretrain_epochs"])
        multiple = int(encoder.model.patch_embed.patch_size[0]) if encoder.is_vit else 8
        self.local_size = local_crop_size(encoder.image_size, multiple)
        self.progress = 0.0

    def teacher_temp(self, progress: float) -> float:
        """Linear warmup per epoch from ``warmup_teacher_temp`` to ``teacher_temp`` (DINO's schedule), then
        constant."""
        warm = float(self.opts["warmup_teacher_temp_epochs"])
        epoch = math.floor(progress * self.epochs)
        if warm <= 0 or epoch >= warm:
            return float(self.opts["teacher_temp"])
        start, end = float(self.opts["warmup_teacher_temp"]), float(self.opts["teacher_temp"])
        return start + (end - start) * epoch / warm

    def features(self, encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if encoder.is_vit and x.shape[-1] != encoder.image_size:
            return vit_features(encoder.model, x)  # a local crop: position embedding resampled to its grid
        return encoder(x)

    def make_views(
        self,
        x01: torch.Tensor,
        aug: ViewAugment,
        generator: torch.Generator | None,
        normalize: tuple[float, float],
    ):
        """(2 global crops, ``local_crops`` local crops), each (B, 1, S, S), drawn on ``x01``'s device."""
        glob = dataclasses.replace(aug, crop_scale=(float(self.opts["crop_scale_min"]), 1.0))
        loc = dataclasses.replace(
            aug, crop_scale=(float(self.opts["local_crop_scale_min"]), float(self.opts["crop_scale_min"]))
        )
        globals_ = [contrastive_view(x01, glob, generator, normalize) for _ in range(2)]
        locals_ = [
            contrastive_view(x01, loc, generator, normalize, self.local_size)
            for _ in range(int(self.opts["local_crops"]))
        ]
        return globals_, locals_

    def loss(
        self, globals_: list[torch.Tensor], locals_: list[torch.Tensor], progress: float = 0.0, generator=None
    ) -> torch.Tensor:
        self.progress = progress
        g = torch.cat([D.local_rows(v) for v in globals_])  # (2b, 1, S, S)
        n_global = len(globals_)
        with torch.no_grad():
            m = cosine_momentum(progress, float(self.opts["momentum"]))
            momentum_update(self.encoder, self.teacher_encoder, m)
            momentum_update(self.head, self.teacher_head, m)
            teacher = list(self.teacher_head(self.teacher_encoder(g)).chunk(n_global))  # G × (b, K)
        student = list(self.head(self.encoder(g)).chunk(n_global))
        if locals_:
            loc = torch.cat([D.local_rows(v) for v in locals_])
            student += list(self.head(self.features(self.encoder, loc)).chunk(len(locals_)))
        centering = bool(self.opts["centering"])
        center = self.center if centering else torch.zeros_like(self.center)
        loss = dino_loss(
            student, teacher, center, float(self.opts["student_temp"]), self.teacher_temp(progress)
        )
        if centering:
            # the centre follows the global batch's teacher mean: each rank's mean, averaged over ranks
            new = dino_center_update(
                self.center,
                [D.mean_over_ranks(torch.cat(teacher).float().mean(0, keepdim=True))],
                float(self.opts["center_momentum"]),
            )
            self.center.copy_(new)
        return loss

    @torch.no_grad()
    def monitor_outputs(self, x: torch.Tensor) -> dict[str, Any]:
        """The teacher's output distribution (B, K), centred and sharpened as the loss uses it — the embedding
        whose
        collapse matters: one prototype for every image (no centring) or uniform (no sharpening) both make
        every row
        the same — and its mean entropy (nats)."""
        f = self.teacher_encoder(x)
        logits = self.teacher_head(f).float()
        center = self.center if bool(self.opts["centering"]) else torch.zeros_like(self.center)
        probs = F.softmax((logits - center) / self.teacher_temp(self.progress), dim=-1)
        entropy = float(-(probs * probs.clamp(min=1e-30).log()).sum(-1).mean())
        return {"embedding": probs, "teacher_entropy": entropy, "max_entropy": math.log(probs.shape[-1])}


class DINO(PretrainStrategy):
    name = "dino"
    option_model = DINO_OPTION_MODEL
    #: the meanings of its own options, from their field descriptions (declared once)
    recipes: ClassVar[dict[str, dict[str, Any]]] = {"cnn": DINO_RESNET_RECIPE, "vit": DINO_VIT_RECIPE}

    def build_model(self, encoder, opts, pool_size, generator):
        model = DINOModel(encoder, opts)
        notes = [
            f"DINO multi-crop: 2 global crops at {encoder.image_size} px, {opts['local_crops']} local crops"
            f" at {model.local_size} px"
        ]
        return model, notes
