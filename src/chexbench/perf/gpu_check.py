"""``make gpu-check``: everything a CPU cannot prove about the CUDA path, in one run of minutes.

On a CUDA machine, with no download, within a time budget (default 7.5 minutes):

1. the ``gpu``-marked tests (fused AdamW, pinned non-blocking copies, SyncBN, bf16 on CUDA);
2. ``chexbench bench throughput`` of ``resnet50``, ``vit_b16`` and ``vit_b16_convstem`` at
   224 px in bf16: fine-tune, linear, SimCLR and MoCo-v2 steps beside a textbook PyTorch
   loop of the same model (``plain:*``), the loader's rates and the input-bound flag, peak
   memory per mode;
3. a small real grid — phantoms at 224 px, one epoch of pretraining and of fine-tuning per
   strategy — run through the CLI, with its report (a fresh results folder each run);
4. the step modes again under ``torch.compile``, as far as the budget allows;
5. all numbers, the GPU's name and this command written to a ``docs/PERFORMANCE.md``
   section whose embedded measurements ``chexbench plan`` uses for its GPU-hours estimate.

Without CUDA it stops at once with one line (exit 2). It exits 1 when a gpu test, a measurement
(other than one the budget left out) or a grid cell failed, or the grid did not finish. The pieces that need
no GPU (argument
handling, the targets' verdicts, the section's text) are tested on the CPU; ``--device cpu``
rehearses the whole script with tiny backbones (e.g. ``--backbone resnet_tiny --grid-backbone
resnet_tiny --grid-backbone vit_convstem_tiny --image-size 32 --batch-size 4 --no-compile``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from chexbench.bench.record import SKIPPED_FILE
from chexbench.bench.store import ResultStore
from chexbench.core.paths import repo_root
from chexbench.perf.record import record_section
from chexbench.perf.throughput import Measurement, input_bound, measure_loader, measure_mode
from chexbench.perf.throughput import markdown as throughput_markdown
from chexbench.spec.registry import BACKBONES as REGISTERED

BACKBONES = ("resnet50", "vit_b16", "vit_b16_convstem")
STEP_MODES = ("finetune", "linear", "simclr", "mocov2", "plain:finetune", "plain:linear")
#: compiled measurements, mode by mode over the backbones, while the budget lasts (compiling costs ~30-60 s
#: each)
COMPILED_MODES = ("finetune", "plain:finetune", "linear", "mocov2", "simclr")
#: the issue's targets on an H100/H200 at 224 px, bf16 (images/s)
FINETUNE_TARGETS = {"resnet50": 5000.0, "vit_b16": 3000.0}
RATIO_TARGETS = {"mocov2": 0.7, "simclr": 0.5}
SECTION_TITLE = "GPU check"
#: seconds kept for the small grid (run and report) after the uncompiled measurements
GRID_SECONDS = 150.0
#: the least budget a compiled measurement starts with
COMPILE_SECONDS = 75.0
NO_CUDA = (
    "gpu-check: CUDA is not available here (torch {torch}, {why}); run `make gpu-check` on a machine with an"
    " NVIDIA GPU"
)


@dataclass
class GridOutcome:
    cells_ok: int = 0
    cells_failed: int = 0
    cells_skipped: int = 0
    seconds: float = 0.0
    report: str = ""
    failures: list[str] = field(default_factory=list)
    error: str = ""
    image_size: int = 224


@dataclass
class CheckResult:
    gpu_name: str
    command: str
    tests_summary: str = "not run"
    tests_ok: bool | None = None
    measurements: list[Measurement] = field(default_factory=list)
    not_measured: list[str] = field(default_factory=list)  # "backbone mode (compiled): time budget spent"
    grid: GridOutcome | None = None
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)  # "backbone mode (compiled): exception" — fails the check


# -- arguments -----------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m chexbench.perf.gpu_check", description=__doc__.splitlines()[0]
    )
    p.add_argument("--budget-s", type=float, default=450.0, help="wall-clock budget in seconds (default 450)")
    p.add_argument("--batch-size", type=int, default=256, help="images per step (default 256)")
    p.add_argument("--image-size", type=int, default=224, help="pixels (default 224)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per measurement (default 10)")
    p.add_argument(
        "--backbone",
        action="append",
        help="backbone(s) to measure (default: resnet50, vit_b16, vit_b16_convstem)",
    )
    p.add_argument("--no-tests", action="store_true", help="skip the gpu-marked tests")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile measurements")
    p.add_argument("--no-grid", action="store_true", help="skip the small real grid")
    p.add_argument(
        "--grid-patients", type=int, default=150, help="phantom patients of the small grid (default 150)"
    )
    p.add_argument(
        "--work-dir", type=Path, default=Path("gpu-check"), help="results, cache and report of the small grid"
    )
    p.add_argument(
        "--output", type=Path, default=None, help="PERFORMANCE.md to update (default: the checkout's docs/)"
    )
    p.add_argument(
        "--grid-backbone",
        action="append",
        help="backbones of the small grid (default: resnet50, vit_b16_convstem)",
    )
    p.add_argument(
        "--device", default="cuda", help="cuda (default); cpu only rehearses the script with tiny backbones"
    )
    args = p.parse_args(argv)

    for name in [*(args.backbone or []), *(args.grid_backbone or [])]:
        if name not in REGISTERED:
            p.error(f"--backbone/--grid-backbone: {REGISTERED.unknown_message(name)}")
    if args.device not in ("cuda", "cpu"):
        p.error(f"--device must be cuda or cpu, got {args.device!r}")
    if (
        args.budget_s <= 0
        or args.batch_size < 2
        or args.image_size < 32
        or args.steps < 1
        or args.grid_patients < 20
    ):
        p.error("need --budget-s > 0, --batch-size ≥ 2, --image-size ≥ 32, --steps ≥ 1, --grid-patients ≥ 20")
    return args


def cuda_problem() -> str | None:
    """Why this machine cannot run the check (one line), or None."""

    if not torch.cuda.is_available():
        why = "built without CUDA" if torch.version.cuda is None else "no CUDA device visible"
        return NO_CUDA.format(torch=torch.__version__, why=why)
    return None


# -- verdicts and the PERFORMANCE.md section ------------------------------------------------
def target_verdicts(rows: list[Measurement]) -> list[str]:
    """One line per target of the issue: measured value, target, met or not (uncompiled rows)."""
    rate = {(r.backbone, r.mode): r.images_per_second for r in rows if not r.compiled}
    out = []
    for b, target in FINETUNE_TARGETS.items():
        if (b, "finetune") in rate:
            v = rate[(b, "finetune")]
            out.append(
                f"{b} fine-tune {v:,.0f} images/s (target ≥ {target:,.0f}):"
                f" {'met' if v >= target else '**not met**'}"
            )
    for b in BACKBONES:
        ft = rate.get((b, "finetune"))
        for mode, target in RATIO_TARGETS.items():
            if ft and (b, mode) in rate:
                ratio = rate[(b, mode)] / ft
                out.append(
                    f"{b} {mode} {ratio:.2f}× fine-tune (target ≥ {target}×):"
                    f" {'met' if ratio >= target else '**not met**'}"
                )
        plain = rate.get((b, "plain:finetune"))
        if ft and plain:
            out.append(f"{b} fine-tune step {ft / plain:.2f}× the plain PyTorch loop of the same model")
    bound = [f"{b} {m}" for (b, m), flag in input_bound([r for r in rows if not r.compiled]).items() if flag]
    if any(r.mode.startswith("loader:") for r in rows):
        out.append(
            "loader never the bottleneck: "
            + ("met" if not bound else f"**not met** (input-bound: {', '.join(bound)})")
        )
    return out


def render_section(result: CheckResult) -> str:
    """The body of the ``GPU check`` section (without the heading/machine/command lines)."""
    lines = [
        f"- GPU: {result.gpu_name}",
        f"- total time: {result.seconds:.0f} s",
        f"- gpu-marked tests: {result.tests_summary}",
        "",
    ]
    verdicts = target_verdicts(result.measurements)
    if verdicts:
        lines += ["Targets:", "", *[f"- {v}" for v in verdicts], ""]
    if result.measurements:
        cpu = result.measurements[0].device.startswith("cpu")
        policy = "fp32, NCHW on the CPU" if cpu else "bf16, channels_last"
        lines += [
            f"Throughput ({policy}; `plain:*` = a textbook PyTorch loop of the same model):",
            "",
            throughput_markdown(result.measurements),
            "",
        ]
    if result.errors:
        lines += ["**Failed** (the check exits 1):", "", *[f"- {x}" for x in result.errors], ""]
    if result.not_measured:
        lines += ["Not measured (time budget):", "", *[f"- {x}" for x in result.not_measured], ""]
    g = result.grid
    if g is not None:
        lines += [
            (
                f"Small real grid (phantoms at {g.image_size} px, one epoch of pretraining and fine-tuning"
                " per strategy):"
            ),
            "",
        ]
        if g.error:
            lines.append(f"- **did not finish**: {g.error}")
        lines.append(
            f"- cells: {g.cells_ok} ok, {g.cells_failed} failed, {g.cells_skipped} skipped, in"
            f" {g.seconds:.0f} s"
        )
        lines += [f"- failed: {f}" for f in g.failures]
        if g.report:
            lines.append(f"- report: `{g.report}`")
    lines += ["", f"<!-- gpu-check-json {json.dumps(_summary_json(result), separators=(',', ':'))} -->"]
    return "\n".join(lines)


def _summary_json(result: CheckResult) -> dict[str, Any]:
    return {
        "gpu": result.gpu_name,
        "tests_ok": result.tests_ok,
        "seconds": round(result.seconds, 1),
        "grid": asdict(result.grid) if result.grid else None,
        "not_measured": result.not_measured,
        "errors": result.errors,
    }


def write_section(result: CheckResult, path: Path | None = None) -> Path:

    return record_section(
        f"{SECTION_TITLE} ({result.gpu_name})", render_section(result), result.command, path
    )


# -- the parts that need CUDA ---------------------------------------------------------------
class Budget:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def gpu_test_files(tests: Path) -> list[Path]:
    """The test modules that hold ``gpu``-marked tests. Only these are collected: a GPU image's
    python need not have the development-only packages other test modules import (grimp,
    torchxrayvision), and one module failing to import would fail the whole pytest run."""
    return sorted(f for f in tests.rglob("test_*.py") if "pytest.mark.gpu" in f.read_text(encoding="utf-8"))


def run_gpu_tests(repo: Path | None, timeout: float) -> tuple[str, bool | None]:
    tests = repo / "tests" if repo else None
    if tests is None or not tests.is_dir():
        return "not run (no tests/ folder: not a source checkout)", None
    files = gpu_test_files(tests)
    if not files:
        return "not run (no gpu-marked tests found under tests/)", None
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-m",
        "gpu",
        "-p",
        "no:cacheprovider",
        *(str(f.relative_to(repo)) for f in files),
    ]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=max(timeout, 10), cwd=repo)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout:.0f} s", False
    tail = [ln for ln in out.stdout.splitlines() if ln.strip()][-1:] or ["(no output)"]
    return f"`{shlex.join(cmd[2:])}` → {tail[0]}", out.returncode == 0


def measure_all(args: argparse.Namespace, budget: Budget, result: CheckResult) -> None:
    """The loader's rates and every uncompiled step mode, while ``budget`` lasts."""

    dev = torch.device(args.device)
    for kind in ("plain", "light", "views"):
        try:
            result.measurements.append(
                measure_loader(kind, args.batch_size, args.image_size, dev, args.steps)
            )
            _say(f"loader:{kind} {result.measurements[-1].images_per_second:,.0f} images/s")
        except Exception as e:  # a loader failure must not cost the step measurements
            result.errors.append(f"loader:{kind}: {_error_line(e)}")
            _say(result.errors[-1])
    for b in args.backbone or list(BACKBONES):
        for m in STEP_MODES:
            if budget.left() < 30:
                result.not_measured.append(f"{b} {m}: time budget spent")
                continue
            _measure(result, m, b, args, dev, compiled=False)


