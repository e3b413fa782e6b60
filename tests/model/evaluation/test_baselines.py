"""altbeam.model.evaluation.baselines: constant-caption and nearest-neighbour baselines on small synthetic features."""
from __future__ import annotations

import math

import numpy as np
import pytest

from altbeam.model.data.datasets import CaptionedImage
from altbeam.model.evaluation.baselines import (
    ConceptCaptionIndex,
    RetrievalWeights,
    concept_retrieval_captions,
    consensus_caption,
    most_common_caption,
    nearest_neighbour_captions,
    sentence_bleu,
)

DOG = ["A black dog runs on the grass .", "A black dog runs on grass", "A dog runs on the grass .",
       "A red car parked outside"]
CAR = ["A red car is parked on the street .", "A red car parked on the street",
       "A red car is parked on a street", "A dog on the grass"]
BEACH = ["Two people walk on the beach", "Two people walking along a beach .", "People on a beach"]


def test_consensus_caption_is_the_most_representative_one():
    assert consensus_caption(DOG) == "a black dog runs on the grass"
    assert consensus_caption(CAR) == "a red car is parked on the street"
    assert consensus_caption(["Only one ."]) == "only one"


def test_sentence_bleu_matches_hand_computation():
    hyp, ref = "a dog on the grass".split(), "a dog runs on green grass".split()
    # p1 = 4/5; smoothed p2 = (1+1)/(4+1), p3 = (0+1)/(3+1), p4 = (0+1)/(2+1); BP exp(1-6/5).
    expected = math.exp(1 - 6 / 5) * (4 / 5 * 2 / 5 * 1 / 4 * 1 / 3) ** 0.25
    assert sentence_bleu(hyp, [ref]) == pytest.approx(expected)
    assert sentence_bleu(ref, [ref]) == pytest.approx(1.0)
    assert sentence_bleu("red car".split(), [ref]) == 0.0
    assert sentence_bleu([], [ref]) == 0.0


def test_nearest_neighbour_picks_the_nearest_images_consensus():
    train = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]], dtype=np.float32)
    queries = np.array([[0.9, 0.1, 0, 0], [0.1, 0.2, 3.0, 0], [0, 5, 0.5, 0.5]], dtype=np.float32)
    assert nearest_neighbour_captions(train, [DOG, CAR, BEACH], queries) == [
        "a black dog runs on the grass", "two people walking along a beach", "a red car is parked on the street",
    ]


def test_similarity_is_cosine_not_euclidean():
    # Euclidean-nearest to the query is row 0; the same direction is row 1.
    train = np.array([[1.0, 0.1], [10.0, 0.0]])
    query = np.array([[1.0, 0.0]])
    assert nearest_neighbour_captions(train, [DOG, CAR], query) == ["a red car is parked on the street"]


def test_k_pools_the_captions_of_several_neighbours():
    train = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    captions = [["a dog runs on the grass"], ["a dog runs on the green grass"], ["a cat sleeps"]]
    assert nearest_neighbour_captions(train, captions, np.array([[1.0, 0.0]]), k=1) == [
        "a dog runs on the grass"
    ]
    pooled = [["a dog on the grass"], ["a brown dog runs on the grass", "a dog runs on the grass"],
              ["a cat sleeps"]]
    # Alone, row 0's only caption wins; pooled with row 1 the consensus moves.
    assert nearest_neighbour_captions(train, pooled, np.array([[1.0, 0.0]]), k=1) == ["a dog on the grass"]
    assert nearest_neighbour_captions(train, pooled, np.array([[1.0, 0.0]]), k=2) == [
        "a dog runs on the grass"
    ]


def test_zero_vectors_and_ties_are_deterministic():
    train = np.array([[1.0, 0.0], [1.0, 0.0]])
    captions = [["first image"], ["second image"]]
    assert nearest_neighbour_captions(train, captions, np.array([[2.0, 0.0], [0.0, 0.0]])) == [
        "first image", "first image",
    ]


