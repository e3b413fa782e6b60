"""SavedModelHandler and CaptionImages against the contract model (real TF, real Beam)."""
from __future__ import annotations

import shutil

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from altbeam.pipelines.caption.decode import ImageInfo, ImageMetadata
from altbeam.pipelines.caption.inference import (
    CaptionImages,
    SavedModelHandler,
    read_model_info,
)


def images(n: int, size: int = 32, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def test_model_info_from_card(contract_model):
    info = read_model_info(str(contract_model))
    assert (info.image_size, info.beam_width, info.version) == (32, 3, "fixture-0")


def test_model_info_falls_back_to_signature(contract_model, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(contract_model, bare)
    (bare / "model_card.json").unlink()
    info = read_model_info(str(bare))
    assert (info.image_size, info.version) == (32, "unknown")


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="saved_model.pb missing"):
        read_model_info(str(tmp_path))


def test_handler_batches_and_outputs(contract_model):
    handler = SavedModelHandler(read_model_info(str(contract_model)), batch_size=4)
    assert handler.batch_elements_kwargs() == {"min_batch_size": 4, "max_batch_size": 4}
    model = handler.load_model()
    batch = images(5)
    results = list(handler.run_inference(batch, model))
    assert len(results) == 5
    for result in results:
        assert result.example is None     # no pixels carried on: every result is buffered
        caps, scores = result.inference["captions"], result.inference["scores"]
        assert len(caps) == len(scores) == 3
        assert all(isinstance(c, str) and c.startswith("a ") for c in caps)
        assert scores == sorted(scores, reverse=True) and all(s <= 0 for s in scores)
        assert result.model_id == "fixture-0"
    # Same image, same caption: inference is deterministic.
    again = list(handler.run_inference(batch[:1], model))[0]
    assert again.inference == results[0].inference


def test_handler_rejects_model_of_other_size(contract_model):
    info = read_model_info(str(contract_model))
    wrong = SavedModelHandler(type(info)(**{**info.__dict__, "image_size": 64}))
    with pytest.raises(ValueError, match="takes 32 px images"):
        wrong.load_model()


def _key(uri: str) -> ImageInfo:
    return ImageInfo(uri=uri, sha256="0" * 64, size_bytes=1, mtime_us=None,
                     metadata=ImageMetadata(width=32, height=32, format="PNG"))


def test_caption_images_keeps_keys_and_routes_failures(contract_model):
    info = read_model_info(str(contract_model))
    good = [(_key(f"good{i}"), im) for i, im in enumerate(images(7))]
    # A batch of wrongly sized images makes the model itself fail: those rows go to
    # the errors output, the good batches still come through.
    bad = [(_key(f"bad{i}"), im) for i, im in enumerate(images(2, size=16))]
    with test_pipeline.TestPipeline() as p:
        out_good = (p | "Good" >> beam.Create(good)
                    | "CaptionGood" >> CaptionImages(info, batch_size=3))
        out_bad = (p | "Bad" >> beam.Create(bad)
                   | "CaptionBad" >> CaptionImages(info, batch_size=2))
        assert_that(out_good["captioned"]
                    | beam.MapTuple(lambda k, r: (k.uri, len(r.inference["captions"]))),
                    equal_to([(f"good{i}", 3) for i in range(7)]), label="GoodCaptioned")
        assert_that(out_good["errors"], equal_to([]), label="NoErrors")
        assert_that(out_bad["errors"] | beam.Map(lambda e: (e.uri, e.stage)),
                    equal_to([("bad0", "inference"), ("bad1", "inference")]),
                    label="BadErrors")
        assert_that(out_bad["captioned"], equal_to([]), label="NothingFromBad")
