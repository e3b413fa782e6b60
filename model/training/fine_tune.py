"""`altbeam train --fine-tune`: the encoder's top blocks trained with the decoder.

The features are cut features (`altbeam features --cut-at N`): the activation entering
MBConv block N, computed once by the frozen bottom. Each step runs the top (block N ..
head conv, ImageNet weights to start; model/nets/encoder_cut.py) on the batch's images,
then the decoder, and trains both: the decoder at ``learning_rate``, the top at
``encoder_learning_rate`` (default a tenth), on the same schedule; BatchNorm frozen.
An image with several captions in a batch goes through the top once.

The run folder gets ``fine_tune.json`` and the top in its checkpoints (``encoder_top``);
`altbeam export` assembles frozen bottom + trained top into one encoder.
"""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import tensorflow as tf

from altbeam.model.config import ModelConfig
from altbeam.model.data.feature_records import FeatureSet
from altbeam.model.nets.encoder import encoder_spec, lite_cut_shape
from altbeam.model.nets.encoder_cut import FINE_TUNE_FILE, build_top, weights_name
from altbeam.model.training.common import pad
from altbeam.model.training.teacher_forcing import TeacherForcing, learning_rate_at

ENCODER_LR_FACTOR = 0.1  # default encoder learning rate: this x the decoder's
_GRID_BATCH = 64        # images per top pass when re-encoding validation features


def check_features(data: FeatureSet, fine_tune: bool) -> None:
    """SystemExit when the features do not fit the run: cut features need --fine-tune
    (a decoder on pre-head activations would be nonsense), --fine-tune needs them."""
    if data.cut_at >= 0 and not fine_tune:
        raise SystemExit(f"altbeam train: these features are cut at block {data.cut_at} "
                         "(altbeam features --cut-at): train with --fine-tune")
    if fine_tune and data.cut_at < 0:
        raise SystemExit("altbeam train: --fine-tune needs cut features (altbeam features "
                         "--cut-at BLOCK)")


def fine_tune_config(config: ModelConfig, data: FeatureSet) -> ModelConfig:
    """The run's config: the decoder reads the whole encoder's grid, not the cut."""
    spec = encoder_spec(data.encoder)
    return config.replace(grid=spec.grid, feature_channels=spec.channels,
                          encoder=data.encoder, image_size=data.image_size or spec.image_size)


def write_settings(run_dir: str, data: FeatureSet, encoder_weights: str | None,
                   config: ModelConfig, encoder_learning_rate: float) -> dict:
    settings = {"encoder": data.encoder, "cut_at": data.cut_at,
                "encoder_weights": weights_name(encoder_weights),
                "learning_rate": config.learning_rate,
                "encoder_learning_rate": encoder_learning_rate, "batchnorm": "frozen"}
    with open(os.path.join(run_dir, FINE_TUNE_FILE), "w", encoding="utf-8") as f:
        json.dump(settings, f, indent=2)
    return settings


class FineTuning(TeacherForcing):
    """Teacher forcing through the encoder's top: owns the top and its optimiser too."""

    def __init__(self, config: ModelConfig, embeddings: np.ndarray | None, cut_at: int,
                 encoder_weights: str | None = "imagenet",
                 encoder_learning_rate: float | None = None):
        import keras
        super().__init__(config, embeddings)
        self.encoder_lr = (config.learning_rate * ENCODER_LR_FACTOR
                           if encoder_learning_rate is None else encoder_learning_rate)
        self.encoder_top = build_top(config.encoder, cut_at, encoder_weights)
        self.encoder_optimizer = keras.optimizers.Adam(self.encoder_lr, clipnorm=5.0)
        self.encoder_lr_now = self.encoder_lr
        self.cut_grid, self.cut_channels = lite_cut_shape(config.encoder, cut_at)
        self.train_step = tf.function(self._fine_tune_step, input_signature=[
            tf.TensorSpec([None, self.cut_grid ** 2, self.cut_channels], tf.float16),
            tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None], tf.int32)])

    def grids(self, cut_features):
        """Cut features [N, g*g, c] -> the top's grid as the decoder reads it [N, L, C]."""
        g, c = self.cut_grid, self.cut_channels
        x = tf.reshape(tf.cast(cut_features, tf.float32), [-1, g, g, c])
        grid = self.encoder_top(x, training=False)  # BatchNorm frozen: inference mode
        return tf.reshape(grid, [tf.shape(grid)[0], -1, grid.shape[-1]])

    def _fine_tune_step(self, cut_features, tokens, image_of_caption):
        with tf.GradientTape() as tape:
            features = tf.gather(self.grids(cut_features), image_of_caption)
            loss, caption_loss = self.loss(features, tokens)
        decoder_vars = list(self.decoder.trainable_variables)
        encoder_vars = list(self.encoder_top.trainable_variables)
        grads = tape.gradient(loss, decoder_vars + encoder_vars)
        self.optimizer.apply_gradients(zip(grads[:len(decoder_vars)], decoder_vars))
        self.encoder_optimizer.apply_gradients(zip(grads[len(decoder_vars):], encoder_vars))
        return caption_loss

    def checkpointed(self) -> dict:
        return {**super().checkpointed(), "encoder_top": self.encoder_top,
                "encoder_optimizer": self.encoder_optimizer}

    def best_weights(self) -> dict:
        return {**super().best_weights(), "encoder_top": self.encoder_top}

    def validation_set(self, data: FeatureSet) -> FeatureSet:
        """``data`` with its cut features run through the top as it is now (float32)."""
        grids = [self.grids(tf.constant(data.features[s:s + _GRID_BATCH])).numpy()
                 for s in range(0, len(data), _GRID_BATCH)]
        return dataclasses.replace(data, features=np.concatenate(grids), cut_at=-1)

    def begin_epoch(self, epoch: int, rng):
        self.encoder_lr_now = learning_rate_at(self.encoder_lr, epoch)
        self.encoder_optimizer.learning_rate.assign(self.encoder_lr_now)
        return super().begin_epoch(epoch, rng)

    def step(self, batch) -> dict[str, float]:
        images, image_of_caption = np.unique([i for i, _ in batch], return_inverse=True)
        loss = self.train_step(tf.constant(self.data.features[images]),
                               tf.constant(pad([s for _, s in batch])),
                               tf.constant(image_of_caption.astype(np.int32)))
        return {"loss": float(loss)}

    def record(self, epoch: int, means: dict[str, float]) -> dict:
        return {**super().record(epoch, means), "encoder_lr": self.encoder_lr_now}