def test_many_queries_in_batches_match_one_batch():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(50, 16))
    captions = [[f"caption {i} a", f"caption {i} b"] for i in range(50)]
    queries = train[rng.permutation(50)[:30]] + rng.normal(scale=0.01, size=(30, 16))
    one = nearest_neighbour_captions(train, captions, queries, batch_size=1024)
    assert one == nearest_neighbour_captions(train, captions, queries, batch_size=7)
    nearest = np.argmax(
        (queries / np.linalg.norm(queries, axis=1, keepdims=True))
        @ (train / np.linalg.norm(train, axis=1, keepdims=True)).T, axis=1)
    assert [c.split()[1] for c in one] == [str(i) for i in nearest]


@pytest.mark.parametrize(
    ("train", "captions", "query", "message"),
    [
        (np.ones((2, 3)), [["a"]], np.ones((1, 3)), "train_captions has 1 entries for 2 feature rows"),
        (np.ones((2, 3)), [["a"], ["b"]], np.ones((1, 4)), "feature sizes differ"),
        (np.ones(3), [["a"]], np.ones((1, 3)), "train_features must be a 2-D"),
        (np.full((1, 2), np.nan), [["a"]], np.ones((1, 2)), "NaN"),
        (np.ones((2, 3)), [["a"], []], np.ones((1, 3)), r"without captions at rows \[1\]"),
    ],
)
def test_bad_inputs_are_clear_errors(train, captions, query, message):
    with pytest.raises(ValueError, match=message):
        nearest_neighbour_captions(train, captions, query)


def _images(captions_per_image):
    return [CaptionedImage(str(i), None, caps, "train") for i, caps in enumerate(captions_per_image)]


def test_most_common_caption_prefers_consensus_over_short_repeats():
    train = _images([
        ["a dog", "a dog", "a dog runs through the grass"],
        ["a brown dog runs through the grass", "a dog runs through the green grass"],
        ["a black dog runs through the tall grass", "a dog"],
        ["a man rides a bike down the road"],
    ])
    # "a dog" is the most frequent caption but too short to score BLEU-4.
    assert most_common_caption(train) == "a dog runs through the grass"


def test_most_common_caption_breaks_ties_deterministically():
    assert most_common_caption(_images([["b b b b"], ["a a a a"]])) == "a a a a"
    with pytest.raises(ValueError, match="at least one non-empty"):
        most_common_caption(_images([[" . "]]))


def test_most_common_caption_on_shared_flickr8k(shared_datasets):
    from altbeam.model.data.datasets import load_dataset
    from altbeam.model.evaluation.metrics import score_captions

    train = load_dataset(shared_datasets / "flickr8k", "train", missing_images="ignore")
    caption = most_common_caption(train)
    assert 6 <= len(caption.split()) <= 14
    dev = load_dataset(shared_datasets / "flickr8k", "dev", missing_images="ignore")
    refs = {i.image_id: i.captions for i in dev}

    def bleu4(text):
        return score_captions(refs, dict.fromkeys(refs, text), ("bleu",), "simple")["BLEU-4"]

    # It beats the most frequent exact caption on held-out data.
    assert bleu4(caption) > bleu4("a dog runs through the grass")


# Concepts-only retrieval. The CNN can judge these concepts (as ImageNet classes or
# detectors would); "flag" stands for one it cannot.
JUDGEABLE = {"dog", "cat", "grass", "person", "bear", "bicycle", "street"}
TEXT_CORPUS = [
    ("flickr:1", "A dog runs on the grass ."),
    ("flickr:1", "A brown dog running on green grass"),
    ("flickr:2", "A dog and a cat on the grass"),
    ("coco:3", "A bear walks through the grass ."),
    ("coco:4", "A man rides a bicycle down the street"),
    ("coco:5", "A woman rides a bicycle on the street"),
    ("coco:6", "A man holds a flag on the street"),
]
DOG_ON_GRASS = {"a dog runs on the grass", "a brown dog running on green grass"}


