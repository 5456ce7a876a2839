"""The commands that plan, run and follow a grid: list, plan, run, status."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from chexbench.cli.app import GridOpt, OnlyOpt, ResultsOpt, Table, app, console
from chexbench.cli.submit import print_jobs
from chexbench.core.errors import ChexbenchError, ConfigError, DataError
from chexbench.spec.registry import BACKBONES, REGISTRIES, STRATEGIES

if TYPE_CHECKING:
    import torch

    from chexbench.bench.launch import GridLaunch


@app.command("list")
def list_cmd(
    what: Annotated[
        str,
        typer.Argument(
            help="strategies | backbones | datasets | protocols | grids | all | settings | options"
        ),
    ] = "all",
    name: Annotated[
        str | None,
        typer.Argument(
            help="with `options`: the strategy, backbone, dataset or protocol (default: every one)"
        ),
    ] = None,
    flops: Annotated[
        bool, typer.Option("--flops", help="also count parameters and GFLOPs of each backbone (slow)")
    ] = False,
) -> None:
    """Show what is registered (plugins included), every [settings] key, or a component's options."""
    if what == "settings":
        _print_settings()
        return
    if what == "options":
        _print_options(name)
        return
    if name is not None:
        raise ConfigError(f"`chexbench list {what}` takes no name (only `chexbench list options NAME` does)")
    kinds = list(REGISTRIES) if what == "all" else [what]
    for kind in kinds:
        if kind not in REGISTRIES:
            choices = [*REGISTRIES, "all", "settings", "options"]
            raise ConfigError(f"unknown registry '{kind}'; choose from {', '.join(choices)}")
        table = Table(title=kind, title_justify="left")
        table.add_column("name", style="bold cyan", no_wrap=True)
        show_profile = kind == "backbones" and flops
        if show_profile:
            table.add_column("params (M)", justify="right")
            table.add_column("GFLOPs", justify="right")
        table.add_column("description")
        table.add_column("source", style="dim")
        # the listing needs no torch (built-ins from their declarations); the profile needs the real backbones
        rows = (
            REGISTRIES[kind].listing()
            if not show_profile
            else [(e.name, e.description, e.source) for e in REGISTRIES[kind].entries()]
        )
        for entry_name, description, source in rows:
            extra = _profile_cells(entry_name) if show_profile else []
            table.add_row(entry_name, *extra, escape(description), escape(source))
        console.print(table)


def _print_settings() -> None:
    # lazy: keeps chexbench --help fast
    from chexbench.spec.reference import settings_rows

    title = "[settings] keys (any level of a grid: [settings], [dataset.NAME], …, [[override]])"
    table = Table(title=escape(title), title_justify="left")
    table.add_column("key", style="bold cyan", no_wrap=True)
    table.add_column("type")
    table.add_column("default", no_wrap=True)
    table.add_column("meaning")
    for r in settings_rows():
        table.add_row(r.key, escape(r.type), escape(r.default), escape(r.meaning))
    console.print(table)


def _print_options(name: str | None) -> None:
    # lazy: keeps chexbench --help fast
    from chexbench.spec.reference import OPTION_KINDS, find_components, option_rows, unknown_component_message

    if name is None:
        found = [
            (section, e.obj, e.name)
            for kind, section in OPTION_KINDS.items()
            for e in REGISTRIES[kind].entries()
        ]
    else:
        found = [(section, obj, name) for section, obj in find_components(name)]
        if not found:
            raise ConfigError(unknown_component_message(name))
    for section, obj, entry_name in found:
        rows = option_rows(obj)
        title = f"[{section}.{entry_name}] options"
        if not rows:
            console.print(
                escape(f"{title}: none (the [settings] keys apply; see `chexbench list settings`)"),
                highlight=False,
            )
            continue
        table = Table(title=escape(title), title_justify="left")
        table.add_column("option", style="bold cyan", no_wrap=True)
        table.add_column("type")
        table.add_column("default")
        table.add_column("meaning")
        for r in rows:
            table.add_row(r.key, escape(r.type), escape(r.default), escape(r.meaning or "(undocumented)"))
        console.print(table)


