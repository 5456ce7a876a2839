"""Top-K patch scoring: let a ViT learn which patches matter and embed only those.

A small MLP (:class:`PatchScorer`) gives every patch token one score; the K highest-scoring
tokens are kept and pooled with weights ``softmax(score / τ)`` over the kept ones, so the
scorer receives gradient through the weights (the hard selection itself has none). This is
the top-K token pooling used for weakly supervised localization in the spirit of
"attention MIL" (Ilse et al. 2018) and TopK pooling of patch scores (Durand et al. 2016,
WELDON), applied to ViT patch tokens.

:class:`TopKBackbone` wraps a ViT :class:`~chexbench.backbones.base.Backbone`, shares its
timm model (same parameters) and adds the scorer: ``forward(x)`` gives the pooled top-K
features ``(B, D)``, :meth:`TopKBackbone.forward_topk` also the scores ``(B, N)``, the
selected indices ``(B, K)`` and their weights, and :meth:`TopKBackbone.score_map` the scores
on the token grid ``(B, rows, cols)``.

**Where the scorer's weights go.** In ``simclr_topk`` / ``mocov2_topk`` pretraining the
wrapper is the encoder, so the pooled top-K embedding is the view embedding. The pretraining
cache stores the ViT (``encoder.pt``, transferred strictly as for every strategy) and the full
model in ``checkpoint.pt``; :class:`TopKPretrainMixin` extracts the scorer's tensors from it
into ``scorer.pt`` beside them and names that file in the cell's init record
(``extra["topk_scorer"]``). A protocol with ``head = "topk"`` loads it strictly (any key or
shape mismatch is an error); with ``head = "linear"`` it is not used and the record says so.
K is not part of the scorer's weights, so a protocol may use another K than pretraining did.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import Field
from torch import nn

from chexbench.core.atomic import atomic_torch_save
from chexbench.core.errors import ConfigError, WeightsError
from chexbench.spec.options import Options
from chexbench.spec.registry import BACKBONES
from chexbench.strategies.heads import copy_probe_head

if TYPE_CHECKING:
    from chexbench.backbones.base import Backbone
    from chexbench.core.context import RunContext
    from chexbench.spec.cell import CellConfig
    from chexbench.strategies.base import InitRecord


class TopKOptions(Options):
    """Options of the top-K pooling a ``*_topk`` strategy pretrains (its ``option_model`` adds them
    to the contrastive strategy's own)."""

    topk: int | float = Field(
        0.25,
        gt=0,
        description="K patches kept: a count (int ≥ 1) or a fraction of the tokens (float in (0, 1])",
    )
    scorer_hidden: int = Field(
        0, ge=0, description="hidden width of the patch-scorer MLP; 0 uses max(16, D // 4)"
    )
    # an int stays an int, as before this option had a declared type (a grid's ``= 1`` keeps its cell id)
    topk_temperature: float | int = Field(
        1.0, gt=0, description="temperature of the softmax over the kept patches' scores"
    )


#: the top-K pooling's defaults (strategies ``*_topk``; protocols with ``head = "topk"`` share the names)
TOPK_OPTIONS: dict[str, Any] = TopKOptions.defaults()
SCORER_FILE = "scorer.pt"


def resolve_k(k: int | float, num_tokens: int) -> int:
    """K as a count: an int ≥ 1 is a count (capped at ``num_tokens``), a float in (0, 1] a fraction
    (rounded, at least 1). ``1`` is one token, ``1.0`` all of them."""
    if isinstance(k, bool) or not isinstance(k, (int, float)):
        raise ConfigError(f"topk must be a count (int ≥ 1) or a fraction in (0, 1], got {k!r}")
    if isinstance(k, int):
        if k < 1:
            raise ConfigError(f"topk as a count must be ≥ 1, got {k}")
        return min(k, num_tokens)
    if not 0.0 < k <= 1.0:
        raise ConfigError(f"topk as a fraction must be in (0, 1], got {k}")
    return max(1, min(num_tokens, round(k * num_tokens)))


class PatchScorer(nn.Module):
    """MLP over patch tokens: (B, N, D) → one score per patch (B, N). ``Linear → GELU → Linear``."""

    def __init__(self, dim: int, hidden: int = 0):
        super().__init__()
        hidden = hidden or max(16, dim // 4)
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.net(tokens).squeeze(-1)


def topk_indices(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (B, K) of the K highest scores of (B, N), highest first."""
    return scores.topk(k, dim=1, largest=True, sorted=True).indices


def topk_pool(
    tokens: torch.Tensor, scores: torch.Tensor, k: int, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pool the K best tokens: tokens (B, N, D), scores (B, N) → pooled (B, D), indices (B, K), weights (B,
    K).

    The weights are ``softmax(score_i / τ)`` over the kept tokens; gradient reaches ``scores``
    through them. With K = N and equal scores this is mean pooling.
    """
    idx = topk_indices(scores, k)  # (B, K)
    kept_scores = scores.gather(1, idx)  # (B, K)
    weights = torch.softmax(kept_scores.float() / temperature, dim=1)  # (B, K)
    kept = tokens.gather(1, idx.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))  # (B, K, D)
    pooled = (weights.unsqueeze(-1).to(kept.dtype) * kept).sum(dim=1)  # (B, D)
    return pooled, idx, weights


@dataclass
class TopKOutput:
    pooled: torch.Tensor  # (B, D)
    scores: torch.Tensor  # (B, N), every patch
    indices: torch.Tensor  # (B, K), highest score first
    weights: torch.Tensor  # (B, K), softmax over the kept scores


class TopKBackbone(nn.Module):
    """A ViT backbone whose pooled features are the score-weighted top-K patch tokens.

    Shares ``backbone.model`` (so its state-dict keys are ``model.*`` as in the backbone, plus
    ``scorer.*``) and offers the Backbone interface (``num_features``, ``token_grid``,
    ``forward_tokens``, ``is_vit``) so protocols and probes treat it as a backbone.
    """

    def __init__(self, backbone: Backbone, k: int | float = 0.25, hidden: int = 0, temperature: float = 1.0):
        super().__init__()
        if not backbone.is_vit:
            raise ConfigError(
                f"top-K patch pooling needs a ViT backbone (patch tokens); got {backbone.spec_name}"
            )
        self.model = backbone.model
        self.spec_name = backbone.spec_name
        self.kind = backbone.kind
        self.image_size = backbone.image_size
        self.num_features = backbone.num_features
        rows, cols = backbone.token_grid()
        self.num_tokens = rows * cols
        self.k_option = k
        self.k = resolve_k(k, self.num_tokens)
        self.temperature = float(temperature)
        self.scorer = PatchScorer(self.num_features, int(hidden))

    @property
    def is_vit(self) -> bool:
        return True

    def token_grid(self) -> tuple[int, int]:
        return tuple(self.model.patch_embed.grid_size)  # type: ignore[return-value]

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens (B, N, D), as :meth:`Backbone.forward_tokens`."""
        return self.model.forward_features(x)[:, self.model.num_prefix_tokens :]

    def forward_topk(self, x: torch.Tensor) -> TopKOutput:
        """x (B, 1, H, W) → pooled (B, D), scores (B, N), indices (B, K), weights (B, K)."""
        tokens = self.forward_tokens(x)  # (B, N, D)
        scores = self.scorer(tokens)  # (B, N)
        pooled, idx, weights = topk_pool(tokens, scores, self.k, self.temperature)
        return TopKOutput(pooled, scores, idx, weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_topk(x).pooled

    def score_map(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores on the token grid (B, rows, cols) and the selected indices (B, K)."""
        out = self.forward_topk(x)
        rows, cols = self.token_grid()
        return out.scores.float().view(-1, rows, cols), out.indices


#: where topk_classwise's per-class patch logits come from: "tokens" (a linear layer on the ViT's
#: final patch tokens) or "local" (a small convolution of the patch embeddings, see
#: :meth:`ClasswiseTopKClassifier._local_patch_logits`)
CLASSWISE_SOURCES = ("tokens", "local")


def classwise_topk_pool(patch_logits: torch.Tensor, k: int, alpha: float = 0.0, dim: int = 1) -> torch.Tensor:
    """Class-specific top-K pooling of per-class patch logits along ``dim`` (the tokens):
    (B, N, L) → (B, L) with ``s_c = mean of the K highest logits of class c + α × mean of its K
    lowest`` — the top-K mean of WELDON (Durand et al. 2016) and, with α > 0, WILDCAT's
    min-patch term (Durand et al. 2017). Each class picks its own K patches."""
    top = patch_logits.topk(k, dim=dim, largest=True).values.mean(dim)
    if alpha:
        top = top + alpha * patch_logits.topk(k, dim=dim, largest=False).values.mean(dim)
    return top


class ClasswiseTopKClassifier(nn.Module):
    """ViT patch tokens → a linear layer per patch (per-class patch logits, (B, N, L)) →
    class-specific top-K pooling (:func:`classwise_topk_pool`) → image logits (B, L).

    Each label has its own map: its patch logits on the token grid (:meth:`class_maps`).
    ``feature_mean`` / ``feature_std`` (1, D) standardize the tokens first (identity unless the
    linear protocol sets them from its frozen train-split tokens).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_labels: int,
        k: int | float = 0.25,
        alpha: float = 0.0,
        source: str = "tokens",
        local_hidden: int = 64,
        local_kernel: int = 3,
        local_offset: bool = True,
    ):
        super().__init__()
        if source not in CLASSWISE_SOURCES:
            raise ConfigError(
                f"classwise_source must be one of {', '.join(CLASSWISE_SOURCES)}, got {source!r}"
            )
        if not getattr(backbone, "is_vit", False):
            raise ConfigError(
                "head = topk_classwise needs a ViT backbone (patch tokens); got"
                f" {getattr(backbone, 'spec_name', type(backbone).__name__)}"
            )
        self.backbone = backbone
        rows, cols = backbone.token_grid()
        self.grid = (int(rows), int(cols))
        self.num_tokens = rows * cols
        self.k_option = k
        self.k = resolve_k(k, self.num_tokens)
        self.alpha = float(alpha)
        d = backbone.num_features
        self.register_buffer("feature_mean", torch.zeros(1, d))
        self.register_buffer("feature_std", torch.ones(1, d))
        self.head = nn.Linear(d, num_labels)
        self.source = source
        if source == "local":
            hidden, kernel = int(local_hidden), int(local_kernel)
            if kernel < 1 or kernel % 2 == 0:
                raise ConfigError(
                    "local_kernel must be an odd number of tokens ≥ 1 (1: each patch's own embedding), got"
                    f" {local_kernel!r}"
                )
            self.local_kernel = kernel
            self.local_offset = bool(local_offset)
            self.local = nn.Sequential(
                nn.Conv2d(d, hidden, kernel, padding=kernel // 2), nn.GELU(), nn.Conv2d(hidden, num_labels, 1)
            )

    def patch_logits(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 1, H, W) → per-class patch logits (B, N, L)."""
        if self.source == "local":
            return self._local_patch_logits(x)
        tokens = self.backbone.forward_tokens(x)  # (B, N, D)
        return self.head((tokens.float() - self.feature_mean) / self.feature_std)

    def _local_patch_logits(self, x: torch.Tensor) -> torch.Tensor:
        """``classwise_source = "local"``: the evidence of class c at patch n is a small convolution
        (``local_kernel`` × ``local_kernel`` tokens, then 1×1) of the patch embeddings (+ positional
        embeddings) around n, so a patch's logit can only come from its neighbourhood — with
        ``local_kernel = 1`` from its own embedding only, WILDCAT's 1×1 class-wise maps (Durand et
        al. 2017). With ``local_offset`` the ViT's class token adds one offset per class, the same
        for every patch (it moves no maximum); without it the image logit is the top-K evidence
        alone (the transformer blocks are not used), so the map is all the classifier has."""
        vit = self.backbone.model
        embedded = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(x))))  # (B, P + N, D)
        prefix = vit.num_prefix_tokens
        patches = embedded[:, prefix:].float()
        b, n, d = patches.shape
        rows, cols = self.grid
        local = self.local(patches.transpose(1, 2).reshape(b, d, rows, cols))  # (B, L, rows, cols)
        local = local.flatten(2).transpose(1, 2)  # (B, N, L)
        if not self.local_offset:
            return local
        tokens = vit.norm(vit.blocks(embedded))
        offset = self.head(tokens[:, 0].float()) if prefix else self.head(tokens.float().mean(1))  # (B, L)
        return local + offset[:, None, :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return classwise_topk_pool(self.patch_logits(x), self.k, self.alpha)

    @torch.no_grad()
    def class_maps(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The patch logits of each image's label on the token grid (B, rows, cols) and that
        label's K pooled patches (B, K), highest first."""
        logits = self.patch_logits(x)  # (B, N, L)
        chosen = logits.gather(2, labels.view(-1, 1, 1).to(logits.device).expand(-1, logits.shape[1], 1))[
            ..., 0
        ]  # (B, N)
        return chosen.view(-1, *self.grid), topk_indices(chosen, self.k)

    def set_head(
        self, mean: torch.Tensor, std: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
    ) -> ClasswiseTopKClassifier:
        """mean, std (1, D); weight (D, L); bias (1, L) or (L,) — as the linear protocol holds them."""
        copy_probe_head(self, mean, std, weight, bias)
        return self


def wrap_topk(backbone: Backbone, options: dict[str, Any]) -> TopKBackbone:
    """``backbone`` wrapped with a fresh scorer configured by ``options`` (see :data:`TOPK_OPTIONS`)."""
    opts = {**TOPK_OPTIONS, **options}
    return TopKBackbone(backbone, opts["topk"], int(opts["scorer_hidden"]), float(opts["topk_temperature"]))


def load_scorer(model: TopKBackbone, path: str | Path) -> int:
    """Load a pretrained scorer strictly; returns the number of tensors loaded."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"pretrained patch scorer not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    target = model.scorer.state_dict()
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    mismatched = [
        f"{k} {tuple(state[k].shape)}→{tuple(target[k].shape)}"
        for k in target
        if k in state and state[k].shape != target[k].shape
    ]
    if missing or unexpected or mismatched:
        raise WeightsError(
            f"patch scorer {path} does not fit: missing {missing}, unexpected {unexpected}, shape mismatches"
            f" {mismatched} (scorer_hidden must match pretraining)"
        )
    model.scorer.load_state_dict(state, strict=True)
    return len(state)


def is_vit_cell(cell: CellConfig) -> bool:
    return getattr(BACKBONES.get(cell.backbone), "kind", "") == "vit"


class TopKPretrainMixin:
    """Turns a contrastive :class:`~chexbench.strategies.pretrain.PretrainStrategy` into its top-K
    variant: the encoder is a :class:`TopKBackbone`, the scorer is kept for transfer."""

    name: str
    makes_topk_scorer: ClassVar[bool] = True

    def invalid_reason(self, cell: CellConfig) -> str | None:
        if not is_vit_cell(cell):
            return f"{self.name} needs a ViT backbone (it scores patch tokens); got {cell.backbone}"
        return super().invalid_reason(cell)  # type: ignore[misc]

    def build_model(
        self, encoder: Backbone, opts: dict[str, Any], pool_size: int, generator: torch.Generator
    ):
        wrapped = wrap_topk(encoder, {k: opts[k] for k in TOPK_OPTIONS})
        model, notes = super().build_model(wrapped, opts, pool_size, generator)  # type: ignore[misc]
        return model, [
            *notes,
            f"view embedding: score-weighted top-{wrapped.k} of {wrapped.num_tokens} patch tokens",
        ]

    def init_backbone(self, backbone: Backbone, cell: CellConfig, ctx: RunContext) -> InitRecord:
        init = super().init_backbone(backbone, cell, ctx)  # type: ignore[misc]
        run_dir = Path(init.extra["pretrain_dir"])
        path = extract_scorer(run_dir)
        opts = self.resolved_options(cell)  # type: ignore[attr-defined]
        init.extra.update(
            topk_scorer=str(path),
            topk_pretrain_k=opts["topk"],
            scorer_hidden=int(opts["scorer_hidden"]),
            topk_temperature=float(opts["topk_temperature"]),
        )
        init.notes.append(
            f"patch scorer saved to {path}: used by protocols with head = topk, not by head = linear"
        )
        return init


def extract_scorer(run_dir: Path) -> Path:
    """``run_dir/scorer.pt``: the scorer tensors of the finished run's ``checkpoint.pt`` (written once,
    atomically)."""
    path = run_dir / SCORER_FILE
    if path.is_file():
        return path
    ckpt_path = run_dir / "checkpoint.pt"
    if not ckpt_path.is_file():
        raise WeightsError(f"pretraining run {run_dir} has no checkpoint.pt to take the patch scorer from")
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)["model"]
    prefix = "encoder.scorer."
    scorer = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not scorer:
        raise WeightsError(f"{ckpt_path} holds no patch scorer (no '{prefix}*' keys)")
    atomic_torch_save(scorer, path)
    return path
