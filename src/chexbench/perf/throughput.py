"""Throughput of the training modes per backbone, the loader's rate, and GPU-hour estimates.

For one backbone at one batch size and image size this measures images/s and peak memory of

- ``finetune``: forward + masked BCE + backward + AdamW step of backbone + linear head;
- ``linear``: frozen-backbone feature extraction (no grad, eval mode);
- ``simclr``: one SimCLR step (two views through encoder + projector, NT-Xent, backward, step);
- ``mocov2``: one MoCo-v2 step (query + momentum key encoder, queue, InfoNCE, backward, step);
- ``byol``, ``dino``, ``mae``: one step of that method, its views drawn as a run draws them
  (DINO: 2 global + its default 8 local crops; MAE: one crop, 75 % of patches masked; ViTs
  with a patchify stem only), the strategy's defaults under the backbone family's recipe;

each with the fast path of the run on CUDA (bf16 autocast, channels_last, fused AdamW,
optional ``torch.compile``), plus the loader: uint8 rows gathered from a memory-mapped cache,
copied (pinned, non-blocking on CUDA) and augmented batched on the device — the light
fine-tuning warp, or two contrastive views. A step is *input-bound* when the loader feeding
it is slower than the step itself.

Every measurement is embedded as JSON in its PERFORMANCE.md section, so ``chexbench plan``
can turn the recorded rates into a GPU-hours estimate (:func:`estimate_gpu_hours`).
"""

from __future__ import annotations

import json
import math
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from chexbench.bench.cell_model import Classifier
from chexbench.bench.protocols.finetune import Finetune
from chexbench.core import training as T
from chexbench.core.context import fast_path_for
from chexbench.core.devices import autocast, device_name, peak_memory_mb, reset_peak_memory
from chexbench.core.inputs import batches, to_input
from chexbench.core.optim import build_optimizer, optimizer_implementation
from chexbench.spec.registry import BACKBONES, PROTOCOLS, STRATEGIES
from chexbench.spec.settings import Settings
from chexbench.strategies.augment import ViewAugment, light_augment, view_pair

MODES = ("finetune", "linear", "simclr", "mocov2", "byol", "dino", "mae")
#: the modes that are one pretraining step of the strategy of that name
PRETRAIN_MODES = ("simclr", "mocov2", "byol", "dino", "mae")
#: a textbook PyTorch loop of the same model for the harness's own modes (the ratio says what the harness
#: costs)
PLAIN_MODES = ("plain:finetune", "plain:linear")
#: which loader feeds which mode
LOADER_OF_MODE = {
    "finetune": "light",
    "linear": "plain",
    "simclr": "views",
    "mocov2": "views",
    "byol": "views",
    "dino": "views",
    "mae": "views",
}
JSON_MARK = "throughput-json"


@dataclass
class Measurement:
    device: str  # device name, e.g. "NVIDIA H100 80GB HBM3" or "cpu (2 cores, 2 threads)"
    backbone: str
    mode: str  # finetune | linear | simclr | mocov2 | loader:light | loader:views | loader:plain
    batch_size: int
    image_size: int
    images_per_second: float
    peak_memory_mb: float
    compiled: bool = False


# -- timing --------------------------------------------------------------------------------
def _time_steps(step: Callable[[], Any], device: torch.device, steps: int, warmup: int) -> float:
    """Seconds per call of ``step`` after ``warmup`` calls (CUDA synchronized)."""
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) / max(steps, 1)


def _fake_batch(batch_size: int, image_size: int, device: torch.device, gen: torch.Generator) -> torch.Tensor:
    x = torch.rand(batch_size, 1, image_size, image_size, generator=gen).to(device)
    return x.contiguous(memory_format=torch.channels_last) if fast_path_for(device).channels_last else x


def _maybe_compile(fn: Any, compile_step: bool) -> Any:
    return torch.compile(fn) if compile_step else fn


