"""Shared self-supervised pretraining: the run cache, the loop, checkpoints and the kNN probe.

A pretraining run is identified by a short hash of everything that determines its weights
(:meth:`PretrainStrategy.pretrain_key`): strategy, backbone and its options, pretraining
source, its root and split, views, image size, every pretraining option and the pretraining
seed. Every cell needing that run reuses it. Layout of ``ctx.pretrain_dir / run_id``::

    checkpoint.pt   written atomically after each epoch: model (encoders, heads, queue),
                    optimizer, scheduler, RNG states, epoch, step, history → resume after a kill
    encoder.pt      the final encoder state dict (what cells load, strictly)
    meta.json       key, steps, epochs, pool size, notes, throughput
    history.parquet loss curve and probe history (also copied to results_dir/pretrain/)
    done            marker written last

A file lock on ``pretrain.lck`` (:mod:`chexbench.core.lock`: cross-host, stale-lock recovery)
makes concurrent shards wait for one another instead of pretraining the same run twice;
under torchrun the ranks pretrain together and rank 0 alone writes. The probe: every ``probe_every`` epochs a weighted kNN classifier
(Wu et al. 2018, k neighbours, weights exp(cos/0.07)) on frozen encoder features of a small
labeled subset of the source's train split predicts its valid split; macro AUROC is stored.
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
import torch
from pydantic import Field
from torch import nn

from chexbench.core.atomic import atomic_torch_save
from chexbench.core.errors import ConfigError, DataError
from chexbench.datasets.leakage import check_pretrain_leakage, pretrain_source_options
from chexbench.options import Options, options_model, validate_table
from chexbench.strategies.base import InitRecord, Strategy

if TYPE_CHECKING:
    from chexbench.backbones.base import Backbone
    from chexbench.config import CellConfig
    from chexbench.core.context import RunContext

#: columns of ``results_dir/pretrain/<run_id>.parquet``
HISTORY_COLUMNS = ("run_id", "strategy", "backbone", "epoch", "step", "loss", "probe_auroc")


class PretrainOptions(Options):
    """Options every self-supervised strategy accepts under ``[strategy.<name>]`` (defaults per strategy)."""

    pretrain_epochs: int = Field(100, ge=1, description="pretraining epochs over the unlabeled pool")
    pretrain_batch_size: int = Field(256, ge=2, description="pretraining batch size (capped at the pool size)")
    pretrain_optimizer: Literal["sgd", "adamw"] = Field("sgd", description="pretraining optimizer (SGD momentum 0.9, or AdamW)")
    pretrain_lr: float = Field(0.03, gt=0, description="peak pretraining learning rate (not rescaled by batch size)")
    pretrain_weight_decay: float = Field(1e-4, ge=0, description="weight decay, none on biases and norms")
    pretrain_warmup_epochs: float = Field(0.0, ge=0, description="linear warmup before the cosine decay, in epochs")
    grad_clip: float = Field(0.0, ge=0, description="max gradient norm, 0 = off")
    temperature: float = Field(0.2, gt=0, description="softmax temperature of the contrastive loss")
    proj_dim: int = Field(128, ge=1, description="output width of the projection head")
    proj_hidden_dim: int = Field(2048, ge=1, description="hidden width of the projection head")
    max_pretrain_images: int = Field(0, ge=0, description="cap on the pool (whole patients), 0 = the whole pool")
    pretrain_root: str | None = Field(None, description="root of the pretraining source (overrides its [dataset.SOURCE] root)")
    crop_scale_min: float = Field(0.35, gt=0, le=1, description="smallest random-resized-crop area fraction")
    max_rotation_deg: float = Field(10.0, ge=0, description="largest random rotation, degrees")
    flip_p: float = Field(0.0, ge=0, le=1, description="horizontal flip probability")
    intensity: float = Field(0.2, ge=0, description="brightness and contrast jitter amplitude")
    blur_p: float = Field(0.5, ge=0, le=1, description="Gaussian blur probability")
    noise_std: float = Field(0.03, ge=0, description="additive Gaussian noise std (intensities in [0, 1])")
    probe_every: int = Field(1, ge=0, description="epochs between kNN probes, 0 = off")
    probe_images: int = Field(512, ge=1, description="labeled images of the kNN probe's memory bank and queries")
    probe_k: int = Field(20, ge=1, description="neighbours of the kNN probe")


#: every self-supervised strategy accepts these under [strategy.<name>] (defaults per strategy)
COMMON_OPTIONS: dict[str, Any] = PretrainOptions.defaults()
#: what each of :data:`COMMON_OPTIONS` means (``chexbench list options STRATEGY`` shows it)
COMMON_OPTIONS_HELP: dict[str, str] = {
    "pretrain_epochs": "epochs of self-supervised pretraining over the pretraining pool",
    "pretrain_batch_size": "images per pretraining step (two views each)",
    "pretrain_optimizer": "optimizer of the pretraining run: sgd | adamw",
    "pretrain_lr": "peak learning rate of the pretraining run (cosine schedule after warmup)",
    "pretrain_weight_decay": "weight decay of the pretraining run",
    "pretrain_warmup_epochs": "linear learning-rate warmup of the pretraining run, in epochs",
    "grad_clip": "maximum gradient norm during pretraining; 0 turns clipping off",
    "temperature": "temperature of the contrastive (InfoNCE / NT-Xent) softmax",
    "proj_dim": "output width of the projection head",
    "proj_hidden_dim": "hidden width of the projection head",
    "max_pretrain_images": "cap on the pretraining pool (images); 0 uses the whole pool",
    "pretrain_root": "root of the pretraining source dataset (overrides the root of its [dataset.SOURCE] table)",
    "crop_scale_min": "smallest area fraction of a random resized crop",
    "max_rotation_deg": "largest random rotation of a view, in degrees",
    "flip_p": "probability of a horizontal flip (0 by default: a flipped chest swaps heart and situs)",
    "intensity": "amplitude of random brightness and contrast changes",
    "blur_p": "probability of a Gaussian blur",
    "noise_std": "standard deviation of additive Gaussian noise",
    "probe_every": "epochs between kNN probes of the encoder during pretraining; 0 turns them off",
    "probe_images": "images used by each kNN probe",
    "probe_k": "neighbours of the kNN probe",
}
LOG_POINTS_PER_EPOCH = 4


def run_id_of(key: dict[str, Any]) -> str:
    """Short hash of a pretraining key (canonical JSON)."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]