def _profile_cells(name: str) -> list[str]:
    # lazy: keeps chexbench --help fast
    from chexbench.backbones.profile import profile_backbone

    size = int(getattr(BACKBONES.get(name), "profile_size", 224))  # the size the component is built for
    params, gflops = profile_backbone(name, size)
    return [f"{params:.1f}", f"{gflops:.2f} @{size}px"]


@app.command()
def plan(
    grid: GridOpt = "smoke",
    only: OnlyOpt = None,
    results: ResultsOpt = Path("chexbench-results"),
    shards: Annotated[
        int,
        typer.Option(help="also show how --shard i/N would split the grid (cells and GPU-hours per shard)"),
    ] = 0,
    check: Annotated[
        bool,
        typer.Option(
            help=(
                "check datasets (index, splits), weights and leakage first, as run does; --no-check only"
                " plans"
            )
        ),
    ] = True,
) -> None:
    """Print the cells of a grid, what is skipped and why, the shared pretraining runs, each dataset's
    splits and test positives, and a GPU-hours estimate. Refuses (exit 2) what run would refuse."""
    # lazy: keeps chexbench --help fast
    from chexbench.bench.preflight import external_leakage, preflight, split_summaries
    from chexbench.bench.store import CellState, ResultsView
    from chexbench.spec.grid import PlanStatus, parse_only
    from chexbench.spec.parse import load_grid

    g = load_grid(grid)
    planned = g.cells(parse_only(only))
    if check:
        try:
            preflight(planned)  # one line naming every affected cell group, before anything is printed
        except ChexbenchError as e:  # plan can go on without the data: say how
            raise type(e)(
                f"{e} — or plan without checking data and weights: chexbench plan --no-check"
            ) from None
    # one read-only pass over the store (plan moves nothing; a damaged cell shows as to run)
    view = ResultsView(results, cache=False)
    stored = {
        p.cell.cell_id
        for p in planned
        if p.status == PlanStatus.RUN and view.status_of(p.cell.cell_id) == CellState.OK
    }
    table = Table(title=f"grid {g.name}: {g.description}", title_justify="left")
    for col in ("cell", "strategy", "backbone", "dataset", "protocol", "fraction", "seed", "status"):
        table.add_column(col)
    pretrain: dict[str, list[str]] = {}
    for p in planned:
        c = p.cell
        if p.status == "run":
            key = STRATEGIES.get(c.strategy).pretrain_key(c)
            if key is not None:
                # lazy: keeps chexbench --help fast
                from chexbench.strategies.pretrain import run_id_of

                # grouped by the run's own hash, so runs differing only in an option are counted apart
                run = (
                    f"{c.strategy}/{c.backbone}/{c.settings.pretrain_source}/seed{c.effective_pretrain_seed}"
                    f" ({run_id_of(key)})"
                )
                pretrain.setdefault(run, []).append(c.cell_id)
        state = (
            ("[green]done" if c.cell_id in stored else "run")
            if p.status == PlanStatus.RUN
            else f"[yellow]skipped[/]: {escape(p.reason)}"
        )
        table.add_row(
            c.cell_id,
            c.strategy,
            c.backbone,
            c.dataset,
            c.protocol,
            f"{c.label_fraction:g}",
            str(c.seed),
            state,
        )
    if len(planned) <= 400:
        console.print(table)
    counts = Counter(p.status for p in planned)
    done = len(stored)
    console.print(
        f"[bold]{len(planned)} cells[/]: {counts.get('run', 0) - done} to run ({done} already done), "
        f"{counts.get('skipped', 0)} skipped; {len(pretrain)} shared pretraining runs"
    )
    reasons = Counter(p.reason for p in planned if p.status == "skipped")
    for reason, n in reasons.most_common():
        console.print(f"  [yellow]skipped ×{n}[/]: {escape(reason)}")
    for run, ids in sorted(pretrain.items()):
        console.print(f"  pretraining [cyan]{run}[/] serves {len(ids)} cells")
    external = Counter(t for p in planned if p.status == "run" for t in p.external)
    if external:  # settings.evaluate_on: predictions beside the cells', no cells of their own
        console.print(
            "  evaluate_on: "
            + ", ".join(
                f"{n} cell(s) also predict the test split of [cyan]{t}[/]" for t, n in external.items()
            )
        )
    if external and check:
        for leak in external_leakage(
            planned
        ):  # preflight has refused what leaks: these are zeros unless allow_leakage
            pool = (
                f", {leak.shared_with_pretraining} in the pretraining pool"
                if leak.shared_with_pretraining
                else ""
            )
            console.print(
                f"  evaluate_on {escape(leak.source)} → {escape(leak.target)}: of the target's"
                f" {leak.target_test_patients} test patients, {leak.shared_with_source} are patients of"
                f" {escape(leak.source)}{pool} (compared by patient id)"
            )
    if check:
        for summary in split_summaries(planned):
            _print_split_summary(summary)
    _print_gpu_hours(planned)
    if shards > 1:
        _print_shards(planned, shards)


