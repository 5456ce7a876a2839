"""Localization baselines that never see the test lesion: the label prior (fitted on the training split's
boxes only), shuffled maps (another test image's boxes of the same label) and the area-random map; the
stored numbers recompute from the record's test boxes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from chexbench.datasets.celldata import CellData, SplitData
from chexbench.explain.baselines import (
    bootstrap_rates,
    fit_label_priors,
    points_score,
    shuffle_partners,
    strongest,
)
from chexbench.explain.localization import evaluate_localization, random_hit_probability

SIZE = 32


class BrightCNN(nn.Module):
    kind = "cnn"

    def __init__(self):
        super().__init__()
        self.stage = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1, bias=False))
        with torch.no_grad():
            self.stage[0].weight.fill_(1 / 9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.stage(x)).amax(dim=(2, 3))


class BrightClassifier(nn.Module):
    """Both labels' logits rise with the brightest spot: Grad-CAM points at the bright lesion."""

    def __init__(self):
        super().__init__()
        self.backbone = BrightCNN()
        self.head = nn.Linear(1, 2)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([[4.0], [3.0]]))
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def _split(root, prefix: str, spots: list[tuple[int, int, str]], rows: list[dict]) -> SplitData:
    """Images (SIZE × SIZE, written at native size) with one bright 6-px lesion each at (x, y) of
    ``label``."""
    rng = np.random.default_rng(len(rows))
    ids, images, targets = [], [], []
    for i, (x, y, label) in enumerate(spots):
        img = (40 + 10 * rng.random((SIZE, SIZE))).astype(np.uint8)
        img[y : y + 6, x : x + 6] = 230
        path = f"img/{prefix}{i}.png"
        Image.fromarray(img).save(root / path)
        ids.append(f"{prefix}{i}")
        images.append(img)
        targets.append([1.0 if label == "a" else 0.0, 1.0 if label == "b" else 0.0])
        rows.append({"image": f"{root.name}/{path}", "label": label, "x": x, "y": y, "w": 6, "h": 6})
    patients = np.array([f"p{prefix}{i // 2}" for i in range(len(spots))])  # two images per patient
    return SplitData(np.stack(images), np.asarray(targets, np.float32), np.array(ids), patients)


def _data(tmp_path, train_spots, test_spots) -> CellData:
    root, cache = tmp_path / "root", tmp_path / "cache"
    (root / "img").mkdir(parents=True, exist_ok=True)
    cache.mkdir(exist_ok=True)
    rows: list[dict] = []
    train = _split(root, "t", train_spots, rows)
    test = _split(root, "s", test_spots, rows)
    pd.DataFrame(rows).to_csv(root / "phantom_boxes.csv", index=False)
    ids = [*train.image_ids, *test.image_ids]
    pd.DataFrame({"image_id": ids, "path": [f"img/{i}.png" for i in ids]}).to_parquet(cache / "index.parquet")
    return CellData(
        ["a", "b"],
        ["a", "b"],
        train,
        train,
        test,
        {"root": str(root), "cache_dir": str(cache), "image_size": SIZE},
    )


TRAIN = [(2, 2, "a"), (3, 2, "a"), (2, 3, "a"), (24, 24, "b"), (23, 24, "b"), (20, 20, "a")]
TEST = [(14, 14, "a"), (16, 6, "a"), (6, 18, "a"), (20, 4, "b"), (4, 20, "b"), (12, 24, "b")]


def _run(data: CellData) -> dict:
    return evaluate_localization(
        BrightClassifier(),
        data,
        (0.0, 1.0),
        torch.device("cpu"),
        deletion_steps=0,
        tolerance=0.0,
        resamples=200,
    )


def test_the_label_prior_is_fitted_on_the_training_split_only(tmp_path):
    loc = _run(_data(tmp_path / "one", TRAIN, TEST))
    prior_a = loc["label_prior"]["a"]
    assert prior_a["train_images"] == 4 and prior_a["hit_fraction"] == pytest.approx(
        3 / 4
    )  # three overlap at (3..8)
    y, x = prior_a["points"][0]
    assert 3 <= x <= 8 and 3 <= y <= 8
    # move every test box (and its lesion): the prior does not move, its hits on the test pairs do
    moved = [(3, 3, "a"), (4, 4, "a"), (16, 6, "a"), (24, 24, "b"), (23, 22, "b"), (12, 24, "b")]
    loc2 = _run(_data(tmp_path / "two", TRAIN, moved))
    assert loc2["label_prior"] == loc["label_prior"]
    assert loc["baselines"]["label_prior"]["rate"] == 0.0
    assert loc2["baselines"]["label_prior"]["rate"] == pytest.approx(4 / 6)  # a: 2 of 3 test boxes, b: 2 of 3
    # move the training boxes instead: the prior follows them
    loc3 = _run(
        _data(tmp_path / "three", [(14, 14, s) if s == "a" else (x, y, s) for x, y, s in TRAIN], TEST)
    )
    assert loc3["label_prior"]["a"]["points"] != loc["label_prior"]["a"]["points"]
    assert loc3["per_label"]["a"]["baselines"]["label_prior"]["rate"] == pytest.approx(1 / 3)