def measure_compiled(args: argparse.Namespace, budget: Budget, result: CheckResult) -> None:
    """The ``torch.compile`` measurements, :data:`COMPILED_MODES` over the backbones, while ``budget``
    lasts."""

    dev = torch.device(args.device)
    for b, m in ((b, m) for m in COMPILED_MODES for b in args.backbone or list(BACKBONES)):
        if budget.left() < COMPILE_SECONDS:  # a compile of a ViT-B step can take a minute
            result.not_measured.append(f"{b} {m} (compiled): time budget spent")
            continue
        _measure(result, m, b, args, dev, compiled=True)


def _measure(
    result: CheckResult, mode: str, backbone: str, args: argparse.Namespace, dev: Any, compiled: bool
) -> None:

    try:
        m = measure_mode(
            mode, backbone, args.batch_size, args.image_size, dev, args.steps, 3, compile_step=compiled
        )
        result.measurements.append(m)
        _say(
            f"{backbone} {mode}{' (compiled)' if compiled else ''}: {m.images_per_second:,.0f} images/s, peak"
            f" {m.peak_memory_mb:,.0f} MB"
        )
    except (
        Exception
    ) as e:  # one failing mode (e.g. out of memory) must not stop the others; it fails the check
        result.errors.append(f"{backbone} {mode}{' (compiled)' if compiled else ''}: {_error_line(e)}")
        _say(result.errors[-1])
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        torch._dynamo.reset()


