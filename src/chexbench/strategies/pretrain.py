"""Shared self-supervised pretraining: the run cache, the loop, checkpoints and the kNN probe.

A pretraining run is identified by a short hash of everything that determines its weights
(:meth:`PretrainStrategy.pretrain_key`): strategy, backbone and its options, pretraining
source, its root and split, views, image size, every pretraining option and the pretraining
seed. Every cell needing that run reuses it. Layout of ``ctx.pretrain_dir / run_id``::

    checkpoint.pt   written atomically after each epoch: model (encoders, heads, queue),
                    optimizer, scheduler, RNG states, epoch, step, history → resume after a kill
    encoder.pt      the final encoder state dict (what cells load, strictly)
    meta.json       key, steps, epochs, pool size, notes, throughput
    history.parquet loss curve, probe history and collapse monitors (also copied to results_dir/pretrain/)
    done            marker written last

A file lock on ``pretrain.lck`` (:mod:`chexbench.core.lock`: cross-host, stale-lock recovery)
makes concurrent shards wait for one another instead of pretraining the same run twice;
under torchrun the ranks pretrain together and rank 0 alone writes. The probe: every ``probe_every`` epochs a
weighted kNN classifier
(Wu et al. 2018, k neighbours, weights exp(cos/0.07)) on frozen encoder features of a small
labeled subset of the source's train split predicts its valid split; macro AUROC is stored.
The collapse monitors (:mod:`chexbench.strategies.monitors`): after every epoch, on a fixed
set of up to ``MONITOR_IMAGES`` pool images (unaugmented), the spread and effective rank of
the method's embedding (its ``monitor_outputs``, else the projection head's output, else the
encoder's features) and of the encoder's features, and DINO's teacher entropy; the first
collapsed epoch is stated in ``meta.json``, the notes and so the cell's record.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field
from torch import nn

from chexbench.backbones.base import load_checkpoint
from chexbench.core import distributed as D
from chexbench.core import training as T
from chexbench.core.atomic import atomic_torch_save, atomic_write_parquet, atomic_write_text
from chexbench.core.context import FastPath, fast_path_for
from chexbench.core.devices import autocast
from chexbench.core.errors import ChexbenchError, ConfigError, DataError
from chexbench.core.inference import extract_features
from chexbench.core.inputs import DEFAULT_NORMALIZE, batches, to_input
from chexbench.core.metrics import macro_auroc
from chexbench.core.optim import (
    OptimizerChoice,
    build_optimizer,
    check_warmup_fits,
    fit_schedule,
    optimizer_record,
    warmup_cosine,
)
from chexbench.core.tracking import NullRunLog, RunLog
from chexbench.datasets import celldata
from chexbench.datasets.leakage import check_pretrain_leakage, pretrain_source_options
from chexbench.spec.grid import backbone_family
from chexbench.spec.options import Options, options_model, validate_table
from chexbench.spec.registry import BACKBONES
from chexbench.strategies.augment import ViewAugment, view_pair
from chexbench.strategies.base import InitRecord, Strategy
from chexbench.strategies.monitors import (
    COLLAPSE_STD_RATIO,
    UNIFORM_ENTROPY_FRACTION,
    is_collapsed,
    monitor_row,
)

if TYPE_CHECKING:
    from chexbench.backbones.base import Backbone
    from chexbench.core.context import RunContext
    from chexbench.spec.cell import CellConfig

#: columns of ``results_dir/pretrain/<run_id>.parquet``
HISTORY_COLUMNS = ("run_id", "strategy", "backbone", "epoch", "step", "loss", "probe_auroc")
#: the collapse monitors, on the last history row of each epoch (NaN elsewhere and in older runs)
MONITOR_COLUMNS = (
    "embed_std_ratio",
    "embed_rank",
    "feature_std_ratio",
    "feature_rank",
    "teacher_entropy",
    "collapsed",
)
#: pool images the monitors embed after each epoch (fixed at setup, unaugmented)
MONITOR_IMAGES = 256


class PretrainOptions(Options):
    """Options every self-supervised strategy accepts under ``[strategy.<name>]`` (defaults per strategy)."""

    pretrain_epochs: int = Field(
        100, ge=1, description="epochs of self-supervised pretraining over the unlabeled pool"
    )
    pretrain_batch_size: int = Field(
        256, ge=2, description="pretraining batch size: images per step (capped at the pool size)"
    )
    pretrain_optimizer: Literal["sgd", "adamw", "lars"] = Field(
        "sgd",
        description=(
            "optimizer of the pretraining run: sgd (momentum 0.9) | adamw | lars (momentum 0.9, trust"
            " coefficient 0.001, as MoCo v3)"
        ),
    )
    pretrain_lr: float = Field(
        0.03,
        gt=0,
        description=(
            "peak learning rate of the pretraining run (cosine schedule after warmup; not rescaled by batch"
            " size)"
        ),
    )
    pretrain_weight_decay: float = Field(
        1e-4, ge=0, description="weight decay of the pretraining run (none on biases and norms)"
    )
    pretrain_warmup_epochs: float = Field(
        0.0,
        ge=0,
        description="linear learning-rate warmup of the pretraining run before the cosine decay, in epochs",
    )
    grad_clip: float = Field(
        0.0, ge=0, description="maximum gradient norm during pretraining; 0 turns clipping off"
    )
    temperature: float = Field(
        0.2, gt=0, description="temperature of the contrastive (InfoNCE / NT-Xent) softmax"
    )
    proj_dim: int = Field(128, ge=1, description="output width of the projection head")
    proj_hidden_dim: int = Field(2048, ge=1, description="hidden width of the projection head")
    max_pretrain_images: int = Field(
        0, ge=0, description="cap on the pretraining pool (images, whole patients); 0 uses the whole pool"
    )
    pretrain_root: str | None = Field(
        None,
        description=(
            "root of the pretraining source dataset (overrides the root of its [dataset.SOURCE] table)"
        ),
    )
    crop_scale_min: float = Field(
        0.35, gt=0, le=1, description="smallest area fraction of a random resized crop"
    )
    max_rotation_deg: float = Field(10.0, ge=0, description="largest random rotation of a view, in degrees")
    flip_p: float = Field(
        0.0,
        ge=0,
        le=1,
        description="probability of a horizontal flip (0 by default: a flipped chest swaps heart and situs)",
    )
    intensity: float = Field(0.2, ge=0, description="amplitude of random brightness and contrast changes")
    blur_p: float = Field(0.5, ge=0, le=1, description="probability of a Gaussian blur")
    noise_std: float = Field(
        0.03, ge=0, description="standard deviation of additive Gaussian noise (intensities in [0, 1])"
    )
    probe_every: int = Field(
        1, ge=0, description="epochs between kNN probes of the encoder during pretraining; 0 turns them off"
    )
    probe_images: int = Field(
        512, ge=1, description="labeled images of each kNN probe (its memory bank and queries)"
    )
    probe_k: int = Field(20, ge=1, description="neighbours of the kNN probe")


LOG_POINTS_PER_EPOCH = 4


def run_id_of(key: dict[str, Any]) -> str:
    """Short hash of a pretraining key (canonical JSON)."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]


