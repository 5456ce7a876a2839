"""CPU-time ratios of the training steps and the profiler's top operators of one step.

``python -m chexbench.perf.step_profile [--backbone NAME …] [--mode mocov2] [--repeats 4]``

Wall-clock rates on a shared machine measure the neighbours as much as the step; this
measures process CPU time per step (one thread), alternating the modes within one run and
keeping the fastest step of ``--repeats`` rounds, then profiles one mode with ``torch.profiler``
(operators grouped by input shape, share of the step's self CPU time). It uses the steps of
:mod:`chexbench.perf.throughput`, so the numbers are those of ``chexbench bench throughput``
without the noise. ``finetune+key`` is the ideal MoCo step (a fine-tune step plus one no-grad
forward of the key encoder): what MoCo takes beyond it is the method's own work (projectors,
momentum update, the queue's InfoNCE) and any waste. ``finetune+key+queue`` adds the InfoNCE
over the queue a run gets (forward and backward, the strategy's loss on the model's own queue):
the fastest a MoCo step can be without changing its arithmetic, so ``fine-tune / that`` bounds
the ratio from above.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from chexbench.perf.throughput import _contrastive_step, _finetune_step, contrastive_model
from chexbench.spec.registry import BACKBONES
from chexbench.strategies.losses import info_nce
from chexbench.strategies.mocov2 import MoCoV2
from chexbench.strategies.pretrain import split_forward


def _step(mode: str, backbone: str, batch_size: int, image_size: int) -> Callable[[], Any]:

    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    bb = BACKBONES.get(backbone).build(image_size, {})
    device = torch.device("cpu")
    if mode == "finetune":
        return _finetune_step(bb, batch_size, image_size, device, False, gen)
    if mode == FLOOR:
        return _floor_step(bb, batch_size, image_size, device, gen)
    if mode == BOUND:
        return _bound_step(bb, batch_size, image_size, device, gen)
    return _contrastive_step(mode, bb, batch_size, image_size, device, False, gen)


#: the issue's ideal MoCo step: a fine-tune step plus one no-grad forward of a key encoder (train-mode
#: BatchNorm in MoCo's shuffle-BN groups); no projector, momentum update, queue or loss
FLOOR = "finetune+key"


def _floor_step(
    bb: torch.nn.Module, batch_size: int, image_size: int, device: torch.device, gen: torch.Generator
) -> Callable[[], Any]:

    key = copy.deepcopy(bb).requires_grad_(False)
    finetune = _finetune_step(bb, batch_size, image_size, device, False, gen)
    x = torch.rand(batch_size, 1, image_size, image_size, generator=gen)
    splits = int(MoCoV2.options["bn_splits"])

    def step() -> None:
        finetune()
        with torch.no_grad():
            split_forward(key, x, splits)

    return step


#: the ideal step plus MoCo's InfoNCE over its queue (forward and backward): MoCo's arithmetic without
#: its projectors and momentum update, the ratio's upper bound for a given queue
BOUND = "finetune+key+queue"


def _bound_step(
    bb: torch.nn.Module, batch_size: int, image_size: int, device: torch.device, gen: torch.Generator
) -> Callable[[], Any]:

    model, opts = contrastive_model(
        "mocov2", copy.deepcopy(bb), batch_size, gen
    )  # the queue a run of this backbone gets
    floor = _floor_step(bb, batch_size, image_size, device, gen)
    dim = model.queue.keys.shape[1]
    q = torch.randn(batch_size, dim, generator=gen).requires_grad_(True)
    k = torch.randn(batch_size, dim, generator=gen)
    temperature = float(opts["temperature"])

    def step() -> None:
        floor()
        info_nce(q, k, model.queue.keys, temperature, queue_normalized=True).backward()
        q.grad = None

    return step


def cpu_ms_per_step(
    backbone: str, modes: list[str], batch_size: int, image_size: int, repeats: int, steps: int = 5
) -> dict[str, float]:
    """CPU milliseconds of the fastest single step of each mode, over ``repeats`` rounds that
    alternate the modes (``steps`` steps of each, each step timed on its own). Neighbours on a
    shared machine only ever add time (cache and memory-bandwidth contention), so the fastest
    step is the least disturbed estimate; a round's total would carry every disturbance in it."""
    fns = {m: _step(m, backbone, batch_size, image_size) for m in modes}
    for fn in fns.values():
        for _ in range(3):
            fn()
    best = {m: float("inf") for m in modes}
    for _ in range(repeats):
        for m, fn in fns.items():
            for _ in range(steps):
                t0 = time.process_time()
                fn()
                best[m] = min(best[m], (time.process_time() - t0) * 1000)
    return best


def top_ops(
    backbone: str, mode: str, batch_size: int, image_size: int, n: int = 6
) -> list[tuple[str, float]]:
    """The ``n`` operators (name and input shapes) with the largest share of self CPU time."""

    fn = _step(mode, backbone, batch_size, image_size)
    for _ in range(3):
        fn()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(5):
            fn()
    events = sorted(prof.key_averages(group_by_input_shape=True), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    return [(f"{e.key} {str(e.input_shapes)[:70]}", e.self_cpu_time_total / total) for e in events[:n]]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m chexbench.perf.step_profile", description=__doc__.splitlines()[0]
    )
    p.add_argument("--backbone", action="append", help="default: resnet_tiny and vit_tiny")
    p.add_argument("--mode", default="mocov2", help="the mode to profile (default mocov2)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=4)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    for b in args.backbone or ["resnet_tiny", "vit_tiny"]:
        ms = cpu_ms_per_step(
            b, ["finetune", FLOOR, BOUND, "mocov2", "simclr"], args.batch_size, args.image_size, args.repeats
        )
        ratios = ", ".join(f"{m} {ms['finetune'] / ms[m]:.2f}×" for m in (FLOOR, BOUND, "mocov2", "simclr"))
        print(
            f"{b}: CPU ms/step "
            + ", ".join(f"{m} {v:.1f}" for m, v in ms.items())
            + f"; of fine-tune: {ratios}"
        )
        for op, share in top_ops(b, args.mode, args.batch_size, args.image_size):
            print(f"  {share:5.1%}  {op}")


if __name__ == "__main__":
    main()