def test_shuffled_maps_keep_the_label_and_borrow_another_images_boxes(tmp_path):
    labels = ["a", "b", "a", "a", "b", "c", "b", "a"]
    partner = shuffle_partners(labels, seed=5)
    for i, p in enumerate(partner):
        if labels[i] == "c":
            assert p == -1  # alone with its label: no partner
        else:
            assert p != i and labels[p] == labels[i]
    assert sorted(p for p in partner if p >= 0) == [
        i for i, lbl in enumerate(labels) if lbl != "c"
    ]  # a derangement
    assert np.array_equal(shuffle_partners(labels, seed=5), partner)  # deterministic
    loc = _run(_data(tmp_path, TRAIN, TEST))
    d = loc["pair_detail"]
    assert loc["pointing_hit_rate"] == 1.0  # the map finds each lesion ...
    for i, p in enumerate(d["shuffled_partner"]):
        assert d["label"][p] == d["label"][i] and d["image_id"][p] != d["image_id"][i]
    assert loc["baselines"]["shuffled"]["rate"] == 0.0  # ... so against another image's boxes it misses


def test_stored_baselines_recompute_from_the_test_boxes(tmp_path):
    moved = [(3, 3, "a"), (4, 4, "a"), (16, 6, "a"), (24, 24, "b"), (23, 22, "b"), (12, 24, "b")]
    loc = _run(_data(tmp_path, TRAIN, moved))
    d = loc["pair_detail"]
    boxes = [[tuple(b) for b in bb] for bb in d["boxes"]]
    prior = [
        points_score(loc["label_prior"][lbl]["points"], b) for lbl, b in zip(d["label"], boxes, strict=True)
    ]
    shuffled = [points_score(d["maxima"][i], boxes[p]) for i, p in enumerate(d["shuffled_partner"])]
    random = [random_hit_probability(b, SIZE, SIZE) for b in boxes]
    assert d["label_prior"] == pytest.approx(prior) and d["shuffled"] == pytest.approx(shuffled)
    assert d["random"] == pytest.approx(random, abs=1e-6)  # stored to 6 decimals
    base = loc["baselines"]
    assert base["label_prior"]["rate"] == pytest.approx(np.mean(prior)) and base["shuffled"][
        "rate"
    ] == pytest.approx(np.mean(shuffled))
    assert base["random"]["rate"] == pytest.approx(loc["random_hit_rate"])
    assert base["strongest"] == "label_prior" and base["ratio_to_strongest"] == pytest.approx(
        1.0 / np.mean(prior)
    )
    lo, hi = base["ratio_ci"]
    assert lo <= base["ratio_to_strongest"] <= hi
    assert loc["tolerant"]["baselines"]["strongest"] in ("random", "label_prior", "shuffled")


def test_prior_map_counts_images_and_its_maximum_hits_most_training_boxes():
    train = {
        "i0": [("a", (0.0, 0.0, 4.0, 4.0))],
        "i1": [("a", (2.0, 2.0, 6.0, 6.0)), ("a", (2.0, 2.0, 5.0, 5.0))],
        "i2": [("b", (10.0, 10.0, 12.0, 12.0))],
    }
    priors = fit_label_priors(train, ["a", "b", "c"], 16, 16, tolerance=0.0)
    assert priors["a"]["map"].max() == 2  # an image with two overlapping boxes counts once
    assert priors["a"]["train_images"] == 2 and priors["a"]["train_boxes"] == 3
    y, x = priors["a"]["points"][0]
    assert 2 <= x <= 4 and 2 <= y <= 4
    assert priors["c"]["train_images"] == 0 and priors["c"]["points"] == []


def test_bootstrap_rates_share_resamples_and_give_the_ratio_interval():
    rng = np.random.default_rng(0)
    hits = (rng.random(200) < 0.5).astype(float)
    prior = (rng.random(200) < 0.25).astype(float)
    clusters = np.repeat(np.arange(100), 2)
    ci = bootstrap_rates({"hit": hits, "prior": prior}, clusters, 500, ratio_to={"ratio": "hit/prior"})
    assert ci["hit"][0] < hits.mean() < ci["hit"][1] and ci["prior"][0] < prior.mean() < ci["prior"][1]
    assert ci["ratio"][0] < hits.mean() / prior.mean() < ci["ratio"][1]
    assert strongest({"random": 0.1, "label_prior": 0.3, "shuffled": 0.3}) == "label_prior"
