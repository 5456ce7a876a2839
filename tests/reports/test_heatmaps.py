"""Heatmaps: Grad-CAM against a direct autograd computation, top-K score maps on the image,
patch outlines, overlays and gallery PNGs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from chexbench.bench.cell_model import ProbeClassifier
from chexbench.bench.protocols.finetune import Classifier
from chexbench.registry import BACKBONES
from chexbench.reports.heatmaps import (
    GradCAM,
    explain,
    explain_method,
    normalize_maps,
    overlay_rgb,
    patch_rects,
    save_gallery_png,
    save_overlay_png,
)
from chexbench.strategies.topk import wrap_topk


def _resnet_classifier() -> Classifier:
    torch.manual_seed(0)
    return Classifier(BACKBONES.get("resnet_tiny").build(32), 3)


def test_gradcam_equals_direct_autograd_computation():
    model = _resnet_classifier().eval()
    x = torch.randn(2, 1, 32, 32)
    labels = torch.tensor([2, 0])
    cam = GradCAM(model)(x, labels)

    stage = model.backbone.model.layer4
    acts = {}
    handle = stage.register_forward_hook(lambda _m, _i, out: acts.__setitem__("a", out))
    logits = model(x)
    handle.remove()
    a = acts["a"]  # (B, C, h, w)
    grads = torch.autograd.grad(logits[torch.arange(2), labels].sum(), a)[0]
    ref = torch.relu((grads.mean(dim=(2, 3), keepdim=True) * a).sum(1)).detach()
    ref = F.interpolate(ref[:, None], size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(cam, normalize_maps(ref), rtol=1e-4, atol=1e-5)
    assert cam.shape == (2, 32, 32) and float(cam.min()) >= 0 and float(cam.max()) <= 1


def test_gradcam_works_on_a_frozen_probe_and_leaves_no_hooks():
    backbone = BACKBONES.get("resnet_tiny").build(32)
    for p in backbone.parameters():
        p.requires_grad_(False)
    model = ProbeClassifier(backbone, 2)
    out = explain(model, torch.randn(3, 1, 32, 32), torch.tensor([0, 1, 0]))
    assert out.method == "gradcam" and out.heat.shape == (3, 32, 32) and np.isfinite(out.heat).all()
    assert not model.backbone.model.layer4._forward_hooks


def test_topk_heatmap_peaks_in_the_best_scored_patch():
    torch.manual_seed(0)
    model = Classifier(wrap_topk(BACKBONES.get("vit_tiny").build(32), {"topk": 3}), 2)
    assert explain_method(model) == "topk_scores"
    assert explain_method(_resnet_classifier()) == "gradcam"
    assert explain_method(Classifier(BACKBONES.get("vit_tiny").build(32), 2)) is None
    x = torch.randn(2, 1, 32, 32)
    out = explain(model, x)
    grid, idx = model.backbone.score_map(x)
    assert out.grid == (4, 4) and np.array_equal(out.topk_indices, idx.numpy())
    for b in range(2):
        y, xx = np.unravel_index(out.heat[b].argmax(), out.heat[b].shape)
        best = int(grid[b].flatten().argmax())
        assert (y // 8, xx // 8) == divmod(best, 4)


def test_patch_rects_follow_row_major_token_order():
    assert patch_rects(np.array([0, 5, 15]), (4, 4), (32, 32)) == [(0.0, 0.0, 8.0, 8.0), (8.0, 8.0, 8.0, 8.0), (24.0, 24.0, 8.0, 8.0)]


def test_overlay_keeps_cold_pixels_and_colours_hot_ones():
    image = np.full((8, 8), 100, np.uint8)
    heat = np.zeros((8, 8))
    heat[0, 0] = 1.0
    rgb = overlay_rgb(image, heat)
    assert rgb.shape == (8, 8, 3) and rgb.dtype == np.uint8
    assert (rgb[1:, 1:] == 100).all()
    assert len(set(rgb[0, 0].tolist())) > 1  # coloured


def test_pngs_are_written_and_readable(tmp_path):
    image = (np.random.default_rng(0).random((32, 32)) * 255).astype(np.uint8)
    heat = np.random.default_rng(1).random((32, 32))
    save_overlay_png(tmp_path / "one.png", image, heat, patches=[(0, 0, 8, 8)], boxes=[(4, 4, 20, 12)], title="t")
    save_gallery_png(tmp_path / "g.png", [{"image": image, "heat": heat, "title": f"{i}"} for i in range(5)], columns=3)
    for name in ("one.png", "g.png"):
        with Image.open(tmp_path / name) as im:
            assert im.size[0] > 100 and im.size[1] > 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.png", "one.png"]  # no temp files left


def test_no_heatmap_for_a_plain_vit():
    with pytest.raises(TypeError, match="head = topk"):
        explain(Classifier(BACKBONES.get("vit_tiny").build(32), 2), torch.randn(1, 1, 32, 32))
