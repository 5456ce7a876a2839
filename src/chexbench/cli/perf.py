"""``chexbench bench …``: the speed and coverage measurements of :mod:`chexbench.perf` (throughput,
data loading, the bootstrap's speed, interval coverage, phantom generation); results go to
docs/PERFORMANCE.md (coverage: to stdout or ``--out``)."""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Annotated

import typer

from chexbench.cli.app import bench_app, console
from chexbench.cli.data import OptionList, _root, parse_dataset_options
from chexbench.core.errors import ConfigError
from chexbench.spec.registry import BACKBONES

DEFAULT_DATASET = "phantom-chexpert"
GPU_BACKBONES = ["resnet50", "vit_b16"]
CPU_BACKBONES = ["resnet_tiny", "vit_tiny"]


@bench_app.command("coverage")
def bench_coverage(
    trials: Annotated[
        int, typer.Option("--trials", help="simulated test sets per setting (per-label and Δ)")
    ] = 300,
    resamples: Annotated[int, typer.Option("--resamples", help="patient resamples per test set")] = 2000,
    seed_trials: Annotated[
        int, typer.Option("--seed-trials", help="simulated configurations per seed setting")
    ] = 2000,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    part: Annotated[
        list[str] | None,
        typer.Option("--part", help="label, seeds, macro, seed-label, seed-macro (repeat; default: all)"),
    ] = None,
    macro_trials: Annotated[
        int,
        typer.Option("--macro-trials", help="trials per setting of 'macro', 'seed-label' and 'seed-macro'"),
    ] = 300,
    macro_resamples: Annotated[
        int,
        typer.Option("--macro-resamples", help="patient resamples of 'macro', 'seed-label' and 'seed-macro'"),
    ] = 1000,
    out: Annotated[
        Path | None, typer.Option("--out", help="also write the tables (Markdown) to this file")
    ] = None,
) -> None:
    """Simulate clustered test sets and seeds; print how often each 95% interval method covers the truth."""
    # lazy: keeps chexbench --help fast
    from chexbench.core.atomic import atomic_write_text
    from chexbench.perf.coverage import PARTS, run_coverage

    if min(trials, resamples, seed_trials, macro_trials) < 1 or min(resamples, macro_resamples) < 100:
        raise ConfigError(
            "--trials, --seed-trials and --macro-trials must be positive and --resamples / --macro-resamples"
            " at least 100"
        )
    parts = tuple(part) if part else PARTS
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ConfigError(f"--part {unknown[0]}: expected one of {', '.join(PARTS)}")
    with console.status("simulating…"):
        _, _, body = run_coverage(
            trials,
            resamples,
            seed_trials,
            seed,
            parts=parts,
            macro_trials=macro_trials,
            macro_boot=macro_resamples,
        )
    command = (
        f"chexbench bench coverage --trials {trials} --resamples {resamples} --seed-trials {seed_trials}"
        f" --seed {seed} --macro-trials {macro_trials} --macro-resamples {macro_resamples}"
        + "".join(f" --part {p}" for p in parts)
    )
    text = f"Command: `{command}`\n\n{body}"
    console.print(text, highlight=False, soft_wrap=True)
    if out is not None:
        atomic_write_text(text, out)
        console.print(f"wrote {out}", highlight=False)