def view_augment(opts: dict[str, Any]) -> ViewAugment:
    return ViewAugment(
        crop_scale=(float(opts["crop_scale_min"]), 1.0),
        max_rotation_deg=float(opts["max_rotation_deg"]),
        flip_p=float(opts["flip_p"]),
        brightness=float(opts["intensity"]),
        contrast=float(opts["intensity"]),
        blur_p=float(opts["blur_p"]),
        noise_std=float(opts["noise_std"]),
    )


class PretrainStrategy(Strategy):
    """Base of self-supervised strategies: subclasses say how to build their model and optimizer.

    ``build_model(encoder, opts, pool_size, generator)`` returns a module with an ``encoder``
    attribute (the :class:`Backbone` whose weights are transferred) and
    ``loss(view1, view2, progress, generator)`` (``progress`` in [0, 1] along the run), plus
    notes for the record. A model that needs other views than a pair (DINO's multi-crop, MAE's
    one view) has ``make_views(x01, aug, generator, normalize)`` returning the tuple of
    arguments that ``loss`` takes before ``progress``; one with its own collapse read-out has
    ``monitor_outputs(x)`` returning ``{"embedding": (B, D)[, "teacher_entropy": float, "max_entropy": log
    K]}``.
    """

    option_model: ClassVar[type[Options]] = PretrainOptions
    #: backbone family (the backbone's ``kind``: "cnn", "vit", …) -> option defaults of that
    #: family's recipe, over ``options``; a grid's [strategy.NAME] and its
    #: [strategy.NAME.recipe.FAMILY] tables override them
    recipes: ClassVar[dict[str, dict[str, Any]]] = {}
    #: the strategy this one is another name for (same options, recipes and pretraining runs)
    alias_of: ClassVar[str | None] = None

    def recipe_for(self, backbone: str) -> dict[str, Any]:
        """The option defaults of ``backbone``'s family recipe (empty when the family has none)."""
        return dict(self.recipes.get(backbone_family(backbone), {}))

    def resolved_options(self, cell: CellConfig) -> dict[str, Any]:
        """Defaults < the backbone family's recipe < the cell's options (validated by the grid)."""
        given = validate_table(
            options_model(self),
            cell.strategy_options,
            f"[strategy.{self.name}]",
            lambda: f"cell {cell.cell_id}",
        )
        return {**self.options, **self.recipe_for(cell.backbone), **given}

    #: the pretraining optimizer's choices beyond ``pretrain_optimizer`` / ``_lr`` / ``_weight_decay``:
    #: SGD with plain momentum 0.9, no weight decay on biases and norm parameters (MoCo-v3 / timm)
    optimizer_choice: ClassVar[OptimizerChoice] = OptimizerChoice(
        momentum=0.9, nesterov=False, decay_norm_and_bias=False
    )

    def build_model(
        self, encoder: Backbone, opts: dict[str, Any], pool_size: int, generator: torch.Generator
    ) -> tuple[nn.Module, list[str]]:
        raise NotImplementedError

    def build_optimizer(
        self, model: nn.Module, opts: dict[str, Any], device: torch.device
    ) -> torch.optim.Optimizer:
        """The pretraining optimizer of ``model`` (:func:`chexbench.core.optim.build_optimizer`)."""
        return build_optimizer(
            model,
            device,
            name=str(opts["pretrain_optimizer"]),
            lr=float(opts["pretrain_lr"]),
            weight_decay=float(opts["pretrain_weight_decay"]),
            choice=self.optimizer_choice,
        )

    def optimizer_record(self, opts: dict[str, Any]) -> dict[str, Any]:
        """The pretraining optimizer as the run's ``meta.json`` and the cell's record state it."""
        return optimizer_record(
            str(opts["pretrain_optimizer"]),
            float(opts["pretrain_lr"]),
            float(opts["pretrain_weight_decay"]),
            self.optimizer_choice,
        )

    def preflight(self, cell: CellConfig) -> None:
        """A pretraining warmup not shorter than the run (the family recipe's 40 warmup epochs in a
        4-epoch run) is refused with one line at plan time, never clamped."""
        opts = self.resolved_options(cell)
        table, family = f"strategy.{self.alias_of or self.name}", backbone_family(cell.backbone)
        check_warmup_fits(
            float(opts["pretrain_warmup_epochs"]),
            float(opts["pretrain_epochs"]),
            warmup_key="pretrain_warmup_epochs",
            epochs_key="pretrain_epochs",
            where=f"[{table}] on {cell.backbone}: ",
            hint=f" (for this backbone family: [{table}.recipe.{family}])" if family else "",
        )

    def pretrain_key(self, cell: CellConfig) -> dict[str, Any]:
        st = cell.settings
        source = st.pretrain_source
        opts = self.resolved_options(cell)
        # the options that identify the source's data (the grid's [dataset.<source>] table or the cell's own
        # dataset options, e.g. a phantom's generation options; pretrain_root as root): one run per source
        # data
        raw = pretrain_source_options(cell)
        source_options = {k: str(v) if k == "root" else v for k, v in sorted(raw.items()) if v is not None}
        return {
            "strategy": self.alias_of or self.name,  # an alias shares its target's pretraining runs
            "backbone": cell.backbone,
            "backbone_options": dict(sorted(cell.backbone_options.items())),
            "pretrain_source": source,
            "pretrain_source_options": source_options,
            "split": "train",
            "views": st.views,
            "image_size": st.image_size,
            "pretrain_seed": (
                cell.effective_pretrain_seed
            ),  # "per_seed": the cell's seed, one run per fine-tuning seed
            "options": {k: v for k, v in sorted(opts.items()) if k != "pretrain_root"},
        }

    def init_backbone(self, backbone: Backbone, cell: CellConfig, ctx: RunContext) -> InitRecord:
        # every cell, also one whose pretraining run is cached: its own test patients vs the pool
        leaked = check_pretrain_leakage(cell)
        run_id, state, meta = ensure_pretrained(self, cell, ctx)
        spec = BACKBONES.get(cell.backbone)
        if meta.get("backbone") != cell.backbone:
            raise ConfigError(
                f"pretraining run {run_id} was made for backbone {meta.get('backbone')}, not {cell.backbone}"
            )
        report = load_checkpoint(backbone, state, spec, source=f"pretrain:{run_id}")
        return InitRecord(
            source=f"pretrain:{run_id}",
            loaded_keys=report.loaded_keys,
            reinitialized_keys=report.reinitialized_keys,
            notes=report.notes + list(meta.get("notes", [])),
            pretrain_run=run_id,
            extra={
                "normalize": list(meta["normalize"]),
                "pretrain_steps": meta["steps"],
                "pretrain_epochs": meta["epochs"],
                "pretrain_images": meta["pool_images"],
                "pretrain_batch_size": meta["batch_size"],
                "pretrain_dir": meta["dir"],
                "pretrain_optimizer": meta.get("optimizer"),  # absent from runs made before it was recorded
                "pretrain_schedule": meta.get("schedule"),  # the effective schedule (absent from older runs)
                # which pretraining run this seed got: one shared by every fine-tuning seed, or its own
                "pretrain_seed": cell.effective_pretrain_seed,
                "pretrain_seed_mode": "per_seed" if cell.settings.pretrain_seed == "per_seed" else "shared",
                "pretrain_final_loss": meta.get("final_loss"),
                "pretrain_final_probe_auroc": meta.get("final_probe_auroc"),
                "pretrain_collapsed_at_epoch": meta.get(
                    "collapsed_at_epoch"
                ),  # None: healthy (or made before monitors)
                "pretrain_test_patients_shared": leaked,  # > 0 only under allow_leakage
            },
        )