def view_augment(opts: dict[str, Any]):
    from chexbench.strategies.augment import ViewAugment

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
    notes for the record.
    """

    option_model: ClassVar[type[Options]] = PretrainOptions
    options: dict[str, Any] = COMMON_OPTIONS
    option_help: dict[str, str] = COMMON_OPTIONS_HELP
    #: backbone family (the backbone's ``kind``: "cnn", "vit", …) -> option defaults of that
    #: family's recipe, over ``options``; a grid's [strategy.NAME] and its
    #: [strategy.NAME.recipe.FAMILY] tables override them
    recipes: ClassVar[dict[str, dict[str, Any]]] = {}
    #: the strategy this one is another name for (same options, recipes and pretraining runs)
    alias_of: ClassVar[str | None] = None

    def recipe_for(self, backbone: str) -> dict[str, Any]:
        """The option defaults of ``backbone``'s family recipe (empty when the family has none)."""
        from chexbench.config import backbone_family

        return dict(self.recipes.get(backbone_family(backbone), {}))

    def resolved_options(self, cell: CellConfig) -> dict[str, Any]:
        """Defaults < the backbone family's recipe < the cell's options (validated by the grid)."""
        given = validate_table(options_model(self), cell.strategy_options, f"[strategy.{self.name}]", f"cell {cell.cell_id}")
        return {**self.options, **self.recipe_for(cell.backbone), **given}

    def build_model(self, encoder: Backbone, opts: dict[str, Any], pool_size: int, generator: torch.Generator) -> tuple[nn.Module, list[str]]:
        raise NotImplementedError

    def pretrain_key(self, cell: CellConfig) -> dict[str, Any]:
        st = cell.settings
        source = st.pretrain_source
        opts = self.resolved_options(cell)
        # the options that identify the source's data (the grid's [dataset.<source>] table or the cell's own
        # dataset options, e.g. a phantom's generation options; pretrain_root as root): one run per source data
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
            "pretrain_seed": st.pretrain_seed,
            "options": {k: v for k, v in sorted(opts.items()) if k != "pretrain_root"},
        }

    def init_backbone(self, backbone: Backbone, cell: CellConfig, ctx: RunContext) -> InitRecord:
        from chexbench.backbones.base import load_checkpoint
        from chexbench.registry import BACKBONES

        # every cell, also one whose pretraining run is cached: its own test patients vs the pool
        leaked = check_pretrain_leakage(cell)
        run_id, state, meta = ensure_pretrained(self, cell, ctx)
        spec = BACKBONES.get(cell.backbone)
        if meta.get("backbone") != cell.backbone:
            raise ConfigError(f"pretraining run {run_id} was made for backbone {meta.get('backbone')}, not {cell.backbone}")
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
                "pretrain_final_loss": meta.get("final_loss"),
                "pretrain_final_probe_auroc": meta.get("final_probe_auroc"),
                "pretrain_test_patients_shared": leaked,  # > 0 only under allow_leakage
            },
        )


