"""``chexbench bench throughput``: images/s and peak memory per backbone and training mode."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from chexbench.cli.app import bench_app, console
from chexbench.core.errors import ConfigError
from chexbench.spec.registry import BACKBONES

GPU_BACKBONES = ["resnet50", "vit_b16"]
CPU_BACKBONES = ["resnet_tiny", "vit_tiny"]


@bench_app.command("throughput")
def bench_throughput_cmd(
    backbone: Annotated[list[str] | None, typer.Option(help="backbone(s) to measure (default: resnet50, vit_b16 on CUDA; tiny ones on CPU)")] = None,
    batch_size: Annotated[int | None, typer.Option(help="images per step (default 256 on CUDA, 16 on CPU)")] = None,
    image_size: Annotated[int | None, typer.Option(help="image side in pixels (default 224 on CUDA, 64 on CPU)")] = None,
    mode: Annotated[list[str] | None, typer.Option(help="finetune | linear | simclr | mocov2 | plain:finetune | plain:linear (default: all)")] = None,
    steps: Annotated[int, typer.Option(help="timed steps per measurement")] = 10,
    warmup: Annotated[int, typer.Option(help="untimed steps first")] = 3,
    compile_step: Annotated[bool, typer.Option("--compile", help="torch.compile each step")] = False,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda[:N]")] = "auto",
    threads: Annotated[int, typer.Option(help="CPU threads for torch (0: leave as is)")] = 0,
    output: Annotated[Path | None, typer.Option(help="PERFORMANCE.md to update (default: docs/PERFORMANCE.md)")] = None,
    note: Annotated[str, typer.Option(help="a remark recorded with the numbers (e.g. the machine was busy)")] = "",
) -> None:
    """Fine-tune / linear / SimCLR / MoCo / BYOL / DINO / MAE step rates and the loader's rate; written to docs/PERFORMANCE.md."""
    # lazy: keeps chexbench --help fast
    import torch

    from chexbench.core.context import resolve_device
    from chexbench.perf.record import record_section
    from chexbench.perf.throughput import (
        MODES,
        PLAIN_MODES,
        markdown,
        measure_loader,
        measure_mode,
        mode_invalid_reason,
    )

    dev = resolve_device(device)
    if threads > 0:
        torch.set_num_threads(threads)
    cuda = dev.type == "cuda"
    backbones = backbone or (GPU_BACKBONES if cuda else CPU_BACKBONES)
    modes = mode or [*MODES, *PLAIN_MODES]  # plain:*: a textbook PyTorch loop of the same model, for the ratio
    for b in backbones:
        if b not in BACKBONES:
            raise ConfigError(f"--backbone: {BACKBONES.unknown_message(b)}")
    for m in modes:
        if m not in (*MODES, *PLAIN_MODES):
            raise ConfigError(f"--mode must be one of {', '.join((*MODES, *PLAIN_MODES))}, got '{m}'")
    bs = batch_size or (256 if cuda else 16)
    size = image_size or (224 if cuda else 64)
    if bs < 2 or size < 16 or steps < 1:
        raise ConfigError(f"need --batch-size ≥ 2, --image-size ≥ 16 and --steps ≥ 1 (got {bs}, {size}, {steps})")

    rows = []
    for kind in ("plain", "light", "views"):
        rows.append(measure_loader(kind, bs, size, dev, steps))
        console.print(f"  loader:{kind}: {rows[-1].images_per_second:,.0f} images/s")
    for b in backbones:
        for m in modes:
            if (why := mode_invalid_reason(m, b)) is not None:
                console.print(f"  {b} {m}: skipped ({why})")
                continue
            rows.append(measure_mode(m, b, bs, size, dev, steps, warmup, compile_step))
            console.print(f"  {b} {m}: {rows[-1].images_per_second:,.0f} images/s, peak {rows[-1].peak_memory_mb:,.0f} MB")
    body = markdown(rows)
    if not cuda:
        body += (
            "\n\nCPU numbers (tiny backbones, small images): they check the harness, not the GPU targets; "
            "peak memory on CPU is the process's maximum resident set. GPU numbers (H100 targets: fine-tune "
            "ResNet-50 ≥ 5,000 and ViT-B/16 ≥ 3,000 images/s at 224 px in bf16; MoCo ≥ 0.7× and SimCLR ≥ 0.5× "
            "of fine-tune; the loader faster than every step) are pending a GPU run."
        )
    if note:
        body += f"\n\nNote: {note}"
    command = "chexbench bench throughput" + "".join(f" --backbone {shlex.quote(b)}" for b in backbones)
    command += f" --batch-size {bs} --image-size {size} --steps {steps} --warmup {warmup}" + (" --compile" if compile_step else "")
    command += f" --threads {threads}" if threads > 0 else ""
    command += "".join(f" --mode {m}" for m in mode or [])
    kind = torch.cuda.get_device_name(dev) if cuda else "CPU"
    title = f"Throughput: training steps and loader ({kind}, {size} px{', compiled' if compile_step else ''})"
    file = record_section(title, body, command, output)
    console.print(f"written to {file}")
