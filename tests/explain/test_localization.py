"""Localization: pointing game on synthetic heatmaps with known boxes, the random baseline,
box mapping onto the prepared image, deletion curves, and the whole evaluation on files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from chexbench.datasets.cache import decode_image
from chexbench.datasets.celldata import CellData, SplitData
from chexbench.explain.localization import (
    bootstrap_rate_interval,
    curve_auc,
    deletion_curve,
    evaluate_localization,
    load_split_boxes,
    map_box_to_cache,
    pointing_hit,
    pointing_score,
    random_hit_probability,
    resolve_tolerance,
    standard_tolerance,
)


def _blob(h: int, w: int, cx: float, cy: float, s: float = 2.0) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    return np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s * s))


def test_pointing_game_on_a_synthetic_heatmap_with_a_known_box():
    box = (10.0, 20.0, 18.0, 30.0)  # x0, y0, x1, y1
    assert pointing_hit(_blob(40, 40, 14, 25), [box])
    assert not pointing_hit(_blob(40, 40, 30, 5), [box])
    assert pointing_hit(_blob(40, 40, 30, 5), [box, (28.0, 2.0, 33.0, 8.0)])  # any box of the label
    assert not pointing_hit(_blob(40, 40, 21, 25), [box])
    assert pointing_hit(_blob(40, 40, 21, 25), [box], tolerance=3.0)


def test_random_baseline_is_the_box_area_fraction_and_matches_random_heatmaps():
    boxes = [(0.0, 0.0, 10.0, 8.0), (5.0, 4.0, 15.0, 12.0)]  # overlapping: union 80 + 80 - 20 = 140 px
    p = random_hit_probability(boxes, 20, 40)
    assert p == pytest.approx(140 / 800)
    rng = np.random.default_rng(0)
    hits = np.mean([pointing_hit(rng.random((20, 40)), boxes) for _ in range(3000)])
    assert abs(hits - p) < 4 * np.sqrt(p * (1 - p) / 3000)


@pytest.mark.parametrize(("width", "height"), [(60, 40), (40, 72), (50, 50)])
def test_box_mapping_follows_the_prepared_cache(tmp_path, width, height):
    img = np.zeros((height, width), np.uint8)
    x, y, w, h = 20, 14, 12, 16
    img[y : y + h, x : x + w] = 255
    Image.fromarray(img).save(tmp_path / "a.png")
    size = 32
    cached = decode_image(tmp_path / "a.png", size)
    ys, xs = np.nonzero(cached > 127)
    x0, y0, x1, y1 = map_box_to_cache(x, y, w, h, width, height, size)
    assert abs(x0 - xs.min()) <= 1.0 and abs(x1 - (xs.max() + 1)) <= 1.0
    assert abs(y0 - ys.min()) <= 1.0 and abs(y1 - (ys.max() + 1)) <= 1.0
    assert map_box_to_cache(0, 0, 3, 3, 100, 40, 32) is None  # cropped away


class RegionLogit(nn.Module):
    """Logit of label 0 = 8 × mean of the top-left 4×4 region − 2; label 1 constant."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = x[:, 0, :4, :4].mean(dim=(1, 2))
        return torch.stack([8 * r - 2, torch.zeros_like(r)], dim=1)


def test_deletion_curve_and_auc():
    x = torch.ones(1, 1, 8, 8)
    heat = np.zeros((8, 8))
    heat[:4, :4] = 1.0
    order = np.argsort(-heat.reshape(-1), kind="stable")
    probs = deletion_curve(RegionLogit(), x, order, 0, steps=4)
    assert probs[0] == pytest.approx(torch.sigmoid(torch.tensor(6.0)).item())
    assert probs[1] == pytest.approx(
        torch.sigmoid(torch.tensor(-2.0)).item()
    )  # the first quarter is the region
    assert probs[-1] == pytest.approx(torch.sigmoid(torch.tensor(-2.0)).item())
    rand = deletion_curve(RegionLogit(), x, np.random.default_rng(0).permutation(64), 0, steps=4)
    assert curve_auc(probs) < curve_auc(rand)
    assert curve_auc(np.array([1.0, 0.0])) == pytest.approx(0.5)


