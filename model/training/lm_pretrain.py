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

import json
import os
import re

import numpy as np
import tensorflow as tf

from altbeam.model.config import ModelConfig
from altbeam.model.data.vocab import Vocabulary
from altbeam.model.training.common import batches, caption_xent, pad
from altbeam.model.training.loop import run_epochs

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


def item_keys(item) -> set[str]:
    """The keys of a dataset item (model/data/datasets.py): its id's and its path's."""
    return image_keys(item.image_id) | (image_keys(item.path) if item.path else set())


def read_exclusions(paths: list[str]) -> set[str]:
    """Image keys from files with an image name at the start of each line, or from
    caption files model/data/datasets.py reads (``.json``/``.jsonl``: every image in
    them, e.g. the shared COCO photos' captions.jsonl)."""
    from altbeam.model.data.datasets import load_dataset
    keys: set[str] = set()
    for path in paths:
        if path.endswith((".json", ".jsonl")):
            for item in load_dataset(path, missing_images="ignore"):
                keys |= item_keys(item)
            continue
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
            if item_keys(item) & exclude:
                dropped += 1
                continue
            captions += item.captions
    return captions, dropped


def caption_text(sources: list[str], exclude_files: list[str]) -> tuple[list[str], int]:
    """(captions, images dropped) of caption-only text minus the images the exclusion
    files name; SystemExit when sources are given and nothing is left."""
    captions, dropped = lm_captions(sources, read_exclusions(exclude_files))
    if sources and not captions:
        raise SystemExit(f"altbeam train: no caption text left in {', '.join(sources)}")
    return captions, dropped


class LanguageModel:
    """Teacher-forced cross-entropy on caption text alone (an objective of
    model/training/loop.py): an all-zero feature grid stands in for the image."""

    label, unit, progress_every = "language model epoch", "step", 100
    shown, seconds_key = ("loss", "loss"), "seconds"

    def __init__(self, decoder, captions: list[str], vocab: Vocabulary, config: ModelConfig):
        import keras
        self.decoder, self.config = decoder, config
        self.optimizer = keras.optimizers.Adam(config.learning_rate, clipnorm=5.0)
        self.pairs = [(0, vocab.encode(c, config.max_length)) for c in captions]
        self.train_step = tf.function(self._train_step, input_signature=[
            tf.TensorSpec([None, None], tf.int32)])

    def _train_step(self, tokens):
        # One all-zero cell: no image at all.
        blank = tf.zeros([tf.shape(tokens)[0], 1, self.config.feature_channels])
        with tf.GradientTape() as tape:
            logits, _ = self.decoder.teacher_forced(blank, tokens, training=True)
            loss = caption_xent(logits, tokens, self.config)
        variables = self.decoder.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    def begin_epoch(self, epoch: int, rng):
        size = self.config.batch_size
        return (len(self.pairs) + size - 1) // size, batches(self.pairs, size, rng)

    def step(self, batch) -> dict[str, float]:
        return {"loss": float(self.train_step(tf.constant(pad([s for _, s in batch]))))}

    def record(self, epoch: int, means: dict[str, float]) -> dict:
        return {"epoch": epoch, "loss": means["loss"]}

    def summary(self, record: dict) -> str:
        return f"loss {record['loss']:.3f}"


def pretrain_language_model(decoder, captions: list[str], vocab: Vocabulary,
                            config: ModelConfig, epochs: int, seed: int = 0) -> list[dict]:
    """Teacher-forced language-model epochs on ``captions``; updates ``decoder`` in place.
    Returns one record per epoch (mean loss, seconds)."""
    objective = LanguageModel(decoder, captions, vocab, config)
    return run_epochs(objective, range(1, epochs + 1), np.random.default_rng(seed)).history


def pretrain_from_text(decoder, sources: list[str], exclude_files: list[str], epochs: int,
                       vocab: Vocabulary, config: ModelConfig, run_dir: str) -> dict:
    """`altbeam train --lm-text`: language-model pre-training before the first epoch; the
    record goes to RUN/lm_pretrain.json."""
    captions, dropped = caption_text(sources, exclude_files)
    print(f"language-model pre-training: {len(captions)} captions from {len(sources)} "
          f"source(s), {dropped} image(s) dropped by --lm-exclude", flush=True)
    history = pretrain_language_model(decoder, captions, vocab, config, epochs, config.seed)
    record = {"sources": sources, "exclude": exclude_files, "captions": len(captions),
              "images_dropped": dropped, "epochs": epochs, "history": history}
    with open(os.path.join(run_dir, "lm_pretrain.json"), "w") as f:
        json.dump(record, f, indent=2)
    return record