# -- the cache ------------------------------------------------------------------------------
def ensure_pretrained(
    strategy: PretrainStrategy, cell: CellConfig, ctx: RunContext
) -> tuple[str, dict[str, torch.Tensor], dict[str, Any]]:
    """The finished run for ``cell`` — from the cache, resumed, or trained now. Returns (run_id, encoder
    state, meta)."""
    key = strategy.pretrain_key(cell)
    run_id = run_id_of(key)
    run_dir = Path(ctx.pretrain_dir) / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    # a second shard waits here, then finds the run done; a killed owner's lock goes stale
    with D.exclusive_across_jobs(run_dir / "pretrain.lck"):
        if not D.broadcast_object((run_dir / "done").exists()):
            # the global RNG is restored afterwards: a cell gets the same head init whether
            # its pretraining run was cached or not
            with torch.random.fork_rng(devices=[ctx.device] if ctx.device.type == "cuda" else []):
                _pretrain(strategy, cell, ctx, key, run_id, run_dir)
    meta = json.loads((run_dir / "meta.json").read_text())
    state = torch.load(run_dir / "encoder.pt", map_location="cpu", weights_only=True)
    results_history = Path(ctx.results_dir) / "pretrain" / f"{run_id}.parquet"
    if D.is_main() and not results_history.exists():
        atomic_write_parquet(pd.read_parquet(run_dir / "history.parquet"), results_history)
    return run_id, state, meta


