"""Read the encoder-feature TFRecord shards written by `altbeam features` (tf.data only)."""
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

    def __len__(self) -> int:
        return len(self.image_ids)

    def subset(self, index) -> FeatureSet:
        index = list(index)
        return FeatureSet([self.image_ids[i] for i in index], self.features[index],
                          [self.captions[i] for i in index], self.encoder, self.image_size)


_SPEC = {
    "image_id": tf.io.FixedLenFeature([], tf.string),
    "features": tf.io.FixedLenFeature([], tf.string),
    "grid": tf.io.FixedLenFeature([], tf.int64),
    "channels": tf.io.FixedLenFeature([], tf.int64),
    "captions": tf.io.VarLenFeature(tf.string),
    "encoder": tf.io.FixedLenFeature([], tf.string, default_value=b""),
    "image_size": tf.io.FixedLenFeature([], tf.int64, default_value=0),
}


def load_split(features_dir: str, split: str, limit: int | None = None) -> FeatureSet:
    """All examples of one split, sorted by image id (so runs are reproducible)."""
    pattern = f"{features_dir.rstrip('/')}/{split}/features-*.tfrecord"
    files = tf.io.gfile.glob(pattern)
    if not files:
        raise FileNotFoundError(f"no feature shards match {pattern}: run `altbeam features` first")
    rows, encoder, image_size = [], "", 0
    for raw in tf.data.TFRecordDataset(sorted(files)):
        ex = tf.io.parse_single_example(raw, _SPEC)
        g, ch = int(ex["grid"]), int(ex["channels"])
        feats = np.frombuffer(ex["features"].numpy(), dtype="<f2").reshape(g * g, ch)
        caps = [c.decode() for c in tf.sparse.to_dense(ex["captions"]).numpy()]
        rows.append((ex["image_id"].numpy().decode(), feats, caps))
        encoder, image_size = ex["encoder"].numpy().decode(), int(ex["image_size"])
    rows.sort(key=lambda r: r[0])
    rows = rows[:limit] if limit else rows
    return FeatureSet([r[0] for r in rows], np.stack([r[1] for r in rows]), [r[2] for r in rows],
                      encoder, image_size)
