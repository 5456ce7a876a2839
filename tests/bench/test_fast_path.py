"""The CUDA fast path, driven on the CPU: bf16 autocast, channels_last and torch.compile in the
project's own training and evaluation steps (the fine-tuning protocol, the linear probe's
extraction, the pretraining loop), the optimizer's fused/foreach choice, and SSL losses under
autocast equal to fp32 within a stated tolerance.

Each test observes an effect inside the real step (the dtype of a layer's output, the memory
format of a convolution's output, dynamo's counters), so removing autocast, channels_last or
compile from a step makes it fail. CUDA-only checks carry the ``gpu`` marker and skip here.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from torch import nn

from chexbench.backbones.base import Backbone
from chexbench.bench.protocols.finetune import Finetune
from chexbench.core.context import FastPath, RunContext, fast_path_for
from chexbench.core.devices import autocast
from chexbench.core.inference import extract_features
from chexbench.core.inputs import DEFAULT_NORMALIZE, to_input
from chexbench.core.optim import build_optimizer, optimizer_implementation
from chexbench.datasets.celldata import CellData, SplitData
from chexbench.spec.cell import CellConfig
from chexbench.spec.registry import BACKBONES, PROTOCOLS, STRATEGIES
from chexbench.spec.settings import Settings
from chexbench.strategies.base import InitRecord

FAMILIES = ["resnet_tiny", "vit_tiny", "vit_convstem_tiny"]
LABELS = ["Atelectasis", "Cardiomegaly", "Edema"]
SIZE = 32
CPU = torch.device("cpu")
BF16 = FastPath(amp_dtype=torch.bfloat16, channels_last=True)
#: bf16 keeps 8 bits of mantissa (≈ 3 significant digits); through a small network and a
#: softmax over the batch, a loss differs from fp32 by well under 2 % (measured ≤ 0.5 %)
BF16_LOSS_RTOL = 0.02


def _split(n: int, seed: int) -> SplitData:
    rng = np.random.default_rng(seed)
    y = (rng.random((n, len(LABELS))) < 0.5).astype(np.float32)
    img = rng.integers(0, 256, size=(n, SIZE, SIZE), dtype=np.uint8)
    ids = np.array([f"{seed}-{i}" for i in range(n)])
    return SplitData(img, y, ids, ids)


def _data(n_train: int = 8) -> CellData:
    return CellData(LABELS, LABELS, _split(n_train, 0), _split(6, 1), _split(6, 2), {})


def _cell(backbone: str, protocol: str = "finetune", **settings) -> CellConfig:
    s = Settings(image_size=SIZE, epochs=1, batch_size=4, eval_batch_size=4, warmup_epochs=0.0, **settings)
    return CellConfig(
        "scratch",
        backbone,
        "phantom-chexpert",
        protocol,
        1.0,
        0,
        s,
        protocol_options={"localize": False, "save_model": "false", "augment": False},
    )


def _ctx(tmp_path, fast: FastPath = BF16) -> RunContext:
    return RunContext(
        CPU,
        tmp_path / "results",
        tmp_path / "cache",
        amp_dtype=fast.amp_dtype,
        channels_last=fast.channels_last,
        compile=fast.compile,
    )


class StepProbe:
    """Forward hooks recording, per backbone call, whether the model was training, whether
    gradients were on, and the dtype and memory format of the first convolution's output
    (ResNet stem / ViT patch embedding: every family has one)."""

    def __init__(self, backbone: nn.Module):
        self.calls: list[dict] = []
        self._conv: list[tuple[torch.dtype, bool]] = []
        conv = next(m for m in backbone.modules() if isinstance(m, nn.Conv2d) and m.out_channels > 1)
        conv.register_forward_hook(lambda m, i, o: self._conv.append((o.dtype, _is_channels_last(o))))
        backbone.register_forward_hook(self._record)

    def _record(self, module: nn.Module, inputs, output: torch.Tensor) -> None:
        dtype, channels_last = self._conv[-1]
        self.calls.append(
            {
                "training": module.training,
                "dtype": dtype,
                "channels_last": channels_last,
                "out_finite": bool(torch.isfinite(output).all()),
                "grad": torch.is_grad_enabled(),
            }
        )

    def of(self, training: bool) -> list[dict]:
        return [c for c in self.calls if c["training"] == training]


def _is_channels_last(t: torch.Tensor) -> bool:
    """Strictly channels_last: true for NHWC strides, false for a plain NCHW tensor (C > 1, H·W > 1)."""
    return t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def _backbone(name: str) -> Backbone:
    torch.manual_seed(0)
    return BACKBONES.get(name).build(SIZE, {})


def test_the_device_policy_is_bf16_channels_last_on_cuda_and_fp32_on_cpu(tmp_path):
    assert fast_path_for(torch.device("cuda")) == FastPath(torch.bfloat16, True, False)
    assert fast_path_for(CPU) == FastPath(None, False, False)
    plain = RunContext(CPU, tmp_path, tmp_path)
    assert plain.fast_path == FastPath() and not plain.use_amp
    asked = _ctx(tmp_path)
    assert asked.fast_path == BF16 and asked.use_amp
    with autocast(CPU, True, torch.bfloat16):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    with autocast(CPU, False, torch.bfloat16):
        assert not torch.is_autocast_enabled("cpu")
    with autocast(CPU):
        assert not torch.is_autocast_enabled("cpu")  # the CPU's default policy: fp32


@pytest.mark.parametrize("name", FAMILIES)
def test_finetune_train_and_eval_steps_run_bf16_channels_last(name, tmp_path):
    backbone = _backbone(name)
    probe = StepProbe(backbone)
    result = PROTOCOLS.get("finetune").run(
        backbone, _data(), _cell(name), _ctx(tmp_path), InitRecord(source="scratch")
    )
    train, evals = probe.of(True), probe.of(False)
    assert len(train) == 2 and evals, "one epoch of 8 images at batch 4: two training steps, then evaluation"
    for call in train + evals:
        assert call["dtype"] == torch.bfloat16, call  # autocast is on in the step
        assert call["channels_last"] is True, call  # model and input are channels_last
    assert all(c["grad"] for c in train) and not any(c["grad"] for c in evals)
    assert np.isfinite(result.test_scores).all() and result.test_scores.dtype == np.float32
    assert np.isfinite(result.history[0]["train_loss"])


@pytest.mark.parametrize("name", FAMILIES)
def test_the_default_cpu_policy_keeps_fp32_and_nchw(name, tmp_path):
    backbone = _backbone(name)
    probe = StepProbe(backbone)
    PROTOCOLS.get("finetune").run(
        backbone, _data(), _cell(name), _ctx(tmp_path, FastPath()), InitRecord(source="scratch")
    )
    assert probe.calls and all(
        c["dtype"] == torch.float32 and c["channels_last"] is False for c in probe.calls
    )


@pytest.mark.parametrize("name", FAMILIES)
def test_linear_probe_extraction_runs_bf16_channels_last_and_returns_fp32(name, tmp_path):
    backbone = _backbone(name)
    probe = StepProbe(backbone)
    result = PROTOCOLS.get("linear").run(
        backbone, _data(), _cell(name, "linear"), _ctx(tmp_path), InitRecord(source="scratch")
    )
    assert probe.calls and all(
        c["dtype"] == torch.bfloat16 and c["channels_last"] and not c["training"] for c in probe.calls
    )
    assert np.isfinite(result.test_scores).all()
    feats = extract_features(backbone, _split(5, 3).images, 2, CPU, DEFAULT_NORMALIZE, True, BF16)
    assert feats.dtype == torch.float32 and feats.shape == (5, backbone.num_features)


class TinyConvNet(nn.Module):
    """A minimal BatchNorm conv net (few kernels: inductor compiles it in seconds)."""

    num_features = 8

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 8, 3, stride=2), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _compiler_missing() -> str | None:
    if shutil.which("g++") is None and shutil.which("c++") is None and shutil.which("clang++") is None:
        return "torch.compile's inductor backend needs a C++ compiler (g++/clang++), none on PATH"
    return None


@pytest.mark.skipif(_compiler_missing() is not None, reason=str(_compiler_missing()))
def test_finetune_step_under_torch_compile_runs_compiled_graphs(tmp_path):
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    backbone = Backbone(TinyConvNet(), BACKBONES.get("resnet_tiny"), SIZE)
    fast = FastPath(amp_dtype=torch.bfloat16, channels_last=True, compile=True)
    result = PROTOCOLS.get("finetune").run(
        backbone, _data(), _cell("resnet_tiny"), _ctx(tmp_path, fast), InitRecord(source="scratch")
    )
    # dynamo captured the training step's graph and inductor compiled it
    assert counters["stats"]["unique_graphs"] >= 1, dict(counters["stats"])
    assert sum(counters["inductor"].values()) > 0 or counters["stats"]["calls_captured"] > 0
    assert np.isfinite(result.history[0]["train_loss"])
    torch._dynamo.reset()


def test_without_compile_no_graph_is_captured(tmp_path):
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    backbone = Backbone(TinyConvNet(), BACKBONES.get("resnet_tiny"), SIZE)
    PROTOCOLS.get("finetune").run(
        backbone, _data(), _cell("resnet_tiny"), _ctx(tmp_path), InitRecord(source="scratch")
    )
    assert counters["stats"]["unique_graphs"] == 0


def test_optimizers_are_foreach_on_cpu_and_fused_on_cuda():
    from chexbench.strategies.simclr import SimCLR

    params = [nn.Parameter(torch.randn(3, 2))]
    for optimizer in ("adamw", "sgd"):
        st = Settings(optimizer=optimizer)
        opt = build_optimizer(
            nn.ParameterList(params),
            CPU,
            name=st.optimizer,
            lr=st.lr,
            weight_decay=st.weight_decay,
            choice=Finetune.optimizer_choice,
        )
        assert opt.defaults["foreach"] is True and not opt.defaults.get("fused"), optimizer
        params[0].grad = torch.ones_like(params[0])
        before = params[0].detach().clone()
        opt.step()  # the chosen implementation runs on the CPU
        assert not torch.equal(before, params[0])
    assert optimizer_implementation(torch.device("cuda")) == {"fused": True}
    assert optimizer_implementation(CPU) == {"foreach": True}
    pre = STRATEGIES.get(SimCLR.name).build_optimizer(nn.Linear(2, 2), dict(SimCLR.options), CPU)
    assert pre.defaults["foreach"] is True and not pre.defaults.get("fused")


# -- self-supervised steps under autocast ----------------------------------------------------
def _ssl_model(kind: str):
    from chexbench.strategies.mocov2 import MoCoModel
    from chexbench.strategies.simclr import SimCLRModel
    from chexbench.strategies.topk import wrap_topk

    torch.manual_seed(0)
    if kind == "simclr":
        enc = BACKBONES.get("resnet_tiny").build(SIZE, {})
        return SimCLRModel(enc, enc.num_features, 32, 16, 0.1)
    if kind == "mocov2":
        enc = BACKBONES.get("resnet_tiny").build(SIZE, {})
        return MoCoModel(
            enc, enc.num_features, 32, 16, 24, 0.99, 0.2, 2, generator=torch.Generator().manual_seed(1)
        )
    enc = wrap_topk(BACKBONES.get("vit_tiny").build(SIZE, {}), {"topk": 0.25})
    return SimCLRModel(enc, enc.num_features, 32, 16, 0.1)


@pytest.mark.parametrize("kind", ["simclr", "mocov2", "simclr_topk"])
def test_ssl_step_loss_under_bf16_autocast_is_finite_and_equals_fp32(kind):
    g = torch.Generator().manual_seed(2)
    v1, v2 = torch.rand(8, 1, SIZE, SIZE, generator=g), torch.rand(8, 1, SIZE, SIZE, generator=g)
    losses, dtypes = {}, {}
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        model = _ssl_model(kind).to(memory_format=torch.channels_last)
        seen = []
        conv = next(m for m in model.encoder.modules() if isinstance(m, nn.Conv2d))
        conv.register_forward_hook(lambda m, i, o, seen=seen: seen.append(o.dtype))
        with autocast(CPU, dtype is not None, dtype):
            loss = model.loss(
                v1.contiguous(memory_format=torch.channels_last),
                v2.contiguous(memory_format=torch.channels_last),
                0.0,
                torch.Generator().manual_seed(3),
            )
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(gr).all() for gr in grads), name
        losses[name], dtypes[name] = loss.item(), set(seen)
    assert dtypes == {"fp32": {torch.float32}, "bf16": {torch.bfloat16}}  # autocast reached the encoder
    assert np.isfinite(losses["bf16"])
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=BF16_LOSS_RTOL)


def test_pretraining_loop_runs_its_steps_under_the_contexts_autocast(tmp_path, monkeypatch):
    """The real pretraining loop (one epoch of MoCo-v2) honours the context's bf16 policy."""
    from chexbench.strategies import pretrain as P
    from chexbench.strategies.mocov2 import MoCoModel

    seen: list[torch.dtype] = []
    original = MoCoModel.loss

    def spy(self, v1, v2, progress=0.0, generator=None):
        out = self.projector(self.encoder(v1[:2]))
        seen.append(out.dtype)
        return original(self, v1, v2, progress, generator)

    monkeypatch.setattr(MoCoModel, "loss", spy)
    images = np.random.default_rng(0).integers(0, 256, (16, SIZE, SIZE), dtype=np.uint8)
    monkeypatch.setattr(
        "chexbench.datasets.celldata.pretrain_pool",
        lambda cell, max_images=0: (images, np.array([str(i) for i in range(16)])),
    )
    cell = CellConfig(
        "mocov2",
        "resnet_tiny",
        "phantom-chexpert",
        "finetune",
        1.0,
        0,
        Settings(image_size=SIZE),
        strategy_options={
            "pretrain_epochs": 1,
            "pretrain_batch_size": 8,
            "proj_hidden_dim": 32,
            "proj_dim": 16,
            "queue_size": 8,
            "probe_every": 0,
        },
    )
    ctx = _ctx(tmp_path)
    run_id, state, meta = P.ensure_pretrained(STRATEGIES.get("mocov2"), cell, ctx)
    assert meta["steps"] == 2 and np.isfinite(meta["final_loss"])
    assert seen == [torch.bfloat16, torch.bfloat16]