# -- the cache ------------------------------------------------------------------------------
def ensure_pretrained(strategy: PretrainStrategy, cell: CellConfig, ctx: RunContext) -> tuple[str, dict[str, torch.Tensor], dict[str, Any]]:
    """The finished run for ``cell`` — from the cache, resumed, or trained now. Returns (run_id, encoder state, meta)."""
    key = strategy.pretrain_key(cell)
    run_id = run_id_of(key)
    run_dir = Path(ctx.pretrain_dir) / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    from chexbench.core import distributed as D

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
        import pandas as pd

        from chexbench.core.atomic import atomic_write_parquet

        atomic_write_parquet(pd.read_parquet(run_dir / "history.parquet"), results_history)
    return run_id, state, meta


def _atomic_torch_save(obj: Any, path: Path) -> None:
    atomic_torch_save(obj, path)


def _pool_fingerprint(images: np.ndarray, patient_ids: np.ndarray) -> str:
    h = hashlib.sha256(repr(images.shape).encode())
    h.update("\n".join(map(str, patient_ids)).encode())
    return h.hexdigest()[:16]


def _make_optimizer(model: nn.Module, opts: dict[str, Any], device: torch.device) -> torch.optim.Optimizer:
    # no weight decay on biases and norm parameters (1-d tensors), as in MoCo-v3 / timm
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() <= 1]
    groups = [{"params": decay, "weight_decay": float(opts["pretrain_weight_decay"])}, {"params": no_decay, "weight_decay": 0.0}]
    lr = float(opts["pretrain_lr"])
    from chexbench.core.training import optimizer_implementation

    impl = optimizer_implementation(device)  # fused on CUDA, foreach elsewhere
    if opts["pretrain_optimizer"] == "adamw":
        return torch.optim.AdamW(groups, lr=lr, **impl)
    return torch.optim.SGD(groups, lr=lr, momentum=0.9, **impl)


