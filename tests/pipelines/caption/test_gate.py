"""The caption gate in the caption job: held-back images, caption_status, objects, keywords.

The end-to-end cases run the bundled model (its concept head and detectors) on bundled
sample photos, through the real DirectRunner, and read the Parquet catalog back."""
from __future__ import annotations

import json
import shutil

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from altbeam.model import DEFAULT_MODEL_DIR
from altbeam.model.serving.caption_status import KEYWORD_MIN_SCORE, STATUSES
from altbeam.pipelines.caption import pipeline as caption
from altbeam.pipelines.caption.decode import ImageInfo, ImageMetadata
from altbeam.pipelines.caption.gate import (
    HELD_BACK,
    HoldBackUndescribable,
    StatusCounts,
    gate_columns,
)
from altbeam.pipelines.caption.inference import read_model_info
from altbeam.pipelines.catalog.beam_io import read_table_rows

BEAR = "000000000285.jpg"      # the bundled model says "a brown dog"; its CNN says bear
DOG = "000000017029.jpg"       # "a black dog is running in the grass": right


def info(uri: str, width: int, height: int) -> ImageInfo:
    return ImageInfo(uri=uri, sha256="0" * 64, size_bytes=1, mtime_us=0,
                     metadata=ImageMetadata(width=width, height=height, format="PNG"))


def test_hold_back_splits_too_small_and_blank_from_the_rest():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    grey = np.full((32, 32, 3), 128, np.uint8)
    items = [(info("tiny", 20, 400), noise),        # short side 20 px: too small
             (info("grey", 640, 480), grey),        # uniform: blank
             (info("photo", 640, 480), noise)]      # captioned
    with test_pipeline.TestPipeline() as p:
        out = (p | beam.Create(items)
               | beam.ParDo(HoldBackUndescribable()).with_outputs(HELD_BACK, main="images"))
        assert_that(out.images | "Uris" >> beam.Map(lambda kv: kv[0].uri),
                    equal_to(["photo"]), label="captioned")
        assert_that(out[HELD_BACK] | "Held" >> beam.Map(lambda kv: (kv[0].uri, kv[1])),
                    equal_to([("tiny", "too_small"), ("grey", "blank")]), label="held")


def test_gate_columns_without_a_concept_head_judge_by_score_alone():
    confident = {"captions": ["a dog on the grass"], "scores": [-0.4]}
    doubtful = {"captions": ["a dog on the grass"], "scores": [-2.5]}
    assert gate_columns(confident, frozenset()) == {
        "caption_status": "ok", "objects": ["dog", "grass"], "keywords": [],
        "keyword_scores": []}
    assert gate_columns(doubtful, frozenset())["caption_status"] == "unsure"


def test_gate_columns_with_concepts():
    contradicted = {"captions": ["a brown dog is walking through the grass"], "scores": [-0.6],
                    "concepts": ["bear", "person", "grass"],
                    "concept_scores": [0.99, 0.2, 0.13]}
    cols = gate_columns(contradicted, frozenset({"bear", "dog", "grass", "person"}))
    assert cols["caption_status"] == "contradicted"
    assert cols["objects"] == ["dog", "grass"]
    assert cols["keywords"] == ["bear"] and cols["keyword_scores"] == pytest.approx([0.99])


def test_status_counts_combine():
    rows = [{"caption_status": s} for s in ("ok", "ok", "blank", "unsure")] + [
        {"caption_status": None}]
    with test_pipeline.TestPipeline() as p:
        counts = p | beam.Create(rows) | beam.CombineGlobally(StatusCounts())
        assert_that(counts, equal_to([{"ok": 2, "unsure": 1, "contradicted": 0,
                                       "too_small": 0, "blank": 1}]))


