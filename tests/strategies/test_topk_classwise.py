"""The class-specific top-K head: per-class pooling against a hand computation, one map per
label that follows that label's lesion, and both protocols training it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from chexbench.core.context import RunContext
from chexbench.core.inputs import to_input
from chexbench.core.metrics import macro_auroc
from chexbench.datasets.celldata import CellData, SplitData
from chexbench.explain.heatmaps import explain
from chexbench.spec.cell import CellConfig
from chexbench.spec.registry import BACKBONES, PROTOCOLS
from chexbench.spec.settings import Settings
from chexbench.strategies.base import InitRecord
from chexbench.strategies.topk import ClasswiseTopKClassifier, classwise_topk_pool


def test_classwise_pooling_equals_a_hand_computation():
    logits = torch.tensor([[[3.0, -1.0], [1.0, 0.0], [4.0, 2.0], [1.0, -3.0], [5.0, 0.5]]])  # (1, N=5, L=2)
    # class 0: top-2 {5, 4} → 4.5; bottom-2 {1, 1} → 1.  class 1: top-2 {2, 0.5} → 1.25; bottom-2 {-3, -1} →
    # -2
    torch.testing.assert_close(classwise_topk_pool(logits, 2), torch.tensor([[4.5, 1.25]]))
    torch.testing.assert_close(
        classwise_topk_pool(logits, 2, alpha=0.5), torch.tensor([[4.5 + 0.5 * 1.0, 1.25 + 0.5 * -2.0]])
    )
    torch.testing.assert_close(classwise_topk_pool(logits, 5), logits.mean(1))  # K = all: mean pooling


class FixedTokens(nn.Module):
    """A 'ViT' whose tokens (B, 4, 2) are given: the image's first 8 pixels as 4 tokens of 2 features."""

    is_vit = True
    num_features = 2

    def token_grid(self):
        return (2, 2)

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :8].view(-1, 4, 2)


def test_classifier_pools_each_class_from_its_own_patches():
    model = ClasswiseTopKClassifier(FixedTokens(), 2, k=1, alpha=0.0)
    with torch.no_grad():
        model.head.weight.copy_(
            torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        )  # class 0 reads feature 0, class 1 feature 1
        model.head.bias.zero_()
    x = torch.zeros(1, 1, 4, 4)
    x.view(-1)[:8] = torch.tensor(
        [0.0, 0.0, 9.0, 0.0, 0.0, 0.0, 0.0, 7.0]
    )  # token 1: feature 0 = 9; token 3: feature 1 = 7
    torch.testing.assert_close(model(x), torch.tensor([[9.0, 7.0]]))
    maps, idx = model.class_maps(x, torch.tensor([0]))
    assert maps.shape == (1, 2, 2) and idx.tolist() == [[1]]
    assert model.class_maps(x, torch.tensor([1]))[1].tolist() == [[3]]  # the other class, its own patch


def _lesion_split(n: int, seed: int, size: int = 32) -> tuple[SplitData, np.ndarray]:
    """Label 0: a bright 8×8 block; label 1: a dark 8×8 block; each in a random cell of the 4×4 grid,
    never the same cell. Returns the split and the cells (n, 2) (-1 = absent)."""
    rng = np.random.default_rng(seed)
    img = rng.normal(120, 12, size=(n, size, size))
    y = (rng.random((n, 2)) < 0.5).astype(np.float32)
    cells = np.full((n, 2), -1)
    for i in range(n):
        a, b = rng.choice(16, size=2, replace=False)
        for j, (cell, delta) in enumerate(((a, 80.0), (b, -80.0))):
            if y[i, j]:
                r, c = divmod(int(cell), 4)
                img[i, r * 8 : r * 8 + 8, c * 8 : c * 8 + 8] += delta
                cells[i, j] = cell
    ids = np.array([f"{seed}-{i}" for i in range(n)])
    return SplitData(np.clip(img, 0, 255).astype(np.uint8), y, ids, ids), cells


def _cell(protocol: str, epochs: int, **options) -> CellConfig:
    return CellConfig(
        "scratch",
        "vit_tiny",
        "phantom-chexpert",
        protocol,
        1.0,
        0,
        Settings(image_size=32, epochs=epochs, batch_size=32, warmup_epochs=0.0, lr=2e-3),
        protocol_options={"head": "topk_classwise", "topk": 1, "save_model": "false", **options},
    )