def grid_toml(patients: int, image_size: int, backbones: list[str] | None = None) -> str:
    """The small real grid: every strategy on ResNet-50 and ConvStem ViT-B, one epoch each."""
    names = ", ".join(f'"{b}"' for b in backbones or ["resnet50", "vit_b16_convstem"])
    return f"""name = "gpu-check"
description = "make gpu-check: {image_size}-px phantoms, one epoch of pretraining and of fine-tuning each"

[axes]
strategy = ["scratch", "imagenet", "simclr", "mocov2", "moco_convstem"]
backbone = [{names}]
dataset = ["phantom-chexpert"]
protocol = ["finetune", "linear"]
label_fraction = [1.0]
seed = [0]

[settings]
image_size = {image_size}
epochs = 1
warmup_epochs = 0.5                 # a warmup as long as the run is refused (never clamped)
batch_size = 64
eval_batch_size = 256
uncertainty = "zeros"
pretrain_source = "phantom-chexpert"

[dataset.phantom-chexpert]
patients = {patients}
size = {image_size}

[protocol.linear]
epochs = 5

[strategy.simclr]
pretrain_epochs = 1
pretrain_warmup_epochs = 0.5        # the recipes' 10 / 40 warmup epochs do not fit one epoch
pretrain_batch_size = 64
probe_every = 0

[strategy.mocov2]                   # also moco_convstem's: an alias of mocov2 on the conv-stem ViT
pretrain_epochs = 1
pretrain_warmup_epochs = 0.5
pretrain_batch_size = 64
probe_every = 0
"""


