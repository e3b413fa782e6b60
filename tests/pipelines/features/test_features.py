"""`altbeam features` reads its image list inside the pipeline: the job graph stays small
whatever the dataset's size, and the records it writes are those of the encoder DoFns."""
from __future__ import annotations

import glob
import json
import os

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from altbeam.pipelines.features.pipeline import (
    DecodeForEncoder,
    EncodeBatch,
    ReadImageList,
    build,
    encoder_spec,
    run,
    write_image_list,
)
from tests.support.tiny import TINY_ENCODER

DATAFLOW_REQUEST_LIMIT = 20 * 1024 * 1024   # bytes; Dataflow refuses larger job requests
COCO_CAPTIONS = ["a man riding a wave on top of a surfboard", "a person on a surf board",
                 "a surfer rides a large wave in the ocean", "a man surfing on a wave",
                 "someone riding the crest of a wave on a board"]


def image_lists(out: str) -> list[str]:
    return glob.glob(os.path.join(out, "image-list-*.jsonl"))


def test_the_graph_of_200000_images_holds_only_the_list_path(tmp_path):
    out = str(tmp_path / "features")
    # COCO-like entries; the files need not exist to build the graph.
    items = [{"image_id": f"{i:012d}", "path": f"gs://bucket/coco/train2014/{i:012d}.jpg",
              "split": "train" if i % 10 else "dev", "captions": COCO_CAPTIONS}
             for i in range(200_000)]
    p = beam.Pipeline()
    build(p, items, out, ["train", "dev"], encoder=TINY_ENCODER)
    proto = p.to_runner_api().SerializeToString()
    assert len(proto) < 1_000_000
    assert b"000000199999" not in proto
    [listed] = image_lists(out)
    # In the graph (beam.Create) this list alone would be over Dataflow's request limit.
    assert os.path.getsize(listed) > DATAFLOW_REQUEST_LIMIT
    with open(listed) as f:
        assert sum(1 for _ in f) == 200_000


def test_the_image_list_reads_back_the_items_written(tmp_path):
    items = [{"image_id": "a", "path": "/p/a.jpg", "split": "train",
              "captions": ["un café\nsur deux lignes", 'a "quoted" word']},
             {"image_id": "b", "path": "/p/b.jpg", "split": "dev", "captions": []}]
    path = write_image_list(items, str(tmp_path))
    assert path.startswith(str(tmp_path)) and path.endswith(".jsonl")
    assert write_image_list(items, str(tmp_path)) != path   # one list per launch
    with BeamTestPipeline() as p:
        assert_that(p | ReadImageList(path), equal_to(items))


def encode_directly(items: list[dict]) -> dict[str, tf.train.Example]:
    """What the encoder DoFns make of ``items`` with no pipeline around them, by image id."""
    size = encoder_spec(TINY_ENCODER)[0]
    decode, encode = DecodeForEncoder(size), EncodeBatch(TINY_ENCODER, None, size)
    encode.setup()
    decoded = [pair for item in items for pair in decode.process(item)]
    records = [tf.train.Example.FromString(raw) for _, raw in encode.process(decoded)]
    return {ex.features.feature["image_id"].bytes_list.value[0].decode(): ex
            for ex in records}


def written_records(out: str, split: str) -> dict[str, tf.train.Example]:
    files = sorted(glob.glob(f"{out}/{split}/features-*.tfrecord"))
    records = [tf.train.Example.FromString(raw.numpy())
               for raw in tf.data.TFRecordDataset(files)]
    return {ex.features.feature["image_id"].bytes_list.value[0].decode(): ex
            for ex in records}


def features(ex: tf.train.Example) -> np.ndarray:
    return np.frombuffer(ex.features.feature["features"].bytes_list.value[0], dtype="<f2")


def test_a_small_run_writes_the_records_of_the_encoder(tmp_path, sample_photos):
    photos = sorted(p for p in sample_photos.iterdir() if p.suffix == ".jpg")
    rows = [{"image": p.name, "caption": f"photo number {i}",
             "split": "train" if i < 12 else "dev"} for i, p in enumerate(photos)]
    rows.append({"image": "missing.jpg", "caption": "no such file", "split": "train"})
    dataset = tmp_path / "captions.jsonl"
    dataset.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # The dataset reader resolves image names beside the caption file.
    for p in photos:
        os.symlink(p, tmp_path / p.name)
    out = str(tmp_path / "features")

    summary = run([str(dataset), "--out", out, "--encoder", TINY_ENCODER, "--splits",
                   "train,dev", "--batch-size", "4", "--num-shards", "2"])

    assert summary["images"] == len(rows)
    assert image_lists(out) == []   # the launch's list is gone after a successful run
    items = [{"image_id": r["image"], "path": str(tmp_path / r["image"]),
              "split": r["split"], "captions": [r["caption"]]} for r in rows]
    expected = encode_directly(items)
    for split, count in (("train", 12), ("dev", len(photos) - 12)):
        written = written_records(out, split)
        assert len(written) == count   # the missing file is skipped, as before
        for image_id, ex in written.items():
            want = expected[image_id]
            for key in ("split", "captions", "encoder", "grid", "channels", "image_size"):
                assert ex.features.feature[key] == want.features.feature[key], key
            np.testing.assert_allclose(features(ex), features(want), atol=1e-2)


@pytest.mark.parametrize("splits", [["train"], ["train", "dev"]])
def test_the_feature_job_names_its_steps(tmp_path, splits):
    p = beam.Pipeline()
    build(p, [], str(tmp_path), splits, encoder=TINY_ENCODER)
    labels = {t.full_label for t in p._current_transform().parts}
    assert {"ListImages", "Reshuffle", "Decode", "Batch", "Encode",
            *(f"Write{s.title()}" for s in splits)} <= labels
