"""The caption gate (model/serving/caption_status.py) on hand-made concept scores."""
from __future__ import annotations

import ast
import pathlib

import numpy as np
import pytest

from altbeam.model.data.concepts import CONCEPTS
from altbeam.model.serving import caption_status as gate
from altbeam.model.serving.caption_status import (
    BLANK,
    CONTRADICTED,
    OK,
    STATUSES,
    TOO_SMALL,
    UNSURE,
    GateThresholds,
    caption_status,
    covered_concepts,
    pixel_status,
    status_counts,
)

T = GateThresholds(min_caption_score=-1.2, support=0.1, contradict_below=0.03, confident=0.6)
COVERED = covered_concepts(["person", "grass", "water", "street"])   # + ImageNet's concepts


def status(caption, concepts, score=-0.8):
    return caption_status(caption, score, list(concepts), list(concepts.values()), T, COVERED)


def test_supported_objects_and_a_confident_caption_are_ok():
    assert status("a brown dog runs through the grass", {"dog": 0.9, "grass": 0.4}) == \
        (OK, ["dog", "grass"])
    # a man is judged by the person detector: man vs woman is not the gate's question
    assert status("a man in a red shirt", {"person": 0.8, "shirt": 0.2})[0] == OK


def test_bear_called_a_dog_is_contradicted():
    assert status("a brown dog is walking through the grass",
                  {"bear": 0.85, "grass": 0.3, "dog": 0.01}) == (CONTRADICTED, ["dog", "grass"])
    # a concept missing from the model's top T scores 0
    assert status("a person is sitting on a large white dog", {"toilet": 0.7, "sink": 0.2})[0] \
        == CONTRADICTED


def test_a_thing_worn_never_contradicts_a_caption():
    # The skier of the bundled samples: the jacket scores low where the CNN is sure of
    # the skis and the person. With support 0 (the defaults) the caption is ok.
    t = GateThresholds(support=0.0, contradict_below=0.05, confident=0.3)
    scores = {"person": 0.93, "skis": 0.93, "jacket": 0.01}
    covered = covered_concepts(["person", "jacket"])     # jacket has a detector: judged
    judge = lambda caption: caption_status(  # noqa: E731
        caption, -0.8, list(scores), list(scores.values()), t, covered)
    assert judge("a man in a red jacket is skiing") == (OK, ["man", "jacket"])
    assert "jacket" in gate.WORN_CONCEPTS and {"skis", "dog"} <= covered
    # An object scoring as low still contradicts, beside the same confident skis.
    assert judge("a man with a dog is skiing")[0] == CONTRADICTED
    assert gate.WORN_CONCEPTS <= set(CONCEPTS)


def test_low_score_or_unsupported_object_is_unsure():
    assert status("a dog runs", {"dog": 0.9}, score=-1.5)[0] == UNSURE
    # dog weakly seen, nothing else confident: not contradicted, but not ok either
    assert status("a dog runs on the street", {"dog": 0.05, "street": 0.5})[0] == UNSURE
    # dog absent but no confident alternative: unsure rather than contradicted
    assert status("a dog runs", {"cat": 0.4})[0] == UNSURE


def test_a_person_needs_the_person_support_other_objects_the_plain_support():
    t = GateThresholds(min_caption_score=-1.2, support=0.1, person_support=0.8)
    judge = lambda caption, scores: caption_status(  # noqa: E731
        caption, -0.8, list(scores), list(scores.values()), t, COVERED)[0]
    # The person detector's context score (an empty bathroom 0.44) is not a person...
    assert judge("a man is sitting in the bathroom", {"person": 0.44, "toilet": 0.3}) == UNSURE
    assert judge("two girls on a bench", {"person": 0.79, "bench": 0.9}) == UNSURE
    # ...its confident score is, for every person word.
    assert judge("two girls on a bench", {"person": 0.8, "bench": 0.9}) == OK
    # The plain support still rules every other object.
    assert judge("a dog on a bench", {"dog": 0.3, "bench": 0.9}) == OK
    assert judge("a dog on a bench", {"dog": 0.05, "bench": 0.9}) == UNSURE
    # It never lowers the bar below the plain support.
    low = GateThresholds(support=0.5, person_support=0.2)
    assert caption_status("a man", -0.5, ["person"], [0.3], low, COVERED)[0] == UNSURE
    # A model card may set it like any other field.
    assert gate.thresholds_from_card(
        {"caption_gate": {"thresholds": {"person_support": 0.6}}}).person_support == 0.6


def test_objects_the_cnn_cannot_judge_are_taken_at_the_captions_word():
    caption = "a man stands in the field"
    person_only = frozenset({"person"})
    assert caption_status(caption, -0.5, ["person"], [0.9], T, person_only) == \
        (OK, ["man", "field"])
    # once the CNN can judge "field", its low score counts
    assert caption_status(caption, -0.5, ["person"], [0.9], T, person_only | {"field"})[0] \
        == UNSURE


def test_scores_as_bytes_and_numpy_like_the_savedmodel_returns():
    words = np.array([b"dog", b"grass"])
    scores = np.array([0.9, 0.5], np.float32)
    assert caption_status("a dog on the grass", np.float32(-0.7), words, scores, T, COVERED)[0] \
        == OK
    with pytest.raises(ValueError, match="concepts but"):
        caption_status("a dog", -0.7, ["dog"], [0.9, 0.1], T, COVERED)


def test_pixel_statuses_come_before_any_caption():
    grey = np.full((224, 224, 3), 120, np.uint8)
    photo = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    assert pixel_status(8, 8, grey) == TOO_SMALL
    assert pixel_status(640, 480, grey) == BLANK
    assert pixel_status(640, 480, photo) is None
    assert pixel_status(20, 480) == TOO_SMALL
    assert dict(status_counts([OK, OK, BLANK])) == {OK: 2, UNSURE: 0, CONTRADICTED: 0,
                                                     TOO_SMALL: 0, BLANK: 1}
    assert set(STATUSES) == {OK, UNSURE, CONTRADICTED, TOO_SMALL, BLANK}


def test_default_coverage_is_imagenet_plus_the_committed_detectors():
    covered = covered_concepts()
    assert {"dog", "bear", "toilet", "broccoli"} <= covered
    if gate.DETECTORS_NPZ.exists():
        assert "person" in covered


def test_the_gate_imports_no_tensorflow_or_beam():
    tree = ast.parse(pathlib.Path(gate.__file__).read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not {n for n in names if n.split(".")[0] in ("tensorflow", "keras", "apache_beam")}


def test_thresholds_come_from_the_model_card_field_by_field():
    default = gate.DEFAULT_THRESHOLDS
    assert gate.thresholds_from_card({}) == default == gate.thresholds_from_card(None)
    assert gate.thresholds_from_card({"caption_gate": {}}) == default
    mine = gate.thresholds_from_card({"caption_gate": {"thresholds": {
        "min_caption_score": -1.6, "support": "0.02"}}})
    assert (mine.min_caption_score, mine.support) == (-1.6, 0.02)
    assert (mine.contradict_below, mine.confident) == (default.contradict_below,
                                                       default.confident)
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['min_score'\]"):
        gate.thresholds_from_card({"caption_gate": {"thresholds": {"min_score": -1}}})
    with pytest.raises(ValueError, match="must be numbers"):
        gate.thresholds_from_card({"caption_gate": {"thresholds": {"support": "high"}}})
