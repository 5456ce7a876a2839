"""Compare torchvision's image decoding with the PIL path of ``data prepare`` (issue 15).

    python perf/torchvision_decode.py PHANTOM_DIR [--size 256] [--repeats 3]

PHANTOM_DIR is the output of ``chexbench data synth``. Three kinds of file are timed on one
thread: the CheXpert-layout JPEGs, the 8-bit PNGs, and 16-bit PNGs re-encoded from those
(×257, the phantom writes none). Each is decoded to the cache's (size, size) uint8 image by
:func:`chexbench.datasets.decode.decode_image` (PIL: DCT scaling for JPEG, bilinear resize with
reducing gap 3, centre crop) and by torchvision (``decode_image`` + antialiased bilinear
``resize`` + the same crop and 16-bit scaling). Prints images/s (CPU time) and how far the
arrays differ. torchvision is not a dependency of chexbench: this script is the record of why.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms.v2 import functional as TF

from chexbench.datasets.decode import decode_image as pil_decode


def tv_decode(path: str, size: int) -> np.ndarray:
    """torchvision twin of chexbench.datasets.decode.decode_image."""
    img = decode_image(read_file(path), mode=ImageReadMode.UNCHANGED)  # (C, H, W) uint8 or uint16
    if img.shape[0] > 1:
        img = decode_image(read_file(path), mode=ImageReadMode.GRAY)
    if img.dtype != torch.uint8:
        arr = img.numpy().astype(np.float64)
        top = float(arr.max()) if arr.size else 0.0
        arr = arr * (255.0 / top) if top > 255 else arr
        img = torch.from_numpy(np.clip(arr, 0, 255).astype(np.uint8))
    h, w = img.shape[-2:]
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = TF.resize(img, [nh, nw], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img[0, top : top + size, left : left + size].numpy()


def rate(fn, paths: list[str], size: int, repeats: int) -> float:
    for p in paths[:2]:
        fn(p, size)  # warm-up
    t0 = time.process_time()
    for _ in range(repeats):
        for p in paths:
            fn(p, size)
    return repeats * len(paths) / (time.process_time() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("root", type=Path)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    jpgs = sorted(str(p) for p in args.root.rglob("*.jpg"))
    pngs = sorted(str(p) for p in args.root.rglob("*.png"))
    tmp = Path(tempfile.mkdtemp())
    png16 = []
    for i, p in enumerate(pngs):
        with Image.open(p) as im:
            a = np.asarray(im.convert("L"), dtype=np.uint16) * 257
        png16.append(str(tmp / f"{i}.png"))
        Image.fromarray(a).save(png16[-1])
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, size {args.size}, one thread")
    for kind, paths in (("JPEG", jpgs), ("PNG 8-bit", pngs), ("PNG 16-bit", png16)):
        with Image.open(paths[0]) as im:
            shape = f"{im.size[0]}x{im.size[1]} {im.mode}"
        diffs = [np.abs(pil_decode(p, args.size).astype(int) - tv_decode(p, args.size).astype(int)) for p in paths]
        d = np.stack(diffs)
        print(
            f"{kind:10s} n={len(paths):3d} ({shape}): PIL {rate(pil_decode, paths, args.size, args.repeats):6.1f} img/s, "
            f"torchvision {rate(tv_decode, paths, args.size, args.repeats):6.1f} img/s; "
            f"identical images {sum(int(x.max() == 0) for x in diffs)}/{len(paths)}, "
            f"pixels differing {float((d > 0).mean()):.1%}, mean |diff| {float(d.mean()):.2f}, max {int(d.max())}"
        )


if __name__ == "__main__":
    main()