def _index(corpus=TEXT_CORPUS, exclude=()):
    return ConceptCaptionIndex(corpus, exclude=exclude, covered=JUDGEABLE)


def test_retrieval_picks_the_caption_naming_the_confident_concepts():
    index = _index()
    assert index.retrieve(["bear", "grass"], [0.8, 0.4]) == "a bear walks through the grass"
    # The model's outputs come as bytes, best first; person kinds count as person.
    assert index.retrieve([b"person", b"bicycle", b"street"], [0.9, 0.7, 0.5]) in {
        "a man rides a bicycle down the street", "a woman rides a bicycle on the street"}


def test_retrieval_penalises_a_named_concept_the_cnn_scores_low():
    index = _index()
    # The CNN sees a dog on grass and no cat: the caption naming a cat loses ...
    assert index.retrieve(["dog", "grass", "cat"], [0.9, 0.6, 0.01]) in DOG_ON_GRASS
    # ... though it names every concept the CNN is confident of, and wins when a cat is seen.
    assert index.retrieve(["dog", "grass", "cat"], [0.9, 0.6, 0.7]) == "a dog and a cat on the grass"
    scores = index.group_scores(["dog", "grass"], [0.9, 0.6])
    by_key = dict(zip(index.keys, scores))
    assert by_key[("cat", "dog", "grass")] == pytest.approx(by_key[("dog", "grass")] - 0.2)


def test_retrieval_penalises_concepts_the_cnn_cannot_judge():
    index = _index()
    by_key = dict(zip(index.keys, index.group_scores(["person", "street"], [0.9, 0.8])))
    # The flag adds nothing the CNN can vouch for: the unjudged penalty, less than a
    # judgeable concept scored 0 (the bicycle) costs.
    assert by_key[("flag", "person", "street")] == pytest.approx(0.7 + 0.6 - 0.1)
    assert by_key[("bicycle", "person", "street")] == pytest.approx(0.7 + 0.6 - 0.2)
    assert index.retrieve(["person", "street"], [0.9, 0.8]) == "a man holds a flag on the street"
    # A larger penalty for what the CNN cannot judge turns it round.
    strict = RetrievalWeights(present_above=0.2, unjudged_penalty=0.5)
    assert "bicycle" in index.retrieve(["person", "street"], [0.9, 0.8], strict)


def test_ties_go_to_the_more_typical_group_and_its_consensus_caption():
    index = _index()
    # Two (dog, grass) captions against one (bear, grass): with no concept scored, both
    # score -0.4; the larger group wins, and of its captions the consensus.
    assert index.sizes[index.keys.index(("dog", "grass"))] == 2
    picked = index.retrieve([], [])
    assert picked in DOG_ON_GRASS
    assert index.retrieve(["grass"], [0.5]) == picked


def test_excluded_photos_are_never_returned():
    index = _index(exclude={"coco:3"})
    # The bear photo's caption would be the perfect match; it is not in the index.
    assert ("bear", "grass") not in index.keys
    assert "bear" not in index.retrieve(["bear", "grass"], [0.99, 0.9])
    assert len(index) == len(TEXT_CORPUS) - 1
    captions = concept_retrieval_captions(
        _index(exclude={"flickr:1", "flickr:2"}), np.array([["dog", "grass"]] * 3),
        np.array([[0.9, 0.9]] * 3))
    assert captions and not any("dog" in c for c in captions)
    with pytest.raises(ValueError, match="no captions left"):
        _index(exclude={k for k, _ in TEXT_CORPUS})


def test_concept_retrieval_captions_checks_its_rows():
    with pytest.raises(ValueError, match="2 concept rows but 1 score rows"):
        concept_retrieval_captions(_index(), np.array([["dog"], ["cat"]]), np.array([[0.5]]))
