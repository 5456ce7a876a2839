"""The classification head options of the protocols, the trained model of a cell on disk,
and what happens after a protocol has selected its model (localization, saving).

``head = "linear"`` (default): pooled backbone features → linear layer.
``head = "topk"``: a ViT's patch tokens → :class:`~chexbench.strategies.topk.TopKBackbone`
(patch scorer, score-weighted top-K pooling) → linear layer. The scorer starts from the
pretrained one when the strategy made one (``simclr_topk``, ``mocov2_topk``), else fresh;
under ``linear`` (frozen backbone) it must be pretrained, since a frozen random scorer
would select arbitrary patches. One class-agnostic map per image.
``head = "topk_classwise"``: a ViT's patch tokens → per-class patch logits → each class's
logit pooled from its own top-K patches (+ ``wildcat_alpha`` × its K lowest, Durand et al.
2017): :class:`~chexbench.strategies.topk.ClasswiseTopKClassifier`, one map per label. Under
``linear`` only the patch-logit layer is trained on the frozen tokens; any ViT strategy works.

**Saved models.** ``save_model = "auto"`` (default) writes the selected model's state dict
to ``<results>/models/<cell_id>.pt`` when it has at most :data:`SMALL_MODEL_PARAMS`
parameters (the CPU-sized backbones); ``true`` always, ``false`` never. ``chexbench explain``
rebuilds the model from the cell's config and loads that file strictly.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import Field
from torch import nn

from chexbench.core import distributed
from chexbench.core.atomic import atomic_torch_save
from chexbench.core.errors import RECORD_WARNING_PREFIX, ConfigError, DataError, WeightsError
from chexbench.explain.localization import evaluate_localization
from chexbench.spec.options import Options
from chexbench.spec.registry import BACKBONES, PROTOCOLS, STRATEGIES
from chexbench.strategies.heads import copy_probe_head
from chexbench.strategies.topk import ClasswiseTopKClassifier, is_vit_cell, load_scorer, wrap_topk

if TYPE_CHECKING:
    from chexbench.backbones.base import Backbone
    from chexbench.core.context import RunContext
    from chexbench.datasets.celldata import CellData
    from chexbench.spec.cell import CellConfig
    from chexbench.strategies.base import InitRecord


class HeadOptions(Options):
    """Protocol options for the classification head, the saved model and the localization at the
    end of a cell (``[protocol.linear]``, ``[protocol.finetune]``): each declared here once."""

    head: Literal["linear", "topk", "topk_classwise"] = Field(
        "linear",
        description=(
            "classification head: linear (on pooled features) | topk (on the top-K scored patches; ViT only)"
            " | topk_classwise (per-class patch logits, each class pooled from its own top-K patches; ViT"
            " only)"
        ),
    )
    topk: int | float = Field(
        0.25,
        gt=0,
        description="K of head = topk / topk_classwise: a count (int ≥ 1) or a fraction of the tokens",
    )
    wildcat_alpha: float = Field(
        0.0,
        ge=0,
        description=(
            "head = topk_classwise: weight of the mean of each class's K lowest patch logits (WILDCAT); 0 ="
            " top-K mean only"
        ),
    )
    classwise_source: Literal["tokens", "local"] = Field(
        "tokens",
        description=(
            "head = topk_classwise: tokens (a linear layer on the ViT's final patch tokens) | local (a"
            " local_kernel × local_kernel-token convolution of the patch embeddings + positional embeddings,"
            " the class token adding one offset per class; finetune only)"
        ),
    )
    local_hidden: int = Field(
        64,
        ge=1,
        description="head = topk_classwise, classwise_source = local: channels of the local convolution",
    )
    local_kernel: int = Field(
        3,
        ge=1,
        description=(
            "head = topk_classwise, classwise_source = local: width of the local convolution in tokens (odd;"
            " 1 = each patch's logits from its own embedding only)"
        ),
    )
    local_offset: bool = Field(
        True,
        description=(
            "head = topk_classwise, classwise_source = local: add the class token's per-class offset to every"
            " patch (true), or classify from the local top-K evidence alone (false: the transformer blocks"
            " are unused)"
        ),
    )
    scorer_hidden: int = Field(
        0,
        ge=0,
        description=(
            "head = topk: hidden width of the head's patch scorer; 0 uses max(16, D // 4) (a pretrained "
            "scorer's own when left at 0)"
        ),
    )
    topk_temperature: float = Field(
        1.0,
        gt=0,
        description=(
            "head = topk: temperature of the softmax over the head's kept patch scores (a pretrained "
            "scorer's own when left at 1.0)"
        ),
    )
    save_model: Literal["auto", "true", "false"] | bool = Field(
        "auto",
        description=(
            "save the selected model to <results>/models for `chexbench explain`: auto (small models only) |"
            " true | false"
        ),
    )
    localize: bool = Field(
        True, description="measure the pointing game and deletion AUC when the test split has lesion boxes"
    )
    localize_images: int = Field(64, ge=1, description="test images with lesion boxes used for localization")
    deletion_steps: int = Field(10, ge=0, description="steps of the deletion curve; 0 = no deletion AUC")
    pointing_tolerance: Literal["standard"] | float = Field(
        "standard",
        description=(
            "tolerance of the tolerant pointing game: standard (15 px at 224 px, scaled to the image) or"
            " pixels ≥ 0"
        ),
    )


#: the head options' defaults (read where an option may be unset: a cell's own table, a saved model's options)
HEAD_OPTIONS: dict[str, Any] = HeadOptions.defaults()


def head_option(opts: dict[str, Any], key: str) -> Any:
    """``opts[key]``, or the option's declared default when ``opts`` does not set it."""
    return opts.get(key, HEAD_OPTIONS[key])


