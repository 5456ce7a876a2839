"""``chexbench bench throughput`` and the GPU-hours estimate of ``plan``."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from chexbench.cli import app
from chexbench.perf.throughput import (
    BENCH_POOL_IMAGES,
    H100_TARGETS,
    Measurement,
    contrastive_model,
    estimate_gpu_hours,
    input_bound,
    markdown,
    measure_loader,
    measure_mode,
    recorded_measurements,
)
from chexbench.spec.parse import parse_grid

CPU = torch.device("cpu")


def _m(backbone: str, mode: str, rate: float, device: str = "cpu (2 cores)") -> Measurement:
    return Measurement(device, backbone, mode, 8, 32, rate, 100.0)


def test_markdown_embeds_measurements_that_read_back_and_flags_input_bound():
    rows = [
        _m("-", "loader:light", 50.0),
        _m("-", "loader:views", 500.0),
        _m("r", "finetune", 100.0),
        _m("r", "simclr", 40.0),
    ]
    assert input_bound(rows) == {("r", "finetune"): True, ("r", "simclr"): False}
    text = "# Performance\n\n## t\n\n" + markdown(rows) + "\n\n## other\n"
    assert recorded_measurements(text) == rows
    assert "| r | finetune | 8 | 32 | 100 | 1.00 |  | 100 | **yes** |" in text
    assert "| r | simclr | 8 | 32 | 40 | 0.40 |  | 100 | no |" in text


@pytest.mark.parametrize(
    ("mode", "backbone"),
    [
        ("finetune", "resnet_tiny"),
        ("linear", "resnet_tiny"),
        ("simclr", "resnet_tiny"),
        ("mocov2", "resnet_tiny"),
        ("byol", "resnet_tiny"),
        ("dino", "vit_tiny"),
        ("mae", "vit_tiny"),
    ],
)
def test_every_mode_runs_on_a_tiny_backbone(mode, backbone, monkeypatch):
    torch.set_num_threads(1)
    if (
        mode == "dino"
    ):  # DINO's 65,536 prototypes (and their AdamW state) cost ~20 s on a busy CPU: fewer here
        from chexbench.spec.registry import STRATEGIES

        monkeypatch.setitem(STRATEGIES.get("dino").options, "out_dim", 1024)
    m = measure_mode(mode, backbone, 4, 32, CPU, steps=1, warmup=1)
    assert m.mode == mode and m.images_per_second > 0 and m.peak_memory_mb > 0 and m.device.startswith("cpu")


def test_mae_is_not_timed_where_it_cannot_run():
    from chexbench.perf.throughput import mode_invalid_reason

    assert (
        mode_invalid_reason("mae", "vit_tiny") is None and mode_invalid_reason("dino", "resnet_tiny") is None
    )
    assert "not one" in mode_invalid_reason("mae", "resnet_tiny")
    assert "convolutional stem" in mode_invalid_reason("mae", "vit_convstem_tiny")


@pytest.mark.parametrize("mode", ["plain:finetune", "plain:linear"])
def test_the_plain_pytorch_loop_runs_and_is_reported_as_the_ratio(mode):
    torch.set_num_threads(1)
    m = measure_mode(mode, "resnet_tiny", 4, 32, CPU, steps=1, warmup=1)
    assert m.mode == mode and m.images_per_second > 0
    harness = _m("resnet_tiny", mode.split(":")[1], 2 * m.images_per_second)
    text = markdown([harness, m])
    assert f"| resnet_tiny | {harness.mode} | 8 | 32 | {harness.images_per_second:,.0f} |" in text
    assert "| 2.00 |" in text  # the harness's step over the plain loop of the same model


@pytest.mark.parametrize("backbone,optimizer", [("resnet_tiny", "sgd"), ("vit_tiny", "adamw")])
def test_the_benchmarked_moco_is_the_model_and_recipe_a_run_of_that_backbone_gets(backbone, optimizer):
    from chexbench.spec.registry import BACKBONES, STRATEGIES

    gen = torch.Generator().manual_seed(0)
    model, opts = contrastive_model("mocov2", BACKBONES.get(backbone).build(32, {}), 16, gen)
    assert opts["pretrain_optimizer"] == optimizer  # MoCo-v2's SGD on a ResNet, MoCo v3's AdamW on a ViT
    assert opts["momentum"] == STRATEGIES.get("mocov2").recipe_for(backbone)["momentum"]
    assert BENCH_POOL_IMAGES - 16 > 65_536 and model.queue.size == 65_536  # the default queue, not capped


def test_loaders_run_and_light_is_faster_than_two_views():
    plain, views = measure_loader("plain", 8, 32, CPU, steps=3), measure_loader("views", 8, 32, CPU, steps=3)
    assert plain.mode == "loader:plain" and views.mode == "loader:views"
    assert plain.images_per_second > views.images_per_second > 0  # two augmented views cost more than a copy


def _planned(backbone: str = "resnet50", epochs: int = 2, fraction: float = 0.1, image_size: int = 224):
    raw = {
        "axes": {
            "strategy": ["scratch", "simclr"],
            "backbone": [backbone],
            "dataset": ["chexpert"],
            "protocol": ["finetune"],
            "label_fraction": [fraction],
            "seed": [0, 1],
        },
        "settings": {"epochs": epochs, "image_size": image_size},
        "strategy": {"simclr": {"pretrain_epochs": 10}},
        "dataset": {"chexpert": {"root": "/nowhere"}},
    }
    return parse_grid(raw, "g.toml").cells()


def test_gpu_hours_from_targets_and_from_measurements():
    planned = _planned()
    est = estimate_gpu_hours(planned, [])
    assert est.cells == 4 and est.pretrain_runs == 1 and "assumed H100 target" in est.source
    n = 19_123  # ceil(191_229 × 0.1)
    rate = H100_TARGETS["resnet50"]
    per_cell = 2 * (n / rate + 0.1 * n / (3 * rate))
    pretrain = 10 * 191_229 / (0.5 * rate)
    assert est.gpu_hours == pytest.approx((4 * per_cell + pretrain) / 3600, rel=1e-6)
    # measured GPU rates replace the targets; CPU measurements are ignored
    gpu = "NVIDIA H100 80GB HBM3"
    measured = [
        Measurement(gpu, "resnet50", mode, 256, 224, r, 1.0)
        for mode, r in (("finetune", rate / 2), ("linear", 1.5 * rate), ("simclr", rate / 4))
    ]
    measured.append(_m("resnet50", "finetune", 1.0))
    slower = estimate_gpu_hours(planned, measured)
    assert gpu in slower.source and slower.gpu_hours == pytest.approx(2 * est.gpu_hours, rel=1e-6)


def test_gpu_hours_scale_a_rate_measured_at_another_size_by_pixels_and_say_so():
    gpu = "NVIDIA H100 80GB HBM3"
    at_224 = [
        _m("resnet50", mode, rate, gpu)
        for mode, rate in (("finetune", 4000.0), ("linear", 12000.0), ("simclr", 2000.0))
    ]
    at_224 = [Measurement(m.device, m.backbone, m.mode, 256, 224, m.images_per_second, 1.0) for m in at_224]
    half = [Measurement(m.device, m.backbone, m.mode, 256, 112, m.images_per_second, 1.0) for m in at_224]
    big = _planned(image_size=448)
    est_224, est_112 = estimate_gpu_hours(big, at_224), estimate_gpu_hours(big, half)
    assert est_112.gpu_hours == pytest.approx(
        4 * est_224.gpu_hours, rel=1e-9
    )  # (112/448)² vs (224/448)² of the same rates
    assert (
        "resnet50 finetune at 448 px: the NVIDIA H100 80GB HBM3 rate at 224 px × (224/448)²"
        in est_224.assumed
    )
    assert len(est_224.assumed) == 3 and "3 rate(s) assumed" in est_224.source
    exact = estimate_gpu_hours(_planned(), at_224)
    assert exact.assumed == [] and exact.source == f"measured on {gpu} (docs/PERFORMANCE.md)"


def test_pretraining_variants_are_timed_at_the_rate_of_the_method_they_run():
    from chexbench.perf.throughput import pretrain_mode
    from chexbench.spec.registry import STRATEGIES

    names = (
        "simclr",
        "simclr_topk",
        "mocov2",
        "mocov2_topk",
        "moco_convstem",
        "scratch",
        "byol",
        "dino",
        "mae",
    )
    modes = {name: pretrain_mode(STRATEGIES.get(name)) for name in names}
    assert modes == {
        "simclr": "simclr",
        "simclr_topk": "simclr",
        "mocov2": "mocov2",
        "mocov2_topk": "mocov2",
        "moco_convstem": "mocov2",
        "scratch": None,
        "byol": "byol",
        "dino": "dino",
        "mae": "mae",
    }


def test_cli_bench_throughput_writes_a_section(tmp_path):
    out = tmp_path / "PERFORMANCE.md"
    res = CliRunner().invoke(
        app,
        [
            "bench",
            "throughput",
            "--backbone",
            "vit_tiny",
            "--mode",
            "finetune",
            "--mode",
            "linear",
            "--batch-size",
            "4",
            "--image-size",
            "32",
            "--steps",
            "1",
            "--warmup",
            "1",
            "--threads",
            "1",
            "--output",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert "## Throughput: training steps and loader (CPU, 32 px)" in text and "pending a GPU run" in text
    rows = recorded_measurements(text)
    assert {(r.backbone, r.mode) for r in rows} == {
        ("-", "loader:plain"),
        ("-", "loader:light"),
        ("-", "loader:views"),
        ("vit_tiny", "finetune"),
        ("vit_tiny", "linear"),
    }
    bad = CliRunner().invoke(app, ["bench", "throughput", "--backbone", "resnet5", "--output", str(out)])
    assert bad.exit_code == 2 and "did you mean" in bad.output
    bad = CliRunner().invoke(app, ["bench", "throughput", "--mode", "swav", "--output", str(out)])
    assert bad.exit_code == 2 and "--mode must be one of" in bad.output


def test_step_profile_gives_cpu_times_and_operator_shares():
    from chexbench.perf.step_profile import BOUND, FLOOR, cpu_ms_per_step, top_ops

    torch.set_num_threads(1)
    ms = cpu_ms_per_step("resnet_tiny", ["finetune", FLOOR, BOUND, "mocov2"], 4, 32, repeats=1, steps=1)
    assert set(ms) == {"finetune", FLOOR, BOUND, "mocov2"} and all(0 < v < float("inf") for v in ms.values())
    assert ms[FLOOR] > ms["finetune"]  # the ideal MoCo step is a fine-tune step and one more forward
    ops = top_ops("resnet_tiny", "mocov2", 4, 32, n=3)
    assert len(ops) == 3 and all(0 < share <= 1 for _, share in ops) and sum(s for _, s in ops) <= 1
    assert [s for _, s in ops] == sorted((s for _, s in ops), reverse=True)