@pytest.fixture(scope="module")
def gated_catalog(sample_photos, tmp_path_factory):
    """One run of the bundled model over two sample photos, a tiny and a blank image."""
    root = tmp_path_factory.mktemp("gate")
    src, cat = root / "in", root / "cat"
    src.mkdir()
    for name in (BEAR, DOG):
        shutil.copy(sample_photos / name, src / name)
    Image.new("RGB", (8, 8), (128, 128, 128)).save(src / "tiny.png")
    Image.new("RGB", (300, 200), (40, 90, 200)).save(src / "blue.png")
    summary = caption.run([str(src), "--catalog", str(cat), "--no-progress"])
    rows = {r["uri"].rsplit("/", 1)[-1]: r for r in read_table_rows(str(cat), "catalog")}
    return summary, rows


def test_bundled_model_rows_carry_the_gate(gated_catalog):
    summary, rows = gated_catalog
    assert set(rows) == {BEAR, DOG, "tiny.png", "blue.png"}
    bear = rows[BEAR]
    assert bear["caption"] and "dog" in bear["objects"]
    assert bear["caption_status"] == "contradicted"
    assert bear["keywords"][0] == "bear" and bear["keyword_scores"][0] >= KEYWORD_MIN_SCORE
    assert rows[DOG]["caption_status"] == "ok"
    for row in (rows[BEAR], rows[DOG]):
        scores = list(row["keyword_scores"])
        assert len(scores) == len(row["keywords"]) and scores == sorted(scores, reverse=True)
        assert all(s >= KEYWORD_MIN_SCORE for s in scores)
    for name, status in (("tiny.png", "too_small"), ("blue.png", "blank")):
        row = rows[name]
        assert row["caption_status"] == status
        assert row["caption"] is None and row["score"] is None and row["captions"] == []
        assert row["keywords"] == [] and row["objects"] == []
    # Held-back images are catalogued, not errors, and the summary accounts for them.
    assert summary["failed"] == 0 and summary["exit_code"] == 0
    assert (summary["captioned"], summary["no_caption"]) == (2, 2)
    assert set(summary["statuses"]) == set(STATUSES)
    assert summary["statuses"]["too_small"] == 1 and summary["statuses"]["blank"] == 1
    assert sum(summary["statuses"].values()) == 4


def test_summary_line_shows_statuses(gated_catalog):
    summary, _ = gated_catalog
    line = caption.format_summary({**summary, "wall_seconds": 1.0})
    assert "captioned 2 (ok 1, unsure 0, contradicted 1)" in line
    assert "no caption 2 (too small or blank)" in line


def test_bundled_model_card_lists_what_its_head_judges():
    judged = read_model_info(str(DEFAULT_MODEL_DIR)).judged
    assert {"bear", "dog", "person", "grass", "street"} <= judged
    # No ImageNet class and no detector: the gate takes a caption at its word there.
    assert not {"kitchen", "giraffe", "sky"} & judged


def test_a_model_card_can_carry_its_own_gate_thresholds(sample_photos, tmp_path):
    """A model's caption scores have their own scale: the gate reads the thresholds its
    card names (caption_gate.thresholds) in the caption job, not only the defaults."""
    model = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL_DIR, model)
    card_path = model / "model_card.json"
    card = json.loads(card_path.read_text())
    card["caption_gate"] = {"thresholds": {"min_caption_score": 0.0}}  # nothing is that sure
    card_path.write_text(json.dumps(card))
    info = read_model_info(str(model))
    assert info.thresholds.min_caption_score == 0.0
    assert info.thresholds.contradict_below == read_model_info(DEFAULT_MODEL_DIR).thresholds.contradict_below
    src, cat = tmp_path / "in", tmp_path / "cat"
    src.mkdir()
    shutil.copy(sample_photos / DOG, src / DOG)
    caption.run([str(src), "--catalog", str(cat), "--model", str(model), "--no-progress"])
    row, = read_table_rows(str(cat), "catalog")
    assert row["caption_status"] == "unsure"   # "ok" with the default thresholds (above)
