"""Pixels for evaluation, prepared exactly as the caption pipeline serves them.

model/ must not import pipelines/ (DESIGN.md), so this mirrors pipelines.decode's
core steps for ordinary photos: JPEG draft scaling, EXIF orientation, RGB, a plain
bilinear resize to a square (no crop). tests/test_evaluate.py checks the two agree
pixel for pixel on the sample photos.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps


def load_pixels(path: str, size: int) -> np.ndarray:
    with Image.open(path) as im:
        if im.format == "JPEG":
            im.draft(None, (size, size))
        im.load()
        im = ImageOps.exif_transpose(im)
        if im.mode != "RGB":
            im = im.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
        return np.asarray(im, dtype=np.uint8)