def _pretrain(strategy: PretrainStrategy, cell: CellConfig, ctx: RunContext, key: dict[str, Any], run_id: str, run_dir: Path) -> None:
    import pandas as pd

    from chexbench.core import distributed as D
    from chexbench.core import training as T
    from chexbench.core.atomic import atomic_write_parquet, atomic_write_text
    from chexbench.datasets.celldata import pretrain_pool
    from chexbench.registry import BACKBONES
    from chexbench.strategies.augment import view_pair

    opts = strategy.resolved_options(cell)
    st = cell.settings
    device = ctx.device
    seed = st.pretrain_seed
    images, patient_ids = pretrain_pool(cell, max_images=int(opts["max_pretrain_images"]))
    n = len(images)
    if n < 2:
        raise DataError(f"pretraining source '{st.pretrain_source}': {n} image(s) in its train split; need at least 2")
    fingerprint = _pool_fingerprint(images, patient_ids)
    notes: list[str] = []
    batch_size = min(int(opts["pretrain_batch_size"]), n)
    if batch_size < int(opts["pretrain_batch_size"]):
        notes.append(f"pretrain batch size {opts['pretrain_batch_size']} capped at the pool size {n}")
    steps_per_epoch = n // batch_size  # drop_last: every step sees a full batch (BN, negatives)
    epochs = int(opts["pretrain_epochs"])
    total = steps_per_epoch * epochs

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    encoder = BACKBONES.get(cell.backbone).build(st.image_size, cell.backbone_options)
    model, model_notes = strategy.build_model(encoder, opts, n, gen)
    notes += model_notes
    model.to(device)
    fast = ctx.fast_path  # bf16 autocast + channels_last on CUDA (see RunContext)
    if fast.channels_last:
        model.to(memory_format=torch.channels_last)
    # data-parallel under torchrun (chexbench.core.distributed): the loop feeds the global batch,
    # the model keeps its rank's slice; SyncBN only where the method wants global BN (SimCLR)
    train_model = D.wrap_ddp(D.LossForward(model), device, sync_bn=bool(getattr(model, "sync_bn", False)))
    opt = _make_optimizer(model, opts, device)
    sched = T.warmup_cosine(opt, total, round(float(opts["pretrain_warmup_epochs"]) * steps_per_epoch))
    aug = view_augment(opts)
    normalize = T.DEFAULT_NORMALIZE
    probe = _ProbeData.build(cell, opts) if int(opts["probe_every"]) > 0 else None
    if probe is not None and probe.note:
        notes.append(probe.note)

    start_epoch, step, history = 0, 0, []
    ckpt_path = run_dir / "checkpoint.pt"
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if ckpt["pool_fingerprint"] != fingerprint:
            raise ConfigError(
                f"pretraining checkpoint {ckpt_path} was made from a different pool of images; delete {run_dir} to pretrain again"
            )
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        gen.set_state(ckpt["data_rng"])
        torch.set_rng_state(ckpt["torch_rng"])
        if device.type == "cuda" and ckpt.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(ckpt["cuda_rng"], device)
        start_epoch, step, history = int(ckpt["epoch"]), int(ckpt["step"]), list(ckpt["history"])
        notes.append(f"resumed from epoch {start_epoch} (step {step})")

    def write_history() -> None:
        frame = pd.DataFrame(history, columns=list(HISTORY_COLUMNS))
        atomic_write_parquet(frame, run_dir / "history.parquet")
        atomic_write_parquet(frame, Path(ctx.results_dir) / "pretrain" / f"{run_id}.parquet")

    log_every = max(1, steps_per_epoch // LOG_POINTS_PER_EPOCH)
    ctx.progress.start(f"pretrain {strategy.name} {run_id}", total - step)
    t_train, images_seen = 0.0, 0
    for epoch in range(start_epoch, epochs):
        model.train()
        t0 = time.perf_counter()
        window: list[float] = []
        for idx in T.batches(n, batch_size, gen, drop_last=True):
            x01 = T.to_input(images[idx], device, (0.0, 1.0))
            v1, v2 = view_pair(x01, aug, gen, normalize)
            if fast.channels_last:
                v1, v2 = v1.contiguous(memory_format=torch.channels_last), v2.contiguous(memory_format=torch.channels_last)
            with T.autocast(device, st.amp, fast.amp_dtype):
                loss = train_model(v1, v2, step / max(total - 1, 1), gen)
            loss_all = D.mean_over_ranks(loss.detach())
            T.check_finite(loss_all, f"pretraining {run_id} epoch {epoch} step {step}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if float(opts["grad_clip"]) > 0:
                nn.utils.clip_grad_norm_(model.parameters(), float(opts["grad_clip"]))
            opt.step()
            sched.step()
            step += 1
            images_seen += len(idx)
            window.append(loss_all.item())
            ctx.progress.advance()
            if len(window) == log_every:
                history.append(_row(run_id, strategy.name, cell.backbone, epoch, step, float(np.mean(window)), math.nan))
                window = []
        if window:
            history.append(_row(run_id, strategy.name, cell.backbone, epoch, step, float(np.mean(window)), math.nan))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t_train += time.perf_counter() - t0
        if D.is_main() and probe is not None and probe.ok and ((epoch + 1) % int(opts["probe_every"]) == 0 or epoch + 1 == epochs):
            history[-1]["probe_auroc"] = probe.evaluate(model.encoder, device, normalize, int(opts["probe_k"]), st.eval_batch_size)
        ckpt = {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "data_rng": gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "epoch": epoch + 1,
            "step": step,
            "history": history,
            "pool_fingerprint": fingerprint,
        }
        if D.is_main():  # rank 0 alone writes; the others wait for it at the next collective
            _atomic_torch_save(ckpt, ckpt_path)
            write_history()
        last = history[-1]
        ctx.progress.message(
            f"pretrain {strategy.name} epoch {epoch + 1}/{epochs}: loss {last['loss']:.4f}"
            + ("" if math.isnan(last["probe_auroc"]) else f", kNN probe macro AUROC {last['probe_auroc']:.3f}")
        )

    if not D.is_main():
        D.barrier()  # wait until rank 0 has written the finished run
        return
    write_history()
    losses = [r["loss"] for r in history]
    probes = [r["probe_auroc"] for r in history if not math.isnan(r["probe_auroc"])]
    _atomic_torch_save(copy.deepcopy(model.encoder.model.state_dict()), run_dir / "encoder.pt")
    meta = {
        "run_id": run_id,
        "key": key,
        "strategy": strategy.name,
        "backbone": cell.backbone,
        "dir": str(run_dir),
        "steps": step,
        "epochs": epochs,
        "steps_per_epoch": steps_per_epoch,
        "batch_size": batch_size,
        "pool_images": n,
        "pool_patients": int(len(set(patient_ids.tolist()))),
        "pool_fingerprint": fingerprint,
        "normalize": list(normalize),
        "notes": notes,
        "final_loss": losses[-1] if losses else None,
        "final_probe_auroc": probes[-1] if probes else None,
        "train_seconds_this_session": t_train,
        "images_per_second": images_seen / t_train if t_train > 0 else None,
        "device": str(device),
    }
    atomic_write_text(json.dumps(meta, indent=2, default=str), run_dir / "meta.json")
    atomic_write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + "\n", run_dir / "done")
    D.barrier()


def _row(run_id: str, strategy: str, backbone: str, epoch: int, step: int, loss: float, probe: float) -> dict[str, Any]:
    return {"run_id": run_id, "strategy": strategy, "backbone": backbone, "epoch": epoch, "step": step, "loss": loss, "probe_auroc": probe}


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
        from chexbench.core.errors import ChexbenchError
        from chexbench.datasets.celldata import build_cell_data

        st = cell.settings
        source = st.pretrain_source
        ds_opts = pretrain_source_options(cell)
        n = int(opts["probe_images"])
        probe_cell = dataclasses.replace(
            cell,
            dataset=source,
            dataset_options=ds_opts,
            label_fraction=1.0,
            seed=st.pretrain_seed,
            settings=dataclasses.replace(st, max_train_images=n, max_eval_images=n, uncertainty="ignore"),
        )
        try:
            data = build_cell_data(probe_cell)
        except ChexbenchError as e:
            return cls(note=f"kNN probe off: {e}")
        return cls(data.train.images, data.train.targets, data.valid.images, data.valid.targets, data.labels, data.eval_labels)

    @torch.no_grad()
    def evaluate(self, encoder: Backbone, device: torch.device, normalize: tuple[float, float], k: int, batch_size: int) -> float:
        from chexbench.core.metrics import macro_auroc

        bank = extract_features(encoder, self.train_images, device, normalize, batch_size)
        queries = extract_features(encoder, self.valid_images, device, normalize, batch_size)
        scores = knn_scores(bank, torch.as_tensor(self.train_targets), queries, k)
        return macro_auroc(self.valid_targets, scores.numpy(), self.labels, self.eval_labels)


@torch.no_grad()
def extract_features(encoder: nn.Module, images: np.ndarray, device: torch.device, normalize: tuple[float, float], batch_size: int) -> torch.Tensor:
    """Pooled features (N, D) on CPU of uint8 images (N, S, S), encoder in eval mode (restored after)."""
    from chexbench.core import training as T

    was_training = encoder.training
    encoder.eval()
    out = []
    for idx in T.batches(len(images), batch_size):
        x = T.to_input(images[idx], device, normalize)
        with T.autocast(device, True):
            out.append(encoder(x).float().cpu())
    encoder.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, 0)


def knn_scores(bank: torch.Tensor, bank_targets: torch.Tensor, queries: torch.Tensor, k: int, tau: float = 0.07) -> torch.Tensor:
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


def split_forward(module: nn.Module, x: torch.Tensor, splits: int) -> torch.Tensor:
    """``module`` applied to ``splits`` chunks of the batch separately, so BatchNorm normalizes
    each chunk with its own statistics (single-device shuffle-BN, see mocov2). Chunk sizes
    differ by at most one when the batch is not divisible (never silently one chunk)."""
    splits = min(splits, x.shape[0])
    if splits <= 1 or not has_batch_norm(module):
        return module(x)
    return torch.cat([module(chunk) for chunk in x.tensor_split(splits)])


def has_batch_norm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())

