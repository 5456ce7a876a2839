"""One way to switch on compile (the run context), one feature extractor, behaviour by attributes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from chexbench.bench.cell_model import head_invalid_reason, make_classifier
from chexbench.bench.protocols.base import EvaluationProtocol
from chexbench.cli import app
from chexbench.core.context import RunContext
from chexbench.core.inference import extract_features
from chexbench.core.inputs import to_input
from chexbench.datasets.celldata import CellData, SplitData
from chexbench.spec.cell import CellConfig
from chexbench.spec.registry import BACKBONES, PROTOCOLS, STRATEGIES, Entry
from chexbench.spec.settings import Settings
from chexbench.strategies.base import InitRecord, Strategy

CPU = torch.device("cpu")


def _data(n: int = 6) -> CellData:
    rng = np.random.default_rng(0)
    split = SplitData(
        rng.integers(0, 256, (n, 8, 8), dtype=np.uint8),
        (rng.random((n, 2)) < 0.5).astype(np.float32),
        np.array([str(i) for i in range(n)]),
        np.array([str(i) for i in range(n)]),
    )
    return CellData(["a", "b"], ["a", "b"], split, split, split, {})


def _cell(settings: Settings, **kw) -> CellConfig:
    return CellConfig(
        kw.pop("strategy", "scratch"),
        kw.pop("backbone", "resnet_tiny"),
        "phantom-chexpert",
        kw.pop("protocol", "finetune"),
        1.0,
        0,
        settings,
        **kw,
    )


@pytest.mark.parametrize(
    ("run_flag", "setting", "expected"), [(False, False, False), (True, False, True), (False, True, True)]
)
def test_compile_reaches_the_cells_run_context_from_the_run_or_the_settings(
    tmp_path, run_flag, setting, expected
):
    ctx = RunContext(CPU, tmp_path, tmp_path, compile=run_flag)
    setup = EvaluationProtocol().open_cell(
        _data(), _cell(Settings(compile=setting, batch_size=4)), ctx, InitRecord(source="scratch")
    )
    assert setup.ctx.compile is expected and setup.fast.compile is expected
    assert ctx.compile is run_flag  # the run's own context is left as it was
    assert setup.steps_per_epoch == 2 and setup.total_steps == 2 * Settings().epochs


def test_run_compile_sets_the_run_context_field_and_no_environment_variable(tmp_path, monkeypatch):
    import os

    import chexbench.bench.runner as runner_module

    seen = {}

    class Summary:
        def count(self, status: str) -> int:
            return 0

    def fake_run_grid(grid, results, ctx, **kw):
        seen["compile"] = ctx.compile
        seen["env"] = {k for k in os.environ if "COMPILE" in k and k.startswith("CHEXBENCH")}
        return Summary()

    monkeypatch.setenv("CHEXBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(runner_module, "run_grid", fake_run_grid)
    grid = tmp_path / "g.toml"
    grid.write_text(
        '[axes]\nstrategy=["scratch"]\nbackbone=["resnet_tiny"]\ndataset=["phantom-chexpert"]\nprotocol=["finetune"]\n'
        "[dataset.phantom-chexpert]\npatients=20\nsize=32\n"
    )
    for flags, expected in (([], False), (["--compile"], True)):
        result = CliRunner().invoke(
            app, ["run", "--grid", str(grid), "--results", str(tmp_path / "r"), "--device", "cpu", *flags]
        )
        assert result.exit_code == 0, result.output
        assert seen == {"compile": expected, "env": set()}


class _Encoder(nn.Module):
    num_features = 3

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 3), nn.BatchNorm1d(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_extract_features_runs_in_eval_mode_restores_the_mode_and_returns_fp32_rows():
    enc = _Encoder().train()
    modes = []
    enc.register_forward_hook(lambda m, i, o: modes.append(m.training))
    images = np.random.default_rng(1).integers(0, 256, (5, 8, 8), dtype=np.uint8)
    feats = extract_features(enc, images, 2, CPU, (0.5, 0.25))
    assert modes == [False, False, False] and enc.training  # three batches, eval mode, then train mode again
    assert feats.dtype == torch.float32 and feats.shape == (5, 3)
    with torch.no_grad():
        expected = enc.eval()(to_input(images, CPU, (0.5, 0.25)))
    torch.testing.assert_close(feats, expected)
    assert extract_features(enc, images[:0], 2, CPU, split_over_ranks=False).shape == (0, 3)


def test_each_shared_piece_is_defined_once_in_the_package():
    """One feature extractor, one batch-norm test, one optimizer factory, one AUROC (module-level
    definitions)."""
    import ast
    from pathlib import Path

    import chexbench

    where: dict[str, list[str]] = {}
    for path in Path(chexbench.__file__).parent.rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef):
                where.setdefault(node.name, []).append(path.stem)
    for name in (
        "extract_features",
        "has_batch_norm",
        "build_optimizer",
        "warmup_cosine",
        "macro_auroc_per_head",
        "auroc",
    ):
        assert len(where.get(name, [])) == 1, (name, where.get(name))


def test_a_topk_scorer_is_asked_of_the_strategy_not_read_from_its_name(tmp_path, monkeypatch):
    """A plugin strategy named without ``_topk`` that makes a scorer passes; one named ``*_topk`` that does
    not is refused."""

    class Scorer(Strategy):
        name = "patchy"
        makes_topk_scorer = True

    class Pretender(Strategy):
        name = "plain_topk"

    assert "scratch" in STRATEGIES  # the built-ins are loaded before two test strategies join them
    for s in (Scorer, Pretender):
        monkeypatch.setitem(STRATEGIES._entries, s.name, Entry(s.name, s(), "test strategy", "test"))
    opts = {"head": "topk"}
    assert (
        head_invalid_reason(
            _cell(
                Settings(), strategy="patchy", backbone="vit_tiny", protocol="linear", protocol_options=opts
            ),
            "linear",
        )
        is None
    )
    reason = head_invalid_reason(
        _cell(
            Settings(), strategy="plain_topk", backbone="vit_tiny", protocol="linear", protocol_options=opts
        ),
        "linear",
    )
    assert "needs a pretrained patch scorer" in reason
    assert [
        s for s in ("simclr_topk", "mocov2_topk", "simclr", "scratch") if STRATEGIES.get(s).makes_topk_scorer
    ] == ["simclr_topk", "mocov2_topk"]


def test_the_probe_classifier_is_chosen_by_the_protocols_attribute():
    assert PROTOCOLS.get("linear").freezes_backbone and not PROTOCOLS.get("finetune").freezes_backbone
    backbone = BACKBONES.get("resnet_tiny").build(32)
    assert type(make_classifier(backbone, 2, {}, "linear")).__name__ == "ProbeClassifier"
    assert type(make_classifier(backbone, 2, {}, "finetune")).__name__ == "Classifier"