def _finetune_step(
    backbone: torch.nn.Module,
    batch_size: int,
    image_size: int,
    device: torch.device,
    compile_step: bool,
    gen: torch.Generator,
) -> Callable[[], Any]:

    model = Classifier(backbone, 14).to(device)
    if fast_path_for(device).channels_last:
        model = model.to(memory_format=torch.channels_last)
    fwd = _maybe_compile(model, compile_step)
    st = Settings()
    opt = build_optimizer(
        model,
        device,
        name=st.optimizer,
        lr=st.lr,
        weight_decay=st.weight_decay,
        choice=Finetune.optimizer_choice,
    )
    x = _fake_batch(batch_size, image_size, device, gen)
    y = (torch.rand(batch_size, 14, generator=gen) < 0.3).float().to(device)

    def step() -> None:
        with autocast(device):
            logits = fwd(x)
        loss = T.masked_bce(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _linear_step(
    backbone: torch.nn.Module,
    batch_size: int,
    image_size: int,
    device: torch.device,
    compile_step: bool,
    gen: torch.Generator,
) -> Callable[[], Any]:
    backbone = backbone.to(device).eval()
    if fast_path_for(device).channels_last:
        backbone = backbone.to(memory_format=torch.channels_last)
    fwd = _maybe_compile(backbone, compile_step)
    x = _fake_batch(batch_size, image_size, device, gen)

    @torch.no_grad()
    def step() -> None:
        with autocast(device):
            fwd(x).float()

    return step


def contrastive_model(
    mode: str, backbone: Any, batch_size: int, gen: torch.Generator
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model and options of strategy ``mode`` (``simclr``, ``mocov2``) that a pretraining run of
    this backbone builds: the strategy's defaults under the backbone family's recipe (optimizer,
    momentum), the model built by the strategy for the default pretraining pool, CheXpert's train
    split. MoCo's queue is therefore its default 65,536 keys whatever the backbone's size, as a run
    on that pool gets (a pool under 65,536 + batch images caps it at pool − batch)."""

    strategy = STRATEGIES.get(mode)
    opts = {**strategy.options, **strategy.recipe_for(backbone.spec_name), "pretrain_batch_size": batch_size}
    model, _ = strategy.build_model(backbone, opts, BENCH_POOL_IMAGES, gen)
    return model, opts


def mode_invalid_reason(mode: str, backbone_name: str) -> str | None:
    """Why ``mode`` cannot run on ``backbone_name`` (MAE on a CNN or a conv stem), or None."""
    if mode not in PRETRAIN_MODES:
        return None
    from types import SimpleNamespace

    return STRATEGIES.get(mode).invalid_reason(SimpleNamespace(backbone=backbone_name))


def _contrastive_step(
    mode: str,
    backbone: torch.nn.Module,
    batch_size: int,
    image_size: int,
    device: torch.device,
    compile_step: bool,
    gen: torch.Generator,
) -> Callable[[], Any]:

    model, opts = contrastive_model(mode, backbone, batch_size, gen)
    model = model.to(device)
    if fast_path_for(device).channels_last:
        model = model.to(memory_format=torch.channels_last)
    loss_fn = _maybe_compile(model.loss, compile_step)
    opt = STRATEGIES.get(mode).build_optimizer(model, opts, device)  # the strategy's pretraining optimizer
    if hasattr(model, "make_views"):  # the method's own views (DINO's multi-crop, MAE's one crop), drawn once
        from chexbench.strategies.pretrain import view_augment

        x01 = torch.rand(batch_size, 1, image_size, image_size, generator=gen).to(device)
        views = model.make_views(x01, view_augment(opts), gen, (0.5, 0.25))
    else:
        views = (
            _fake_batch(batch_size, image_size, device, gen),
            _fake_batch(batch_size, image_size, device, gen),
        )

    def step() -> None:
        with autocast(device):
            loss = loss_fn(*views, 0.5, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _plain_step(
    mode: str,
    backbone: torch.nn.Module,
    batch_size: int,
    image_size: int,
    device: torch.device,
    compile_step: bool,
    gen: torch.Generator,
) -> Callable[[], Any]:
    """The reference: a textbook PyTorch loop of the same model, dtype and memory format
    (``timm``-style: ``nn.Linear`` head, ``BCEWithLogitsLoss``, ``AdamW``), none of the harness's code."""
    fast = fast_path_for(device)
    fmt = torch.channels_last if fast.channels_last else torch.contiguous_format
    x = (
        torch.rand(batch_size, 1, image_size, image_size, generator=gen)
        .to(device)
        .contiguous(memory_format=fmt)
    )
    amp = (
        torch.autocast(device.type, dtype=fast.amp_dtype)
        if fast.amp_dtype is not None
        else torch.autocast(device.type, enabled=False)
    )
    if mode == "linear":
        net = backbone.to(device).eval().to(memory_format=fmt)
        fwd = torch.compile(net) if compile_step else net

        def extract() -> None:
            with torch.inference_mode(), amp:
                fwd(x).float()

        return extract
    net = (
        torch.nn.Sequential(backbone, torch.nn.Linear(backbone.num_features, 14))
        .to(device)
        .to(memory_format=fmt)
    )
    fwd = torch.compile(net) if compile_step else net
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, **optimizer_implementation(device))
    y = (torch.rand(batch_size, 14, generator=gen) < 0.3).float().to(device)
    criterion = torch.nn.BCEWithLogitsLoss()

    def train() -> None:
        with amp:
            loss = criterion(fwd(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return train


def measure_mode(
    mode: str,
    backbone_name: str,
    batch_size: int,
    image_size: int,
    device: torch.device,
    steps: int = 10,
    warmup: int = 3,
    compile_step: bool = False,
) -> Measurement:
    """images/s and peak memory of one training mode (see the module docstring)."""

    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    backbone = BACKBONES.get(backbone_name).build(image_size, {})
    makers = {"finetune": _finetune_step, "linear": _linear_step}
    if mode.startswith("plain:"):
        step = _plain_step(mode.split(":", 1)[1], backbone, batch_size, image_size, device, compile_step, gen)
    elif mode in makers:
        step = makers[mode](backbone, batch_size, image_size, device, compile_step, gen)
    else:
        step = _contrastive_step(mode, backbone, batch_size, image_size, device, compile_step, gen)
    reset_peak_memory(device)
    seconds = _time_steps(step, device, steps, warmup + (5 if compile_step else 0))
    return Measurement(
        device_name(device),
        backbone_name,
        mode,
        batch_size,
        image_size,
        batch_size / seconds,
        peak_memory_mb(device),
        compile_step,
    )


def measure_loader(
    kind: str, batch_size: int, image_size: int, device: torch.device, steps: int = 10, n_images: int = 0
) -> Measurement:
    """images/s of the input path: memmap uint8 rows → device → batched augmentation.

    ``kind``: ``plain`` (no augmentation), ``light`` (fine-tuning warp), ``views`` (two
    contrastive views, :class:`~chexbench.strategies.augment.ViewAugment` defaults).
    """

    n = n_images or batch_size * (steps + 2)
    gen = torch.Generator().manual_seed(0)
    aug = ViewAugment()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "images.u8"
        mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, image_size, image_size))
        mm[:] = np.random.default_rng(0).integers(0, 256, mm.shape, dtype=np.uint8)
        mm.flush()
        images = np.load(path, mmap_mode="r")
        order = iter(list(batches(n, batch_size, gen, drop_last=True)) * 2)

        def step() -> None:
            idx = next(order)
            if kind == "plain":
                to_input(images[idx], device)
            elif kind == "light":
                light_augment(to_input(images[idx], device), gen)
            else:
                view_pair(to_input(images[idx], device, (0.0, 1.0)), aug, gen)

        reset_peak_memory(device)
        seconds = _time_steps(step, device, steps, 2)
    return Measurement(
        device_name(device),
        "-",
        f"loader:{kind}",
        batch_size,
        image_size,
        batch_size / seconds,
        peak_memory_mb(device),
    )


# -- reporting -------------------------------------------------------------------------------
def input_bound(rows: list[Measurement]) -> dict[tuple[str, str], bool]:
    """``(backbone, mode) → True`` where the mode's loader is slower than the step."""
    loaders = {r.mode.split(":", 1)[1]: r.images_per_second for r in rows if r.mode.startswith("loader:")}
    out = {}
    for r in rows:
        if r.mode in LOADER_OF_MODE and LOADER_OF_MODE[r.mode] in loaders:
            out[(r.backbone, r.mode)] = loaders[LOADER_OF_MODE[r.mode]] < r.images_per_second
    return out


def markdown(rows: list[Measurement]) -> str:
    """A table of the measurements, the input-bound verdicts and the embedded JSON.

    ``× fine-tune``: the mode's rate over the fine-tune rate of the same backbone (and compile
    setting); ``× plain``: the harness's step over the textbook loop of the same model
    (``plain:finetune`` / ``plain:linear``), measured in the same run.
    """
    bound = input_bound(rows)
    rate = {(r.backbone, r.mode, r.compiled): r.images_per_second for r in rows}
    lines = [
        "| backbone | mode | batch | px | images/s | × fine-tune | × plain | peak MB | input-bound |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        ft = rate.get((r.backbone, "finetune", r.compiled))
        ratio = f"{r.images_per_second / ft:.2f}" if ft and r.mode in MODES else ""
        plain = rate.get((r.backbone, f"plain:{r.mode}", r.compiled))
        vs_plain = f"{r.images_per_second / plain:.2f}" if plain else ""
        verdict = {True: "**yes**", False: "no"}.get(bound.get((r.backbone, r.mode)), "")
        mode = r.mode + (" (compiled)" if r.compiled else "")
        lines.append(
            f"| {r.backbone} | {mode} | {r.batch_size} | {r.image_size} | {r.images_per_second:,.0f} |"
            f" {ratio} | {vs_plain} | {r.peak_memory_mb:,.0f} | {verdict} |"
        )
    payload = json.dumps([asdict(r) for r in rows], separators=(",", ":"))
    lines += ["", f"<!-- {JSON_MARK} {payload} -->"]
    return "\n".join(lines)


def recorded_measurements(text: str) -> list[Measurement]:
    """Every measurement embedded in a PERFORMANCE.md text."""
    out = []
    for m in re.finditer(rf"<!-- {JSON_MARK} (\[.*?\]) -->", text):
        out += [Measurement(**d) for d in json.loads(m.group(1))]
    return out


# -- GPU-hours estimate ----------------------------------------------------------------------
#: the issue's H100 targets (224 px, bf16), used when no GPU measurement is recorded
H100_TARGETS = {"resnet50": 5000.0, "vit_b16": 3000.0, "vit_b16_convstem": 3000.0}
#: byol, dino, mae have no target of the issue: rough ratios from their work per image relative to one
#: fine-tuning pass (BYOL: 2 online passes + 2 forward-only target passes; DINO: 2 global + 8 local crops
#: at (96/224)² the pixels, + 2 teacher forwards; MAE: the encoder on 25 % of the tokens, He et al. 2022
#: report ≥ 3× faster pretraining than the full-token encoder) — used only when nothing is measured
TARGET_RATIO = {
    "finetune": 1.0,
    "linear": 3.0,
    "simclr": 0.5,
    "mocov2": 0.7,
    "byol": 0.4,
    "dino": 0.25,
    "mae": 2.0,
}
#: train-split images per dataset (frontal views), for datasets whose size is not in the cell
NOMINAL_TRAIN_IMAGES = {"chexpert": 191_229, "nih": 86_524, "indiana": 3_300}
#: the pretraining pool the benchmarked contrastive models are built for (the default pretrain_source's)
BENCH_POOL_IMAGES = NOMINAL_TRAIN_IMAGES["chexpert"]


@dataclass
class Estimate:
    gpu_hours: float
    cells: int
    pretrain_runs: int
    source: str  # where the rates came from
    #: every rate that was not measured at the cell's image size, and what stood in for it
    assumed: list[str] = field(default_factory=list)
    #: how the total is made: one line per group of identical cells and per pretraining run, with its
    #: arithmetic
    derivation: list[str] = field(default_factory=list)
    cell_seconds: dict[str, float] = field(
        default_factory=dict
    )  # runnable cell id → its own seconds (no pretraining)
    run_seconds: dict[str, float] = field(
        default_factory=dict
    )  # pretraining group (bench.shard.pretrain_group) → seconds


class _Rates:
    """images/s of a mode on a backbone at an image size, for the estimate.

    Measured: the uncompiled rate (a run's default) of the GPU recorded last in PERFORMANCE.md
    (``make gpu-check`` or ``bench throughput`` on a GPU), at the cell's image size. Otherwise,
    in this order, each noted in :attr:`assumed`: that GPU's measurement at another size, scaled
    by the pixel count; the H100 target (224 px, scaled likewise); the slowest rate of the mode.
    """

    def __init__(self, measured: list[Measurement]):
        gpu = [m for m in measured if not m.device.startswith("cpu") and m.mode in MODES]
        self.device = gpu[-1].device if gpu else None
        self.measured: dict[tuple[str, str, int], float] = {}
        for m in sorted(
            (m for m in gpu if m.device == self.device), key=lambda m: not m.compiled
        ):  # uncompiled last, kept
            self.measured[(m.backbone, m.mode, m.image_size)] = m.images_per_second
        self.assumed: dict[str, str] = {}

    def source(self) -> str:
        if self.device is None:
            return (
                "assumed H100 target rates: no GPU measurement recorded in docs/PERFORMANCE.md (make"
                " gpu-check writes them)"
            )
        if self.assumed:
            return f"measured on {self.device} (docs/PERFORMANCE.md), {len(self.assumed)} rate(s) assumed"
        return f"measured on {self.device} (docs/PERFORMANCE.md)"

    def __call__(self, backbone: str, mode: str, image_size: int) -> float:
        if (backbone, mode, image_size) in self.measured:
            return self.measured[(backbone, mode, image_size)]
        what = f"{backbone} {mode} at {image_size} px"
        sizes = [s for b, m, s in self.measured if (b, m) == (backbone, mode)]
        if sizes:
            size = min(sizes, key=lambda s: abs(s - image_size))
            self.assumed.setdefault(what, f"the {self.device} rate at {size} px × ({size}/{image_size})²")
            return self.measured[(backbone, mode, size)] * (size / image_size) ** 2
        scale = (224 / image_size) ** 2
        if backbone in H100_TARGETS:
            if (
                self.device is not None or image_size != 224
            ):  # (with no GPU recorded, source() says targets are used)
                self.assumed.setdefault(
                    what,
                    f"not measured: the H100 target at 224 px × {TARGET_RATIO[mode]} for {mode} ×"
                    f" (224/{image_size})²",
                )
            return H100_TARGETS[backbone] * TARGET_RATIO[mode] * scale
        known = [v * (s / image_size) ** 2 for (b, m, s), v in self.measured.items() if m == mode]
        known += [rate * TARGET_RATIO[mode] * scale for rate in H100_TARGETS.values()]
        self.assumed.setdefault(what, f"not measured, no target: the slowest {mode} rate known")
        return min(known)


def _nominal_images(dataset: str, options: dict[str, Any]) -> int:
    """Nominal train images of ``dataset``: the real dataset's size, else two per patient of its options (a
    phantom)."""
    return NOMINAL_TRAIN_IMAGES.get(dataset, 2 * int(options.get("patients", 1000)))


def _train_images(cell: Any) -> int:
    n = _nominal_images(cell.dataset, cell.dataset_options)
    n = int(math.ceil(n * cell.label_fraction))
    return min(n, cell.settings.max_train_images) if cell.settings.max_train_images > 0 else n


def pretrain_mode(strategy: Any) -> str | None:
    """The benchmarked pretraining mode (:data:`PRETRAIN_MODES`) whose step ``strategy`` runs: the
    strategy is it, or derives from it (top-K variants, aliases); None for another method."""

    for mode in PRETRAIN_MODES:
        if isinstance(strategy, type(STRATEGIES.get(mode))):
            return mode
    return None


def estimate_gpu_hours(planned: list[Any], measured: list[Measurement]) -> Estimate:
    """GPU-hours of the runnable cells and their shared pretraining runs (each run once).

    Fine-tuning: epochs × train images at the fine-tune rate plus one validation pass per
    epoch at the extraction rate (validation taken as 10 % of train); linear: extracting
    train + valid + test once (1.2 × train); pretraining: epochs × pool images at the method's
    rate. Rates come from :class:`_Rates`; every one that was assumed is listed in ``assumed``,
    and ``derivation`` writes each group's arithmetic out (the lines sum to the total).
    """
    from chexbench.bench.shard import (
        pretrain_group,  # lazy: perf's estimate needs the shard's grouping only here
    )

    rate = _Rates(measured)
    cell_seconds: dict[str, float] = {}
    run_seconds: dict[str, float] = {}
    groups: dict[str, list[float]] = {}  # a derivation line → the seconds of each cell it describes
    run_lines: dict[str, str] = {}
    for p in planned:
        if p.status != "run":
            continue
        c = p.cell
        n, px = _train_images(c), c.settings.image_size
        where = f"{c.backbone} {c.protocol} on {c.dataset} ×{c.label_fraction:g} at {px} px"
        if not PROTOCOLS.get(c.protocol).freezes_backbone:  # the backbone trains: epochs of fine-tuning
            ft, ex = rate(c.backbone, "finetune", px), rate(c.backbone, "linear", px)
            sec = c.settings.epochs * (n / ft + 0.1 * n / ex)
            line = (
                f"{where}: {c.settings.epochs} epochs × ({n:,} train images ÷ {ft:,.0f} img/s + 10%"
                f" validation ÷ {ex:,.0f} img/s)"
            )
        else:
            ex = rate(c.backbone, "linear", px)
            sec = 1.2 * n / ex
            line = f"{where}: features of 1.2 × {n:,} images (train + valid + test) ÷ {ex:,.0f} img/s"
        cell_seconds[c.cell_id] = sec
        groups.setdefault(line, []).append(sec)
        strategy = STRATEGIES.get(c.strategy)
        key = strategy.pretrain_key(c) if hasattr(strategy, "pretrain_key") else None
        if key is not None:
            group = pretrain_group(p)
            if group in run_seconds:
                continue
            opts = key["options"]
            # the source's own pool: neither the target's size nor the label fraction of whichever cell came
            # first
            pool = _nominal_images(key["pretrain_source"], key.get("pretrain_source_options", {}))
            if int(opts.get("max_pretrain_images", 0)) > 0:
                pool = min(pool, int(opts["max_pretrain_images"]))
            mode = pretrain_mode(strategy)
            if mode is None:
                rate.assumed.setdefault(
                    f"{c.strategy} pretraining", "not benchmarked: the slower of the SimCLR and MoCo-v2 rates"
                )
                step = min(rate(c.backbone, "simclr", px), rate(c.backbone, "mocov2", px))
            else:
                step = rate(c.backbone, mode, px)
            epochs = int(opts.get("pretrain_epochs", 100))
            run_seconds[group] = epochs * pool / step
            run_lines[group] = (
                f"pretraining {c.strategy}/{c.backbone} on {key['pretrain_source']} ({group}): {epochs}"
                f" epochs × {pool:,} images ÷ {step:,.0f} img/s = {run_seconds[group] / 3600:,.2f} h"
            )
    derivation = list(run_lines.values())
    derivation += [
        (
            f"{len(secs)} cell(s) × {secs[0] / 3600:,.3f} h = {sum(secs) / 3600:,.2f} h — {line}"
            if len(set(secs)) == 1
            else f"{len(secs)} cell(s), {sum(secs) / 3600:,.2f} h — {line}"
        )
        for line, secs in sorted(groups.items(), key=lambda kv: -sum(kv[1]))
    ]  # costliest first
    total = sum(cell_seconds.values()) + sum(run_seconds.values())
    return Estimate(
        total / 3600.0,
        len(cell_seconds),
        len(run_seconds),
        rate.source(),
        [f"{k}: {v}" for k, v in rate.assumed.items()],
        derivation,
        cell_seconds,
        run_seconds,
    )


def shard_costs(planned: list[Any]) -> Callable[[Any], float]:
    """The cost of each runnable cell for balancing ``--shard i/n`` (bench.shard.shard_cells):
    the estimate's seconds at the H100 target rates. Targets, never this machine's measurements,
    so every job of a submission computes the same split from the grid alone."""
    est = estimate_gpu_hours(planned, [])
    return lambda p: est.cell_seconds.get(p.cell.cell_id, 0.0)


def shard_run_costs(planned: list[Any]) -> dict[str, float]:
    """Seconds of each shared pretraining run (by bench.shard.pretrain_group), at the H100 target rates."""
    return estimate_gpu_hours(planned, []).run_seconds


def split_costs(planned: list[Any]):
    """The costs ``run --shard``, ``plan --shards`` and ``submit`` balance shards by (one place, so they
    agree)."""
    from chexbench.bench.shard import ShardCosts

    return ShardCosts(shard_costs(planned), shard_run_costs(planned))