def _print_split_summary(s) -> None:
    """Split sizes and the test split's positives per evaluation label; a warning for thin labels."""
    # lazy: keeps chexbench --help fast
    from chexbench.bench.preflight import MIN_POSITIVE_TEST_PATIENTS

    sizes = " · ".join(
        f"{name} {images:,} images / {patients:,} patients" for name, (images, patients) in s.splits.items()
    )
    cap = f", test capped at {s.max_eval_images} images" if s.max_eval_images else ""
    console.print(
        f"[bold]{escape(s.dataset)}[/] (views {s.views}, uncertainty {s.uncertainty}{cap}): {sizes}"
    )
    table = Table(title=f"{s.dataset}: positives in the test split", title_justify="left")
    for col in ("label", "positive patients", "positive images"):
        table.add_column(col, justify="left" if col == "label" else "right")
    for label, (patients, images) in s.test_positives.items():
        mark = (
            f" [yellow](< {MIN_POSITIVE_TEST_PATIENTS})[/]" if patients < MIN_POSITIVE_TEST_PATIENTS else ""
        )
        table.add_row(label, f"{patients}{mark}", str(images))
    console.print(table)
    thin = s.thin_labels()
    if thin:
        console.print(
            f"  [yellow]warning[/]: {s.dataset}: {', '.join(thin)} {'has' if len(thin) == 1 else 'have'}"
            f" fewer than {MIN_POSITIVE_TEST_PATIENTS} positive test patients; their AUROC intervals will be"
            " wide and unreliable"
        )


def shard_costs(planned):
    """The costs ``run --shard``, ``plan --shards`` and ``submit`` balance shards by (one place, so they
    agree)."""
    # lazy: keeps chexbench --help fast
    from chexbench.perf.throughput import split_costs

    return split_costs(planned)


def _print_shards(planned, count: int) -> None:
    # lazy: keeps chexbench --help fast
    from chexbench.bench.shard import Shard, pretrain_group, shard_cells
    from chexbench.perf.record import performance_file
    from chexbench.perf.throughput import estimate_gpu_hours, recorded_measurements

    file = performance_file()
    measured = recorded_measurements(file.read_text()) if file.exists() else []
    est = estimate_gpu_hours(planned, measured)
    costs = shard_costs(planned)
    table = Table(title=f"--shard i/{count}: balanced by estimated cost", title_justify="left")
    for col in ("shard", "cells", "pretraining runs", "GPU-hours"):
        table.add_column(col, justify="right")
    total = 0.0
    for i in range(count):
        mine = [p for p in shard_cells(planned, Shard(i, count), costs) if p.status == "run"]
        runs = {pretrain_group(p) for p in mine} - {""}
        hours = (
            sum(est.cell_seconds[p.cell.cell_id] for p in mine) + sum(est.run_seconds[r] for r in runs)
        ) / 3600
        total += hours
        table.add_row(f"{i}/{count}", str(len(mine)), str(len(runs)), f"{hours:,.1f}")
    table.caption = (
        f"sum {total:,.1f} GPU-hours = the estimate above (each pretraining run in the shard that trains it)"
    )
    console.print(table)


