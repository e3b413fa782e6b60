"""The model's input pixels: one preparation for serving, evaluation and features.

`square_pixels` turns an opened Pillow image into the uint8 ``[size, size, 3]`` RGB
array the encoder takes; pipelines/caption/decode.py calls it after its own checks
and metadata reading, `load_pixels` (evaluation) calls it on a file. So an image is
scored in evaluation exactly as it is captioned in production. The steps:

1. JPEG draft mode: libjpeg decodes at 1/2, 1/4 or 1/8 scale when the result is still
   at least ``size`` on both sides (a 12 MP photo is never fully decoded for 260 px);
2. EXIF orientation applied;
3. any mode to 8-bit RGB (`to_rgb`): alpha composited on white, 16-bit and other wide
   greyscale scaled down keeping the full range, palette/CMYK/greyscale converted;
4. a plain bilinear resize to ``size`` x ``size`` (no crop: the model was trained on
   stretched squares).

Pillow and numpy only: no TensorFlow, so the caption pipeline's launcher stays light.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

ORIENTATION_TAG = 274   # EXIF Orientation
_WIDE_GREY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def square_pixels(im: Image.Image, size: int, use_draft: bool = True) -> np.ndarray:
    """An opened (not yet loaded) image -> uint8 [size, size, 3] RGB.
    ``use_draft=False`` turns off JPEG draft decoding (for benchmarks)."""
    orientation = im.getexif().get(ORIENTATION_TAG, 1)
    if im.format == "JPEG" and use_draft:
        # libjpeg scales by 1/2..1/8 while decoding; it never goes below (size, size).
        im.draft(None, (size, size))
    im.load()
    if orientation != 1:
        im = ImageOps.exif_transpose(im)
    rgb = to_rgb(im)
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    return np.asarray(rgb, dtype=np.uint8)


def load_pixels(path: str, size: int) -> np.ndarray:
    """An image file -> the pixels the caption pipeline would give the model."""
    with Image.open(path) as im:
        im.seek(0)   # first frame of an animation, as the pipeline
        return square_pixels(im, size)


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; transparency is composited on white."""
    if im.mode == "RGB":
        return im
    if im.mode in _WIDE_GREY_MODES:
        return Image.fromarray(wide_to_uint8(np.asarray(im)), "L").convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in _ALPHA_MODES:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def wide_to_uint8(arr: np.ndarray) -> np.ndarray:
    """16-bit (or 32-bit int/float) greyscale to 8 bits, keeping the full range."""
    arr = arr.astype(np.float64)
    if arr.dtype.kind == "f" and arr.size and np.nanmax(arr) <= 1.0:
        top = 1.0
    else:
        top = 65535.0 if arr.size == 0 or np.nanmax(arr) > 255 else 255.0
    return np.clip(np.nan_to_num(arr) * (255.0 / top), 0, 255).round().astype(np.uint8)


# Images the captioner should not describe at all (catalog caption_status too_small /
# blank; model/serving/caption_status.py `pixel_status` names them). One rule for the
# caption pipeline and evaluation.
MIN_SIDE = 32          # px: a shorter side than this is too small to describe
BLANK_RANGE = 12       # grey levels: a spread this small in every channel is blank


def too_small(width: int, height: int) -> bool:
    """True when the image's shorter side (as stored, before any resize) is < MIN_SIDE."""
    return min(width, height) < MIN_SIDE


def is_blank(pixels: np.ndarray) -> bool:
    """True for a nearly uniform image: in every channel, the middle 98 % of the pixel
    values (1st to 99th percentile, so a few specks or JPEG ringing do not count) span
    fewer than BLANK_RANGE grey levels. ``pixels``: uint8 [H, W] or [H, W, C]."""
    arr = np.asarray(pixels)
    if arr.size == 0:
        return True
    flat = arr.reshape(-1, arr.shape[-1]) if arr.ndim == 3 else arr.reshape(-1, 1)
    low, high = np.percentile(flat, [1, 99], axis=0)
    return bool(np.all(high - low < BLANK_RANGE))