def _pool_fingerprint(images: np.ndarray, patient_ids: np.ndarray) -> str:
    h = hashlib.sha256(repr(images.shape).encode())
    h.update("\n".join(map(str, patient_ids)).encode())
    return h.hexdigest()[:16]


def _group_layout(groups: list[dict[str, Any]]) -> list[tuple[int, float]]:
    return [(len(g["params"]), float(g["weight_decay"])) for g in groups]


def _fit_group_order(saved: dict[str, Any], opt: torch.optim.Optimizer, path: Path) -> dict[str, Any]:
    """``saved`` (an optimizer state dict) with its parameter groups in ``opt``'s order.

    Checkpoints written before the optimizer factory hold the decayed group first, timm's
    grouping puts it last; the groups are matched by (size, weight decay), never silently
    by position (loading restores each group's weight decay from the checkpoint)."""
    want = _group_layout(opt.param_groups)
    if _group_layout(saved["param_groups"]) == want:
        return saved
    flipped = list(reversed(saved["param_groups"]))
    if _group_layout(flipped) == want:
        return {**saved, "param_groups": flipped}
    raise ConfigError(
        f"pretraining checkpoint {path}: its optimizer's parameter groups"
        f" {_group_layout(saved['param_groups'])} do not fit this run's {want}; delete {path.parent} to"
        " pretrain again"
    )


def _pretrain(
    strategy: PretrainStrategy,
    cell: CellConfig,
    ctx: RunContext,
    key: dict[str, Any],
    run_id: str,
    run_dir: Path,
) -> None:
    """Train the run ``run_id`` in ``run_dir`` (resuming from its checkpoint) and write its files."""
    pre = PretrainRun(strategy, cell, ctx, key, run_id, run_dir)
    params = {
        "run_id": run_id,
        "label": f"{cell.label()} · pretrain {run_id}",
        "epochs": pre.epochs,
        "key": json.dumps(key, sort_keys=True, default=str),
    }
    with ctx.tracker.run(
        f"pretrain/{run_id}", "pretrain", params, fresh=not pre.checkpoint_path.exists()
    ) as pre.run_log:
        pre.run()


