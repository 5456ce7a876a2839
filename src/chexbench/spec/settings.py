"""The ``[settings]`` keys of a grid: :class:`Settings`, each field with its default, bounds and
one-line meaning (the only place a setting is described), and the pydantic model that validates them."""

from __future__ import annotations

import typing
from dataclasses import dataclass, field, fields
from typing import Annotated, Any, Literal

from pydantic import Field, create_model

from chexbench.spec.options import OptionInfo, Options, schema_of


def _setting(default: Any, meaning: str, **bounds: Any) -> Any:
    """A settings field: its default, one-line meaning and bounds (read by :func:`settings_schema`)."""
    return field(default=default, metadata={"meaning": meaning, "bounds": bounds})


@dataclass(frozen=True)
class Settings:
    """Training and data settings; every field may be set in a grid at any level."""

    epochs: int = _setting(
        10, "training epochs of the protocol (fine-tuning, or the linear probe's optimizer)", ge=1
    )
    batch_size: int = _setting(32, "training batch size: images per optimizer step of the protocol", ge=1)
    eval_batch_size: int = _setting(
        128, "images per step of feature extraction and prediction (validation and test)", ge=1
    )
    image_size: int = _setting(
        224,
        "side of the square input image, in pixels (a multiple of the backbone's patch size or stride)",
        ge=8,
    )
    optimizer: Literal["adamw", "sgd"] = _setting("adamw", "optimizer of the protocol: adamw | sgd")
    lr: float = _setting(
        1e-3, "peak learning rate of the protocol (cosine decay after the linear warmup)", gt=0
    )
    weight_decay: float = _setting(1e-4, "weight decay of the protocol (decoupled for AdamW)", ge=0)
    warmup_epochs: float = _setting(1.0, "linear learning-rate warmup, in epochs", ge=0)
    uncertainty: Literal["ignore", "zeros", "ones", "mixed"] = _setting(
        "ignore",
        "uncertain (-1) labels: ignore (masked) | zeros | ones | mixed (CheXpert paper: U-Ones for"
        " atelectasis and edema, U-Zeros otherwise)",
    )
    not_mentioned: Literal["negative", "ignore"] = _setting(
        "negative",
        "blank labels on a dataset whose blank means not mentioned (CheXpert): negative (→ 0, the CheXpert "
        "convention) | ignore (masked); other blanks stay masked",
    )
    views: Literal["frontal", "all"] = _setting("frontal", "images used: frontal (PA/AP) only | all views")
    max_train_images: int = _setting(
        0,
        "cap on the training images of a cell (whole patients); 0: no cap (a cap makes smoke runs fast)",
        ge=0,
    )
    max_eval_images: int = _setting(
        0, "cap on the validation and test images (whole patients, fixed seed); 0: no cap", ge=0
    )
    pretrain_source: str = _setting(
        "chexpert",
        "dataset whose train split is the unlabeled pretraining pool of self-supervised strategies "
        "(checked by plan: its root must resolve)",
    )
    pretrain_seed: Annotated[int, Field(ge=0)] | Literal["per_seed"] = _setting(
        0,
        "seed of the shared pretraining run; one run per pretraining seed serves every fine-tuning seed"
        ' (sweep it as an axis, "settings.pretrain_seed" = [0, 1], to compare runs), or "per_seed": each'
        " fine-tuning seed pretrains its own run with the cell's seed, inside one configuration, so"
        " seed-pooled intervals include pretraining variance",
    )
    allow_leakage: bool = _setting(
        False,
        "run even when test patients are in the training split or pretraining pool (recorded in the cell)",
    )
    deterministic: bool = _setting(
        False, "torch.use_deterministic_algorithms (slower; bitwise-reproducible where torch allows)"
    )
    num_workers: int = _setting(0, "data-loader worker processes", ge=0)
    compile: bool = _setting(False, "torch.compile the training step (as `chexbench run --compile` does)")
    amp: bool = _setting(True, "bf16 autocast on CUDA; ignored on CPU")
    evaluate_on: Annotated[tuple[str, ...], Field(strict=False)] = _setting(  # a TOML list becomes a tuple
        (),
        'external validation: datasets (registered names, e.g. ["nih", "indiana"]) whose test split each'
        " finetune/linear cell also predicts with its selected model, on the labels both share (stored under"
        " external/<cell_id>/; the report's external-validation matrix); the cell's own dataset is skipped;"
        " not part of the cell id: adding a target predicts it without retraining",
    )


def _settings_model() -> type[Options]:
    """The pydantic model that validates a grid's settings values (types, choices, bounds)."""
    hints = typing.get_type_hints(
        Settings, include_extras=True
    )  # keeps the bounds inside a union (pretrain_seed)
    fields_: dict[str, Any] = {}
    for f in fields(Settings):
        fields_[f.name] = (
            hints[f.name],
            Field(f.default, description=f.metadata.get("meaning", ""), **f.metadata.get("bounds", {})),
        )
    return create_model("SettingsOptions", __base__=Options, **fields_)


SETTINGS_MODEL = _settings_model()


def settings_schema() -> list[OptionInfo]:
    """Machine-readable rows of every ``[settings]`` key (name, type, default, choices, bounds, meaning)."""
    return schema_of(SETTINGS_MODEL)


SETTINGS_KEYS = frozenset(f.name for f in fields(Settings))

#: settings that do not change what a cell computes: left out of its config JSON, hence of its id
#: (``evaluate_on`` adds predictions beside the cell's own; a new target must not retrain it)
NOT_CELL_SETTINGS = frozenset({"evaluate_on"})