def _print_gpu_hours(planned) -> None:
    """GPU-hours from the throughput recorded in docs/PERFORMANCE.md (or the H100 targets)."""
    # lazy: keeps chexbench --help fast
    from chexbench.perf.record import performance_file
    from chexbench.perf.throughput import estimate_gpu_hours, recorded_measurements

    file = performance_file()
    measured = recorded_measurements(file.read_text()) if file.exists() else []
    est = estimate_gpu_hours(planned, measured)
    if est.cells:
        console.print(
            f"estimated [bold]{est.gpu_hours:,.1f} GPU-hours[/] for {est.cells} cells and {est.pretrain_runs}"
            f" pretraining runs ({escape(est.source)}; nominal dataset sizes, one GPU per cell), made of:"
        )
        shown = est.derivation[
            : est.pretrain_runs + 10
        ]  # every pretraining run, then the costliest cell groups
        for line in shown:
            console.print(f"  {escape(line)}", highlight=False)
        if len(est.derivation) > len(shown):
            rest = sum(est.cell_seconds.values()) / 3600 - sum(
                _hours_of(line) for line in shown[est.pretrain_runs :]
            )
            console.print(
                f"  … {len(est.derivation) - len(shown)} more cell groups, {rest:,.2f} h together",
                highlight=False,
            )
        for line in est.assumed[:8]:
            console.print(f"  [yellow]assumed[/] {escape(line)}")
        if len(est.assumed) > 8:
            console.print(f"  [yellow]assumed[/] … and {len(est.assumed) - 8} more rates")


#: seconds between progress lines when the output is not a terminal (override: CHEXBENCH_PROGRESS_INTERVAL)
PROGRESS_INTERVAL_S = 60.0


def progress_interval() -> float:
    import os  # lazy: only run needs it

    raw = os.environ.get("CHEXBENCH_PROGRESS_INTERVAL", "")
    try:
        return max(0.0, float(raw)) if raw else PROGRESS_INTERVAL_S
    except ValueError:
        raise ConfigError(f"CHEXBENCH_PROGRESS_INTERVAL must be a number of seconds, got {raw!r}") from None


def _clock() -> str:
    import time  # lazy

    return time.strftime("%H:%M:%S")


class _LineProgress:
    """The StepProgress of a run whose output is a file (a SLURM log, ``nohup``), where Rich draws
    nothing until the end: a plain line when a phase starts (pretraining, fine-tuning, …) and then
    at most every ``interval`` seconds: the phase, its steps done / total, the latest message and
    the time the phase has taken."""

    def __init__(self, out: Console, interval: float, clock=None):
        import time  # lazy

        self.out, self.interval, self.clock = out, interval, clock or time.monotonic
        self.cell, self.phase, self.note, self.done, self.total = "", "", "", 0, 0
        self.started = self.last = self.clock()

    def start(self, description: str, total: int) -> None:
        self.phase, self.total, self.done, self.note = description, total, 0, ""
        self.started = self.clock()
        self._line()

    def advance(self, n: int = 1) -> None:
        self.done += n
        self._maybe()

    def message(self, text: str) -> None:
        self.note = text
        self._maybe()

    def _maybe(self) -> None:
        if self.clock() - self.last >= self.interval:
            self._line()

    def _line(self) -> None:
        self.last = now = self.clock()
        steps = f" step {self.done}/{self.total}" if self.total else ""
        note = f" · {self.note}" if self.note else ""
        took = int(now - self.started)
        self.out.print(
            f"{_clock()} {self.cell}{' · ' if self.cell else ''}{escape(self.phase)}:{steps}{escape(note)} "
            f"({took // 60}m{took % 60:02d}s)",
            highlight=False,
            soft_wrap=True,
        )


def _say_what_was_kept(out: Console, results: Path, ctx, stored: list[str], current) -> None:
    """After Ctrl-C: what this run stored, what was lost, and how to go on."""
    kept = (
        f"{len(stored)} cell(s) finished by this run are stored in {results}"
        if stored
        else f"no cell finished by this run; {results} is unchanged"
    )
    lost = (
        f"; cell {current.cell_id} ({escape(current.label())}) was in progress and is not stored"
        if current is not None
        else ""
    )
    out.print(
        f"[bold yellow]interrupted[/]: {kept}{lost}. Pretraining checkpoints (one per epoch) stay in "
        f"{ctx.pretrain_dir}; run the same command again to resume.",
        highlight=False,
        soft_wrap=True,
    )


def _hours_of(line: str) -> float:
    """The hours a derivation line totals ("… = 1.65 h — …" or "…, 1.65 h — …")."""
    import re  # lazy: only plan needs it

    return float(re.search(r"([\d,.]+) h — ", line).group(1).replace(",", ""))