HEADS: tuple[str, ...] = typing.get_args(HeadOptions.model_fields["head"].annotation)
#: the same as chexbench.strategies.topk.CLASSWISE_SOURCES (tested)
CLASSWISE_SOURCES: tuple[str, ...] = typing.get_args(HeadOptions.model_fields["classwise_source"].annotation)
SMALL_MODEL_PARAMS = 5_000_000
MODEL_FORMAT = 1


def head_invalid_reason(cell: CellConfig, protocol: str) -> str | None:
    """Why the cell's head option cannot work for this (protocol, backbone, strategy), or None."""
    head = head_option(cell.protocol_options, "head")
    if head not in HEADS:
        return f"[protocol.{protocol}] head must be one of {', '.join(HEADS)}, got {head!r}"
    if head in ("topk", "topk_classwise") and not is_vit_cell(cell):
        return f"head = {head} needs a ViT backbone (it scores patch tokens); got {cell.backbone}"
    if head == "topk" and _freezes_backbone(protocol) and not _makes_topk_scorer(cell.strategy):
        return (
            "linear probe with head = topk needs a pretrained patch scorer (a *_topk strategy); got"
            f" {cell.strategy}"
        )
    source = head_option(cell.protocol_options, "classwise_source")
    if head == "topk_classwise" and source not in CLASSWISE_SOURCES:
        return (
            f"[protocol.{protocol}] classwise_source must be one of {', '.join(CLASSWISE_SOURCES)}, got"
            f" {source!r}"
        )
    if head == "topk_classwise" and source != "tokens" and _freezes_backbone(protocol):
        return (
            f"classwise_source = {source} trains a convolution on the patch embeddings: finetune only (the"
            " linear probe reads the frozen final tokens)"
        )
    return None


def head_preflight(cell: CellConfig, protocol: str) -> None:
    """Refuse, before anything runs, a ``head = "topk"`` whose ``scorer_hidden`` / ``topk_temperature``
    set under ``[protocol.*]`` differ from the values the cell's ``*_topk`` pretraining uses."""
    if head_option(cell.protocol_options, "head") != "topk" or cell.strategy not in STRATEGIES:
        return
    strategy = STRATEGIES.get(cell.strategy)
    if not hasattr(strategy, "resolved_options"):
        return
    pretraining = strategy.resolved_options(cell)
    for key in ("scorer_hidden", "topk_temperature"):
        if (
            key in pretraining
            and key in cell.protocol_options
            and float(cell.protocol_options[key]) != float(pretraining[key])
        ):
            raise ConfigError(
                f"[protocol.{protocol}] {key} = {cell.protocol_options[key]} differs from"
                f" [strategy.{cell.strategy}] {key} = {pretraining[key]}: the pretrained patch scorer would"
                f" run with another {key}; leave it unset"
            )