def run_grid(args: argparse.Namespace, budget: Budget) -> GridOutcome:

    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    grid = work / "gpu_check.toml"
    grid.write_text(grid_toml(args.grid_patients, args.image_size, args.grid_backbone))
    results = work / "results"
    shutil.rmtree(
        results, ignore_errors=True
    )  # this run's cells only: an earlier run's records are not counted
    env = {**os.environ, "CHEXBENCH_CACHE": str(work / "cache"), "HF_HUB_OFFLINE": "1"}
    chex = [sys.executable, "-m", "chexbench"]
    outcome = GridOutcome(image_size=args.image_size)
    t0 = time.monotonic()
    try:
        if budget.left() < 60:
            raise subprocess.TimeoutExpired("chexbench run", 0)
        # the report needs ≈ 20 s: the run gets the rest, neither outlives the budget
        run = subprocess.run(
            [*chex, "run", "--grid", str(grid), "--results", str(results), "--device", args.device],
            capture_output=True,
            text=True,
            env=env,
            timeout=budget.left() - 25,
        )
        if run.returncode != 0:
            outcome.error = (
                f"chexbench run exited {run.returncode}:"
                f" {(run.stderr.strip().splitlines() or [''])[-1][:200]}"
            )
        rep = subprocess.run(
            [*chex, "report", "--results", str(results)],
            capture_output=True,
            text=True,
            env=env,
            timeout=max(budget.left(), 1),
        )
        if rep.returncode == 0 and (results / "report.md").exists():
            outcome.report = str(results / "report.md")
        elif not outcome.error:
            outcome.error = (
                f"chexbench report exited {rep.returncode}:"
                f" {(rep.stderr.strip().splitlines() or [''])[-1][:200]}"
            )
    except subprocess.TimeoutExpired as e:
        outcome.error = f"time budget spent ({e.timeout:.0f} s left for it)"
    outcome.seconds = time.monotonic() - t0

    records = ResultStore(results).records() if results.exists() else pd.DataFrame()
    for _, rec in records.iterrows():
        if rec["status"] == "ok":
            outcome.cells_ok += 1
        else:
            outcome.cells_failed += 1
            outcome.failures.append(
                f"{rec['strategy']} × {rec['backbone']} × {rec['protocol']}:"
                f" {str(rec['failure_reason'])[:160]}"
            )
    skipped = results / SKIPPED_FILE
    if skipped.exists():
        outcome.cells_skipped = len(pd.read_parquet(skipped))
    return outcome