class BrightCNN(nn.Module):
    """A CNN 'backbone' whose one channel follows brightness; the classifier says label 0 = bright."""

    kind = "cnn"
    num_features = 1

    def __init__(self):
        super().__init__()
        self.stage = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1, bias=False))
        with torch.no_grad():
            self.stage[0].weight.fill_(1 / 9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.stage(x)).amax(dim=(2, 3))


class BrightClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = BrightCNN()
        self.head = nn.Linear(1, 2)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([[4.0], [0.0]]))
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def _boxed_data(tmp_path):
    """Native-size images with a bright lesion, a phantom box sidecar, an index (6 images, 5 positive)."""
    root, cache = tmp_path / "root", tmp_path / "cache"
    (root / "img").mkdir(parents=True)
    cache.mkdir()
    rng = np.random.default_rng(0)
    ids, paths, images, rows = [], [], [], []
    for i in range(6):
        img = (40 + 10 * rng.random((48, 64))).astype(
            np.uint8
        )  # W 64 × H 48 → resized to 43 × 32, 5 px cropped on the left
        x, y = 14 + 5 * i, 10 + 3 * i
        img[y : y + 8, x : x + 8] = 230
        path = f"img/{i}.png"
        Image.fromarray(img).save(root / path)
        ids.append(f"id{i}")
        paths.append(path)
        images.append(decode_image(root / path, 32))
        rows.append({"image": f"{root.name}/{path}", "label": "lesion", "x": x, "y": y, "w": 8, "h": 8})
    rows.append({"image": f"{root.name}/img/0.png", "label": "other", "x": 0, "y": 0, "w": 60, "h": 40})
    pd.DataFrame(rows).to_csv(root / "phantom_boxes.csv", index=False)
    pd.DataFrame({"image_id": ids, "path": paths}).to_parquet(cache / "index.parquet")
    targets = np.array([[1.0, 0.0]] * 5 + [[0.0, 0.0]], dtype=np.float32)  # the last image is negative
    test = SplitData(np.stack(images), targets, np.array(ids), np.array(ids))
    data = CellData(
        ["lesion", "other"],
        ["lesion"],
        test,
        test,
        test,
        {"root": str(root), "cache_dir": str(cache), "image_size": 32},
    )
    return data, test


def test_evaluate_localization_on_files(tmp_path):
    """Grad-CAM of a brightness classifier points into the lesion boxes."""
    data, test = _boxed_data(tmp_path)
    boxes = load_split_boxes(data)
    assert set(boxes) == {f"id{i}" for i in range(6)}
    lbl, (x0, y0, x1, y1) = boxes["id0"][0]
    assert lbl == "lesion" and (x0, y0, x1, y1) == pytest.approx(
        (14 * 43 / 64 - 5, 10 * 32 / 48, 22 * 43 / 64 - 5, 18 * 32 / 48)
    )

    result = evaluate_localization(
        BrightClassifier(), data, (0.0, 1.0), torch.device("cpu"), deletion_steps=4
    )
    assert result["method"] == "gradcam" and result["pairs"] == 5 and result["images"] == 5
    assert result["pointing_hit_rate"] == 1.0 and result["flat_maps"] == 0
    assert result["pointing_ci"] == [1.0, 1.0] and result["interval"]["unit"] == "patient"
    assert result["tolerant"]["tolerance_px"] == pytest.approx(15 * 32 / 224)
    assert result["tolerant"]["pointing_hit_rate"] == 1.0
    assert result["tolerant"]["random_hit_rate"] > result["random_hit_rate"]
    assert set(result["per_label"]["lesion"]) >= {
        "pairs",
        "pointing_hit_rate",
        "random_hit_rate",
        "pointing_ci",
        "flat_maps",
        "tolerant",
    }
    lesion_boxes = [[b for lbl, b in boxes[f"id{i}"] if lbl == "lesion"] for i in range(5)]
    assert result["random_hit_rate"] == pytest.approx(
        np.mean([random_hit_probability(b, 32, 32) for b in lesion_boxes])
    )
    assert 25 / 1024 <= result["random_hit_rate"] <= 36 / 1024  # an 8 px box is ~5.4 px at 2/3 scale
    assert result["deletion_auc"] < result["random_deletion_auc"]
    assert (
        evaluate_localization(
            BrightClassifier(),
            CellData(["lesion"], ["lesion"], test, test, test, {}),
            (0.0, 1.0),
            torch.device("cpu"),
        )
        is None
    )  # no boxes: nothing to measure


