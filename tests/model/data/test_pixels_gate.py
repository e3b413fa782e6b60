"""model/data/pixels.py: the two pixel checks that keep an image from being captioned."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from altbeam.model.data.pixels import BLANK_RANGE, MIN_SIDE, is_blank, square_pixels, too_small


def test_too_small_is_about_the_shorter_side():
    assert too_small(MIN_SIDE - 1, 4000)
    assert too_small(4000, 8)
    assert not too_small(MIN_SIDE, MIN_SIDE)
    assert not too_small(640, 480)


def test_uniform_and_nearly_uniform_images_are_blank():
    assert is_blank(np.full((224, 224, 3), 128, np.uint8))
    rng = np.random.default_rng(0)
    noisy_grey = np.clip(128 + rng.normal(0, 1.5, (224, 224, 3)), 0, 255).astype(np.uint8)
    assert is_blank(noisy_grey)
    # a few specks of dust do not make an image: the 1st-99th percentile spread decides
    specks = np.full((224, 224, 3), 40, np.uint8)
    specks[rng.integers(0, 224, 100), rng.integers(0, 224, 100)] = 255
    assert is_blank(specks)
    assert is_blank(np.zeros((0, 0, 3), np.uint8))


def test_pictures_with_any_structure_are_not_blank():
    half = np.zeros((224, 224, 3), np.uint8)
    half[:, 112:] = 200
    assert not is_blank(half)
    ramp = np.tile(np.linspace(0, BLANK_RANGE * 3, 224, dtype=np.uint8)[None, :, None], (224, 1, 3))
    assert not is_blank(ramp)
    # a dark photo is not blank: a small spread in one channel is enough
    dark = np.full((224, 224, 3), 10, np.uint8)
    dark[::2, :, 0] = 10 + BLANK_RANGE
    assert not is_blank(dark)
    assert not is_blank(np.tile(np.arange(256, dtype=np.uint8), (16, 1)))   # greyscale [H, W]


def test_an_8px_grey_jpeg_through_the_shared_preparation_is_blank_and_too_small():
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (120, 120, 120)).save(buf, "JPEG", quality=90)
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        size = im.size
        pixels = square_pixels(im, 224)
    assert too_small(*size)
    assert is_blank(pixels)
