"""Run folders and feature shards in the formats `altbeam train` / `altbeam features`
write, built directly (random tiny decoders, random features) so model tests skip
the feature job and training."""
from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf

from altbeam.model.data.feature_records import feature_example, shard_prefix
from altbeam.model.data.vocab import SPECIALS, Vocabulary
from altbeam.model.nets.decoder import CaptionDecoder
from tests.support.tiny import TINY_ENCODER, TINY_WORDS, tiny_config


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
                        channels: int = 16, seed: int = 0, encoder: str = TINY_ENCODER) -> None:
    """One shard of random float16 features, one example per entry of ``captions``."""
    os.makedirs(os.path.join(folder, split), exist_ok=True)
    rng = np.random.default_rng(seed)
    path = f"{shard_prefix(folder, split)}-00000-of-00001.tfrecord"
    with tf.io.TFRecordWriter(path) as w:
        for k, caps in enumerate(captions):
            grid_features = rng.normal(size=(grid, grid, channels))
            w.write(feature_example(f"img{k:03d}", split, grid_features, encoder, 32, caps))
