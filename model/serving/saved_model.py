"""The one loader of exported captioning SavedModels (local or gs://).

Everything that runs an exported model goes through here: the caption pipeline's
Beam ModelHandler (pipelines/caption/inference.py), `altbeam evaluate --model` and the
report's attention heatmaps. It speaks only the serving contract (DESIGN.md):
``serving_default(images=uint8[N,S,S,3]) -> {captions: string[N,K], scores:
float32[N,K]}``, with ``concepts: string[N,Kc]`` and ``concept_scores: float32[N,Kc]``
when the model has a concept head (`LoadedModel.predict`; None for older models), plus
optional other signatures (``caption_with_attention``). S, K, Kc, name and version are
read from the model (``model_card.json``, else the signature), never hard-coded.

Remote folders are copied to local disk first (model_fetch.py); ``storage`` says how
remote files are read (the pipeline passes Beam's FileSystems). TensorFlow is only
imported to load a model, so reading a model card stays cheap.
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np

from altbeam.model.serving.caption_status import (
    DEFAULT_THRESHOLDS,
    GateThresholds,
    covered_by_card,
    thresholds_from_card,
)
from altbeam.model.serving.model_fetch import DEFAULT_STORAGE, Storage, localize_model

SERVING_SIGNATURE = "serving_default"


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    path: str
    image_size: int          # S: the model takes S x S RGB images
    beam_width: int          # K: captions per image
    version: str             # recorded in every catalog row
    name: str | None = None
    concepts: int = 0        # Kc: concepts per image (0: the card names no concept head)
    # Concepts its head can judge (caption_status.covered_by_card): the gate's evidence.
    judged: frozenset[str] = frozenset()
    # The caption gate's thresholds for this model (its card's, else the defaults).
    thresholds: GateThresholds = DEFAULT_THRESHOLDS


def read_model_card(model_dir: str, storage: Storage | None = None) -> dict:
    """``model_card.json`` of a model folder ({} when it has none); FileNotFoundError when
    the folder holds no SavedModel at all."""
    storage = storage or DEFAULT_STORAGE
    card_path = model_dir.rstrip("/") + "/model_card.json"
    if storage.exists(card_path):
        with storage.open(card_path) as f:
            return json.loads(f.read().decode("utf-8"))
    if not storage.exists(model_dir.rstrip("/") + "/saved_model.pb"):
        raise FileNotFoundError(f"{model_dir}: no SavedModel here (saved_model.pb missing)")
    return {}


def read_model_info(model_dir: str, storage: Storage | None = None) -> ModelInfo:
    """S, K, name and version from the model card; S and K fall back to the signature.

    Only a card without S or K makes this load (a localized copy of) the model."""
    card = read_model_card(model_dir, storage)
    size, beams = card.get("image_size"), card.get("beam_width")
    if not size or not beams:
        loaded = LoadedModel(model_dir, storage=storage)
        size, beams = size or loaded.image_size, beams or loaded.beam_width
    if not size:
        raise ValueError(f"{model_dir}: cannot tell the model's image size (no image_size in "
                         "model_card.json and no static size in the serving signature)")
    return ModelInfo(path=model_dir, image_size=int(size), beam_width=int(beams or 0),
                     version=str(card.get("version") or "unknown"), name=card.get("name"),
                     concepts=int((card.get("concept_head") or {}).get("top_k") or 0),
                     judged=covered_by_card(card.get("concept_head")),
                     thresholds=thresholds_from_card(card))


def enable_gpu_memory_growth() -> None:
    """Let TensorFlow take GPU memory as needed (several workers may share a GPU)."""
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised in this process
            pass


@dataclasses.dataclass(frozen=True)
class ModelOutputs:
    """One batch through ``serving_default``; concepts are None for a model without a
    concept head."""
    captions: np.ndarray                      # bytes [N, K], best first
    scores: np.ndarray                        # float32 [N, K]
    concepts: np.ndarray | None = None        # bytes [N, Kc], best first
    concept_scores: np.ndarray | None = None  # float32 [N, Kc]


class LoadedModel:
    """A loaded SavedModel and its serving function (keeping the module alive).

    ``image_size``: what the caller prepares pixels for (from `read_model_info`); a
    signature with another static size is refused. None: the signature's size."""

    def __init__(self, path: str, image_size: int | None = None,
                 storage: Storage | None = None):
        import tensorflow as tf

        enable_gpu_memory_growth()
        self.path = path
        self._module = tf.saved_model.load(localize_model(path, storage=storage))
        self._fn = self._module.signatures[SERVING_SIGNATURE]
        inputs = self._fn.structured_input_signature[1]
        self._input_name = next(iter(inputs))
        static_size = inputs[self._input_name].shape[1]
        if image_size and static_size is not None and static_size != image_size:
            raise ValueError(f"{path}: signature takes {static_size} px images but "
                             f"image_size is {image_size}")
        self.image_size = image_size or static_size
        outputs = self._fn.structured_outputs
        self.beam_width = _width(outputs.get("captions"))
        # Kc, or None when the model has no concept head (exported before it existed).
        self.concept_count = _width(outputs.get("concepts")) if "concepts" in outputs else None
        self.has_concepts = "concepts" in outputs and "concept_scores" in outputs
        self.devices = [d.name for d in tf.config.list_logical_devices("GPU")] or ["CPU"]

    def signature(self, name: str):
        """Another signature of the model (e.g. ``caption_with_attention``), or None."""
        return self._module.signatures.get(name)

    def caption(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 [N, S, S, 3] -> (captions bytes [N, K], scores float32 [N, K])."""
        out = self.predict(images)
        return out.captions, out.scores

    def predict(self, images: np.ndarray) -> ModelOutputs:
        """uint8 [N, S, S, 3] -> captions and scores, and concepts when the model has them."""
        import tensorflow as tf

        # Concrete functions do not check static shapes: a wrong size would be
        # captioned silently, so refuse it here.
        expected = (self.image_size, self.image_size, 3)
        if images.dtype != np.uint8 or images.shape[1:] != expected:
            raise ValueError(f"model takes uint8 images of shape {expected}, "
                             f"got {images.dtype} {images.shape[1:]}")
        out = self._fn(**{self._input_name: tf.constant(images, dtype=tf.uint8)})
        if not self.has_concepts:
            return ModelOutputs(out["captions"].numpy(), out["scores"].numpy())
        return ModelOutputs(out["captions"].numpy(), out["scores"].numpy(),
                            out["concepts"].numpy(), out["concept_scores"].numpy())

    def best_captions(self, images: np.ndarray) -> list[str]:
        """The first (best) caption of each image, as text."""
        return [c.decode("utf-8") for c in self.caption(images)[0][:, 0]]


def _width(spec) -> int | None:
    """The static last dimension of a [N, K] output, else None."""
    return spec.shape[-1] if spec is not None and spec.shape.rank == 2 else None