def _maps_at_lesions(model: nn.Module, normalize, split: SplitData, cells: np.ndarray) -> np.ndarray:
    """For images holding both lesions: the token cell of each label's map maximum (n, 2)."""

    both = np.flatnonzero((cells >= 0).all(1))
    x = to_input(split.images[both], torch.device("cpu"), normalize)
    peaks = []
    for j in (0, 1):
        heat = explain(model, x, torch.full((len(both),), j)).heat  # (n, 32, 32)
        assert heat.shape[1:] == (32, 32)
        flat_index = heat.reshape(len(both), -1).argmax(1)
        peaks.append((flat_index // 32 // 8) * 4 + (flat_index % 32) // 8)
    return np.stack(peaks, 1), cells[both]


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["finetune", "linear"])
def test_maps_of_two_classes_differ_where_their_lesions_differ(tmp_path, protocol):
    """Trained through the protocol and rebuilt from the saved model: on images with both
    lesions, label 0's map peaks on the bright block and label 1's on the dark one."""
    from chexbench.bench.cell_model import load_cell_model

    torch.manual_seed(0)
    train, _ = _lesion_split(600, 1)
    valid, _ = _lesion_split(100, 2)
    test, cells = _lesion_split(120, 3)
    data = CellData(["bright", "dark"], ["bright", "dark"], train, valid, test, {})
    cell = _cell(
        protocol,
        6 if protocol == "finetune" else 30,
        save_model="true",
        **({"augment": False} if protocol == "finetune" else {}),
    )
    ctx = RunContext(torch.device("cpu"), tmp_path / "r", tmp_path / "c")
    backbone = BACKBONES.get("vit_tiny").build(32)
    frozen = {k: v.clone() for k, v in backbone.state_dict().items()}
    result = PROTOCOLS.get(protocol).run(backbone, data, cell, ctx, InitRecord("random"))
    assert macro_auroc(test.targets, result.test_scores, data.labels, data.labels) > 0.85
    model, meta = load_cell_model(ctx.results_dir, cell)
    assert meta["head"] == "topk_classwise" and isinstance(model, ClasswiseTopKClassifier)

    probs = (
        torch.sigmoid(model(to_input(test.images, torch.device("cpu"), tuple(meta["normalize"]))))
        .detach()
        .numpy()
    )
    np.testing.assert_allclose(probs, result.test_scores, atol=1e-5)  # the saved model is the evaluated one
    if protocol == "linear":
        assert all(torch.equal(v, frozen[k]) for k, v in backbone.state_dict().items())
    peaks, truth = _maps_at_lesions(model, tuple(meta["normalize"]), test, cells)
    assert len(peaks) >= 15
    assert (peaks[:, 0] != peaks[:, 1]).mean() >= 0.9  # two labels, two different maps
    assert (peaks == truth).mean(0).min() >= 0.8  # each on its own lesion


def test_head_topk_classwise_is_refused_on_a_cnn():
    from chexbench.bench.cell_model import head_invalid_reason

    cell = CellConfig(
        "scratch",
        "resnet_tiny",
        "phantom-chexpert",
        "linear",
        1.0,
        0,
        Settings(image_size=32),
        protocol_options={"head": "topk_classwise"},
    )
    assert "needs a ViT" in head_invalid_reason(cell, "linear")
    assert (
        head_invalid_reason(_cell("linear", 1), "linear") is None
    )  # any ViT strategy: no pretrained scorer needed


@pytest.mark.parametrize("kernel", [3, 1])
def test_local_source_patch_logits_depend_only_on_the_kernel_neighbourhood(kernel):
    """classwise_source = "local": changing the pixels of token (0, 0) moves every patch outside
    its kernel × kernel neighbourhood (3×3, or the token alone with local_kernel = 1) by the same
    per-class offset (the class token's), so no far maximum moves; the final-token source (global
    attention) moves far patches unequally. (vit_tiny's patch embedding sees its own 8×8 pixels only.)"""
    torch.manual_seed(0)
    x = torch.randn(1, 1, 64, 64)
    y = x.clone()
    y[..., :8, :8] += 3.0  # token (0, 0) of the 8×8 grid
    reach = kernel // 2
    far = torch.tensor([r * 8 + c for r in range(8) for c in range(8) if r > reach or c > reach])
    near = torch.tensor([r * 8 + c for r in range(reach + 1) for c in range(reach + 1)])
    for source, local in (("local", True), ("tokens", False)):
        model = ClasswiseTopKClassifier(
            BACKBONES.get("vit_tiny").build(64), 3, k=4, source=source, local_kernel=kernel
        ).eval()
        with torch.no_grad():
            delta = model.patch_logits(y) - model.patch_logits(x)  # (1, 64, 3)
        spread_far = (delta[0, far] - delta[0, far].mean(0)).abs().max().item()
        spread_near = (
            (delta[0, near] - delta[0, far].mean(0)).abs().max(0).values.min().item()
        )  # every near patch moves
        assert spread_near > 1e-3, (source, spread_near)
        assert (spread_far < 1e-5) == local, (source, spread_far)


def test_without_the_offset_the_image_logit_is_the_local_top_k_evidence_alone():
    """local_offset = false: far patches do not move at all when token (0, 0) changes (no class-token
    offset), and the image logit is the top-K mean of the local patch logits."""
    torch.manual_seed(0)
    model = ClasswiseTopKClassifier(
        BACKBONES.get("vit_tiny").build(64), 3, k=4, source="local", local_kernel=1, local_offset=False
    ).eval()
    x = torch.randn(2, 1, 64, 64)
    y = x.clone()
    y[..., :8, :8] += 3.0
    with torch.no_grad():
        delta = model.patch_logits(y) - model.patch_logits(x)  # (2, 64, 3)
        assert delta[:, 1:].abs().max().item() == 0.0 and delta[:, 0].abs().min().item() > 1e-4
        logits = model.patch_logits(x)
        torch.testing.assert_close(model(x), logits.topk(4, dim=1).values.mean(1))


def test_local_kernel_must_be_odd():
    from chexbench.core.errors import ConfigError

    with pytest.raises(ConfigError, match="local_kernel must be an odd number"):
        ClasswiseTopKClassifier(BACKBONES.get("vit_tiny").build(32), 2, source="local", local_kernel=2)


def test_local_source_is_refused_by_the_linear_probe_and_typos_are_named():
    from chexbench.bench.cell_model import CLASSWISE_SOURCES as listed
    from chexbench.bench.cell_model import head_invalid_reason
    from chexbench.core.errors import ConfigError
    from chexbench.strategies.topk import CLASSWISE_SOURCES

    assert listed == CLASSWISE_SOURCES
    assert "finetune only" in head_invalid_reason(_cell("linear", 1, classwise_source="local"), "linear")
    assert head_invalid_reason(_cell("finetune", 1, classwise_source="local"), "finetune") is None
    assert "'lokal'" in head_invalid_reason(_cell("finetune", 1, classwise_source="lokal"), "finetune")
    with pytest.raises(ConfigError, match="classwise_source"):
        ClasswiseTopKClassifier(BACKBONES.get("vit_tiny").build(32), 2, source="lokal")


@pytest.mark.parametrize("kernel", [3, 1])
def test_local_source_model_is_rebuilt_from_its_saved_options(tmp_path, kernel):
    """save_cell_model → load_cell_model gives the same local-source model (same logits), whatever its
    local_kernel."""
    from chexbench.bench.cell_model import load_cell_model, make_classifier, save_cell_model

    cell = _cell("finetune", 1, classwise_source="local", local_hidden=16, local_kernel=kernel, topk=2)
    opts = dict(cell.protocol_options)
    model = make_classifier(BACKBONES.get("vit_tiny").build(32), 2, opts, "finetune").eval()
    assert (
        model.source == "local"
        and model.local[0].out_channels == 16
        and model.local[0].kernel_size == (kernel, kernel)
    )
    ctx = RunContext(torch.device("cpu"), tmp_path / "r", tmp_path / "c")
    save_cell_model(model, cell, ctx, opts, ["a", "b"], (0.5, 0.25))
    loaded, _ = load_cell_model(ctx.results_dir, cell)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), model(x))
    assert loaded.source == "local" and loaded.local[0].kernel_size == (kernel, kernel)