class PretrainRun:
    """One pretraining run: :meth:`setup` (pool, model, optimizer, probe), :meth:`resume` (from
    ``checkpoint.pt``), :meth:`train_epoch`, :meth:`checkpoint` after each epoch, :meth:`finish`
    (encoder, meta, done marker). Under torchrun every rank runs it; rank 0 alone writes."""

    def __init__(
        self,
        strategy: PretrainStrategy,
        cell: CellConfig,
        ctx: RunContext,
        key: dict[str, Any],
        run_id: str,
        run_dir: Path,
    ):
        self.strategy, self.cell, self.ctx, self.key, self.run_id, self.run_dir = (
            strategy,
            cell,
            ctx,
            key,
            run_id,
            run_dir,
        )
        self.opts = strategy.resolved_options(cell)
        self.device = ctx.device
        self.fast = ctx.fast_path  # bf16 autocast + channels_last on CUDA (see RunContext)
        self.normalize = DEFAULT_NORMALIZE
        self.notes: list[str] = []
        self.start_epoch, self.step, self.history = 0, 0, []
        self.t_train, self.images_seen = 0.0, 0
        #: per-epoch curves (``ctx.tracker``); a strategy's own monitors go here too:
        #: ``run_log.log_scalars(epoch, {…})``
        self.run_log: RunLog = NullRunLog()
        self.setup()

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoint.pt"

    def setup(self) -> None:
        """The pool, the strategy's model (DDP-wrapped), the optimizer and schedule, the augmentation, the
        probe."""
        opts, st, cell = self.opts, self.cell.settings, self.cell
        # called as celldata.X (not imported by name): tests replace the pool and the probe data there
        self.images, self.patient_ids = celldata.pretrain_pool(
            cell, max_images=int(opts["max_pretrain_images"])
        )
        n = self.n = len(self.images)
        if n < 2:
            raise DataError(
                f"pretraining source '{st.pretrain_source}': {n} image(s) in its train split; need at least 2"
            )
        self.fingerprint = _pool_fingerprint(self.images, self.patient_ids)
        self.batch_size = min(int(opts["pretrain_batch_size"]), n)
        if self.batch_size < int(opts["pretrain_batch_size"]):
            self.notes.append(
                f"pretrain batch size {opts['pretrain_batch_size']} capped at the pool size {n}"
            )
        self.steps_per_epoch = n // self.batch_size  # drop_last: every step sees a full batch (BN, negatives)
        self.epochs = int(opts["pretrain_epochs"])
        self.total = self.steps_per_epoch * self.epochs

        torch.manual_seed(cell.effective_pretrain_seed)
        self.gen = torch.Generator().manual_seed(cell.effective_pretrain_seed)
        encoder = BACKBONES.get(cell.backbone).build(st.image_size, cell.backbone_options)
        self.model, model_notes = self.strategy.build_model(encoder, opts, n, self.gen)
        self.notes += model_notes
        self.model.to(self.device)
        if self.fast.channels_last:
            self.model.to(memory_format=torch.channels_last)
        # data-parallel under torchrun (chexbench.core.distributed): the loop feeds the global batch,
        # the model keeps its rank's slice; SyncBN only where the method wants global BN (SimCLR)
        self.train_model = D.wrap_ddp(
            D.LossForward(self.model), self.device, sync_bn=bool(getattr(self.model, "sync_bn", False))
        )
        self.opt = self.strategy.build_optimizer(self.model, opts, self.device)
        self.schedule = fit_schedule(
            float(opts["pretrain_warmup_epochs"]),
            self.epochs,
            self.steps_per_epoch,
            warmup_key=f"[strategy.{self.strategy.alias_of or self.strategy.name}] pretrain_warmup_epochs",
            epochs_key="pretrain_epochs",
        )
        self.sched = warmup_cosine(self.opt, self.total, self.schedule.warmup_steps)
        self.aug = view_augment(opts)
        self.probe = _ProbeData.build(cell, opts) if int(opts["probe_every"]) > 0 else None
        # the monitor set comes from its own generator: the training stream is the same with or without it
        pick = torch.randperm(n, generator=torch.Generator().manual_seed(cell.effective_pretrain_seed))[
            :MONITOR_IMAGES
        ]
        self.monitor_images = self.images[np.sort(pick.numpy())]
        self.collapsed_at: int | None = None
        self.collapse_note = ""
        if self.probe is not None and self.probe.note:
            self.notes.append(self.probe.note)

    def resume(self) -> None:
        """Model, optimizer, schedule, RNG states and history from ``checkpoint.pt``, when there is one."""
        if not self.checkpoint_path.exists():
            return
        ckpt = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
        if ckpt["pool_fingerprint"] != self.fingerprint:
            raise ConfigError(
                f"pretraining checkpoint {self.checkpoint_path} was made from a different pool of images; "
                f"delete {self.run_dir} to pretrain again"
            )
        self.model.load_state_dict(ckpt["model"])
        self.opt.load_state_dict(_fit_group_order(ckpt["optimizer"], self.opt, self.checkpoint_path))
        self.sched.load_state_dict(ckpt["scheduler"])
        self.gen.set_state(ckpt["data_rng"])
        torch.set_rng_state(ckpt["torch_rng"])
        if self.device.type == "cuda" and ckpt.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(ckpt["cuda_rng"], self.device)
        self.start_epoch, self.step, self.history = (
            int(ckpt["epoch"]),
            int(ckpt["step"]),
            list(ckpt["history"]),
        )
        self.collapsed_at, self.collapse_note = ckpt.get("collapsed_at"), str(ckpt.get("collapse_note", ""))
        self.notes.append(f"resumed from epoch {self.start_epoch} (step {self.step})")

    def run(self) -> None:
        self.resume()
        self.ctx.progress.start(f"pretrain {self.strategy.name} {self.run_id}", self.total - self.step)
        for epoch in range(self.start_epoch, self.epochs):
            try:
                self.train_epoch(epoch)
            except T.DivergedError as e:  # a loss that left the numbers: what did the embeddings do?
                raise T.DivergedError(f"{e}; {self.monitor_after_divergence(epoch)}") from e
            if D.is_main():
                self.monitor(epoch)
            probe_every = int(self.opts["probe_every"])
            if (
                D.is_main()
                and self.probe is not None
                and self.probe.ok
                and ((epoch + 1) % probe_every == 0 or epoch + 1 == self.epochs)
            ):
                self.history[-1]["probe_auroc"] = self.probe.evaluate(
                    self.model.encoder,
                    self.device,
                    self.normalize,
                    int(self.opts["probe_k"]),
                    self.cell.settings.eval_batch_size,
                )
            self.checkpoint(epoch)
            self.log_epoch(epoch)
            last = self.history[-1]
            self.ctx.progress.message(
                f"pretrain {self.strategy.name} epoch {epoch + 1}/{self.epochs}: loss {last['loss']:.4f}"
                + (
                    ""
                    if math.isnan(last["probe_auroc"])
                    else f", kNN probe macro AUROC {last['probe_auroc']:.3f}"
                )
            )
        self.finish()

    def log_epoch(self, epoch: int) -> None:
        """The epoch's mean loss, learning rate, throughput, kNN probe (when measured) and collapse
        monitors (``monitor/*``: embedding std × √d, effective ranks, DINO's teacher entropy) to ``run_log``.
        """
        rows = [r for r in self.history if r["epoch"] == epoch]
        seen, seconds = self.images_seen - self._logged[0], self.t_train - self._logged[1]
        self._logged = (self.images_seen, self.t_train)
        scalars = {
            "pretrain/loss": float(np.mean([r["loss"] for r in rows])) if rows else math.nan,
            "pretrain/lr": float(self.opt.param_groups[0]["lr"]),
            "pretrain/images_per_second": seen / seconds if seconds > 0 else math.nan,
        }
        if rows and not math.isnan(rows[-1]["probe_auroc"]):
            scalars["pretrain/probe_auroc"] = float(rows[-1]["probe_auroc"])
        for key in ("embed_std_ratio", "embed_rank", "feature_std_ratio", "feature_rank", "teacher_entropy"):
            value = rows[-1].get(key, math.nan) if rows else math.nan
            if isinstance(value, int | float) and math.isfinite(value):
                scalars[f"monitor/{key}"] = float(value)
        self.run_log.log_scalars(epoch, scalars)

    _logged: tuple[int, float] = (0, 0.0)  # (images_seen, t_train) at the last log_epoch

    @torch.no_grad()
    def monitor(self, epoch: int) -> None:
        """The collapse monitors of the model after ``epoch``, onto its last history row; the first collapsed
        epoch noted."""
        was_training = self.model.training
        self.model.eval()
        try:
            x = to_input(self.monitor_images, self.device, self.normalize)
            with autocast(self.device, self.cell.settings.amp, self.fast.amp_dtype):
                encoded = self.model.encoder(x)
                features = encoded.float()
                if hasattr(self.model, "monitor_outputs"):
                    out = self.model.monitor_outputs(x)
                elif hasattr(self.model, "projector"):
                    out = {
                        "embedding": self.model.projector(encoded)
                    }  # the features just computed (eval mode)
                else:
                    out = {"embedding": features}
            row = monitor_row(out["embedding"].float().cpu(), features.cpu())
            row["teacher_entropy"] = float(out.get("teacher_entropy", math.nan))
        finally:
            self.model.train(was_training)
        max_entropy = out.get("max_entropy")
        row["collapsed"] = is_collapsed(row, max_entropy)
        if row["collapsed"] and self.collapsed_at is None:
            self.collapsed_at = epoch + 1
            if not math.isfinite(row["embed_std_ratio"]):
                why = "embeddings not finite"
            elif row["embed_std_ratio"] < COLLAPSE_STD_RATIO:
                why = (
                    f"embedding std x sqrt(d) {row['embed_std_ratio']:.4f} < {COLLAPSE_STD_RATIO} (effective"
                    f" rank {row['embed_rank']:.2f})"
                )
            else:
                why = (
                    f"teacher entropy {row['teacher_entropy']:.3f} nats > {UNIFORM_ENTROPY_FRACTION} x log K"
                    f" = {UNIFORM_ENTROPY_FRACTION * max_entropy:.3f} (uniform outputs)"
                )
            self.collapse_note = f"collapsed at epoch {epoch + 1}: {why}"
        self.history[-1].update(row)

    def monitor_after_divergence(self, epoch: int) -> str:
        """The collapse verdict on the diverged model (its embeddings are usually not finite any more), for
        the error."""
        if not D.is_main():
            return "monitors on rank 0"
        if (
            not self.history or self.history[-1]["epoch"] != epoch
        ):  # no row of this epoch yet: one for the monitors
            self.history.append(self._row(epoch, math.nan))
        try:
            self.monitor(epoch)
        except (RuntimeError, ValueError) as e:  # e.g. an SVD that does not converge on huge values
            return f"collapse monitors failed on the diverged model ({type(e).__name__})"
        return self.collapse_note or "the embeddings had not collapsed"

    def train_epoch(self, epoch: int) -> None:
        """One pass over the pool in full batches; a history row every ``steps_per_epoch /
        LOG_POINTS_PER_EPOCH`` steps."""
        self.model.train()
        t0 = time.perf_counter()
        log_every = max(1, self.steps_per_epoch // LOG_POINTS_PER_EPOCH)
        # losses stay on the device: the host waits for it only at a log point or a divergence
        # check (every T.FINITE_CHECK_EVERY steps), not each step, so it prepares the next batch meanwhile
        window: list[torch.Tensor] = []
        for idx in batches(self.n, self.batch_size, self.gen, drop_last=True):
            window.append(self.train_step(idx, epoch))
            self.images_seen += len(idx)
            self.ctx.progress.advance()
            if len(window) == log_every:
                self.history.append(self._row(epoch, self._window_mean(window, epoch)))
                window = []
            elif self.step % T.FINITE_CHECK_EVERY == 0:
                T.check_finite(torch.stack(window).sum(), self._where(epoch))
        if window:
            self.history.append(self._row(epoch, self._window_mean(window, epoch)))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.t_train += time.perf_counter() - t0

    def train_step(self, idx: np.ndarray, epoch: int) -> torch.Tensor:
        """One optimizer step on the batch ``idx`` (two augmented views of each image); the loss averaged over
        ranks, on the device (not yet checked: :meth:`train_epoch` does, without waiting each step)."""
        x01 = to_input(self.images[idx], self.device, (0.0, 1.0))
        make_views = getattr(self.model, "make_views", None)
        views = (
            make_views(x01, self.aug, self.gen, self.normalize)
            if make_views
            else view_pair(x01, self.aug, self.gen, self.normalize)
        )
        if self.fast.channels_last:
            views = tuple(_channels_last(v) for v in views)
        with autocast(self.device, self.cell.settings.amp, self.fast.amp_dtype):
            loss = self.train_model(*views, self.step / max(self.total - 1, 1), self.gen)
        loss_all = D.mean_over_ranks(loss.detach())  # every rank sees a divergence together
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if float(self.opts["grad_clip"]) > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), float(self.opts["grad_clip"]))
        self.opt.step()
        self.sched.step()
        self.step += 1
        return loss_all.float()

    def _where(self, epoch: int) -> str:
        return f"pretraining {self.run_id} epoch {epoch}, by step {self.step}"

    def _window_mean(self, window: list[torch.Tensor], epoch: int) -> float:
        """The mean loss of the steps since the last log point (one wait for the device); a non-finite one is
        divergence."""
        values = torch.stack(window).double().cpu().numpy()  # float64 as the logged means always were
        if not np.isfinite(values).all():
            raise T.DivergedError(f"loss became {values[~np.isfinite(values)][0]} at {self._where(epoch)}")
        return float(np.mean(values))

    def checkpoint(self, epoch: int) -> None:
        """After ``epoch``: everything :meth:`resume` needs, written atomically by rank 0, and the history so
        far."""
        ckpt = {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "data_rng": self.gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            "epoch": epoch + 1,
            "step": self.step,
            "history": self.history,
            "pool_fingerprint": self.fingerprint,
            "collapsed_at": self.collapsed_at,
            "collapse_note": self.collapse_note,
        }
        if D.is_main():  # rank 0 alone writes; the others wait for it at the next collective
            atomic_torch_save(ckpt, self.checkpoint_path)
            self.write_history()

    def write_history(self) -> None:
        frame = pd.DataFrame(self.history, columns=[*HISTORY_COLUMNS, *MONITOR_COLUMNS])
        frame["collapsed"] = frame["collapsed"].astype("boolean")  # NA on rows without monitors
        atomic_write_parquet(frame, self.run_dir / "history.parquet")
        atomic_write_parquet(frame, Path(self.ctx.results_dir) / "pretrain" / f"{self.run_id}.parquet")

    def finish(self) -> None:
        """Rank 0 writes the final encoder, ``meta.json`` and the ``done`` marker (last); the other ranks wait
        for it."""
        if not D.is_main():
            D.barrier()  # wait until rank 0 has written the finished run
            return
        self.write_history()
        atomic_torch_save(copy.deepcopy(self.model.encoder.model.state_dict()), self.run_dir / "encoder.pt")
        atomic_write_text(json.dumps(self.meta(), indent=2, default=str), self.run_dir / "meta.json")
        atomic_write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + "\n", self.run_dir / "done")
        D.barrier()

    def meta(self) -> dict[str, Any]:
        losses = [r["loss"] for r in self.history]
        probes = [r["probe_auroc"] for r in self.history if not math.isnan(r["probe_auroc"])]
        return {
            "run_id": self.run_id,
            "key": self.key,
            "strategy": self.strategy.name,
            "backbone": self.cell.backbone,
            "dir": str(self.run_dir),
            "steps": self.step,
            "epochs": self.epochs,
            "steps_per_epoch": self.steps_per_epoch,
            "batch_size": self.batch_size,
            "pool_images": self.n,
            "pool_patients": int(len(set(self.patient_ids.tolist()))),
            "pool_fingerprint": self.fingerprint,
            "normalize": list(self.normalize),
            "optimizer": self.strategy.optimizer_record(self.opts),
            "schedule": self.schedule.record(),
            "notes": self.notes + ([self.collapse_note] if self.collapse_note else []),
            "final_loss": losses[-1] if losses else None,
            "final_probe_auroc": probes[-1] if probes else None,
            "collapsed_at_epoch": self.collapsed_at,
            "collapse_rule": (
                f"embedding std x sqrt(d) < {COLLAPSE_STD_RATIO} on {len(self.monitor_images)} pool images"
            ),
            "train_seconds_this_session": self.t_train,
            "images_per_second": self.images_seen / self.t_train if self.t_train > 0 else None,
            "device": str(self.device),
        }

    def _row(self, epoch: int, loss: float) -> dict[str, Any]:
        return _row(self.run_id, self.strategy.name, self.cell.backbone, epoch, self.step, loss, math.nan)


