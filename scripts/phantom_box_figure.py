"""docs/phantom_box_centres.png: real vs phantom lesion-box centres per finding.

Real: the NIH ``BBox_List_2017.csv`` shipped by torchxrayvision (normalized by 1024 px). Phantom: a freshly
generated NIH-layout phantom (frontal images; boxes from its own ``BBox_List_2017.csv``). Usage::

    PYTHONPATH=src python scripts/phantom_box_figure.py [--patients 1200] [--seed 7] [--out docs/phantom_box_centres.png]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from chexbench.datasets.fixtures import real_label_file  # noqa: E402
from chexbench.datasets.phantom.box_stats import NIH_BOX_LABELS  # noqa: E402
from chexbench.datasets.phantom.generate import generate  # noqa: E402

FINDINGS = ("atelectasis", "cardiomegaly", "pleural_effusion", "infiltration", "mass", "nodule", "pneumonia", "pneumothorax")


def centres(file: Path, size: float | None) -> pd.DataFrame:
    """Box centres (cx, cy in [0, 1]) and harmonized names of a BBox_List file; ``size``: the images' side (None: read)."""
    raw = pd.read_csv(file)
    xywh = raw.iloc[:, 2:6].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    out = pd.DataFrame({"image": raw.iloc[:, 0].astype(str), "name": raw.iloc[:, 1].astype(str).str.strip().map(NIH_BOX_LABELS),
                        "cx": xywh[:, 0] + xywh[:, 2] / 2, "cy": xywh[:, 1] + xywh[:, 3] / 2})
    if size is None:
        from PIL import Image

        sizes = {i: Image.open(file.parent / "images" / i).size for i in out["image"].unique()}
        out["cx"] /= out["image"].map(lambda i: sizes[i][0])
        out["cy"] /= out["image"].map(lambda i: sizes[i][1])
    else:
        out["cx"] /= size
        out["cy"] /= size
    return out.dropna(subset=["name"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=1200)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default="docs/phantom_box_centres.png")
    args = ap.parse_args()
    real = centres(real_label_file("nih_boxes"), 1024.0)
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp) / "ph", sites=("nih",), patients=args.patients, size=128, seed=args.seed, workers=1)
        ph_dir = Path(tmp) / "ph" / "nih"
        phantom = centres(next(ph_dir.glob("BBox_List_2017.csv*")), None)
    fig, axes = plt.subplots(2, len(FINDINGS), figsize=(2.0 * len(FINDINGS), 4.4), dpi=120, sharex=True, sharey=True)
    bins = np.linspace(0, 1, 17)
    for j, name in enumerate(FINDINGS):
        for i, (what, df) in enumerate((("real NIH", real), ("phantom", phantom))):
            sub = df[df["name"] == name]
            ax = axes[i, j]
            ax.hist2d(sub["cx"], sub["cy"], bins=[bins, bins], cmap="magma", density=True)
            ax.set_xlim(0, 1)
            ax.set_ylim(1, 0)
            ax.set_xticks([0, 0.5, 1])
            ax.set_yticks([0, 0.5, 1])
            ax.tick_params(labelsize=6)
            ax.set_title(f"{name.replace('_', ' ')}\n{what} (n={len(sub)})" if i == 0 else f"{what} (n={len(sub)})", fontsize=7)
    fig.suptitle("Lesion-box centres, real NIH vs phantom (x: image left = patient right → right; y: top → bottom)",
                 fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