class _RichStepProgress:
    """Adapts a Rich Progress to the StepProgress protocol for within-cell steps."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.task = progress.add_task("", total=1, visible=False)

    def start(self, description: str, total: int) -> None:
        self.progress.reset(self.task, total=max(total, 1), description=f"  {description}", visible=True)

    def advance(self, n: int = 1) -> None:
        self.progress.advance(self.task, n)

    def message(self, text: str) -> None:
        self.progress.update(self.task, description=f"  {text}")


@app.command()
def run(
    grid: GridOpt = "smoke",
    results: ResultsOpt = Path("chexbench-results"),
    device: Annotated[str, typer.Option(help="auto | cpu | cuda[:N]")] = "auto",
    only: OnlyOpt = None,
    overwrite: Annotated[bool, typer.Option(help="rerun and rewrite cells that already finished")] = False,
    shard: Annotated[
        str | None,
        typer.Option(help="run only shard i of n (0-based, e.g. 0/3); n jobs cover the grid exactly once"),
    ] = None,
    gpus: Annotated[
        int, typer.Option(help="train each cell data-parallel on N GPUs (relaunches under torchrun)")
    ] = 1,
    compile_step: Annotated[
        bool, typer.Option("--compile", help="torch.compile the training step (CUDA)")
    ] = False,
    log: Annotated[
        str | None,
        typer.Option(
            "--log",
            help="experiment trackers, comma-separated: tensorboard | mlflow | wandb, "
            "or none (default: the grid's [settings] log, else tensorboard); never part of a cell id",
        ),
    ] = None,
) -> None:
    """Run every unfinished cell of a grid; finished cells are skipped (resume)."""
    # lazy: keeps chexbench --help fast
    from chexbench.bench.launch import GridLaunch, ranks
    from chexbench.bench.runner import preflight
    from chexbench.bench.shard import Shard
    from chexbench.core.context import resolve_device
    from chexbench.spec.grid import parse_only
    from chexbench.spec.parse import load_grid

    g = load_grid(grid)
    only_map = parse_only(only)
    the_shard = Shard.parse(shard) if shard is not None else None
    if gpus < 1:
        raise ConfigError(f"--gpus must be ≥ 1, got {gpus}")
    dev = resolve_device(device)
    # lazy: keeps chexbench --help fast
    from chexbench.tracking import parse_log

    trackers = parse_log(log, "--log") if log is not None else parse_log(g.log, f"{g.source}: [settings] log")
    planned = g.cells(only_map)
    preflight(
        planned
        # the run's one preflight: a missing data root is one clear error, before anything is printed or
        # written
    )
    launch = GridLaunch(
        g,
        planned,
        results,
        dev,
        argv=tuple(sys.argv[1:]),
        gpus=gpus,
        shard=the_shard,
        costs=shard_costs(planned) if the_shard is not None else None,
        overwrite=overwrite,
        compile=compile_step,
        trackers=None if trackers is None else tuple(trackers),
    )
    if launch.needs_relaunch:
        sys.exit(launch.relaunch())
    with ranks(dev) as rank_device:
        _run_ranks(launch, rank_device)


def _run_ranks(launch: GridLaunch, dev: torch.device) -> None:
    """Run ``launch``'s cells on this rank (``dev``: its device), with progress and a summary on rank 0."""
    # lazy: keeps chexbench --help fast
    from chexbench.bench.launch import sigterm_as_interrupt
    from chexbench.bench.runner import OutcomeStatus, run_grid
    from chexbench.bench.store import CellState, ResultStore
    from chexbench.core import distributed as D
    from chexbench.core.context import NullProgress, RunContext
    from chexbench.core.devices import device_name
    from chexbench.core.paths import cache_dir
    from chexbench.core.tracking import NullTracker
    from chexbench.spec.grid import PlanStatus
    from chexbench.tracking import build_tracker
    from chexbench.tracking.live import LiveStatus

    g, planned, results, the_shard, overwrite = (
        launch.grid,
        launch.cells(),
        launch.results,
        launch.shard,
        launch.overwrite,
    )
    compile_step, trackers = launch.compile, None if launch.trackers is None else list(launch.trackers)
    main = D.is_main()
    out = console if main else Console(quiet=True)
    n_run = sum(p.status == PlanStatus.RUN for p in planned)
    where = f", shard {the_shard}" if the_shard is not None else ""
    ranks = f" × {D.world_size()} ranks" if D.is_distributed() else ""
    # the run's one scan of the store: counted here, decided from in run_grid
    scan = (
        None
        if overwrite
        else ResultStore(results).scan(p.cell.cell_id for p in planned if p.status == PlanStatus.RUN)
    )
    done = sum(state == CellState.OK for state in (scan or {}).values())
    out.print(
        f"grid [bold]{g.name}[/] → {results}: {n_run - done} to run ({done} already done){where}, "
        f"{len(planned) - n_run} skipped, device {dev}{ranks}"
    )
    live = main and out.is_terminal  # a terminal gets Rich's bars; a log file (SLURM, nohup) gets timed lines
    stored: list[str] = []  # cells this run finished and stored (ok or failed): what an interrupt keeps
    current: list = [None]  # the cell being trained
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=out,
        transient=False,
        disable=not live,
    ) as progress:
        to_train = n_run - done
        grid_task = progress.add_task("cells", total=to_train)
        steps = (
            _RichStepProgress(progress)
            if live
            else _LineProgress(out, progress_interval())
            if main
            else NullProgress()
        )
        # --compile: an execution option in the run context, not part of any cell's config (or id)
        # experiment tracking and the live status file: rank 0 only; neither is part of any cell's config (or
        # id)
        live_status = LiveStatus(results, device_name(dev), g.name) if main else None
        tracker = (
            build_tracker(
                trackers,
                results,
                lambda m: out.print(f"[yellow]warning[/]: {escape(m)}"),
                extra=[live_status],
            )
            if live_status is not None
            else NullTracker()
        )
        ctx = RunContext(
            device=dev,
            results_dir=results,
            cache_dir=cache_dir(),
            progress=steps,
            compile=compile_step,
            tracker=tracker,
        )
        started = [0]  # cells started in this run: the count the user sees ("cell 2/2", not "cell 6/6")

        def on_start(i: int, cell) -> None:
            started[0] += 1
            current[0] = cell
            progress.update(grid_task, description=f"cell {started[0]}/{to_train} {cell.label()}")
            if live_status is not None:
                live_status.cell_started(f"{cell.cell_id} {cell.label()}", started[0], to_train)
            if isinstance(steps, _LineProgress):
                steps.cell = f"cell {started[0]}/{to_train} {cell.cell_id}"
                out.print(
                    f"{_clock()} cell {started[0]}/{to_train} {cell.cell_id} {escape(cell.label())}: started",
                    highlight=False,
                    soft_wrap=True,
                )

        def on_end(i: int, cell, outcome) -> None:
            current[0] = None
            if outcome.status == OutcomeStatus.DONE_BEFORE:
                if outcome.reason:  # evaluate_on: external predictions completed (or not) for a finished cell
                    progress.console.print(
                        f"  [cyan]done before[/] {cell.cell_id} {cell.label()}: {escape(outcome.reason)}"
                    )
                return
            if outcome.status in (OutcomeStatus.OK, OutcomeStatus.FAILED):
                stored.append(cell.cell_id)
                if live_status is not None:
                    live_status.cell_ended(outcome.seconds)
            progress.advance(grid_task)
            if outcome.status == OutcomeStatus.OK:
                progress.console.print(
                    f"  [green]ok[/] {cell.cell_id} {cell.label()}  macro AUROC {outcome.macro_auroc:.3f} "
                    f" ({outcome.seconds:.1f}s)" + (f"  {escape(outcome.reason)}" if outcome.reason else "")
                )
            elif outcome.status == OutcomeStatus.FAILED:
                progress.console.print(
                    f"  [red]failed[/] {cell.cell_id} {cell.label()}: {escape(outcome.reason)}"
                )
            elif outcome.status == OutcomeStatus.SKIPPED:
                progress.console.print(
                    f"  [yellow]skipped[/] {cell.cell_id} {cell.label()}: {escape(outcome.reason)}"
                )
            elif outcome.status == OutcomeStatus.ELSEWHERE:
                progress.console.print(f"  [cyan]stored by another worker[/] {cell.cell_id} {cell.label()}")

        try:
            with sigterm_as_interrupt():  # SLURM's time limit / scancel: end as Ctrl-C does, and say so
                summary = run_grid(
                    g,
                    results,
                    ctx,
                    cells=planned,
                    overwrite=overwrite,
                    on_cell_start=on_start,
                    on_cell_end=on_end,
                    checked=True,
                    scan=scan,
                )
        except KeyboardInterrupt:
            progress.stop()
            _say_what_was_kept(out, results, ctx, stored, current[0])
            sys.exit(130)
        finally:
            tracker.close()
    before = summary.count(OutcomeStatus.DONE_BEFORE)
    ran = summary.count(OutcomeStatus.OK) + summary.count(OutcomeStatus.FAILED)
    if ran == 0 and before:
        out.print(f"nothing to train: all {before} runnable cells already finished in {results}")
    out.print(
        f"[bold]done[/]: {summary.count(OutcomeStatus.OK)} ok, {summary.count(OutcomeStatus.FAILED)} failed, "
        f"{before} finished before, {summary.count(OutcomeStatus.ELSEWHERE)} by other workers, "
        f"{summary.count(OutcomeStatus.SKIPPED)} skipped → {results}"
    )
    if summary.count(OutcomeStatus.FAILED):
        sys.exit(1)


