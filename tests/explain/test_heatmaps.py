"""Heatmaps: Grad-CAM against a direct autograd computation, top-K score maps on the image,
patch outlines, overlays and gallery PNGs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from chexbench.bench.cell_model import Classifier, ProbeClassifier
from chexbench.explain.heatmaps import (
    GradCAM,
    draw_panel,
    explain,
    explain_method,
    flat_maps,
    normalize_maps,
    overlay_rgb,
    patch_rects,
    save_gallery_png,
    save_overlay_png,
    upsample,
)
from chexbench.spec.registry import BACKBONES
from chexbench.strategies.topk import ClasswiseTopKClassifier, wrap_topk


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
    assert explain_method(Classifier(BACKBONES.get("vit_tiny").build(32), 2)) == "vit_gradcam"
    x = torch.randn(2, 1, 32, 32)
    out = explain(model, x)
    grid, idx = model.backbone.score_map(x)
    assert out.grid == (4, 4) and np.array_equal(out.topk_indices, idx.numpy())
    for b in range(2):
        y, xx = np.unravel_index(out.heat[b].argmax(), out.heat[b].shape)
        best = int(grid[b].flatten().argmax())
        assert (y // 8, xx // 8) == divmod(best, 4)


def test_patch_rects_follow_row_major_token_order():
    assert patch_rects(np.array([0, 5, 15]), (4, 4), (32, 32)) == [
        (0.0, 0.0, 8.0, 8.0),
        (8.0, 8.0, 8.0, 8.0),
        (24.0, 24.0, 8.0, 8.0),
    ]


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
    save_overlay_png(
        tmp_path / "one.png", image, heat, patches=[(0, 0, 8, 8)], boxes=[(4, 4, 20, 12)], title="t"
    )
    save_gallery_png(
        tmp_path / "g.png", [{"image": image, "heat": heat, "title": f"{i}"} for i in range(5)], columns=3
    )
    for name in ("one.png", "g.png"):
        with Image.open(tmp_path / name) as im:
            assert im.size[0] > 100 and im.size[1] > 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.png", "one.png"]  # no temp files left


def test_no_heatmap_for_a_model_without_a_known_backbone():
    class Plain(torch.nn.Module):
        backbone = None

        def forward(self, x):
            return x.mean(dim=(1, 2, 3))[:, None]

    assert explain_method(Plain()) is None
    with pytest.raises(TypeError, match="no heatmap"):
        explain(Plain(), torch.randn(1, 1, 32, 32))


def test_vit_gradcam_equals_a_manual_forward_through_the_blocks():
    """Reference: the ViT run block by block by hand, the last block's norm1 output kept as a
    leaf, its gradient taken with autograd; no hook and none of ViTGradCAM's code."""
    torch.manual_seed(0)
    model = Classifier(BACKBONES.get("vit_tiny").build(32), 3).eval()
    x = torch.randn(2, 1, 32, 32)
    labels = torch.tensor([1, 2])
    out = explain(model, x, labels)
    assert out.method == "vit_gradcam" and out.grid == (4, 4)

    vit = model.backbone.model
    t = vit._pos_embed(vit.patch_embed(x))
    t = vit.norm_pre(t)
    for blk in vit.blocks[:-1]:
        t = blk(t)
    last = vit.blocks[-1]
    a = last.norm1(t).detach().requires_grad_(True)  # (B, 1 + N, D)
    t = t + last.drop_path1(last.ls1(last.attn(a)))
    t = t + last.drop_path2(last.ls2(last.mlp(last.norm2(t))))
    logits = model.head(vit.forward_head(vit.norm(t)))
    torch.testing.assert_close(logits, model(x), rtol=1e-5, atol=1e-5)  # the manual pass is the model
    g = torch.autograd.grad(logits[torch.arange(2), labels].sum(), a)[0][:, 1:]  # patch tokens
    ref = torch.relu((g.mean(1, keepdim=True) * a.detach()[:, 1:]).sum(-1)).view(2, 4, 4)
    up = upsample(ref, (32, 32), "patch")
    torch.testing.assert_close(torch.as_tensor(out.heat), normalize_maps(up), rtol=1e-4, atol=1e-4)
    # between the outermost patch centres (4 px of 8-px patches) the placement is plain bilinear upsampling
    plain = F.interpolate(ref[:, None], size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(up[:, 4:28, 4:28], plain[:, 4:28, 4:28], rtol=1e-4, atol=1e-5)
    assert not out.flat.any()


def _constant(model: torch.nn.Module) -> torch.nn.Module:
    """The same architecture, made to give the same logits for every input (head weights zero,
    scorer output layer zero)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("head.") or name.startswith("backbone.scorer.net.2"):
                p.zero_()
    return model.eval()


@pytest.mark.parametrize("kind", ["resnet", "vit", "topk", "topk_classwise"])
def test_explanation_maps_of_a_constant_model_are_flagged_flat(kind):
    torch.manual_seed(0)
    if kind == "resnet":
        model = _resnet_classifier()
    elif kind == "vit":
        model = Classifier(BACKBONES.get("vit_tiny").build(32), 3)
    elif kind == "topk":
        model = Classifier(wrap_topk(BACKBONES.get("vit_tiny").build(32), {"topk": 3}), 3)
    else:
        model = ClasswiseTopKClassifier(BACKBONES.get("vit_tiny").build(32), 3, k=3)
    model = _constant(model)
    x = torch.randn(3, 1, 32, 32)
    assert torch.allclose(model(x), model(x[[1, 2, 0]])[[2, 0, 1]])  # constant logits
    assert torch.allclose(model(x)[0], model(x)[1])
    out = explain(model, x, torch.tensor([0, 1, 2]))
    assert out.flat.tolist() == [True, True, True]
    assert (out.heat == 0).all()  # not min–max stretched into a hot spot


def test_a_one_cell_or_near_constant_map_is_flat_and_not_stretched():
    one = torch.full((2, 1, 1), 0.7)
    assert flat_maps(one).tolist() == [True, True]
    near = torch.ones(1, 4, 4) + 1e-9 * torch.rand(1, 4, 4)
    assert flat_maps(near).tolist() == [True]
    assert (normalize_maps(upsample(near, (8, 8))) == 0).all()
    shaped = torch.rand(1, 4, 4)
    assert flat_maps(shaped).tolist() == [False] and float(normalize_maps(shaped).max()) == 1.0


def test_a_flat_map_is_drawn_without_heat_or_maximum():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    image = np.full((32, 32), 90, np.uint8)
    heat = np.zeros((32, 32))
    heat[3, 3] = 1.0
    fig, (flat_ax, shaped_ax) = plt.subplots(1, 2)
    draw_panel(flat_ax, image, heat, flat=True)  # flagged upstream: no heat, no '+'
    draw_panel(shaped_ax, image, heat)
    assert (
        len(flat_ax.lines) == 0 and np.asarray(flat_ax.images[0].get_array()).ndim == 2
    )  # the gray image only
    assert (
        len(shaped_ax.lines) == 1 and np.asarray(shaped_ax.images[0].get_array()).ndim == 3
    )  # RGB overlay + marker
    assert any("flat map" in t.get_text() for t in flat_ax.texts)
    plt.close(fig)


@pytest.mark.parametrize(
    ("name", "size", "rule"),
    [("vit_tiny", 64, "patch"), ("vit_convstem_tiny", 64, "padded"), ("resnet_tiny", 128, "padded")],
)
def test_a_map_cell_lands_where_the_network_looks(name, size, rule):
    # the centroid of |∂ cell / ∂ input| (the cell's receptive field) is where the upsampled map must put the
    # cell: a patch's centre for a patchify ViT, half a cell up-left of it for padded stride-2 convolutions
    # (ResNet, conv stem) — bilinear align_corners=False placed those 7.5–15.5 px off at 224 px
    from chexbench.explain.heatmaps import cell_origin, upsample
    from chexbench.spec.registry import BACKBONES

    torch.manual_seed(0)
    bb = BACKBONES.get(name).build(size, {}).eval()
    assert cell_origin(bb) == rule
    layer = bb.model.layer4 if hasattr(bb.model, "layer4") else bb.model.patch_embed
    seen = {}
    hook = layer.register_forward_hook(lambda m, i, o: seen.__setitem__("out", o))
    acc = torch.zeros(size, size, dtype=torch.float64)
    for seed in range(6):
        x = torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(seed), requires_grad=True)
        bb(x)
        out = seen["out"]
        if out.dim() == 3:  # tokens (B, N, D) → (B, D, rows, cols)
            g = int(round(out.shape[1] ** 0.5))
            out = out.transpose(1, 2).reshape(1, -1, g, g)
        out[0, :, 2, 2].sum().backward()
        acc += x.grad[0, 0].abs().double()
    hook.remove()
    centre = torch.arange(size, dtype=torch.float64) + 0.5
    look_y, look_x = (
        float((acc.sum(1) * centre).sum() / acc.sum()),
        float((acc.sum(0) * centre).sum() / acc.sum()),
    )
    one = torch.zeros(1, out.shape[-2], out.shape[-1])
    one[0, 2, 2] = 1.0
    up = upsample(one, (size, size), rule)[0].double()
    put_y, put_x = float((up.sum(1) * centre).sum() / up.sum()), float((up.sum(0) * centre).sum() / up.sum())
    assert abs(put_x - look_x) < 1.0 and abs(put_y - look_y) < 1.0, (put_x, put_y, look_x, look_y)
    other = upsample(one, (size, size), "padded" if rule == "patch" else "patch")[0].double()
    assert abs(float((other.sum(0) * centre).sum() / other.sum()) - look_x) > 3.0  # the other rule is off


def test_patch_outlines_sit_around_the_cells_centre():
    from chexbench.explain.heatmaps import patch_rects

    assert patch_rects(np.array([0, 5]), (4, 4), (64, 64)) == [
        (0.0, 0.0, 16.0, 16.0),
        (16.0, 16.0, 16.0, 16.0),
    ]
    assert patch_rects(np.array([5]), (4, 4), (64, 64), "padded") == [(8.5, 8.5, 16.0, 16.0)]


@pytest.mark.parametrize(
    ("name", "size"), [("vit_tiny", 64), ("vit_convstem_tiny", 64), ("resnet_tiny", 64), ("resnet_tiny", 128)]
)
def test_every_cell_edges_included_points_at_its_receptive_field_centroid(name, size):
    # for every cell: the maximum of the upsampled one-hot map must be the centroid of |∂ cell / ∂ input| (its
    # receptive field, averaged over other noise images than the placement's probes). Clamping at the border
    # made an
    # edge cell a plateau: ConvStem's last cell at 60.0 px instead of 56.5, a 2×2 ResNet map's far cell at 48
    # instead
    # of 32.5, a patchify ViT's edge cells 2 px out; the padded first cell sat at 0.5 px, its field's centroid
    # ~3 px in
    from chexbench.explain.heatmaps import _cell_layer, cell_centres, upsample
    from chexbench.explain.maxima import maximum_points
    from chexbench.spec.registry import BACKBONES

    torch.manual_seed(0)
    bb = BACKBONES.get(name).build(size, {}).eval()
    seen = {}
    hook = _cell_layer(bb).register_forward_hook(lambda m, i, o: seen.__setitem__("out", o))
    probes = 2
    bb(torch.zeros(1, 1, size, size))
    out = seen["out"]
    rows, cols = out.shape[-2:] if out.dim() == 4 else (int(round(out.shape[1] ** 0.5)),) * 2
    n = rows * cols
    x = torch.rand(
        n * probes, 1, size, size, generator=torch.Generator().manual_seed(100), requires_grad=True
    )
    bb(x)
    out = seen["out"]
    if out.dim() == 3:  # tokens (B, N, D) → (B, D, rows, cols)
        out = out.transpose(1, 2).reshape(out.shape[0], -1, rows, cols)
    cell = (
        torch.arange(n * probes) % n
    )  # sample b backpropagates its own cell: every cell measured in one pass
    out[torch.arange(n * probes), :, cell // cols, cell % cols].sum().backward()
    hook.remove()
    grad = x.grad[:, 0].abs().double().view(probes, n, size, size).sum(0)  # (cells, H, W)
    centre = torch.arange(size, dtype=torch.float64) + 0.5
    look_y = (grad.sum(2) * centre).sum(1) / grad.sum((1, 2))
    look_x = (grad.sum(1) * centre).sum(1) / grad.sum((1, 2))
    placement = cell_centres(bb, (size, size), (rows, cols))
    worst = 0.0
    for k in range(n):
        one = torch.zeros(1, rows, cols)
        one[0, k // cols, k % cols] = 1.0
        points = maximum_points(upsample(one, (size, size), placement)[0].numpy())
        assert len(points) == 1, (k, points)  # one maximum, never a second one at the border
        ((py, px),) = points
        worst = max(worst, abs(py - float(look_y[k])), abs(px - float(look_x[k])))
    assert worst < 1.0, worst
    if name == "vit_convstem_tiny":
        assert placement[1][-1] == pytest.approx(56.5)  # the last cell's field ends inside the image
    if name == "resnet_tiny" and size == 64:
        assert placement[1][-1] == pytest.approx(32.5)  # not the corner


def test_an_edge_maximum_is_not_a_plateau_to_the_border():
    from chexbench.explain.heatmaps import upsample
    from chexbench.explain.maxima import maximum_points

    one = torch.zeros(1, 8, 8)
    one[0, 7, 7] = 1.0
    assert maximum_points(upsample(one, (64, 64), "patch")[0].numpy()) == [
        (60.0, 60.0)
    ]  # the patch's centre, not 62
    assert maximum_points(upsample(one, (64, 64), "padded")[0].numpy()) == [(56.5, 56.5)]  # not 60.0
    two = torch.tensor([[[0.2, 0.0], [0.0, 1.0]]])
    up = upsample(two, (64, 64), "padded")[0].numpy()
    assert (
        maximum_points(up) == [(32.5, 32.5)] and up[-1, -1] < 1.0
    )  # the far corner is below the cell's peak
