"""Strategy ``checkpoint``: someone else's pretrained encoder on the leaderboard, loaded strictly.

In a grid::

    [axes]
    strategy = ["mocov2", "checkpoint"]

    [[strategy.checkpoint]]                 # one table per checkpoint (or [strategy.checkpoint.NAME])
    name = "moco-cxr"                       # the strategy's name in records and the leaderboard
    path = "/models/moco-cxr-r50.pth.tar"
    format = "moco"                         # auto | timm | torchvision | moco | lightning | state_dict
                                            # | torchxrayvision | hf_transformers | open_clip | openai_clip |
                                            mae
    # prefix = "module.encoder_q."          # keys kept (stripped); found from the layout when unset
    # normalize = "auto"                    # auto | imagenet | backbone | chexbench | [mean, std]
    backbone = "resnet50"                   # the architecture it fits; other backbones: not applicable

    [[strategy.checkpoint]]
    name = "lab-simclr"
    path = "/models/simclr.ckpt"            # a Lightning checkpoint: the module prefix is found

    [[strategy.checkpoint]]
    name = "rad-dino"
    path = "hf-hub:microsoft/rad-dino"      # the local Hugging Face cache only (chexbench weights fetch …)
    backbone = "vit_b14_dinov2"

The axis value ``checkpoint`` stands for every checkpoint declared; each becomes its own
strategy name (so two checkpoints are never pooled as if they were seeds, and ``--only
strategy=moco-cxr`` selects one). A single ``[strategy.checkpoint]`` table without a name keeps
the name ``checkpoint``. Keys outside the encoder (a momentum encoder, a queue, an optimizer)
and the encoder's head are dropped; every other key must fit the backbone exactly, and the
record lists what was dropped (with the reason) and adapted. Inputs are normalized as the
checkpoint was trained: ``auto`` takes a published layout's own preprocessing
(:func:`chexbench.backbones.layouts.model_normalization`; its per-channel RGB statistics folded
exactly into a ViT's patch embedding, :func:`chexbench.backbones.layouts.fold_rgb_normalization`)
and ImageNet statistics otherwise
(MoCo, MoCo-CXR and torchvision all use them).

Published layouts (:mod:`chexbench.backbones.layouts`: torchxrayvision, transformers DINOv2,
open_clip / OpenAI CLIP image towers, MAE) are renamed onto timm's keys first; ``path`` may be
an ``hf-hub:`` reference resolved in the local cache only (:mod:`chexbench.backbones.hub`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from chexbench.backbones import hub, layouts
from chexbench.backbones.base import audit_checkpoint, load_checkpoint, timm_normalization
from chexbench.backbones.foreign import (
    FORMATS,
    ForeignState,
    check_once,
    checkpoint_path_problem,
    file_sha256,
    find_encoder,
    read_checkpoint,
)
from chexbench.core.errors import ConfigError, WeightsError
from chexbench.core.inputs import DEFAULT_NORMALIZE
from chexbench.spec.options import Options
from chexbench.spec.registry import BACKBONES, STRATEGIES
from chexbench.strategies.base import InitRecord, Strategy

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
NORMALIZE_CHOICES = ("auto", "imagenet", "backbone", "chexbench")


class CheckpointOptions(Options):
    path: str | None = Field(
        None,
        description=(
            "the checkpoint file (.pth, .pth.tar, .ckpt, .safetensors, …), a model folder, "
            "or hf-hub:ORG/NAME[@REVISION][:FILE] (local cache only)"
        ),
    )
    format: str = Field("auto", description="its layout: " + " | ".join(FORMATS))
    prefix: str = Field(
        "",
        description=(
            "key prefix of the encoder inside the file (kept, stripped); unset: found from the layout"
        ),
    )
    name: str = Field(
        "",
        description=(
            "the strategy's name in records and the leaderboard (one per [[strategy.checkpoint]] table)"
        ),
    )
    normalize: str | list[float] = Field(
        "auto",
        description=(
            "input normalization the checkpoint was trained with: auto (a "
            "published layout's own, else imagenet) | imagenet | backbone | chexbench | [mean, std]"
        ),
    )
    backbone: str | list[str] | None = Field(
        None,
        description=(
            "the architecture(s) the checkpoint fits; cells of other backbones are skipped as not applicable"
        ),
    )


class Checkpoint(Strategy):
    name = "checkpoint"
    option_model = CheckpointOptions

    def invalid_reason(self, cell) -> str | None:
        """A checkpoint that declares its architecture (``backbone = "resnet50"``) does not apply to
        others."""
        fits = cell.strategy_options.get("backbone")
        if fits is None:
            return None
        fits = [fits] if isinstance(fits, str) else list(fits)
        if cell.backbone in fits:
            return None
        return f"not applicable: checkpoint {cell.strategy} is for {', '.join(fits)}, not {cell.backbone}"

    # -- grid ---------------------------------------------------------------------------
    def named_tables(self, value: Any, source: str) -> dict[str, dict[str, Any]]:
        """The grid's ``[strategy.checkpoint]`` value → {strategy name: options table}.

        Accepts one table (name optional), an array of tables ``[[strategy.checkpoint]]``
        (each named), or named sub-tables ``[strategy.checkpoint.NAME]``.
        """
        where = f"{source}: [strategy.checkpoint]"
        if value is None:
            raise ConfigError(f'{where} is missing: the checkpoint strategy needs path = "FILE" (and a name)')
        if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            entries = [{**table, "name": table.get("name", key)} for key, table in value.items()]
        elif isinstance(value, dict):
            entries = [value]
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            entries = list(value)
            for i, e in enumerate(entries):
                if not e.get("name"):
                    raise ConfigError(
                        f"{where} #{i + 1} needs a name (several checkpoints are told apart by name)"
                    )
        else:
            raise ConfigError(f"{where} must be a table or an array of tables, got {type(value).__name__}")
        out: dict[str, dict[str, Any]] = {}
        for e in entries:
            name = str(e.get("name") or self.name)
            if not NAME_PATTERN.match(name):
                raise ConfigError(f"{where}: name {name!r} must be letters, digits, '.', '_', '+' or '-'")
            if name in out:
                raise ConfigError(f"{where}: two checkpoints are named {name!r}")
            if name != self.name and name in STRATEGIES and STRATEGIES.get(name) is not self:
                raise ConfigError(f"{where}: name {name!r} is already a strategy; choose another")
            if not e.get("path"):
                raise ConfigError(f'{where} {name!r}: path = "FILE" is required')
            if hub.is_hub_ref(str(e["path"])):
                try:
                    hub.parse(str(e["path"]))
                except WeightsError as err:
                    raise ConfigError(f"{where} {name!r}: {err}") from None
            fmt = e.get("format", "auto")
            if fmt not in FORMATS:
                raise ConfigError(
                    f"{where} {name!r}: format must be one of {', '.join(FORMATS)}, got {fmt!r}"
                )
            _normalize_option(e.get("normalize", "auto"), f"{where} {name!r}")
            fits = e.get("backbone")
            for b in [fits] if isinstance(fits, str) else list(fits or []):
                if b not in BACKBONES:
                    raise ConfigError(f"{where} {name!r}: backbone: {BACKBONES.unknown_message(str(b))}")
            out[name] = {**e, "name": name}
        return out

    # -- checks before anything runs -----------------------------------------------------
    def preflight(self, cell) -> None:
        """Refuse a missing file, an unreadable one or one that does not fit the backbone: one line."""
        opts = self._options(cell)
        path, _ = _locate(opts, cell.strategy)

        def check() -> None:
            with torch.device("meta"):  # keys and shapes only: no memory for the weights
                backbone = BACKBONES.get(cell.backbone).build(cell.settings.image_size, cell.backbone_options)
            self._map(backbone, cell, opts, path, load=False)

        context = (
            cell.strategy,
            sorted(opts.items()),
            cell.backbone,
            cell.settings.image_size,
            sorted(cell.backbone_options.items()),
        )
        check_once(path, context, check)

    # -- the cell -----------------------------------------------------------------------
    def init_backbone(self, backbone, cell, ctx) -> InitRecord:
        opts = self._options(cell)
        path, resolved = _locate(opts, cell.strategy)
        found, report, folded = self._map(backbone, cell, opts, path, load=True)
        norm = _normalization(opts["normalize"], cell.backbone, found.layout, path, folded)
        dropped = sorted(
            found.outside + [found.prefix + k for k in report.dropped_keys]
        )  # by their names in the file
        reasons = {
            **found.dropped_reasons,
            **{found.prefix + k: "classifier head of the encoder" for k in report.dropped_keys},
        }
        for k in found.outside:
            reasons.setdefault(k, f"outside the encoder (keys under '{found.prefix}' kept)")
        hub_info = (
            {}
            if resolved is None
            else {
                "hub_reference": str(resolved.ref),
                "hub_repo": resolved.ref.repo,
                "hub_revision": resolved.commit,
                "hub_file": resolved.filename,
            }
        )
        return InitRecord(
            source=str(opts["path"]) if resolved is not None else str(path),
            loaded_keys=report.loaded_keys,
            reinitialized_keys=report.reinitialized_keys,
            dropped_keys=dropped,
            notes=found.notes
            + report.notes
            + [
                f"dropped (head): {', '.join(report.dropped_keys) or 'none'}",
                f"normalize {norm['mean']:g}/{norm['std']:g} ({norm['source']})",
            ]
            + (
                [
                    f"{resolved.ref} resolved in the local cache to commit {resolved.commit}, file"
                    f" {resolved.filename}"
                ]
                if resolved
                else []
            ),
            extra={
                "checkpoint_name": cell.strategy,
                "checkpoint_sha256": file_sha256(path),
                "layout": found.layout,
                "wrapper": found.wrapper,
                "prefix": found.prefix,
                "dropped_keys": dropped,
                "dropped_reasons": reasons,
                "head_dropped_keys": report.dropped_keys,
                "adapted": report.notes,
                "normalize": [norm["mean"], norm["std"]],
                "normalize_source": norm["source"],
                **hub_info,
            },
        )

    def _options(self, cell) -> dict[str, Any]:
        unknown = set(cell.strategy_options) - set(self.options)
        if unknown:
            raise ConfigError(f"[strategy.{cell.strategy}]: unknown option(s) {sorted(unknown)}")
        opts = {**self.options, **cell.strategy_options}
        if not opts["path"]:
            raise ConfigError(f'strategy {cell.strategy}: set path = "FILE" under [strategy.checkpoint]')
        return opts

    def _map(self, backbone, cell, opts: dict[str, Any], path: Path, load: bool):
        folded = False
        spec = BACKBONES.get(cell.backbone)
        source = f"strategy {cell.strategy}: {opts['path'] if hub.is_hub_ref(str(opts['path'])) else path}"
        if opts["format"] == "torchvision" and spec.kind != "cnn":
            raise WeightsError(
                f"{source}: torchvision names are mapped for ResNets only; {cell.backbone} needs timm names"
            )
        tensors, wrapper = read_checkpoint(path)
        layout = opts["format"] if opts["format"] in layouts.LAYOUTS else None
        ddp = bool(tensors) and all(
            k.startswith("module.") for k in tensors
        )  # saved from DistributedDataParallel
        if opts["format"] == "auto" and not opts["prefix"]:
            layout = layouts.detect(
                {k.removeprefix("module."): v for k, v in tensors.items()} if ddp else tensors
            )
        if layout is not None:
            if opts["prefix"]:
                raise WeightsError(
                    f"{source}: prefix is not used with format '{layout}' (its layout places every key)"
                )
            inner = {k.removeprefix("module."): v for k, v in tensors.items()} if ddp else tensors
            mapped = layouts.convert(layout, inner, backbone.model, source)
            if ddp:
                mapped.dropped = {f"module.{k}": r for k, r in mapped.dropped.items()}
                mapped.notes.insert(1, "keys under 'module.' (DistributedDataParallel; prefix stripped)")
            layouts.activation_check(layout, backbone.model, path, cell.backbone, source)
            found = ForeignState(
                mapped.state,
                layout,
                "",
                wrapper,
                sorted(mapped.dropped),
                list(mapped.notes),
                dropped_reasons=dict(mapped.dropped),
            )
            if mapped.dropped:
                found.notes.append(f"dropped: {_reason_summary(mapped.dropped)}")
            rgb = layouts.rgb_statistics(layout, path) if opts["normalize"] == "auto" else None
            if (
                rgb is not None
            ):  # the library's per-channel preprocessing, folded exactly into a ViT patch embedding
                fold = layouts.fold_rgb_normalization(
                    found.state, backbone.model, rgb, layouts.model_normalization(layout, path)
                )
                found.notes.extend(fold)
                folded = bool(fold)
        else:
            found = find_encoder(
                tensors,
                list(backbone.model.state_dict()),
                fmt=opts["format"],
                prefix=opts["prefix"] or None,
                wrapper=wrapper,
                source=source,
            )
        if load:
            report = load_checkpoint(
                backbone, found.state, spec, source=source, declared_unexpected=spec.head_prefixes
            )
        else:
            report, _ = audit_checkpoint(
                backbone.model, found.state, spec, source=source, declared_unexpected=spec.head_prefixes
            )
        return found, report, folded


def _locate(opts: dict[str, Any], strategy: str) -> tuple[Path, hub.Resolved | None]:
    """The local file of ``path``: a file, or an ``hf-hub:`` reference found in the local cache (never
    downloaded)."""
    text = str(opts["path"])
    if hub.is_hub_ref(text):
        resolved = hub.resolve_cached(hub.parse(text), what=f"strategy {strategy}: ")
        return resolved.path, resolved
    path = Path(text).expanduser()
    if path.is_dir():  # a model folder (save_pretrained, a hub snapshot): its weights file
        for name in hub.WEIGHT_FILES:
            if (path / name).is_file():
                return path / name, None
        raise WeightsError(
            f"strategy {strategy}: {checkpoint_path_problem(path)} "
            f"(a model folder would hold {' or '.join(hub.WEIGHT_FILES)})"
        )
    if problem := checkpoint_path_problem(path):
        raise WeightsError(f"strategy {strategy}: {problem} (path under [strategy.checkpoint])")
    return path, None


def _reason_summary(dropped: dict[str, str]) -> str:
    by_reason: dict[str, int] = {}
    for reason in dropped.values():
        by_reason[reason] = by_reason.get(reason, 0) + 1
    return "; ".join(f"{n} key{'s' if n > 1 else ''}: {r}" for r, n in by_reason.items())


def _normalize_option(value: Any, where: str) -> None:
    if isinstance(value, str) and value in NORMALIZE_CHOICES:
        return
    if (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        and value[1] > 0
    ):
        return
    raise ConfigError(
        f"{where}: normalize must be one of {', '.join(NORMALIZE_CHOICES)} or [mean, std], got {value!r}"
    )


def _normalization(
    value: Any, backbone: str, layout: str = "", weights: Path | None = None, folded: bool = False
) -> dict[str, Any]:
    """The one-channel (mean, std) the checkpoint's encoder expects, and where it came from."""
    if value == "auto":
        if layout in layouts.LAYOUTS:
            return layouts.model_normalization(layout, weights, folded).to_dict()
        value = "imagenet"
    if value == "imagenet":
        n = timm_normalization(None)
    elif value == "backbone":
        n = BACKBONES.get(backbone).imagenet_normalize()
    elif value == "chexbench":
        return {
            "mean": DEFAULT_NORMALIZE[0],
            "std": DEFAULT_NORMALIZE[1],
            "source": "chexbench's own pretraining normalization",
        }
    else:
        return {"mean": float(value[0]), "std": float(value[1]), "source": "set in the grid"}
    return n.to_dict()