def test_boxes_are_found_through_the_index_a_reindexed_cache_names(tmp_path):
    """After a re-index the cache's index is index.<tag>.parquet (named by its manifest) and
    there is no index.parquet; the boxes are still mapped to the cached images."""
    import json
    from pathlib import Path

    data, _ = _boxed_data(tmp_path)
    cache = Path(data.manifest["cache_dir"])
    (cache / "index.parquet").rename(cache / "index.0123456789ab.parquet")
    (cache / "manifest.json").write_text(
        json.dumps({"index_file": "index.0123456789ab.parquet", "reindexed": True})
    )
    assert set(load_split_boxes(data)) == {f"id{i}" for i in range(6)}


def test_a_maximal_plateau_points_at_its_centroid():
    heat = np.zeros((8, 8))
    heat[0:4, 0:4] = 1.0  # an upsampled 2×2 map whose top-left cell is the maximum
    assert pointing_hit(heat, [(1.0, 1.0, 3.0, 3.0)])  # centroid (2, 2), not pixel (0, 0)
    assert not pointing_hit(heat, [(0.0, 0.0, 1.0, 1.0)])


def test_a_flat_map_is_not_a_hit_at_the_centre():
    centre_box = [(12.0, 12.0, 20.0, 20.0)]  # covers the image centre, as cardiomegaly does
    for heat in (
        np.zeros((32, 32)),
        np.full((32, 32), 0.3),
        1.0 + 1e-9 * np.random.default_rng(0).random((32, 32)),
    ):
        assert not pointing_hit(heat, centre_box)
        assert pointing_score(heat, centre_box) == 0.0
        assert not pointing_hit(heat, centre_box, tolerance=standard_tolerance(32))


def test_two_far_apart_tied_maxima_do_not_average_into_a_point_between_them():
    heat = np.zeros((32, 32))
    heat[2, 2] = heat[29, 29] = 1.0  # tied maxima in opposite corners; their mean (16, 16) is cold
    middle = [(12.0, 12.0, 20.0, 20.0)]
    assert not pointing_hit(heat, middle)
    assert pointing_score(heat, middle) == 0.0
    assert (
        pointing_score(heat, [(0.0, 0.0, 5.0, 5.0)]) == 0.5
    )  # one of two: the expected hit of a random tie-break
    assert pointing_score(heat, [(0.0, 0.0, 5.0, 5.0), (27.0, 27.0, 32.0, 32.0)]) == 1.0


def test_tolerance_is_euclidean_and_the_standard_one_scales_with_the_image():
    assert standard_tolerance(224) == 15.0 and standard_tolerance(64) == pytest.approx(15 * 64 / 224)
    assert resolve_tolerance("standard", 448) == 30.0 and resolve_tolerance(3, 64) == 3.0
    with pytest.raises(Exception, match="pointing_tolerance"):
        resolve_tolerance("wide", 64)
    heat = _blob(64, 64, 30.5, 30.5)  # maximum at pixel centre (30.5, 30.5)
    box = [(34.0, 34.0, 50.0, 50.0)]  # 3.5 px away along each axis: 4.95 px Euclidean
    assert pointing_score(heat, box) == 0.0
    assert pointing_score(heat, box, tolerance=4.9) == 0.0  # a square grown box would count it
    assert pointing_score(heat, box, tolerance=5.0) == 1.0
    p_strict = random_hit_probability(box, 64, 64)
    p_tol = random_hit_probability(box, 64, 64, tolerance=5.0)
    assert p_strict == pytest.approx(16 * 16 / 64**2)
    ref = (
        sum(
            1
            for y in range(64)
            for x in range(64)
            if np.hypot(max(34 - (x + 0.5), 0, x + 0.5 - 50), max(34 - (y + 0.5), 0, y + 0.5 - 50)) <= 5.0
        )
        / 64**2
    )
    assert p_tol == pytest.approx(ref) and p_tol > p_strict


