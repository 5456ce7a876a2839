"""Decoding a radiograph file to the square uint8 image stored in the prepared cache.

Aspect handling: the shorter side is resized to S (bilinear, antialiased by PIL's reducing
gap), then the centre S×S is cropped. 16-bit images are scaled by 255 / max; colour images
become luminance (PIL ``L``). JPEGs are decoded with DCT scaling (``draft``) to the
smallest scale at least S on the short side, which is what makes preparation fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def decode_image(path: str | Path, size: int) -> np.ndarray:
    """Decode one image file to uint8 (size, size): shorter side → size, centre crop."""
    with Image.open(path) as im:
        if im.format == "JPEG":
            im.draft("L", (size, size))
        im = _to_gray8(im)
        w, h = im.size
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        im = im.resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=3.0)
        left, top = (nw - size) // 2, (nh - size) // 2
        im = im.crop((left, top, left + size, top + size))
        return np.asarray(im, dtype=np.uint8)


def _to_gray8(im: Any) -> Any:
    if im.mode == "L":
        im.load()
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        top = float(arr.max()) if arr.size else 0.0
        arr = arr * (255.0 / top) if top > 255 else arr
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="L")
    return im.convert("L")


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 (F, F) → uint8 (size, size), bilinear with PIL's antialiasing reducing gap."""
    im = Image.fromarray(np.ascontiguousarray(image), mode="L")
    return np.asarray(im.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0), dtype=np.uint8)