@bench_app.command("data")
def bench_data_cmd(
    dataset: Annotated[str, typer.Argument(help="registered dataset to read")] = DEFAULT_DATASET,
    root: Annotated[
        Path | None, typer.Option(help="dataset root (default: the dataset's own default)")
    ] = None,
    size: Annotated[int, typer.Option(help="image side after resizing")] = 224,
    images: Annotated[int, typer.Option(help="how many frontal images to read")] = 256,
    batch_size: Annotated[int, typer.Option(help="images per batch")] = 32,
    epochs: Annotated[int, typer.Option(help="passes over the images per path")] = 2,
    output: Annotated[
        Path | None, typer.Option(help="PERFORMANCE.md to update (default: docs/PERFORMANCE.md)")
    ] = None,
    option: OptionList = None,
) -> None:
    """Images/s of (a) PIL decode + resize and (b) the uint8 cache loader, same images and order."""
    # lazy: keeps chexbench --help fast
    from chexbench.perf.loader import measure_loaders
    from chexbench.perf.record import record_section

    options = parse_dataset_options(dataset, option)
    path = _root(dataset, root, options)
    result = measure_loaders(dataset, path, size, images, batch_size, epochs)
    body = result.markdown()
    command = f"chexbench bench data {dataset}" + (f" --root {shlex.quote(str(root))}" if root else "")
    command += f" --size {size} --images {images} --batch-size {batch_size} --epochs {epochs}"
    command += "".join(f" --option {shlex.quote(o)}" for o in option or [])
    file = record_section("Data loading: PIL decode vs prepared cache", body, command, output)
    console.print(body, highlight=False)
    console.print(f"written to {file}")