# -- CUDA only --------------------------------------------------------------------------------
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@cuda
def test_cuda_adamw_and_sgd_are_fused_and_step():
    dev = torch.device("cuda")
    params = [nn.Parameter(torch.randn(4, 4, device=dev))]
    for optimizer in ("adamw", "sgd"):
        st = Settings(optimizer=optimizer)
        opt = build_optimizer(
            nn.ParameterList(params),
            dev,
            name=st.optimizer,
            lr=st.lr,
            weight_decay=st.weight_decay,
            choice=Finetune.optimizer_choice,
        )
        assert opt.defaults["fused"] is True
        params[0].grad = torch.ones_like(params[0])
        opt.step()
    assert torch.isfinite(params[0]).all()


@pytest.mark.gpu
@cuda
def test_cuda_input_copies_are_pinned_non_blocking_and_exact():
    dev = torch.device("cuda")
    images = np.random.default_rng(0).integers(0, 256, (4, SIZE, SIZE), dtype=np.uint8)
    x = to_input(images, dev, (0.5, 0.25), channels_last=True)
    torch.cuda.synchronize()
    ref = (torch.as_tensor(images).float().div(255.0).unsqueeze(1) - 0.5) / 0.25
    assert x.device.type == "cuda" and x.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(x.cpu(), ref)


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("name", FAMILIES)
def test_cuda_finetune_runs_bf16_channels_last_by_default(name, tmp_path):
    backbone = _backbone(name)
    probe = StepProbe(backbone)
    ctx = RunContext(torch.device("cuda"), tmp_path / "r", tmp_path / "c")
    result = PROTOCOLS.get("finetune").run(backbone, _data(), _cell(name), ctx, InitRecord(source="scratch"))
    assert probe.calls and all(c["dtype"] == torch.bfloat16 and c["channels_last"] for c in probe.calls)
    assert np.isfinite(result.test_scores).all()


