"""A Lite encoder cut in two, for fine-tuning its top blocks on a 2-core machine.

`altbeam features --cut-at N` runs the frozen *bottom* (pixels -> the activation
entering MBConv block N) once per image and caches that activation; `altbeam train
--fine-tune` trains the *top* (block N .. the head conv, ImageNet weights from the same
.pth) jointly with the decoder; `altbeam export` puts the two back together as one
ordinary Lite encoder (`assemble_encoder`): the bottom's ImageNet weights, the top's
trained ones. The exported graph is the frozen encoder's exactly, so the SavedModel
contract, `--from-saved-model` and the tools that read models need nothing new.

BatchNorm stays frozen in the top: its layers are not trainable (scale, offset and the
moving statistics keep their ImageNet values) and always run in inference mode, so a
small caption batch never re-estimates ImageNet statistics.

A fine-tuned run folder says so in ``RUN/fine_tune.json`` (`FINE_TUNE_FILE`): encoder,
cut, weights file and learning rates; its checkpoints hold the top as ``encoder_top``.
"""
from __future__ import annotations

import json
import os

import keras
import tensorflow as tf

from altbeam.model.nets.encoder import (
    ENCODERS,
    build_encoder,
    build_lite_part,
    lite_cut_shape,
)

FINE_TUNE_FILE = "fine_tune.json"


def check_cut(encoder: str, cut_at: int) -> None:
    """ValueError unless ``encoder`` is a Lite encoder with an MBConv block ``cut_at``."""
    lite_cut_shape(encoder, cut_at)


def build_bottom(encoder: str, cut_at: int, weights: str | None = "imagenet") -> keras.Model:
    """float32 pixels [N, S, S, 3] in 0..255 -> the activation entering block ``cut_at``."""
    check_cut(encoder, cut_at)
    return build_lite_part(encoder, weights, stop=cut_at)


def build_top(encoder: str, cut_at: int, weights: str | None = "imagenet") -> keras.Model:
    """The activation entering block ``cut_at`` -> the feature grid, convolutions
    trainable, BatchNorm frozen (not trainable, so Keras runs it in inference mode)."""
    check_cut(encoder, cut_at)
    top = build_lite_part(encoder, weights, start=cut_at)
    for layer in top.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    return top


def assemble_encoder(encoder: str, top: keras.Model,
                     weights: str | None = "imagenet") -> keras.Model:
    """The whole encoder: ``weights`` below the cut, ``top``'s weights above it (layers
    matched by name: a part's layers are named as the full model's)."""
    full = build_encoder(encoder, weights=weights)
    for layer in top.layers:
        if layer.weights:
            full.get_layer(layer.name).set_weights(layer.get_weights())
    return full


def weights_name(weights: str | None) -> str:
    """How features and runs record encoder weights: "imagenet" (the package's) or an
    absolute path, so a record still names the file from another working folder."""
    if weights in (None, "imagenet"):
        return "imagenet"
    return weights if "://" in weights else os.path.abspath(weights)


def recorded_weights(recorded: str | None, where: str) -> str:
    """The weights a cut was made with, as its record ``where`` (features.json,
    fine_tune.json) names them: the default below the cut, so the bottom is the one the
    top was trained on. Records from before they named the file (None) mean the
    installed package, as the default was."""
    weights = recorded or "imagenet"
    if weights != "imagenet" and not tf.io.gfile.exists(weights):
        raise SystemExit(f"{where}: the encoder weights it was cut with, {weights}, are not "
                         "there (moved?): pass --encoder-weights with that file")
    return weights


def cut_weights(features_dir: str) -> str:
    """The weights cut features were made with (their features.json)."""
    path = f"{features_dir.rstrip('/')}/features.json"
    record = json.loads(tf.io.gfile.GFile(path).read()) if tf.io.gfile.exists(path) else {}
    return recorded_weights(record.get("weights"), path)


def run_encoder_weights(run_dir: str) -> str:
    """The weights to build a run's encoder from by default: a fine-tuned run's recorded
    bottom, otherwise the installed ImageNet package."""
    settings = read_fine_tune(run_dir) or {}
    return recorded_weights(settings.get("encoder_weights"),
                            os.path.join(run_dir, FINE_TUNE_FILE))


def read_fine_tune(run_dir: str) -> dict | None:
    """A run's fine-tuning settings (``RUN/fine_tune.json``), None for a frozen-encoder run."""
    path = os.path.join(run_dir, FINE_TUNE_FILE)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_trained_top(run_dir: str, which: str = "best") -> keras.Model:
    """A fine-tuned run's encoder top with its trained weights (``best`` or ``latest``)."""
    settings = read_fine_tune(run_dir)
    if settings is None:
        raise ValueError(f"{run_dir} did not fine-tune its encoder (no {FINE_TUNE_FILE})")
    top = build_top(settings["encoder"], settings["cut_at"], weights=None)
    best = os.path.join(run_dir, "best", "ckpt")
    if which == "best" and tf.io.gfile.exists(best + ".index"):
        path = best
    else:
        path = tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints"))
        if not path:
            raise FileNotFoundError(f"no checkpoint in {run_dir}: train first")
    tf.train.Checkpoint(encoder_top=top).read(path).expect_partial().assert_existing_objects_matched()
    return top


def fine_tuned_encoder(run_dir: str, weights: str | None = "imagenet",
                       which: str = "best") -> keras.Model:
    """The whole encoder of a fine-tuned run: ``weights`` (the .pth its features were cut
    from) below the cut, the run's trained top above it."""
    settings = read_fine_tune(run_dir)
    if settings is None:
        raise ValueError(f"{run_dir} did not fine-tune its encoder (no {FINE_TUNE_FILE})")
    if settings["encoder"] not in ENCODERS:
        raise ValueError(f"{run_dir}: fine-tuned encoder {settings['encoder']!r} is not a Lite "
                         "encoder")
    return assemble_encoder(settings["encoder"], load_trained_top(run_dir, which), weights)


def fine_tuning_of(run_dirs: list[str]) -> dict | None:
    """The fine-tuning settings of the runs to export (None: frozen encoder); SystemExit
    for an ensemble with a fine-tuned member (its members share one encoder)."""
    found = [read_fine_tune(d) for d in run_dirs]
    if len(run_dirs) > 1 and any(found):
        raise SystemExit("a run that fine-tuned its encoder cannot be exported in an "
                         "ensemble: the members share one encoder")
    return found[0]


def refuse_fine_tuned(run_dirs: list[str], what: str) -> None:
    """SystemExit when ``what`` would decode a fine-tuned run from frozen-encoder grids:
    its decoder reads its own encoder's grids (export it, then score the SavedModel)."""
    for d in run_dirs:
        if read_fine_tune(d) is not None:
            raise SystemExit(f"{what}: {d} fine-tuned its encoder, so cached grids do not fit "
                             "its decoder; export it and use the SavedModel (altbeam evaluate "
                             "--model)")
