"""Top-K patch scoring: gradient reaches the scorer, K = all with equal scores is mean pooling,
the selected indices are the K highest scores, K as a count or a fraction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from chexbench.core.errors import ConfigError
from chexbench.spec.registry import BACKBONES
from chexbench.strategies.topk import TopKBackbone, resolve_k, topk_indices, topk_pool, wrap_topk


def _vit(size: int = 32):
    torch.manual_seed(0)
    return BACKBONES.get("vit_tiny").build(size)


def test_gradient_reaches_the_scorer():
    model = wrap_topk(_vit(), {"topk": 4})
    x = torch.randn(3, 1, 32, 32)
    model(x).pow(2).sum().backward()
    grads = [p.grad for p in model.scorer.parameters()]
    assert all(g is not None for g in grads)
    assert all(torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum().item() for g in grads) > 0


def test_all_tokens_with_equal_scores_is_mean_pooling():
    tokens = torch.randn(2, 16, 8)
    pooled, idx, weights = topk_pool(tokens, torch.full((2, 16), 0.3), k=16)
    torch.testing.assert_close(pooled, tokens.mean(1))
    torch.testing.assert_close(weights, torch.full((2, 16), 1 / 16))
    assert sorted(idx[0].tolist()) == list(range(16))


def test_backbone_with_a_constant_scorer_and_k_all_equals_mean_of_tokens():
    model = wrap_topk(_vit(), {"topk": 1.0})
    with torch.no_grad():
        last = model.scorer.net[-1]
        last.weight.zero_()
        last.bias.fill_(2.0)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.forward_tokens(x).mean(1), rtol=1e-5, atol=1e-6)
    assert model.k == model.num_tokens == 16


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 30), st.integers(0, 10_000), st.data())
def test_selected_indices_are_the_k_highest_scores(n, seed, data):
    k = data.draw(st.integers(1, n))
    scores = torch.as_tensor(np.random.default_rng(seed).permutation(n * 3)[:n], dtype=torch.float32).view(
        1, n
    )
    idx = topk_indices(scores, k)[0].tolist()
    expected = np.argsort(-scores[0].numpy())[:k].tolist()
    assert idx == expected  # distinct scores: exactly the K largest, highest first


def test_pool_weights_are_softmax_of_kept_scores():
    tokens = torch.randn(1, 5, 3)
    scores = torch.tensor([[0.1, 2.0, -1.0, 1.0, 0.5]])
    pooled, idx, w = topk_pool(tokens, scores, k=2, temperature=0.5)
    assert idx.tolist() == [[1, 3]]
    ref_w = np.exp(np.array([2.0, 1.0]) / 0.5)
    ref_w /= ref_w.sum()
    np.testing.assert_allclose(w.numpy()[0], ref_w, rtol=1e-6)
    np.testing.assert_allclose(
        pooled.numpy()[0], ref_w[0] * tokens[0, 1].numpy() + ref_w[1] * tokens[0, 3].numpy(), rtol=1e-5
    )


@pytest.mark.parametrize(
    ("k", "n", "expected"),
    [(4, 16, 4), (40, 16, 16), (0.25, 64, 16), (1.0, 64, 64), (0.001, 64, 1), (1, 64, 1)],
)
def test_k_as_count_or_fraction(k, n, expected):
    assert resolve_k(k, n) == expected


@pytest.mark.parametrize("k", [0, -3, 1.5, 0.0, "8", True])
def test_bad_k_is_a_config_error(k):
    with pytest.raises(ConfigError, match="topk"):
        resolve_k(k, 16)


def test_score_map_is_on_the_token_grid_and_cnn_is_refused():
    model = wrap_topk(_vit(32), {"topk": 3})
    grid, idx = model.score_map(torch.randn(2, 1, 32, 32))
    assert grid.shape == (2, 4, 4) and idx.shape == (2, 3)
    flat = grid.view(2, -1)
    assert torch.equal(idx, flat.topk(3, dim=1).indices)
    with pytest.raises(ConfigError, match="ViT"):
        TopKBackbone(BACKBONES.get("resnet_tiny").build(32))
