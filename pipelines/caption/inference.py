"""Batched captioning with the exported SavedModel, through Beam's RunInference.

Beam's stock TensorFlow handler imports ``tensorflow_hub`` and loads models with
``tf.keras.models.load_model``, which rejects SavedModel folders under Keras 3, so
`SavedModelHandler` is a small ModelHandler around the model package's one SavedModel
loader (``altbeam.model.serving.saved_model``: the serving contract, S, K and version
read from the model). Model folders and cards are read through Beam's FileSystems
(`BEAM_STORAGE`), the job's own client and credentials, never TensorFlow's gs:// reader.

Batches have a fixed size (``min_batch_size == max_batch_size``) so the accelerator
sees steady shapes; the last batch of a bundle may be smaller.

The first batch a worker process runs logs the device the model runs on ("altbeam:
model runs on /GPU:0 (NVIDIA L4)", or "on CPU"; also on stderr for local runs), so a
GPU job that quietly fell back to the CPU shows it. With ``--require-gpu`` loading the
model raises `NoGpuError` unless TensorFlow sees a GPU (`require_gpu`).
"""
from __future__ import annotations

import dataclasses
import logging
import sys
import threading
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

from altbeam.model.serving.saved_model import LoadedModel, ModelInfo, ModelOutputs
from altbeam.model.serving.saved_model import read_model_info as read_info_through
from altbeam.pipelines.caption.decode import StageError
from altbeam.pipelines.runtime.progress import NAMESPACE

_LOG = logging.getLogger(__name__)
__all__ = ["BEAM_STORAGE", "CaptionImages", "LoadedModel", "ModelInfo", "NoGpuError",
           "SavedModelHandler", "read_model_info", "require_gpu"]


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


class NoGpuError(RuntimeError):
    """``--require-gpu`` was given and TensorFlow sees no GPU on this machine."""


def model_device() -> str:
    """Where TensorFlow runs the model on this machine: "/GPU:0 (NVIDIA L4)" or "CPU".

    Physical devices only: listing them does not initialise TensorFlow's runtime, so
    GPU memory growth can still be set when the model loads.
    """
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "CPU"
    try:
        name = tf.config.experimental.get_device_details(gpus[0]).get("device_name")
    except (RuntimeError, ValueError):
        name = None
    return "/GPU:0" + (f" ({name})" if name else "")


def require_gpu() -> str:
    """The GPU the model will run on; `NoGpuError` when TensorFlow sees none."""
    device = model_device()
    if device == "CPU":
        raise NoGpuError(
            "--require-gpu: TensorFlow sees no GPU on this machine, so the model would run "
            "on the CPU. Check that a GPU is attached and its driver libraries are on the "
            "loader path (Dataflow: worker_accelerator with install-nvidia-driver; see "
            "docs/dataflow.md), or leave out --require-gpu to caption on the CPU.")
    return device


_device_announced = threading.Event()     # once per worker process


def announce_device(device: str, to_stderr: bool) -> None:
    """Log "altbeam: model runs on DEVICE" the first time in this process; local runs
    (``to_stderr``) also print it where their progress lines go."""
    if _device_announced.is_set():
        return
    _device_announced.set()
    line = f"altbeam: model runs on {device}"
    _LOG.info(line)
    if to_stderr:
        print(line, file=sys.stderr, flush=True)


def read_model_info(model_dir: str) -> ModelInfo:
    """The model's S, K and version, its card read through Beam (a remote model is
    copied to this machine only when the card lacks S or K)."""
    return read_info_through(model_dir, BEAM_STORAGE)


class SavedModelHandler(ModelHandler[np.ndarray, PredictionResult, LoadedModel]):
    """uint8[S,S,3] images -> PredictionResult(inference={"captions", "scores"}, plus
    "concepts" and "concept_scores" from a model with a concept head)."""

    def __init__(self, model: ModelInfo, batch_size: int = 16, large_model: bool = False,
                 require_gpu: bool = False, progress_dir: str | None = None):
        super().__init__(min_batch_size=batch_size, max_batch_size=batch_size,
                         large_model=large_model)
        self._model = model
        self._batch_size = batch_size
        self._large_model = large_model
        self._require_gpu = require_gpu
        self._progress_dir = progress_dir    # set for local runs: tell the user too
        self._device: str | None = None      # set by load_model in the model's process

    def load_model(self) -> LoadedModel:
        # In the DoFn's setup: --require-gpu fails the worker (so the job) at start-up.
        self._device = require_gpu() if self._require_gpu else model_device()
        if self._large_model:
            # A shared model lives in a process of its own: this handler copy never sees
            # a batch, and the batches' handlers never learn the device. Say it here.
            announce_device(self._device, bool(self._progress_dir))
        loaded = LoadedModel(self._model.path, self._model.image_size, BEAM_STORAGE)
        _LOG.info("loaded %s (version %s) on %s", self._model.path, self._model.version,
                  ", ".join(loaded.devices))
        return loaded

    def run_inference(self, batch: Sequence[np.ndarray], model: LoadedModel,
                      inference_args: dict[str, Any] | None = None
                      ) -> Iterable[PredictionResult]:
        out = model.predict(np.stack(batch))
        if self._device:
            announce_device(self._device, bool(self._progress_dir))
        # No `example`: the pixels travelling on with each result were held, all of them,
        # where the DirectRunner buffers a PCollection (peak memory grew ~0.7 MiB per image).
        for i in range(len(batch)):
            yield PredictionResult(example=None, inference=_image_outputs(out, i),
                                   model_id=self._model.version)

    def get_num_bytes(self, batch: Sequence[np.ndarray]) -> int:
        return sum(a.nbytes for a in batch)

    def get_metrics_namespace(self) -> str:
        return NAMESPACE

    def update_model_path(self, model_path: str | None = None):
        if model_path:
            self._model = dataclasses.replace(read_model_info(model_path), path=model_path)


def _image_outputs(out: ModelOutputs, i: int) -> dict:
    """Image i of a batch as plain Python: captions and scores, and the concept words and
    scores when the model has a concept head (the caption gate's evidence)."""
    result = {"captions": [c.decode("utf-8") for c in out.captions[i]],
              "scores": [float(s) for s in out.scores[i]]}
    if out.concepts is not None:
        result["concepts"] = [c.decode("utf-8") for c in out.concepts[i]]
        result["concept_scores"] = [float(s) for s in out.concept_scores[i]]
    return result


def _batch_failures(failed) -> Iterable[StageError]:
    """(failed keyed batch, exception) -> one StageError per image in the batch."""
    batch, exc = failed
    for key, _ in batch:
        yield StageError(key.uri, "inference", type(exc).__name__,
                         f"{key.uri}: model inference failed for its batch: {exc}")


class CaptionImages(beam.PTransform):
    """(ImageInfo, pixels) -> (ImageInfo, PredictionResult), plus StageErrors ("errors")."""

    def __init__(self, model: ModelInfo, batch_size: int = 16, large_model: bool = False,
                 require_gpu: bool = False, progress_dir: str | None = None):
        super().__init__()
        self._handler = KeyedModelHandler(SavedModelHandler(
            model, batch_size, large_model, require_gpu, progress_dir))

    def expand(self, images):
        results, dlq = images | "RunInference" >> RunInference(
            self._handler).with_exception_handling()
        errors = dlq.failed_inferences | "FailedBatches" >> beam.FlatMap(_batch_failures)
        return {"captioned": results, "errors": errors}
