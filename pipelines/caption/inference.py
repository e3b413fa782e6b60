"""Batched captioning with the exported SavedModel, through Beam's RunInference.

Beam's stock TensorFlow handler imports ``tensorflow_hub`` and loads models with
``tf.keras.models.load_model``, which rejects SavedModel folders under Keras 3, so
`SavedModelHandler` is a small ModelHandler around the model package's one SavedModel
loader (``altbeam.model.serving.saved_model``: the serving contract, S, K and version
read from the model). Model folders and cards are read through Beam's FileSystems
(`BEAM_STORAGE`), the job's own client and credentials, never TensorFlow's gs:// reader.

Batches have a fixed size (``min_batch_size == max_batch_size``) so the accelerator
sees steady shapes; the last batch of a bundle may be smaller.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import (
    KeyedModelHandler,
    ModelHandler,
    PredictionResult,
    RunInference,
)

from altbeam.model.serving.saved_model import LoadedModel, ModelInfo
from altbeam.model.serving.saved_model import read_model_info as read_info_through
from altbeam.pipelines.caption.decode import StageError
from altbeam.pipelines.runtime.progress import NAMESPACE

_LOG = logging.getLogger(__name__)
__all__ = ["BEAM_STORAGE", "CaptionImages", "LoadedModel", "ModelInfo", "SavedModelHandler",
           "read_model_info"]


class _DropBeamMemoryWarning(logging.Filter):
    """Beam 2.77 imports `resource` in one try-block with a module that needs torch, so
    without torch RunInference warns "Resource module is not available" on every batch.
    The warning is noise (only a memory metric is lost): drop exactly that message."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Resource module is not available")


logging.getLogger().addFilter(_DropBeamMemoryWarning())


class BeamStorage:
    """Model files through Beam's FileSystems (gs://, s3://, local; an emulator too)."""

    def exists(self, path: str) -> bool:
        return FileSystems.exists(path)

    def open(self, path: str):
        # UNCOMPRESSED: never let Beam gunzip a file because its name ends in .gz.
        return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)

    def list_files(self, root: str) -> list[str]:
        return [m.path for r in FileSystems.match([root.rstrip("/") + "/**"])
                for m in r.metadata_list]


BEAM_STORAGE = BeamStorage()


def read_model_info(model_dir: str) -> ModelInfo:
    """The model's S, K and version, its card read through Beam (a remote model is
    copied to this machine only when the card lacks S or K)."""
    return read_info_through(model_dir, BEAM_STORAGE)


class SavedModelHandler(ModelHandler[np.ndarray, PredictionResult, LoadedModel]):
    """uint8[S,S,3] images -> PredictionResult(inference={"captions", "scores"})."""

    def __init__(self, model: ModelInfo, batch_size: int = 16, large_model: bool = False):
        super().__init__(min_batch_size=batch_size, max_batch_size=batch_size,
                         large_model=large_model)
        self._model = model
        self._batch_size = batch_size

    def load_model(self) -> LoadedModel:
        loaded = LoadedModel(self._model.path, self._model.image_size, BEAM_STORAGE)
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
