"""Batched captioning with the exported SavedModel, through Beam's RunInference.

Beam's stock TensorFlow handler imports ``tensorflow_hub`` and loads models with
``tf.keras.models.load_model``, which rejects SavedModel folders under Keras 3, so
`SavedModelHandler` is a small ModelHandler around ``tf.saved_model.load``. It speaks
only the serving contract (DESIGN.md): ``serving_default(images=uint8[N,S,S,3]) ->
{captions: string[N,K], scores: float32[N,K]}``. S, K and the model version are read
from the model (``model_card.json`` and the signature), never hard-coded.

Batches have a fixed size (``min_batch_size == max_batch_size``) so the accelerator
sees steady shapes; the last batch of a bundle may be smaller.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import (
    KeyedModelHandler,
    ModelHandler,
    PredictionResult,
    RunInference,
)

from altbeam.pipelines.caption.decode import StageError
from altbeam.pipelines.runtime.model_fetch import localize_model
from altbeam.pipelines.runtime.progress import NAMESPACE

_LOG = logging.getLogger(__name__)
SIGNATURE = "serving_default"


class _DropBeamMemoryWarning(logging.Filter):
    """Beam 2.77 imports `resource` in one try-block with a module that needs torch, so
    without torch RunInference warns "Resource module is not available" on every batch.
    The warning is noise (only a memory metric is lost): drop exactly that message."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Resource module is not available")


logging.getLogger().addFilter(_DropBeamMemoryWarning())


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    path: str
    image_size: int          # S: the model takes S x S RGB images
    beam_width: int          # K: captions per image
    version: str             # recorded in every catalog row
    name: str | None = None


def read_model_info(model_dir: str) -> ModelInfo:
    """S, K and version from ``model_card.json``; S and K fall back to the signature.

    The card is read through Beam's FileSystems, which reads gs:// with the job's
    own client and credentials, so a remote model is not copied to this machine just
    for its card; only a card without S or K makes it load (a localized copy of) the
    model to read the signature."""
    card_path = model_dir.rstrip("/") + "/model_card.json"
    card: dict = {}
    if FileSystems.exists(card_path):
        with FileSystems.open(card_path) as f:
            card = json.loads(f.read().decode("utf-8"))
    elif not FileSystems.exists(model_dir.rstrip("/") + "/saved_model.pb"):
        raise FileNotFoundError(f"{model_dir}: no SavedModel here (saved_model.pb missing)")
    size, beams = card.get("image_size"), card.get("beam_width")
    if not size or not beams:
        sig_size, sig_beams = _signature_shapes(model_dir)
        size, beams = size or sig_size, beams or sig_beams
    if not size:
        raise ValueError(f"{model_dir}: cannot tell the model's image size (no image_size in "
                         "model_card.json and no static size in the serving signature)")
    return ModelInfo(path=model_dir, image_size=int(size), beam_width=int(beams or 0),
                     version=str(card.get("version") or "unknown"), name=card.get("name"))


def _signature_shapes(model_dir: str) -> tuple[int | None, int | None]:
    """(S, K) from the serving signature's static shapes (loads the model once)."""
    import tensorflow as tf

    fn = tf.saved_model.load(localize_model(model_dir)).signatures[SIGNATURE]
    spec = next(iter(fn.structured_input_signature[1].values()))
    size = spec.shape[1]
    out = fn.structured_outputs.get("captions")
    beams = out.shape[-1] if out is not None and out.shape.rank == 2 else None
    return size, beams


def enable_gpu_memory_growth() -> None:
    """Let TensorFlow take GPU memory as needed (several workers may share a GPU)."""
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised in this process
            pass


class LoadedModel:
    """The loaded SavedModel plus its serving function (keeping the object alive)."""

    def __init__(self, path: str, image_size: int):
        import tensorflow as tf

        enable_gpu_memory_growth()
        # gs:// etc.: copied once per machine through Beam's FileSystems (TF's own gs://
        # reader has other credentials and cannot be pointed at an emulator).
        self._module = tf.saved_model.load(localize_model(path))
        self._fn = self._module.signatures[SIGNATURE]
        spec = next(iter(self._fn.structured_input_signature[1].values()))
        self._input_name = next(iter(self._fn.structured_input_signature[1]))
        if spec.shape[1] is not None and spec.shape[1] != image_size:
            raise ValueError(f"{path}: signature takes {spec.shape[1]} px images but "
                             f"image_size is {image_size}")
        self.image_size = image_size
        self.devices = [d.name for d in tf.config.list_logical_devices("GPU")] or ["CPU"]

    def caption(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import tensorflow as tf

        # Concrete functions do not check static shapes: a wrong size would be
        # captioned silently, so refuse it here.
        expected = (self.image_size, self.image_size, 3)
        if images.dtype != np.uint8 or images.shape[1:] != expected:
            raise ValueError(f"model takes uint8 images of shape {expected}, "
                             f"got {images.dtype} {images.shape[1:]}")
        out = self._fn(**{self._input_name: tf.constant(images, dtype=tf.uint8)})
        return out["captions"].numpy(), out["scores"].numpy()


class SavedModelHandler(ModelHandler[np.ndarray, PredictionResult, LoadedModel]):
    """uint8[S,S,3] images -> PredictionResult(inference={"captions", "scores"})."""

    def __init__(self, model: ModelInfo, batch_size: int = 16, large_model: bool = False):
        super().__init__(min_batch_size=batch_size, max_batch_size=batch_size,
                         large_model=large_model)
        self._model = model
        self._batch_size = batch_size

    def load_model(self) -> LoadedModel:
        loaded = LoadedModel(self._model.path, self._model.image_size)
        _LOG.info("loaded %s (version %s) on %s", self._model.path, self._model.version,
                  ", ".join(loaded.devices))
        return loaded

    def run_inference(self, batch: Sequence[np.ndarray], model: LoadedModel,
                      inference_args: dict[str, Any] | None = None
                      ) -> Iterable[PredictionResult]:
        captions, scores = model.caption(np.stack(batch))
        for image, caps, scs in zip(batch, captions, scores):
            yield PredictionResult(
                example=image,
                inference={"captions": [c.decode("utf-8") for c in caps],
                           "scores": [float(s) for s in scs]},
                model_id=self._model.version)

    def get_num_bytes(self, batch: Sequence[np.ndarray]) -> int:
        return sum(a.nbytes for a in batch)

    def get_metrics_namespace(self) -> str:
        return NAMESPACE

    def update_model_path(self, model_path: str | None = None):
        if model_path:
            self._model = dataclasses.replace(read_model_info(model_path), path=model_path)


def _batch_failures(failed) -> Iterable[StageError]:
    """(failed keyed batch, exception) -> one StageError per image in the batch."""
    batch, exc = failed
    for key, _ in batch:
        yield StageError(key.uri, "inference", type(exc).__name__,
                         f"{key.uri}: model inference failed for its batch: {exc}")


class CaptionImages(beam.PTransform):
    """(ImageInfo, pixels) -> (ImageInfo, PredictionResult), plus StageErrors ("errors")."""

    def __init__(self, model: ModelInfo, batch_size: int = 16, large_model: bool = False):
        super().__init__()
        self._handler = KeyedModelHandler(SavedModelHandler(model, batch_size, large_model))

    def expand(self, images):
        results, dlq = images | "RunInference" >> RunInference(
            self._handler).with_exception_handling()
        errors = dlq.failed_inferences | "FailedBatches" >> beam.FlatMap(_batch_failures)
        return {"captioned": results, "errors": errors}
