"""Keras-applications backbones (InceptionV3, ResNet50, VGG16) as altbeam encoders, offline.

The tutorials altbeam's users come from caption with these CNNs. Each is built with
``keras.applications`` without its classifier top and wrapped so that it takes what
every altbeam encoder takes, float32 pixels 0..255 ``[N, S, S, 3]``, and returns its
last convolutional grid ``[N, g, g, C]``. The backbone's own preprocessing (the
``preprocess_input`` of its ``keras.applications`` module: InceptionV3 scales to
[-1, 1], ResNet50 and VGG16 flip RGB to BGR and subtract the ImageNet channel means)
runs inside the model, so an exported SavedModel still takes uint8 pixels.

Weights never come by download (no code path of altbeam may need the network): they
come from a local file made where Keras can download them, e.g.::

    import keras
    model = keras.applications.ResNet50(weights="imagenet", include_top=False)
    model.save("resnet50.keras")        # or model.save_weights("resnet50.weights.h5")

Accepted: a ``.keras`` model file, a ``.weights.h5`` file (``save_weights``) and a legacy
``.h5`` (``model.save("x.h5")``, or the ``*_tf_kernels*.h5`` files Keras itself
downloads), each with or without the classifier top (the top is not used).
"""
from __future__ import annotations

import dataclasses
import os
import warnings

import keras
import numpy as np

__all__ = ["BACKBONES", "Backbone", "BackbonePreprocess", "BackboneWeightsError",
           "build_keras_backbone"]


@dataclasses.dataclass(frozen=True)
class Backbone:
    application: str  # class in keras.applications, e.g. "ResNet50"
    module: str  # keras.applications submodule holding its preprocess_input
    image_size: int  # the size its ImageNet weights were trained at
    channels: int
    grid: int  # image_size / 32 (InceptionV3: valid-padded, 299 -> 8)


BACKBONES: dict[str, Backbone] = {
    "inception_v3": Backbone("InceptionV3", "inception_v3", 299, 2048, 8),
    "resnet50": Backbone("ResNet50", "resnet50", 224, 2048, 7),
    "vgg16": Backbone("VGG16", "vgg16", 224, 512, 7),
}

_WEIGHT_SUFFIXES = (".keras", ".h5")


class BackboneWeightsError(ValueError):
    """A backbone's weights cannot be used: asked to download, or the file is not its."""


@keras.saving.register_keras_serializable(package="altbeam")
class BackbonePreprocess(keras.layers.Layer):
    """Pixels 0..255 -> the backbone's input, by its keras.applications preprocess_input."""

    def __init__(self, backbone: str, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self._preprocess = getattr(keras.applications, BACKBONES[backbone].module
                                   ).preprocess_input

    def call(self, pixels):
        return self._preprocess(pixels)

    def get_config(self):
        return {**super().get_config(), "backbone": self.backbone}


def _application(name: str):
    return getattr(keras.applications, BACKBONES[name].application)


def build_keras_backbone(name: str, weights: str | os.PathLike | None) -> keras.Model:
    """Encoder ``name`` (a key of BACKBONES): float32 pixels 0..255 -> its feature grid.

    ``weights``: a local ``.keras``/``.h5`` file of that backbone, or None (random).
    ``"imagenet"`` is refused (it would download); BackboneWeightsError or
    FileNotFoundError say which file is wrong and why."""
    size = BACKBONES[name].image_size
    path = None if weights is None else checked_weights_file(name, weights)  # before building
    base = _application(name)(include_top=False, weights=None, input_shape=(size, size, 3))
    if path is not None:
        load_backbone_weights(base, name, path)
    pixels = keras.Input((size, size, 3), dtype="float32", name="pixels")
    grid = base(BackbonePreprocess(name, name="preprocess")(pixels))
    return keras.Model(pixels, grid, name=f"{name}_encoder")


def checked_weights_file(name: str, weights) -> str:
    """``weights`` as a path to an existing .keras/.h5 file, or a clear error."""
    if isinstance(weights, str) and weights == "imagenet":
        app = BACKBONES[name].application
        raise BackboneWeightsError(
            f"{name}: weights='imagenet' would download them, which altbeam never does; "
            f"pass a local .keras/.h5 file made where Keras can download, e.g. "
            f"keras.applications.{app}(weights='imagenet', include_top=False)"
            f".save('{name}.keras') (see docs/encoder.md)")
    path = os.fspath(weights)
    if not path.endswith(_WEIGHT_SUFFIXES):
        raise BackboneWeightsError(f"{path}: {name} weights must be a .keras or .h5 file "
                                   "saved by Keras")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{name} weights file {path} does not exist")
    return path


def load_backbone_weights(base: keras.Model, name: str, weights) -> None:
    """Load ``weights`` (see `checked_weights_file`) into ``base``, the backbone
    without its top."""
    path = checked_weights_file(name, weights)
    try:
        _keras_load_weights(base, path)  # .keras, .weights.h5: a saved top is skipped
        return
    except Exception as e:  # Keras and h5py raise many kinds; all mean "not these weights"
        failure = e
    if path.endswith(".h5") and not path.endswith(".weights.h5"):
        # A legacy .h5 matches layers by count: one with the top needs the model with it.
        if _load_from_model_with_top(base, name, path):
            return
    raise BackboneWeightsError(f"{path} does not hold {name} weights: "
                               f"{_keras_reason(failure)}") from failure


def _keras_load_weights(model: keras.Model, path: str) -> None:
    with warnings.catch_warnings():
        # Keras 3.15 warns once per functional-graph bookkeeping container of a .keras
        # file; they hold no weights (the tests check every value arrives).
        warnings.filterwarnings("ignore", message="Skipping nested container at "
                                "'_operations_by_depth")
        model.load_weights(path)


def _keras_reason(failure: Exception) -> str:
    """The informative part of a Keras/h5py loading error: its first line and, for
    "N objects could not be loaded", the example mismatch that follows (shapes)."""
    lines = [line.strip() for line in str(failure).splitlines() if line.strip()]
    if not lines:
        return type(failure).__name__
    reason = " ".join(lines[:2]) if lines[0].endswith(":") and len(lines) > 1 else lines[0]
    reason = reason.split(" Target variable:")[0]  # then a dump of the variable's values
    return reason if len(reason) <= 400 else reason[:400] + "..."


def _load_from_model_with_top(base: keras.Model, name: str, path: str) -> bool:
    """Load a legacy .h5 into the backbone with its top, copy the part ``base`` has;
    False when that does not load either."""
    with_top = _application(name)(include_top=True, weights=None)
    try:
        _keras_load_weights(with_top, path)
    except Exception:  # the caller reports the first failure, the one about ``base``
        return False
    values = with_top.get_weights()[:len(base.weights)]
    # Same constructor, so the variables without the top come first, in the same order.
    expected = [tuple(w.shape) for w in base.weights]
    if [v.shape for v in values] != expected:
        raise BackboneWeightsError(f"{path}: the {name} layers of this file do not fit "
                                   f"{name} without its top")
    base.set_weights([np.asarray(v) for v in values])
    return True
