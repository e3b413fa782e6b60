"""Language-model pre-training of the caption decoder on caption-only text.

Before it sees an image, the decoder learns to write captions from text alone: the same
teacher-forced cross-entropy as `altbeam train`, with an all-zero feature grid standing
in for the image (attention then reads nothing and the image paths get no gradient).
Caption text without pixels is easy to come by (Flickr30k's caption files, COCO caption
json); captioned pixels are not.

Leakage: the text of a photo that is in an evaluation split must not be learned.
Flickr30k contains Flickr8k photos (60 of the Flickr8k dev images here), so
``--lm-exclude`` names files listing images (a Flickr8k token file or split list, one
image name at the start of each line) and every caption-text image with the same file
name or the same Flickr photo id (the leading digits of the name) is dropped.
"""
from __future__ import annotations

import os
import re
import time

import numpy as np
import tensorflow as tf

from altbeam.model.config import ModelConfig
from altbeam.model.data.vocab import Vocabulary

_PHOTO_ID = re.compile(r"(\d+)(?=[_.]|$)")


def image_keys(name: str) -> set[str]:
    """The names an image is known by: its file name and, for Flickr photos, the photo
    id ("1000268201_693b08cb0e.jpg" and "1000268201.jpg" are the same photo)."""
    base = os.path.basename(name.split("#")[0].strip())
    keys = {base} if base else set()
    match = _PHOTO_ID.match(base)
    if match:
        keys.add(match.group(1))
    return keys


def read_exclusions(paths: list[str]) -> set[str]:
    """Image keys from files with an image name at the start of each line."""
    keys: set[str] = set()
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    keys |= image_keys(line.split()[0])
    return keys


def lm_captions(sources: list[str], exclude: set[str]) -> tuple[list[str], int]:
    """Every caption of the sources (any format model/data/datasets.py reads; pixels not
    needed), minus excluded images. Returns (captions, images dropped)."""
    from altbeam.model.data.datasets import load_dataset
    captions, dropped = [], 0
    for source in sources:
        for item in load_dataset(source, missing_images="ignore"):
            names = image_keys(item.image_id) | (image_keys(item.path) if item.path else set())
            if names & exclude:
                dropped += 1
                continue
            captions += item.captions
    return captions, dropped


def pretrain_language_model(decoder, captions: list[str], vocab: Vocabulary,
                            config: ModelConfig, epochs: int, seed: int = 0) -> list[dict]:
    """Teacher-forced language-model epochs on ``captions``; updates ``decoder`` in place.
    Returns one record per epoch (mean loss, seconds)."""
    import keras

    from altbeam.model.training.train import batches, caption_xent, pad
    optimizer = keras.optimizers.Adam(config.learning_rate, clipnorm=5.0)
    C = config.feature_channels

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)])
    def step(tokens):
        blank = tf.zeros([tf.shape(tokens)[0], 1, C])  # one all-zero cell: no image at all
        with tf.GradientTape() as tape:
            logits, _ = decoder.teacher_forced(blank, tokens, training=True)
            loss = caption_xent(logits, tokens, config)
        variables = decoder.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    pairs = [(0, vocab.encode(c, config.max_length)) for c in captions]
    rng = np.random.default_rng(seed)
    n_batches = (len(pairs) + config.batch_size - 1) // config.batch_size
    history = []
    for epoch in range(1, epochs + 1):
        start, losses = time.time(), []
        for k, batch in enumerate(batches(pairs, config.batch_size, rng), 1):
            losses.append(float(step(tf.constant(pad([s for _, s in batch])))))
            if k % 100 == 0:
                rate = k / (time.time() - start)
                print(f"  language model epoch {epoch} step {k}/{n_batches} loss "
                      f"{np.mean(losses[-100:]):.3f} ({rate:.1f} steps/s, "
                      f"~{(n_batches - k) / rate:.0f} s left)", flush=True)
        record = {"epoch": epoch, "loss": float(np.mean(losses)),
                  "seconds": round(time.time() - start, 1)}
        history.append(record)
        print(f"language model epoch {epoch}: loss {record['loss']:.3f} "
              f"({record['seconds']:.0f} s)", flush=True)
    return history