def apply_head(backbone: Backbone, opts: dict[str, Any], init: InitRecord) -> tuple[nn.Module, list[str]]:
    """The feature extractor for ``opts["head"]``: the backbone itself, or it wrapped with the top-K
    scorer (pretrained scorer loaded strictly when ``init`` names one). Returns notes; a note starting with
    :data:`~chexbench.core.errors.RECORD_WARNING_PREFIX` is a warning the report lists. With a pretrained
    scorer,
    ``opts``' ``scorer_hidden`` and ``topk_temperature`` are set to the pretraining's (in place)."""
    head = head_option(opts, "head")
    if head not in HEADS:
        raise ConfigError(f"head must be one of {', '.join(HEADS)}, got {head!r}")
    scorer = init.extra.get("topk_scorer")
    if head == "linear":
        if not scorer:
            return backbone, []
        return backbone, [
            f"{RECORD_WARNING_PREFIX}pretrained patch scorer not used (head = linear): the head reads the"
            " backbone's own pooled output (a ViT's CLS token), which this top-K pretraining never trained"
            " as an embedding (its views were embedded by the scorer's top-K pooling); head = topk evaluates"
            " what was pretrained"
        ]
    if head == "topk_classwise":
        notes = [
            "head = topk_classwise: per-class patch logits, each class pooled from its own"
            f" top-{opts.get('topk')} patches"
            + (
                f" + {float(head_option(opts, 'wildcat_alpha')):g} × its lowest"
                if opts.get("wildcat_alpha")
                else ""
            )
            + (
                "; patch logits from a"
                f" {int(head_option(opts, 'local_kernel'))}×{int(head_option(opts, 'local_kernel'))}-token"
                " convolution of the patch embeddings (classwise_source = local)"
                + (
                    ""
                    if head_option(opts, "local_offset")
                    else ", no class-token offset: the transformer blocks are unused"
                )
                if head_option(opts, "classwise_source") == "local"
                else ""
            )
        ]
        return backbone, (
            [
                *notes,
                "pretrained patch scorer not used (class-specific head)",
            ]
            if scorer
            else notes
        )
    notes: list[str] = []
    if scorer:  # in place: the saved model's head options (save_cell_model) must be the ones used
        notes = _scorer_options_from_pretraining(opts, init)
    wrapped = wrap_topk(backbone, opts)
    notes = [f"head = topk: score-weighted top-{wrapped.k} of {wrapped.num_tokens} patch tokens", *notes]
    if scorer:
        n = load_scorer(wrapped, scorer)
        notes.append(
            f"patch scorer loaded from {scorer} ({n} tensors; pretrained with topk ="
            f" {init.extra.get('topk_pretrain_k')})"
        )
    else:
        notes.append("patch scorer initialized fresh (no pretrained scorer)")
    return wrapped, notes


def _scorer_options_from_pretraining(opts: dict[str, Any], init: InitRecord) -> list[str]:
    """Set ``opts``' scorer width and softmax temperature to the pretraining's (in place); returns notes.

    A protocol option left at its default takes the pretraining's value (noted); one set to
    another value than the pretraining's is refused — the loaded scorer would run with a
    temperature (or a width) it was not trained with.
    """
    notes = []
    for key in ("scorer_hidden", "topk_temperature"):
        if key not in init.extra:
            continue
        pretrained, asked = init.extra[key], head_option(opts, key)
        if float(asked) == float(pretrained):
            continue
        if float(asked) != float(HEAD_OPTIONS[key]):
            raise ConfigError(
                f"protocol option {key} = {asked} differs from the top-K pretraining's {key} = {pretrained} "
                f"({init.source}); leave it unset to use the pretrained value"
            )
        opts[key] = pretrained
        notes.append(f"{key} = {pretrained} taken from the top-K pretraining (protocol default {asked})")
    return notes


def _freezes_backbone(protocol: str) -> bool:
    """Whether the protocol trains only a head on frozen features (the linear probe): its model is a
    :class:`ProbeClassifier`, and heads that train layers on the patch embeddings do not fit it."""
    return protocol in PROTOCOLS and bool(getattr(PROTOCOLS.get(protocol), "freezes_backbone", False))


def _makes_topk_scorer(strategy: str) -> bool:
    """Whether the strategy pretrains a patch scorer (an unknown strategy is reported elsewhere)."""
    return strategy in STRATEGIES and bool(getattr(STRATEGIES.get(strategy), "makes_topk_scorer", False))