def _row(
    run_id: str, strategy: str, backbone: str, epoch: int, step: int, loss: float, probe: float
) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "strategy": strategy,
        "backbone": backbone,
        "epoch": epoch,
        "step": step,
        "loss": loss,
        "probe_auroc": probe,
    }


# -- the kNN probe --------------------------------------------------------------------------
@dataclasses.dataclass
class _ProbeData:
    """A small labeled subset of the pretraining source: train (memory bank) and valid (queries)."""

    train_images: np.ndarray | None = None
    train_targets: np.ndarray | None = None
    valid_images: np.ndarray | None = None
    valid_targets: np.ndarray | None = None
    labels: list[str] = dataclasses.field(default_factory=list)
    eval_labels: list[str] = dataclasses.field(default_factory=list)
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.train_images is not None

    @classmethod
    def build(cls, cell: CellConfig, opts: dict[str, Any]) -> _ProbeData:
        """Uses only fields of the pretraining key (source, root, size, views, seed), never the test split."""
        st = cell.settings
        source = st.pretrain_source
        ds_opts = pretrain_source_options(cell)
        n = int(opts["probe_images"])
        probe_cell = dataclasses.replace(
            cell,
            dataset=source,
            dataset_options=ds_opts,
            label_fraction=1.0,
            seed=cell.effective_pretrain_seed,
            settings=dataclasses.replace(st, max_train_images=n, max_eval_images=n, uncertainty="ignore"),
        )
        try:
            data = celldata.build_cell_data(probe_cell)
        except ChexbenchError as e:
            return cls(note=f"kNN probe off: {e}")
        return cls(
            data.train.images,
            data.train.targets,
            data.valid.images,
            data.valid.targets,
            data.labels,
            data.eval_labels,
        )

    @torch.no_grad()
    def evaluate(
        self, encoder: Backbone, device: torch.device, normalize: tuple[float, float], k: int, batch_size: int
    ) -> float:
        # rank 0 alone probes: no gather; the device's autocast on NCHW inputs
        fast = FastPath(amp_dtype=fast_path_for(device).amp_dtype)
        bank = extract_features(
            encoder, self.train_images, batch_size, device, normalize, fast=fast, split_over_ranks=False
        )
        queries = extract_features(
            encoder, self.valid_images, batch_size, device, normalize, fast=fast, split_over_ranks=False
        )
        scores = knn_scores(bank, torch.as_tensor(self.train_targets), queries, k)
        return macro_auroc(self.valid_targets, scores.numpy(), self.labels, self.eval_labels)