def test_bootstrap_interval_resamples_patients_and_covers_the_rate():
    rng = np.random.default_rng(3)
    hits = (rng.random(200) < 0.3).astype(float)
    chance = np.full(200, 0.05)
    per_image = bootstrap_rate_interval(hits, chance, np.arange(200), resamples=4000)
    lo, hi = per_image["pointing_ci"]
    se = np.sqrt(0.3 * 0.7 / 200)
    assert lo < hits.mean() < hi and hi - lo == pytest.approx(2 * 1.96 * se, rel=0.2)
    assert per_image["random_ci"] == pytest.approx([0.05, 0.05])
    assert per_image["difference_ci"] == pytest.approx([lo - 0.05, hi - 0.05])
    # 20 patients of 10 pairs each that all hit or all miss: far wider than 200 independent pairs
    clustered = np.repeat((rng.random(20) < 0.3).astype(float), 10)
    by_patient = bootstrap_rate_interval(
        clustered, np.full(200, 0.05), np.repeat(np.arange(20), 10), resamples=4000
    )
    by_image = bootstrap_rate_interval(clustered, np.full(200, 0.05), np.arange(200), resamples=4000)
    width = lambda r: r["pointing_ci"][1] - r["pointing_ci"][0]  # noqa: E731
    assert width(by_patient) > 2.5 * width(by_image)


class FlatClassifier(BrightClassifier):
    """Grad-CAM of a head whose weight is negative for the bright channel: ReLU zeroes the map."""

    def __init__(self):
        super().__init__()
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([[-4.0], [0.0]]))


def test_evaluate_localization_counts_flat_maps_as_misses(tmp_path):
    data, _ = _boxed_data(tmp_path)
    result = evaluate_localization(
        FlatClassifier(), data, (0.0, 1.0), torch.device("cpu"), deletion_steps=0, tolerance=2.0
    )
    assert result["pairs"] == 5 and result["flat_maps"] == 5 and result["flat_rule"] == "miss"
    assert result["pointing_hit_rate"] == 0.0 and result["tolerant"]["pointing_hit_rate"] == 0.0
    assert result["tolerant"]["tolerance_px"] == 2.0 and result["per_label"]["lesion"]["flat_maps"] == 5


def test_deletion_order_is_highest_first_with_ties_and_flat_maps_in_random_order():
    from chexbench.explain.localization import deletion_order

    rng = np.random.default_rng(0)
    heat = np.zeros((8, 8))
    heat[6, 6] = 1.0  # one peak, the rest a tie at 0
    orders = [deletion_order(heat, False, rng) for _ in range(20)]
    assert all(o[0] == 6 * 8 + 6 and sorted(o.tolist()) == list(range(64)) for o in orders)
    assert (
        len({tuple(o[1:5]) for o in orders}) > 1
    )  # the tied pixels are not deleted top row first every time
    raster = np.arange(64)
    flat = [deletion_order(np.zeros((8, 8)), True, rng) for _ in range(20)]
    assert all(sorted(o.tolist()) == list(range(64)) for o in flat)
    # a flat map's deletion does not start at the top: on average its first half is as low as its second
    assert abs(np.mean([o[:32].mean() for o in flat]) - 31.5) < 4 and not any(
        np.array_equal(o, raster) for o in flat
    )