class Classifier(nn.Module):
    """Backbone (or a top-K wrapped ViT) + linear head: (B, 1, H, W) → logits (B, L). The
    fine-tuning protocol's model."""

    def __init__(self, backbone: Backbone, num_labels: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.num_features, num_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


class ProbeClassifier(nn.Module):
    """Frozen features, standardized, then a linear layer: (B, 1, H, W) → logits (B, L).
    The linear protocol's selected head as one module (for heatmaps and saving)."""

    def __init__(self, backbone: nn.Module, num_labels: int):
        super().__init__()
        self.backbone = backbone
        d = backbone.num_features
        self.register_buffer("feature_mean", torch.zeros(1, d))
        self.register_buffer("feature_std", torch.ones(1, d))
        self.head = nn.Linear(d, num_labels)

    def set_head(
        self, mean: torch.Tensor, std: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
    ) -> ProbeClassifier:
        """mean, std (1, D); weight (D, L); bias (1, L) or (L,) — as the linear protocol holds them."""
        copy_probe_head(self, mean, std, weight, bias)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head((self.backbone(x).float() - self.feature_mean) / self.feature_std)


def make_classifier(features: nn.Module, num_labels: int, opts: dict[str, Any], protocol: str) -> nn.Module:
    """The trainable classifier of ``features`` (what :func:`apply_head` returned) for the protocol's head."""
    if head_option(opts, "head") == "topk_classwise":
        source = head_option(opts, "classwise_source")
        if source != "tokens" and _freezes_backbone(protocol):
            raise ConfigError(
                f"classwise_source = {source!r} trains new layers on the patch embeddings: finetune only"
                ' (linear keeps classwise_source = "tokens")'
            )
        return ClasswiseTopKClassifier(
            features,
            num_labels,
            head_option(opts, "topk"),
            float(head_option(opts, "wildcat_alpha")),
            source,
            int(head_option(opts, "local_hidden")),
            int(head_option(opts, "local_kernel")),
            bool(head_option(opts, "local_offset")),
        )
    if _freezes_backbone(protocol):
        return ProbeClassifier(features, num_labels)
    return Classifier(features, num_labels)


def model_path(results_dir: str | Path, cell_id: str) -> Path:
    return Path(results_dir) / "models" / f"{cell_id}.pt"


def should_save(model: nn.Module, option: Any) -> bool:
    if option in (True, "true"):
        return True
    if option in (False, "false"):
        return False
    if option != "auto":
        raise ConfigError(f"save_model must be auto, true or false, got {option!r}")
    return sum(p.numel() for p in model.parameters()) <= SMALL_MODEL_PARAMS


def save_cell_model(
    model: nn.Module,
    cell: CellConfig,
    ctx: RunContext,
    opts: dict[str, Any],
    labels: list[str],
    normalize: tuple[float, float],
) -> Path:
    """Write the selected model's state dict and what is needed to rebuild it (atomically)."""
    path = model_path(ctx.results_dir, cell.cell_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": MODEL_FORMAT,
        "cell_id": cell.cell_id,
        "protocol": cell.protocol,
        "head": head_option(opts, "head"),
        "head_options": {
            k: opts[k]
            for k in (
                "topk",
                "scorer_hidden",
                "topk_temperature",
                "wildcat_alpha",
                "classwise_source",
                "local_hidden",
                "local_kernel",
                "local_offset",
            )
            if k in opts
        },
        "labels": list(labels),
        "normalize": [float(v) for v in normalize],
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    atomic_torch_save(payload, path)
    return path


def build_classifier(cell: CellConfig, head: str, head_options: dict[str, Any], num_labels: int) -> nn.Module:
    """An untrained classifier of the cell's architecture (backbone, head kind, protocol)."""
    backbone: nn.Module = BACKBONES.get(cell.backbone).build(cell.settings.image_size, cell.backbone_options)
    if head == "topk":
        backbone = wrap_topk(backbone, head_options)
    return make_classifier(backbone, num_labels, {**head_options, "head": head}, cell.protocol)


def load_cell_model(
    results_dir: str | Path, cell: CellConfig, cell_id: str | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """The saved model of ``cell`` (eval mode, CPU) and its metadata (labels, normalize, head).
    ``cell_id``: the id the record was stored under (default: ``cell.cell_id``, which a later
    change of the config schema may alter)."""
    cell_id = cell_id or cell.cell_id
    path = model_path(results_dir, cell_id)
    if not path.is_file():
        raise DataError(
            f"no saved model for cell {cell_id} ({path}); rerun it with [protocol.{cell.protocol}] save_model"
            " = true"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"cannot read saved model {path}: {type(e).__name__}: {e}") from None
    if payload.get("format") != MODEL_FORMAT:
        raise WeightsError(f"{path}: saved-model format {payload.get('format')} is not {MODEL_FORMAT}")
    model = build_classifier(cell, payload["head"], payload["head_options"], len(payload["labels"]))
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as e:
        raise WeightsError(f"{path} does not fit cell {cell_id}'s model: {str(e).splitlines()[0]}") from None
    model.eval()
    return model, {k: v for k, v in payload.items() if k != "state_dict"}


def finish_cell(
    model: nn.Module,
    data: CellData,
    cell: CellConfig,
    ctx: RunContext,
    opts: dict[str, Any],
    normalize: tuple[float, float],
) -> dict[str, Any]:
    """After selection: save the model (per ``save_model``) and localize on the test split's boxes.
    Returns entries for ``ProtocolResult.extra``."""
    extra: dict[str, Any] = {"head": head_option(opts, "head")}
    if not distributed.is_main():  # under torchrun only rank 0 writes and measures
        return extra
    if should_save(model, head_option(opts, "save_model")):
        extra["model_path"] = str(save_cell_model(model, cell, ctx, opts, data.labels, normalize))
    if head_option(opts, "localize"):
        loc = evaluate_localization(
            model,
            data,
            normalize,
            ctx.device,
            int(head_option(opts, "localize_images")),
            int(head_option(opts, "deletion_steps")),
            seed=cell.seed,
            tolerance=head_option(opts, "pointing_tolerance"),
        )
        if loc is not None:
            extra["localization"] = loc
    return extra