def knn_scores(
    bank: torch.Tensor, bank_targets: torch.Tensor, queries: torch.Tensor, k: int, tau: float = 0.07
) -> torch.Tensor:
    """Weighted kNN multi-label scores (Q, L): mean of the k nearest (cosine) bank targets,
    weighted by exp(cos/τ), over bank rows whose target is not NaN; 0.5 where none is."""
    bank = torch.nn.functional.normalize(bank.float(), dim=1)
    queries = torch.nn.functional.normalize(queries.float(), dim=1)
    sim = queries @ bank.T  # (Q, N)
    top, idx = sim.topk(min(k, bank.shape[0]), dim=1)
    w = torch.exp((top - 1.0) / tau)  # (Q, k); shifted by 1 for numerical range
    t = bank_targets.float()[idx]  # (Q, k, L)
    known = ~torch.isnan(t)
    num = (w.unsqueeze(-1) * torch.nan_to_num(t) * known).sum(1)
    den = (w.unsqueeze(-1) * known).sum(1)
    return torch.where(den > 0, num / den.clamp(min=1e-12), torch.full_like(num, 0.5))


def _channels_last(v: Any) -> Any:
    if isinstance(v, torch.Tensor) and v.dim() == 4:
        return v.contiguous(memory_format=torch.channels_last)
    if isinstance(v, (list, tuple)):
        return type(v)(_channels_last(t) for t in v)
    return v


def split_forward(module: nn.Module, x: torch.Tensor, splits: int) -> torch.Tensor:
    """``module`` applied to ``splits`` chunks of the batch separately, so BatchNorm normalizes
    each chunk with its own statistics (single-device shuffle-BN, see mocov2). Chunk sizes
    differ by at most one when the batch is not divisible (never silently one chunk)."""
    splits = min(splits, x.shape[0])
    if splits <= 1 or not D.has_batch_norm(module):
        return module(x)
    return torch.cat([module(chunk) for chunk in x.tensor_split(splits)])
