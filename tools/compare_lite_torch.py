"""Compare our Keras EfficientNet-Lite logits with the reference PyTorch model.

One-off check (see docs/encoder.md). TensorFlow and torch live in separate venvs,
so this script runs in ours and calls itself in the torch venv for the reference
side; the two exchange outputs through a .npz file.

    python3 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch==2.13.0 efficientnet-lite-pytorch numpy pillow
    PYTHONPATH=. .venv/bin/python tools/compare_lite_torch.py --torch-python /tmp/torchvenv/bin/python

The reference side (``--side torch``) imports only torch, efficientnet_lite_pytorch,
numpy and PIL; it never imports this repo's ``model`` package.
"""

from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image

IMAGE_SIZES = {"lite0": 224, "lite2": 260}
DEFAULT_PHOTOS = os.path.join(os.path.dirname(__file__), "..", "samples", "photos")


def load_photos(folder: str, size: int) -> tuple[list[str], np.ndarray]:
    """Centre square crop, bilinear resize: float32 NHWC pixels 0..255 (same on both sides)."""
    paths = sorted(glob.glob(os.path.join(folder, "*.jpg")))
    images = []
    for path in paths:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            side = min(w, h)
            left, top = (w - side) // 2, (h - side) // 2
            im = im.crop((left, top, left + side, top + side)).resize((size, size), Image.BILINEAR)
            images.append(np.asarray(im, dtype=np.float32))
    return [os.path.basename(p) for p in paths], np.stack(images)


def torch_outputs(name: str, weights: str, images: np.ndarray) -> dict[str, np.ndarray]:
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_pretrained(f"efficientnet-{name}", weights_path=weights).eval()
    x = torch.from_numpy((images - 127.0) / 128.0).permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        grid = model.extract_features(x).permute(0, 2, 3, 1).numpy()  # NCHW -> NHWC
        return {"logits": model(x).numpy(), "grid": grid}


def keras_outputs(name: str, images: np.ndarray) -> dict[str, np.ndarray]:
    from altbeam.model.nets.encoder import build_classifier, build_encoder

    return {
        "logits": build_classifier(name)(images, training=False).numpy(),
        "grid": build_encoder(name)(images, training=False).numpy(),
    }


def compare(name: str, photos: str, torch_python: str) -> float:
    from altbeam.model.nets.encoder import imagenet_labels, weights_path

    files, images = load_photos(photos, IMAGE_SIZES[name])
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "torch_outputs.npz")
        subprocess.run(
            [torch_python, __file__, "--side", "torch", "--name", name, "--photos", photos,
             "--weights", weights_path(name), "--out", out],
            check=True,
        )
        reference = dict(np.load(out))
    ours = keras_outputs(name, images)
    labels = imagenet_labels()
    for key in ("grid", "logits"):
        diff = np.abs(ours[key] - reference[key])
        print(f"{name} {key} {ours[key].shape}: max |diff| {diff.max():.2e}, mean |diff| "
              f"{diff.mean():.2e}, reference range {reference[key].min():.1f}..{reference[key].max():.1f}")
    same_top1 = int((ours["logits"].argmax(1) == reference["logits"].argmax(1)).sum())
    print(f"{name}: {len(files)} photos, same top-1 as the reference for {same_top1}")
    for f, row in zip(files, ours["logits"]):
        print(f"  {f}: {labels[int(row.argmax())]}")
    return float(np.abs(ours["logits"] - reference["logits"]).max())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", choices=["compare", "torch"], default="compare")
    parser.add_argument("--name", choices=sorted(IMAGE_SIZES), action="append")
    parser.add_argument("--photos", default=DEFAULT_PHOTOS)
    parser.add_argument("--torch-python", default="/tmp/torchvenv/bin/python")
    parser.add_argument("--weights", help="(torch side) .pth file")
    parser.add_argument("--out", help="(torch side) where to write the outputs .npz")
    args = parser.parse_args(argv)
    names = args.name or sorted(IMAGE_SIZES)
    if args.side == "torch":
        _, images = load_photos(args.photos, IMAGE_SIZES[names[0]])
        np.savez(args.out, **torch_outputs(names[0], args.weights, images))
        return 0
    for name in names:
        compare(name, args.photos, args.torch_python)
    return 0


if __name__ == "__main__":
    sys.exit(main())