@app.command()
def status(
    results: ResultsOpt = Path("chexbench-results"),
    grid: Annotated[
        str | None, typer.Option("--grid", "-g", help="also list the grid's pending and skipped cells")
    ] = None,
    only: OnlyOpt = None,
    failed: Annotated[bool, typer.Option("--failed", help="list only failed cells")] = False,
    pending: Annotated[
        bool, typer.Option("--pending", help="list only pending cells (needs --grid)")
    ] = False,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            help="follow the running workers (host, pid, device, cell, epoch, loss) "
            "and the time left, refreshed every --interval seconds until Ctrl-C",
        ),
    ] = False,
    interval: Annotated[
        float, typer.Option("--interval", help="seconds between refreshes of --watch", min=0.5)
    ] = 5.0,
) -> None:
    """Done / failed / pending / skipped counts per grid, one line per cell with its id, and what is running
    now."""
    if watch:
        _watch(results, grid, only, interval)
        return
    # lazy: keeps chexbench --help fast
    from chexbench.bench.status import ListedStatus, cell_statuses
    from chexbench.bench.store import ResultsView
    from chexbench.spec.grid import parse_only
    from chexbench.spec.parse import load_grid

    if pending and not grid:
        raise ConfigError("--pending needs --grid: a pending cell is a cell of a grid that has no record yet")
    if not results.is_dir():  # as `report` says it: a mistyped folder is not "no cells"
        raise DataError(
            f"results directory not found: {results}" if not results.exists() else f"{results}: not a folder"
        )
    # read-only: status looks, it never moves a damaged file (the next `run` does); each is told once
    store = ResultsView(
        results, report=lambda message: console.print(f"[red]{escape(message)}[/]", soft_wrap=True)
    )
    planned = load_grid(grid).cells(parse_only(only)) if grid else None
    cells = cell_statuses(store, planned, grid_name=load_grid(grid).name if grid else None)
    table = Table(title=f"results in {results}", title_justify="left")
    for col in ("grid", "done", "failed", "pending", "skipped"):
        table.add_column(col, justify="right" if col != "grid" else "left")
    counts: dict[str, Counter] = {}
    for c in cells:
        counts.setdefault(c.grid, Counter())[c.status] += 1
    for name, c in sorted(counts.items()):
        table.add_row(
            name,
            str(c[ListedStatus.DONE]),
            str(c[ListedStatus.FAILED]),
            str(c[ListedStatus.PENDING]) if grid else "-",
            str(c[ListedStatus.SKIPPED]) if grid else "-",
        )
    console.print(table)
    wanted = {s for s, on in ((ListedStatus.FAILED, failed), (ListedStatus.PENDING, pending)) if on}
    shown = [c for c in cells if not wanted or c.status in wanted]
    if not shown:
        console.print(f"no {' or '.join(sorted(wanted))} cells" if wanted else "no cells")
    else:
        cell_table = Table(title="cells", title_justify="left")
        for col in (
            "cell",
            "status",
            "strategy",
            "backbone",
            "dataset",
            "protocol",
            "fraction",
            "seed",
            "reason",
        ):
            cell_table.add_column(col, no_wrap=col in ("cell", "status"))
        colors = {
            ListedStatus.DONE: "green",
            ListedStatus.FAILED: "red",
            ListedStatus.PENDING: "white",
            ListedStatus.SKIPPED: "yellow",
        }
        for c in shown:
            cell_table.add_row(
                c.cell_id,
                f"[{colors[c.status]}]{c.status}[/]",
                c.strategy,
                c.backbone,
                c.dataset,
                c.protocol,
                f"{c.label_fraction:g}",
                str(c.seed),
                escape(c.reason),
            )
        console.print(cell_table)
    quarantined = (
        [p for p in (results / "quarantine").rglob("*.parquet")] if (results / "quarantine").is_dir() else []
    )
    if quarantined:
        console.print(
            f"  [red]{len(quarantined)} damaged file(s)[/] kept in {results / 'quarantine'} (reasons in"
            " log.jsonl)"
        )

    print_jobs(results)  # the latest `chexbench submit` jobs of this results directory, if any
    running = _running_view(
        results, sum(c.status == ListedStatus.PENDING for c in cells) if grid else None, store
    )
    if running is not None:
        console.print(running)


