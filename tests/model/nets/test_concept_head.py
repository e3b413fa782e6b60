"""The concept head: ImageNet classes summed per concept, detectors merged by max, top K."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from altbeam.model.data.concepts import CONCEPTS, IMAGENET_TO_CONCEPT, imagenet_concept_scores
from altbeam.model.nets.concept_head import (
    ConceptHead,
    Detectors,
    imagenet_concept_head,
    load_detectors,
    save_detectors,
)
from altbeam.model.nets.encoder import build_encoder, imagenet_head_weights, imagenet_labels
from altbeam.pipelines.caption.decode import decode_image

CLASSES = len(IMAGENET_TO_CONCEPT)
DOG_BREEDS = [i for i, c in enumerate(IMAGENET_TO_CONCEPT) if c == "dog"]
CAT_KINDS = [i for i, c in enumerate(IMAGENET_TO_CONCEPT) if c == "cat"]


def random_head(channels: int = 8, seed: int = 0, **kwargs) -> ConceptHead:
    rng = np.random.default_rng(seed)
    return ConceptHead(rng.normal(0, 1, (channels, CLASSES)), rng.normal(0, 1, CLASSES),
                       **kwargs)


def bias_head(logits: np.ndarray, channels: int = 4, **kwargs) -> ConceptHead:
    """A head whose ImageNet logits are ``logits`` whatever the image (zero kernel)."""
    return ConceptHead(np.zeros((channels, CLASSES)), logits, **kwargs)


def uniform_grid(n: int = 1, channels: int = 4) -> tf.Tensor:
    return tf.ones([n, 3, 3, channels])


def scores_by_concept(head: ConceptHead, grid) -> dict[str, float]:
    return dict(zip(CONCEPTS, head.scores(grid).numpy()[0].tolist()))


def test_scores_are_the_shared_sum_rule_on_the_pooled_grid():
    head = random_head(storage="float32")
    grid = tf.random.stateless_normal([3, 4, 4, 8], seed=[1, 2])
    pooled = tf.reduce_mean(grid, axis=[1, 2])
    probs = tf.nn.softmax(pooled @ head.imagenet_kernel + head.imagenet_bias).numpy()
    np.testing.assert_allclose(head.scores(grid).numpy(), imagenet_concept_scores(probs),
                               atol=1e-6)


def test_all_dog_breeds_add_up_to_dog():
    logits = np.full(CLASSES, -30.0, np.float32)
    breeds = DOG_BREEDS[:4]
    logits[breeds] = 5.0                       # four breeds, a quarter each
    logits[CAT_KINDS[0]] = 5.0 + np.log(2.0)   # one cat class, twice any single breed
    out = bias_head(logits)(uniform_grid())
    # Each breed alone (0.167) is below the cat class (0.333); together they are "dog".
    assert [c.decode() for c in out["concepts"].numpy()[0][:2]] == ["dog", "cat"]
    np.testing.assert_allclose(out["concept_scores"].numpy()[0][:2], [4 / 6, 2 / 6], atol=1e-5)


def test_top_k_is_sorted_and_shaped():
    head = random_head(top_k=7)
    out = head(tf.random.stateless_normal([5, 2, 2, 8], seed=[3, 4]))
    assert out["concepts"].dtype == tf.string and out["concepts"].shape == (5, 7)
    assert out["concept_scores"].dtype == tf.float32 and out["concept_scores"].shape == (5, 7)
    scores = out["concept_scores"].numpy()
    assert (np.diff(scores, axis=1) <= 0).all()
    words = {w.decode() for w in out["concepts"].numpy().ravel()}
    assert words <= set(CONCEPTS)
    assert random_head(top_k=10_000).top_k == len(CONCEPTS)
    with pytest.raises(ValueError, match="top_k"):
        random_head(top_k=0)


def test_detectors_merge_with_imagenet_by_max():
    logits = np.full(CLASSES, -30.0, np.float32)
    logits[DOG_BREEDS[0]] = 0.0                 # ImageNet: dog ~1.0
    # Detectors read the pooled grid (all ones): logit = sum(kernel column) + bias.
    kernel = np.zeros((4, 3), np.float32)
    detectors = Detectors(kernel, np.array([-2.0, 2.0, 1.0], np.float32),
                          ("dog", "person", "grass"))
    scores = scores_by_concept(bias_head(logits, detectors=detectors), uniform_grid())
    sigmoid = 1 / (1 + np.exp(-np.array([-2.0, 2.0, 1.0])))
    assert scores["dog"] == pytest.approx(1.0, abs=1e-5)         # ImageNet's larger score
    assert scores["person"] == pytest.approx(sigmoid[1], abs=1e-5)  # only a detector
    assert scores["grass"] == pytest.approx(sigmoid[2], abs=1e-5)
    assert scores["cat"] == pytest.approx(0.0, abs=1e-6)          # neither
    # The detector wins where it is surer than ImageNet.
    low_dog = np.full(CLASSES, 0.0, np.float32)
    detectors = Detectors(kernel, np.array([3.0, 0.0, 0.0], np.float32),
                          ("dog", "person", "grass"))
    scores = scores_by_concept(bias_head(low_dog, detectors=detectors), uniform_grid())
    assert scores["dog"] == pytest.approx(1 / (1 + np.exp(-3.0)), abs=1e-5)


def test_detector_file_round_trip_and_checks(tmp_path):
    rng = np.random.default_rng(0)
    kernel, bias = rng.normal(size=(8, 2)), rng.normal(size=2)
    path = save_detectors(str(tmp_path / "d.npz"), kernel, bias, ["person", "grass"], "lite0")
    found = load_detectors(path)
    assert found.concepts == ("person", "grass") and found.encoder == "lite0"
    assert found.kernel.dtype == np.float32 and found.kernel.shape == (8, 2)
    np.testing.assert_allclose(found.bias, bias.astype(np.float32))

    def bad(name, **arrays):
        p = str(tmp_path / name)
        np.savez(p, **arrays)
        return p

    with pytest.raises(ValueError, match="not in the vocabulary: \\['zebra crossing'\\]"):
        load_detectors(bad("u.npz", kernel=kernel, bias=bias,
                           concepts=np.array(["person", "zebra crossing"])))
    with pytest.raises(ValueError, match="more than one detector"):
        load_detectors(bad("d2.npz", kernel=kernel, bias=bias, concepts=np.array(["dog"] * 2)))
    with pytest.raises(ValueError, match="lacks \\['bias'\\]"):
        load_detectors(bad("m.npz", kernel=kernel, concepts=np.array(["dog", "cat"])))
    with pytest.raises(ValueError, match="need kernel"):
        load_detectors(bad("s.npz", kernel=kernel, bias=bias[:1], concepts=np.array(["dog"])))
    with pytest.raises(ValueError, match="channels"):
        random_head(channels=8, detectors=Detectors(np.zeros((5, 1), np.float32),
                                                    np.zeros(1, np.float32), ("dog",)))


def test_float16_and_int8_storage_stay_close_to_float32():
    grid = tf.random.stateless_normal([4, 3, 3, 8], seed=[5, 6])
    exact = random_head(storage="float32").scores(grid).numpy()
    for storage, tolerance in (("float16", 1e-3), ("int8", 2e-2)):
        head = random_head(storage=storage)
        assert not isinstance(head.imagenet_kernel, tf.Variable) or (
            head.imagenet_kernel.dtype == tf.float16)
        np.testing.assert_allclose(head.scores(grid).numpy(), exact, atol=tolerance)
    with pytest.raises(ValueError, match="storage"):
        random_head(storage="bfloat16")


# -- the real Lite0 weights on the bundled photos ---------------------------------------
PHOTOS = {  # photo -> the concept its top score must name
    "000000017029.jpg": "dog",      # a dog catching a frisbee
    "000000000285.jpg": "bear",     # a brown bear in grass
    "000000555705.jpg": "cat",      # two cats on shoes
    "000000111076.jpg": "toilet",   # a bathroom
}


@pytest.fixture(scope="module")
def lite0_grids(sample_photos):
    pixels = np.stack([decode_image((sample_photos / n).read_bytes(), 224, n).pixels
                       for n in PHOTOS]).astype(np.float32)
    return build_encoder("lite0")(pixels, training=False)


def test_lite0_head_names_what_the_photos_show(lite0_grids):
    out = imagenet_concept_head("lite0")(lite0_grids)
    top = [c.decode() for c in out["concepts"].numpy()[:, 0]]
    assert top == list(PHOTOS.values())
    assert (out["concept_scores"].numpy()[:, 0] > 0.25).all()


def test_lite0_head_weights_are_the_classifiers(lite0_grids):
    kernel, bias = imagenet_head_weights("lite0")
    assert kernel.shape == (1280, 1000) and bias.shape == (1000,)
    probs = tf.nn.softmax(tf.reduce_mean(lite0_grids, axis=[1, 2]) @ kernel + bias).numpy()
    labels = imagenet_labels()
    assert labels[int(probs[1].argmax())] in {"brown bear", "American black bear"}
    # float16 storage (the default) moves no concept score by more than 1e-3.
    served = imagenet_concept_head("lite0").scores(lite0_grids).numpy()
    np.testing.assert_allclose(served, imagenet_concept_scores(probs), atol=1e-3)
    with pytest.raises(ValueError, match="no ImageNet layer"):
        imagenet_head_weights("tiny")