def _error_line(e: Exception) -> str:
    """``Type: first line of the message`` (at most 160 characters of it)."""
    return f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"


def _say(text: str) -> None:
    print(f"  {text}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    problem = cuda_problem() if args.device == "cuda" else None
    if problem:
        print(problem, file=sys.stderr)
        return 2

    t0 = time.monotonic()
    budget = Budget(args.budget_s)
    command = "make gpu-check  # python -m chexbench.perf.gpu_check " + shlex.join(
        argv if argv is not None else sys.argv[1:]
    )
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU rehearsal (not a GPU result)"
    result = CheckResult(gpu_name=name, command=command.strip())
    print(f"gpu-check on {result.gpu_name}, budget {args.budget_s:.0f} s", flush=True)
    if not args.no_tests:
        result.tests_summary, result.tests_ok = run_gpu_tests(repo_root(), min(90.0, budget.left() / 4))
        _say(f"gpu tests: {result.tests_summary}")
    # the compiled measurements are last: what the budget leaves after the uncompiled ones and the grid
    grid_reserve = 0.0 if args.no_grid else GRID_SECONDS
    measure_all(args, Budget(max(budget.left() - grid_reserve, 30.0)), result)
    if not args.no_grid:
        grid_budget = Budget(
            min(budget.left(), GRID_SECONDS + max(budget.left() - GRID_SECONDS - 2 * COMPILE_SECONDS, 0))
        )
        result.grid = run_grid(args, grid_budget)
        _say(
            f"grid: {result.grid.cells_ok} ok, {result.grid.cells_failed} failed, {result.grid.cells_skipped}"
            " skipped" + (f" ({result.grid.error})" if result.grid.error else "")
        )
    if not args.no_compile:
        measure_compiled(args, budget, result)
    result.seconds = time.monotonic() - t0
    path = write_section(result, args.output)
    for v in target_verdicts(result.measurements):
        print(f"  {v}")
    print(f"written to {path}")
    failed = (
        result.tests_ok is False
        or bool(result.errors)
        or (result.grid is not None and (result.grid.error or result.grid.cells_failed))
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