def _running_view(results: Path, pending: int | None, view=None, always: bool = False):
    """A table of the running workers and a line with the grid's time left; None when nothing runs (unless
    ``always``).
    ``view``: the status's :class:`~chexbench.bench.store.ResultsView` (its records are read once)."""
    # lazy: keeps chexbench --help fast
    from rich.console import Group

    from chexbench.bench.status import grid_eta, running_workers
    from chexbench.bench.store import ResultsView

    workers = running_workers(results)
    if not workers and not always:
        return None
    table = Table(title=f"running now in {results}", title_justify="left")
    for col in ("host", "pid", "device", "cell", "training", "epoch", "loss", "updated"):
        table.add_column(col, justify="right" if col in ("pid", "epoch", "loss", "updated") else "left")
    for w in workers:
        place = f"{w.cell_index}/{w.cells_total} " if w.cells_total else ""
        epoch = "—" if w.epoch is None else f"{w.epoch + 1}/{w.epochs}" if w.epochs else str(w.epoch + 1)
        loss = "—" if w.loss is None else f"{w.loss:.4f}"
        updated = f"{w.since_update_s:.0f}s ago" + (" [yellow](stale?)[/]" if w.stale else "")
        table.add_row(
            escape(w.host),
            str(w.pid),
            escape(w.device),
            escape(place + (w.cell or "between cells")),
            escape(w.run or "—"),
            epoch,
            loss,
            updated,
        )
    eta = grid_eta(workers, view if view is not None else ResultsView(results), pending)
    if eta.seconds is None:
        line = f"time left: unknown ({eta.cells_left} cell(s) left; {eta.basis})"
    else:
        line = (
            f"time left: about [bold]{_duration(eta.seconds)}[/] for {eta.cells_left} cell(s) at"
            f" {_duration(eta.per_cell_s)} per cell on {max(1, sum(not w.stale for w in workers))} worker(s)"
            f" ({escape(eta.basis)})"
        )
    if pending is None:
        line += "; --grid counts the cells no worker has queued yet"
    return Group(table if workers else "no worker is running in this results folder", line)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(round(seconds))
    return (
        f"{s // 3600}h{s % 3600 // 60:02d}m"
        if s >= 3600
        else f"{s // 60}m{s % 60:02d}s"
        if s >= 60
        else f"{s}s"
    )


def _watch(results: Path, grid: str | None, only, interval: float) -> None:
    """``status --watch``: the running workers and the time left, redrawn every ``interval`` s until
    Ctrl-C."""
    # lazy: keeps chexbench --help fast
    import time

    from rich.live import Live

    from chexbench.bench.status import ListedStatus, cell_statuses
    from chexbench.bench.store import ResultsView
    from chexbench.spec.grid import parse_only
    from chexbench.spec.parse import load_grid

    planned = load_grid(grid).cells(parse_only(only)) if grid else None

    def view():
        store = ResultsView(results)  # read-only, one per refresh: each refresh reads the folder once
        pending = None
        if planned is not None:
            pending = sum(c.status == ListedStatus.PENDING for c in cell_statuses(store, planned))
        return _running_view(results, pending, store, always=True)

    try:
        with Live(view(), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                live.update(view(), refresh=True)
    except KeyboardInterrupt:
        pass
