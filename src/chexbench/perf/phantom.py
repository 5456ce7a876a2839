"""Generation speed of the phantom: images/s on one core, per site (``chexbench bench phantom``)."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass

from PIL import Image
from threadpoolctl import threadpool_limits

from chexbench.datasets.phantom.cohort import sample_cohort
from chexbench.datasets.phantom.render import render_study

FORMATS = {"chexpert": "JPEG", "nih": "PNG", "indiana": "PNG"}


@dataclass
class GenerationSpeed:
    site: str
    fmt: str
    images: int
    render_per_s: float
    total_per_s: float


def _one_thread():
    return threadpool_limits(1)


def measure_generation(
    size: int = 256, images: int = 100, seed: int = 0, sites: tuple[str, ...] = ("chexpert", "nih", "indiana")
) -> list[GenerationSpeed]:
    """Render ``images`` frontal images per site in this process with one BLAS thread; encode to memory.

    Rates are images per CPU-second of this process (``time.process_time``), i.e. per core,
    so a busy shared machine does not distort them.
    """
    out = []
    with _one_thread():
        for site in sites:
            studies = [(p, s) for p in sample_cohort(site, images, seed) for s in p.studies][:images]
            render_study(*studies[0], site, size, seed)  # warm caches (grids, overlays)
            render_s = encode_s = 0.0
            for patient, study in studies:
                t0 = time.process_time()
                image, _ = render_study(patient, study, site, size, seed)
                t1 = time.process_time()
                buf = io.BytesIO()
                Image.fromarray(image).save(
                    buf, format=FORMATS[site], **({"quality": 92} if site == "chexpert" else {})
                )
                encode_s += time.process_time() - t1
                render_s += t1 - t0
            n = len(studies)
            out.append(GenerationSpeed(site, FORMATS[site], n, n / render_s, n / (render_s + encode_s)))
    return out
