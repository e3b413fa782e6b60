"""Run folders and feature shards in the formats `altbeam train` / `altbeam features`
write, built directly (random tiny decoders, random features) so model tests skip
the feature job and training."""
from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf

from altbeam.model.data.vocab import SPECIALS, Vocabulary
from altbeam.model.nets.decoder import CaptionDecoder
from altbeam.model.tiny import TINY_WORDS, tiny_config


def tiny_decoder(seed: int, **overrides) -> CaptionDecoder:
    dec = CaptionDecoder(tiny_config(seed=seed, **overrides))
    dec.out_word.assign(dec.out_word * 3.0)  # distinct, confident decoders
    return dec


def fake_run(path, seed: int, words: list[str] | None = None, **overrides) -> str:
    """A run folder as `altbeam train` leaves it: config, vocab, history, best checkpoint."""
    dec = tiny_decoder(seed, **overrides)
    os.makedirs(path)
    with open(os.path.join(path, "config.json"), "w") as f:
        f.write(dec.config.to_json())
    Vocabulary(words or list(SPECIALS) + TINY_WORDS).save(os.path.join(path, "vocab.json"))
    json.dump([{"epoch": 1, "loss": 3.0, "val_cider": 0.1}],
              open(os.path.join(path, "history.json"), "w"))
    tf.train.Checkpoint(decoder=dec).write(os.path.join(path, "best", "ckpt"))
    return str(path)


def write_feature_shard(folder: str, split: str, captions: list[list[str]], grid: int = 4,
                        channels: int = 16, seed: int = 0) -> None:
    """One shard of random float16 features, one example per entry of ``captions``."""
    os.makedirs(os.path.join(folder, split), exist_ok=True)
    rng = np.random.default_rng(seed)
    b = lambda v: tf.train.Feature(bytes_list=tf.train.BytesList(value=v))  # noqa: E731
    i = lambda v: tf.train.Feature(int64_list=tf.train.Int64List(value=v))  # noqa: E731
    path = os.path.join(folder, split, "features-00000-of-00001.tfrecord")
    with tf.io.TFRecordWriter(path) as w:
        for k, caps in enumerate(captions):
            feats = rng.normal(size=(grid * grid, channels)).astype("<f2")
            w.write(tf.train.Example(features=tf.train.Features(feature={
                "image_id": b([f"img{k:03d}".encode()]), "features": b([feats.tobytes()]),
                "grid": i([grid]), "channels": i([channels]), "encoder": b([b"tiny"]),
                "image_size": i([32]),
                "captions": b([c.encode() for c in caps])})).SerializeToString())