@pytest.mark.gpu
@cuda
def test_cuda_syncbn_conversion_under_ddp_keeps_the_forward():
    from chexbench.core import distributed as D

    assert not D.is_distributed()  # one process: wrap_ddp is the identity, SyncBN needs a process group
    model = TinyConvNet().cuda()
    sync = nn.SyncBatchNorm.convert_sync_batchnorm(TinyConvNet()).cuda()
    sync.load_state_dict(model.state_dict())
    x = torch.randn(4, 1, SIZE, SIZE, device="cuda")
    model.eval(), sync.eval()
    torch.testing.assert_close(model(x), sync(x))


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("kind", ["simclr", "mocov2", "simclr_topk"])
def test_cuda_ssl_loss_in_bf16_equals_fp32(kind):
    dev = torch.device("cuda")
    g = torch.Generator().manual_seed(2)
    v1, v2 = (
        torch.rand(8, 1, SIZE, SIZE, generator=g).to(dev),
        torch.rand(8, 1, SIZE, SIZE, generator=g).to(dev),
    )
    losses = []
    for dtype in (None, torch.bfloat16):
        model = _ssl_model(kind).to(dev)
        with autocast(dev, dtype is not None, dtype):
            losses.append(model.loss(v1, v2, 0.0, torch.Generator().manual_seed(3)).item())
    assert np.isfinite(losses[1]) and losses[1] == pytest.approx(losses[0], rel=BF16_LOSS_RTOL)


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("kind", ["simclr", "mocov2"])
def test_cuda_contrastive_views_loss_and_backward_never_make_the_host_wait(kind):
    # a blocking copy or a read of a device value in the step stalls the host each step, so it cannot
    # prepare the next batch while the GPU works; sync debug mode "error" raises at any such wait
    from chexbench.strategies.augment import ViewAugment, view_pair

    dev = torch.device("cuda")
    model = _ssl_model(kind).to(dev)
    x01 = torch.rand(8, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(4)).to(dev)
    aug, gen = ViewAugment(blur_p=1.0, noise_p=1.0), torch.Generator().manual_seed(5)

    def step() -> None:
        v1, v2 = view_pair(x01, aug, gen)
        with autocast(dev):
            loss = model.loss(v1, v2, 0.5, gen)
        loss.backward()
        if hasattr(model, "flush_queue"):
            model.flush_queue()  # MoCo enqueues the last step's keys here

    step()  # first calls (kernel selection, lazy initialization) may wait; the steps after must not
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
        step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