@bench_app.command("stats")
def bench_stats(
    resamples: Annotated[int, typer.Option("--resamples", help="bootstrap resamples")] = 2000,
    labels: Annotated[int, typer.Option("--labels", help="labels")] = 14,
    images: Annotated[int, typer.Option("--images", help="test images")] = 20_000,
    patients: Annotated[int, typer.Option("--patients", help="test patients")] = 6_000,
    sklearn_resamples: Annotated[
        int | None,
        typer.Option(
            "--sklearn-resamples",
            help="run the slow sklearn loop on the first N resamples only (scaled); default all",
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    record: Annotated[
        bool, typer.Option("--record/--no-record", help="write the result to docs/PERFORMANCE.md")
    ] = True,
    out: Annotated[
        Path | None, typer.Option("--out", help="PERFORMANCE.md to write (default: the checkout's docs/)")
    ] = None,
) -> None:
    """Time the patient-level bootstrap against scikit-learn's roc_auc_score on the same resamples."""
    # lazy: keeps chexbench --help fast
    from chexbench.perf.record import record_section
    from chexbench.perf.stats import benchmark_markdown, run_stats_benchmark

    if min(resamples, labels, images, patients) < 1 or images < patients:
        raise ConfigError(
            "--resamples/--labels/--images/--patients must be positive, with at least one image per patient"
        )
    with console.status("timing the bootstrap and the scikit-learn loop…"):
        result = run_stats_benchmark(resamples, labels, images, patients, seed, sklearn_resamples)
    body = benchmark_markdown(result)
    console.print(body, highlight=False)
    if record:
        command = (
            f"chexbench bench stats --resamples {resamples} --labels {labels} --images {images} "
            f"--patients {patients} --seed {seed}"
        )
        if sklearn_resamples is not None:
            command += f" --sklearn-resamples {sklearn_resamples}"
        path = record_section("bench stats: patient-level bootstrap vs scikit-learn", body, command, out)
        console.print(f"recorded in {path}", highlight=False)


@bench_app.command("throughput")
def bench_throughput_cmd(
    backbone: Annotated[
        list[str] | None,
        typer.Option(help="backbone(s) to measure (default: resnet50, vit_b16 on CUDA; tiny ones on CPU)"),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="images per step (default 256 on CUDA, 16 on CPU)")
    ] = None,
    image_size: Annotated[
        int | None, typer.Option(help="image side in pixels (default 224 on CUDA, 64 on CPU)")
    ] = None,
    mode: Annotated[
        list[str] | None,
        typer.Option(
            help="finetune | linear | simclr | mocov2 | plain:finetune | plain:linear (default: all)"
        ),
    ] = None,
    steps: Annotated[int, typer.Option(help="timed steps per measurement")] = 10,
    warmup: Annotated[int, typer.Option(help="untimed steps first")] = 3,
    compile_step: Annotated[bool, typer.Option("--compile", help="torch.compile each step")] = False,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda[:N]")] = "auto",
    threads: Annotated[int, typer.Option(help="CPU threads for torch (0: leave as is)")] = 0,
    output: Annotated[
        Path | None, typer.Option(help="PERFORMANCE.md to update (default: docs/PERFORMANCE.md)")
    ] = None,
    note: Annotated[
        str, typer.Option(help="a remark recorded with the numbers (e.g. the machine was busy)")
    ] = "",
) -> None:
    """Fine-tune / linear / SimCLR / MoCo / BYOL / DINO / MAE step rates and the loader's rate; written to
    docs/PERFORMANCE.md."""
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
    modes = mode or [
        *MODES,
        *PLAIN_MODES,
    ]  # plain:*: a textbook PyTorch loop of the same model, for the ratio
    for b in backbones:
        if b not in BACKBONES:
            raise ConfigError(f"--backbone: {BACKBONES.unknown_message(b)}")
    for m in modes:
        if m not in (*MODES, *PLAIN_MODES):
            raise ConfigError(f"--mode must be one of {', '.join((*MODES, *PLAIN_MODES))}, got '{m}'")
    bs = batch_size or (256 if cuda else 16)
    size = image_size or (224 if cuda else 64)
    if bs < 2 or size < 16 or steps < 1:
        raise ConfigError(
            f"need --batch-size ≥ 2, --image-size ≥ 16 and --steps ≥ 1 (got {bs}, {size}, {steps})"
        )

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
            console.print(
                f"  {b} {m}: {rows[-1].images_per_second:,.0f} images/s, peak"
                f" {rows[-1].peak_memory_mb:,.0f} MB"
            )
    body = markdown(rows)
    if not cuda:
        body += (
            "\n\nCPU numbers (tiny backbones, small images): they check the harness, not the GPU targets;"
            " peak memory on CPU is the process's maximum resident set. GPU numbers (H100 targets: fine-tune"
            " ResNet-50 ≥ 5,000 and ViT-B/16 ≥ 3,000 images/s at 224 px in bf16; MoCo ≥ 0.7× and SimCLR ≥"
            " 0.5× of fine-tune; the loader faster than every step) are pending a GPU run."
        )
    if note:
        body += f"\n\nNote: {note}"
    command = "chexbench bench throughput" + "".join(f" --backbone {shlex.quote(b)}" for b in backbones)
    command += f" --batch-size {bs} --image-size {size} --steps {steps} --warmup {warmup}" + (
        " --compile" if compile_step else ""
    )
    command += f" --threads {threads}" if threads > 0 else ""
    command += "".join(f" --mode {m}" for m in mode or [])
    kind = torch.cuda.get_device_name(dev) if cuda else "CPU"
    title = f"Throughput: training steps and loader ({kind}, {size} px{', compiled' if compile_step else ''})"
    file = record_section(title, body, command, output)
    console.print(f"written to {file}")


@bench_app.command("phantom")
def bench_phantom_cmd(
    size: Annotated[int, typer.Option(help="image width in pixels")] = 256,
    images: Annotated[int, typer.Option(help="images to render per site")] = 100,
    output: Annotated[
        Path | None, typer.Option(help="PERFORMANCE.md to update (default: docs/PERFORMANCE.md)")
    ] = None,
) -> None:
    """Phantom generation speed (images/s on one core, render + encode) per site."""
    # lazy: keeps chexbench --help fast
    from chexbench.perf.phantom import measure_generation
    from chexbench.perf.record import record_section

    start = time.perf_counter()
    rows = measure_generation(size=size, images=images)
    lines = ["| site | format | images | render img/s | render + encode img/s |", "|---|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.site} | {r.fmt} | {r.images} | {r.render_per_s:.1f} | {r.total_per_s:.1f} |")
    body = (
        "\n".join(lines)
        + f"\n\nImages per CPU-second (one process, one BLAS thread) of {size} px wide frontal images of a"
        " sampled cohort (findings as in the site's real label statistics); encode = JPEG (CheXpert) or"
        " PNG (NIH, Indiana) to memory. `chexbench data synth` renders in one process per core."
    )
    command = f"chexbench bench phantom --size {size} --images {images}" + (
        f" --output {shlex.quote(str(output))}" if output else ""
    )
    file = record_section("Phantom generation", body, command, output)
    console.print(body, highlight=False)
    console.print(f"written to {file} ({time.perf_counter() - start:.1f} s)")
