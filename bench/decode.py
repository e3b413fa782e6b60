"""Decode + resize cost per image: JPEG with and without draft mode, PNG and WebP.

Big photos are synthesised by upscaling a bundled sample to 0.3, 3 and 12 MP, so the
numbers need no dataset. Prints a table (milliseconds per image, median of --images
repetitions).

    .venv/bin/python bench/decode.py --images 5
"""
from __future__ import annotations

import argparse
import io
import os
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from PIL import Image  # noqa: E402

from altbeam.pipelines.caption.decode import decode_image  # noqa: E402

SAMPLES = pathlib.Path(__file__).resolve().parent.parent / "samples" / "photos"
SIZES_MP = {"0.3 MP": (640, 480), "3 MP": (2000, 1500), "12 MP": (4000, 3000)}


def image_size_of(model_dir: str | None) -> int:
    if model_dir:
        from altbeam.pipelines.caption.inference import read_model_info

        return read_model_info(model_dir).image_size
    return 224


def encoded(photo: Image.Image, dims, fmt: str) -> bytes:
    buf = io.BytesIO()
    kw = {"JPEG": {"quality": 90}, "WEBP": {"quality": 90}, "PNG": {"compress_level": 6}}[fmt]
    photo.resize(dims, Image.Resampling.BICUBIC).save(buf, fmt, **kw)
    return buf.getvalue()


def time_ms(data: bytes, size: int, reps: int, use_draft: bool) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        decode_image(data, size, "bench", max_pixels=None, use_draft=use_draft)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=5, help="repetitions per case")
    ap.add_argument("--model", default=None,
                    help="read the input size S from this model (default: the bundled "
                         "model if present, else 224)")
    ap.add_argument("--size", type=int, default=None, help="override S")
    args = ap.parse_args(argv)
    model = args.model
    if model is None:
        from altbeam.model import DEFAULT_MODEL_DIR

        model = DEFAULT_MODEL_DIR if os.path.exists(
            os.path.join(DEFAULT_MODEL_DIR, "saved_model.pb")) else None
    size = args.size or image_size_of(model)
    photo = Image.open(sorted(SAMPLES.glob("*.jpg"))[0]).convert("RGB")

    print(f"decode + resize to {size}x{size}, median of {args.images} (ms per image)")
    header = f"{'photo':>7} {'bytes':>10} {'JPEG draft':>11} {'JPEG full':>10} {'speed-up':>9}" \
             f" {'PNG':>8} {'WebP':>8}"
    print(header)
    print("-" * len(header))
    for label, dims in SIZES_MP.items():
        jpeg = encoded(photo, dims, "JPEG")
        draft = time_ms(jpeg, size, args.images, True)
        full = time_ms(jpeg, size, args.images, False)
        png = time_ms(encoded(photo, dims, "PNG"), size, args.images, True)
        webp = time_ms(encoded(photo, dims, "WEBP"), size, args.images, True)
        print(f"{label:>7} {len(jpeg):>10,} {draft:>11.1f} {full:>10.1f} {full / draft:>8.1f}x"
              f" {png:>8.1f} {webp:>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
