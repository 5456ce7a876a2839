"""Phantom lesions are placed as real ones are: the fitted NIH box statistics re-derive from the real file,
the drawn lesions follow their side, spread and anatomy, and the pixels still carry the labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chexbench.datasets.phantom import box_stats
from chexbench.datasets.phantom.box_stats import NIH_BOX_LABELS, NIH_BOX_STATS
from chexbench.datasets.phantom.generate import GENERATOR_VERSION, generate
from chexbench.datasets.phantom.placement import draw_side


@pytest.mark.slow
def test_embedded_box_statistics_re_derive_from_the_real_nih_file():
    pytest.importorskip("torchxrayvision")
    assert box_stats.real_box_stats() == NIH_BOX_STATS
    effusion = NIH_BOX_STATS["pleural_effusion"]
    assert effusion["boxes"] == 153 and 0.4 < effusion["side0"] < 0.6  # effusions on either side
    assert effusion["centre"]["0"]["mean"][0] < 0.35 < 0.65 < effusion["centre"]["1"]["mean"][0]
    assert NIH_BOX_STATS["pneumothorax"]["centre"]["0"]["mean"][1] < 0.4  # apical


def test_fit_reads_sides_centres_and_sizes():
    boxes = pd.DataFrame(
        {
            "image_id": ["a", "b", "c", "d"],
            "label": ["Nodule"] * 4,
            "x": [100.0, 110.0, 90.0, 800.0],
            "y": [500.0, 520.0, 480.0, 300.0],
            "w": [50.0] * 4,
            "h": [40.0] * 4,
        }
    )
    fit = box_stats.fit_box_stats(boxes)["nodule"]
    assert (
        fit["side0"] == 0.75 and fit["boxes"] == 4 and "1" not in fit["centre"]
    )  # one right box: too few for a Gaussian
    assert fit["centre"]["0"]["mean"] == pytest.approx(
        [125 / 1024, 520 / 1024], abs=1e-4
    )  # centres (125, 520) ± 10
    assert fit["log_size"]["mean"] == pytest.approx([np.log(50 / 1024), np.log(40 / 1024)], abs=1e-4)


def test_sides_follow_the_real_proportion():
    rng = np.random.default_rng(0)
    sides = np.array([draw_side("cardiomegaly", rng) for _ in range(4000)])
    assert abs((sides == 0).mean() - NIH_BOX_STATS["cardiomegaly"]["side0"]) < 0.02


@pytest.fixture(scope="module")
def nih_phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("placement") / "out"
    generate(out, ("nih",), patients=160, size=64, seed=5, workers=1)
    return out / "nih"


def _boxes(root: Path) -> pd.DataFrame:
    raw = pd.read_csv(next(root.glob("BBox_List_2017.csv*")))
    xywh = raw.iloc[:, 2:6].to_numpy(dtype=np.float64)
    return pd.DataFrame(
        {
            "image": raw.iloc[:, 0],
            "name": raw.iloc[:, 1].map(NIH_BOX_LABELS),
            "cx": (xywh[:, 0] + xywh[:, 2] / 2) / 64,
            "cy": (xywh[:, 1] + xywh[:, 3] / 2) / 64,
        }
    )


def test_lesions_vary_in_side_and_place_as_real_ones_do(nih_phantom):
    assert GENERATOR_VERSION >= 5  # no cache of the fixed-place phantom is reused
    boxes = _boxes(nih_phantom)
    for name in ("pleural_effusion", "atelectasis", "nodule", "mass", "infiltration"):
        sub = boxes[boxes["name"] == name]
        assert len(sub) >= 8, name
        left = (sub["cx"] < 0.5).mean()
        assert 0.15 < left < 0.85, (name, left)  # both sides, as real boxes are
    for name in ("nodule", "atelectasis"):  # not one place per side: they spread over the lung field
        sub = boxes[(boxes["name"] == name) & (boxes["cx"] < 0.5)]
        assert sub["cy"].std() > 0.04 and sub["cx"].std() > 0.02, (name, sub["cy"].std(), sub["cx"].std())


def test_pixels_still_carry_the_labels_a_logistic_probe_beats_a_shuffled_label_probe(nih_phantom):
    from PIL import Image
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    entries = pd.read_csv(nih_phantom / "Data_Entry_2017.csv")
    images = np.stack(
        [
            np.asarray(Image.open(nih_phantom / "images" / f), dtype=np.float32)[::2, ::2].ravel() / 255
            for f in entries["Image Index"]
        ]
    )  # 32 × 32
    patients = entries["Patient ID"].to_numpy()
    train = patients % 4 != 0  # patient-level split
    rng = np.random.default_rng(0)
    for finding in ("Effusion", "Cardiomegaly"):
        y = entries["Finding Labels"].str.contains(finding).to_numpy().astype(int)
        shuffled = y.copy()
        shuffled[train] = rng.permutation(y[train])

        def auroc(target: np.ndarray, truth: np.ndarray) -> float:
            probe = LogisticRegression(C=0.05, max_iter=500).fit(images[train], target[train])
            return float(roc_auc_score(truth[~train], probe.decision_function(images[~train])))

        real, null = auroc(y, y), auroc(shuffled, y)
        assert real > 0.75 and real - null > 0.2, (finding, real, null)
