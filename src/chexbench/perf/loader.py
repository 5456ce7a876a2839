"""``bench data``: images/s of decoding native files with PIL vs reading the prepared cache.

Both paths deliver the same uint8 batches (B, 1, S, S) of the same images in the same
shuffled order (:func:`chexbench.core.inputs.batches`). Path (a) decodes and resizes every
image from its native file with PIL (the same decode as ``data prepare``, i.e. the *fast* PIL
path with JPEG DCT scaling); path (b) gathers rows of the uint8 memmap. Each is timed twice:
the loader alone (the headline ratio: what feeds a GPU, where augmentation runs on the
device), and followed by the training loop's input steps on CPU — ``to_input`` and the
fine-tuning augmentation ``light_augment`` — whose cost is the same for both paths. The
one-off cost of preparing the cache is reported separately.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from chexbench.core.errors import DataError
from chexbench.core.inputs import batches, to_input
from chexbench.datasets.cache import prepare
from chexbench.datasets.decode import decode_image
from chexbench.datasets.splits import FRONTAL_VIEWS
from chexbench.spec.registry import DATASETS
from chexbench.strategies.augment import light_augment


@dataclass
class LoaderBench:
    dataset: str
    images: int
    size: int
    batch_size: int
    epochs: int
    pil_images_per_s: float
    cache_images_per_s: float
    pil_no_aug_images_per_s: float
    cache_no_aug_images_per_s: float
    prepare_seconds: float
    source_resolution: str

    @property
    def ratio(self) -> float:
        return self.cache_images_per_s / self.pil_images_per_s

    @property
    def ratio_no_aug(self) -> float:
        return self.cache_no_aug_images_per_s / self.pil_no_aug_images_per_s

    def markdown(self) -> str:
        rows = [
            (
                "(a) PIL decode + resize from native files",
                self.pil_images_per_s,
                self.pil_no_aug_images_per_s,
            ),
            ("(b) prepared uint8 cache (memmap)", self.cache_images_per_s, self.cache_no_aug_images_per_s),
        ]
        lines = [
            (
                f"Dataset `{self.dataset}`, {self.images} images (native {self.source_resolution}) →"
                f" {self.size}×{self.size}, batch {self.batch_size}, {self.epochs} passes, one process,"
                " `torch.set_num_threads(2)`."
            ),
            "",
            "| loader | img/s loader only (uint8 batches) | img/s + to_input + light_augment on CPU |",
            "|---|---:|---:|",
            *[f"| {name} | {b:,.0f} | {a:,.0f} |" for name, a, b in rows],
            f"| **ratio (b) / (a)** | **{self.ratio_no_aug:.1f}×** | {self.ratio:.1f}× |",
            "",
            (
                f"Preparing the cache once took {self.prepare_seconds:.2f} s "
                f"({self.images / max(self.prepare_seconds, 1e-9):,.0f} img/s, all cores). "
                "The right column is bounded by the CPU augmentation (one affine warp per image), the "
                "same work on both paths; on a GPU it runs on the device and the loader column is what "
                "the training loop sees."
            ),
        ]
        return "\n".join(lines)


def measure_loaders(
    dataset: str,
    root: Path,
    size: int = 224,
    n_images: int = 256,
    batch_size: int = 32,
    epochs: int = 2,
    seed: int = 0,
) -> LoaderBench:
    """Time paths (a) and (b) on the first ``n_images`` frontal images of ``dataset``.

    The cache of those images is prepared in a temporary folder (never the dataset's real
    prepared folder) and removed afterwards.
    """
    with tempfile.TemporaryDirectory(prefix="chexbench-bench-data-") as tmp:
        return _measure(dataset, Path(root), size, n_images, batch_size, epochs, Path(tmp) / "cache", seed)


def _measure(
    dataset: str, root: Path, size: int, n_images: int, batch_size: int, epochs: int, out: Path, seed: int
) -> LoaderBench:
    torch.set_num_threads(min(2, torch.get_num_threads()))
    index, files, resolution = _frontal_images(dataset, root, n_images)
    t0 = time.perf_counter()
    cache = prepare(dataset, root, size, out, index=index)
    prepare_s = time.perf_counter() - t0
    images = cache.images
    rows = cache.rows

    def pil(idx: np.ndarray) -> np.ndarray:
        return np.stack([decode_image(files[i], size) for i in idx])

    def cached(idx: np.ndarray) -> np.ndarray:
        return images[rows[idx]]

    def run(load: Callable[[np.ndarray], np.ndarray], augment: bool) -> float:
        return _images_per_s(load, len(files), batch_size, epochs, seed, augment)

    run(cached, True)  # warm-up: page cache, torch kernels
    run(pil, False)
    return LoaderBench(
        dataset=dataset,
        images=len(files),
        size=size,
        batch_size=batch_size,
        epochs=epochs,
        pil_images_per_s=run(pil, True),
        cache_images_per_s=run(cached, True),
        pil_no_aug_images_per_s=run(pil, False),
        cache_no_aug_images_per_s=run(cached, False),
        prepare_seconds=prepare_s,
        source_resolution=resolution,
    )


def _frontal_images(dataset: str, root: Path, n_images: int) -> tuple[pd.DataFrame, list[Path], str]:
    """The first ``n_images`` frontal images of ``dataset`` whose file exists: their index
    rows, their files, and the native resolution and format of the first one."""
    index = DATASETS.get(dataset).load_index(root)
    index = index[index["view"].isin(FRONTAL_VIEWS)]
    paths = [root / p for p in index["path"]]
    exists = np.array([p.is_file() for p in paths])
    index = index[exists].head(n_images).reset_index(drop=True)
    if len(index) == 0:
        raise DataError(f"dataset '{dataset}' at {root}: no readable frontal image to benchmark")
    files = [root / p for p in index["path"]]
    with Image.open(files[0]) as im:
        resolution = f"{im.size[0]}×{im.size[1]} {im.format}"
    return index, files, resolution


def _images_per_s(
    load: Callable[[np.ndarray], np.ndarray],
    n_images: int,
    batch_size: int,
    epochs: int,
    seed: int,
    augment: bool,
) -> float:
    """Images/s of ``epochs`` shuffled passes of ``load`` (uint8 (B, S, S) of index positions),
    followed by ``to_input`` + ``light_augment`` on CPU when ``augment``."""
    device = torch.device("cpu")
    gen = torch.Generator().manual_seed(seed)
    n = 0
    start = time.perf_counter()
    for _ in range(epochs):
        for idx in batches(n_images, batch_size, gen):
            x = torch.as_tensor(load(idx)).unsqueeze(1)  # uint8 (B, 1, S, S): what the loader hands over
            if augment:
                x = light_augment(to_input(x[:, 0], device), gen)
            n += len(idx)
    return n / (time.perf_counter() - start)
