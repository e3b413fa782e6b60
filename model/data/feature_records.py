"""The encoder-feature TFRecord format: written by `altbeam features`, read by training.

Each ``tf.train.Example``:

===============  ==========  ==================================================
key              type        value
===============  ==========  ==================================================
image_id         bytes       dataset image id (e.g. Flickr8k file name)
split            bytes       dataset split (train / dev / ...)
features         bytes       float16 little-endian [grid*grid, channels], raw
grid, channels   int64       shape of ``features``
encoder          bytes       encoder name (lite0, lite2, ...)
image_size       int64       encoder input size S (pixels, square)
captions         bytes list  the image's reference captions (raw text)
cut_at           int64       only in cut features (`altbeam features --cut-at N`):
                             ``features`` is the activation entering the encoder's
                             MBConv block N, not its output grid (absent: -1)
===============  ==========  ==================================================

Shards: ``OUT/<split>/features-SSSSS-of-NNNNN.tfrecord`` (`shard_pattern`).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf


@dataclasses.dataclass
class FeatureSet:
    """One split in memory: ids [n], features float16 [n, L, C], captions (5-ish per image)."""

    image_ids: list[str]
    features: np.ndarray
    captions: list[list[str]]
    encoder: str = ""
    image_size: int = 0
    cut_at: int = -1    # >= 0: features enter the encoder's block cut_at (fine-tuning)

    def __len__(self) -> int:
        return len(self.image_ids)

    def subset(self, index) -> FeatureSet:
        index = list(index)
        return FeatureSet([self.image_ids[i] for i in index], self.features[index],
                          [self.captions[i] for i in index], self.encoder, self.image_size,
                          self.cut_at)


def feature_example(image_id: str, split: str, grid: np.ndarray, encoder: str,
                    image_size: int, captions: list[str], cut_at: int = -1) -> bytes:
    """One image's serialized record; ``grid``: the encoder output [g, g, channels], or
    with ``cut_at`` >= 0 the activation entering block ``cut_at``."""
    g, _, channels = grid.shape
    feats = grid.reshape(g * g, channels).astype("<f2")
    cut = {"cut_at": _int64([cut_at])} if cut_at >= 0 else {}
    return tf.train.Example(features=tf.train.Features(feature={
        "image_id": _bytes([image_id.encode()]),
        "split": _bytes([split.encode()]),
        "features": _bytes([feats.tobytes()]),
        "grid": _int64([g]), "channels": _int64([channels]),
        "encoder": _bytes([encoder.encode()]),
        "image_size": _int64([image_size]),
        "captions": _bytes([c.encode() for c in captions]),
        **cut,
    })).SerializeToString()


def _bytes(values):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _int64(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def shard_prefix(features_dir: str, split: str) -> str:
    """Shards of a split are ``<prefix>-SSSSS-of-NNNNN.tfrecord``."""
    return f"{features_dir.rstrip('/')}/{split}/features"


_SPEC = {
    "image_id": tf.io.FixedLenFeature([], tf.string),
    "features": tf.io.FixedLenFeature([], tf.string),
    "grid": tf.io.FixedLenFeature([], tf.int64),
    "channels": tf.io.FixedLenFeature([], tf.int64),
    "captions": tf.io.VarLenFeature(tf.string),
    "encoder": tf.io.FixedLenFeature([], tf.string, default_value=b""),
    "image_size": tf.io.FixedLenFeature([], tf.int64, default_value=0),
    "cut_at": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
}


def load_split(features_dir: str, split: str, limit: int | None = None) -> FeatureSet:
    """All examples of one split, sorted by image id (so runs are reproducible)."""
    pattern = f"{shard_prefix(features_dir, split)}-*.tfrecord"
    files = tf.io.gfile.glob(pattern)
    if not files:
        raise FileNotFoundError(f"no feature shards match {pattern}: run `altbeam features` first")
    rows, encoder, image_size, cut_at = [], "", 0, -1
    for raw in tf.data.TFRecordDataset(sorted(files)):
        ex = tf.io.parse_single_example(raw, _SPEC)
        g, ch = int(ex["grid"]), int(ex["channels"])
        feats = np.frombuffer(ex["features"].numpy(), dtype="<f2").reshape(g * g, ch)
        caps = [c.decode() for c in tf.sparse.to_dense(ex["captions"]).numpy()]
        rows.append((ex["image_id"].numpy().decode(), feats, caps))
        encoder, image_size = ex["encoder"].numpy().decode(), int(ex["image_size"])
        cut_at = int(ex["cut_at"])
    rows.sort(key=lambda r: r[0])
    rows = rows[:limit] if limit else rows
    return FeatureSet([r[0] for r in rows], np.stack([r[1] for r in rows]), [r[2] for r in rows],
                      encoder, image_size, cut_at)
