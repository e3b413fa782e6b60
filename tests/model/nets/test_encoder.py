"""EfficientNet-Lite encoder: real converted ImageNet weights on real photos."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from altbeam.model.nets.encoder import (
    ENCODERS,
    PLUGINS_ENV,
    EncoderSpec,
    build_classifier,
    build_encoder,
    encoder_spec,
    imagenet_labels,
    register_encoder,
    weights_path,
)
from altbeam.model.nets.pth_reader import PthFormatError

# Photo -> ImageNet labels, any of which in the top 5 counts as a correct answer.
EXPECTED_TOP5 = {
    "000000000285.jpg": {"brown bear", "American black bear"},
    "000000000785.jpg": {"ski"},
    "000000000885.jpg": {"racket", "tennis ball"},
    "000000013348.jpg": {"airliner", "airplane wing"},
    "000000122745.jpg": {"traffic or street sign"},
    "000000017029.jpg": {
        "Giant Schnauzer", "Flat-Coated Retriever", "Curly-coated Retriever",
        "Irish Water Spaniel", "Bouvier des Flandres dog", "Labrador Retriever", "frisbee",
    },
    "000000555705.jpg": {"tabby cat", "a cat having a striped coat", "Egyptian Mau", "tiger cat"},
}


def load_photo(path, size: int) -> np.ndarray:
    """Centre square crop resized to ``size``: float32 pixels 0..255."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        im = im.crop((left, top, left + side, top + side)).resize((size, size), Image.BILINEAR)
        return np.asarray(im, dtype=np.float32)


def assert_plausible_top5(name: str, sample_photos) -> None:
    size = ENCODERS[name].image_size
    images = np.stack([load_photo(sample_photos / f, size) for f in EXPECTED_TOP5])
    logits = build_classifier(name)(images, training=False).numpy()
    labels = imagenet_labels()
    misses = {}
    for photo, row in zip(EXPECTED_TOP5, logits):
        top5 = {labels[i] for i in np.argsort(-row)[:5]}
        if not top5 & EXPECTED_TOP5[photo]:
            misses[photo] = sorted(top5)
    assert not misses, f"{name}: no plausible label in top 5: {misses}"


def test_lite0_top5_is_plausible_on_sample_photos(sample_photos):
    assert_plausible_top5("lite0", sample_photos)


@pytest.mark.slow
def test_lite2_top5_is_plausible_on_sample_photos(sample_photos):
    assert_plausible_top5("lite2", sample_photos)


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_encoder_output_grid_matches_spec(name):
    spec = ENCODERS[name]
    encoder = build_encoder(name, weights=None)
    assert encoder.input_shape == (None, spec.image_size, spec.image_size, 3)
    assert encoder.output_shape == (None, spec.grid, spec.grid, spec.channels)


def test_lite0_parameter_count_matches_reference():
    # 4,652,008 learnable values in the reference state dict (BN running stats aside).
    model = build_classifier("lite0", weights=None)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == 4_652_008


def test_encoder_features_feed_the_classifier_head(sample_photos):
    """The encoder's grid, pooled through the classifier's dense layer, gives its logits."""
    image = load_photo(sample_photos / "000000000285.jpg", 224)[None]
    encoder, classifier = build_encoder("lite0"), build_classifier("lite0")
    grid = encoder(image, training=False).numpy()
    assert grid.shape == (1, 7, 7, 1280)
    assert grid.min() >= 0.0 and grid.max() <= 6.0  # after ReLU6
    kernel, bias = classifier.get_layer("fc").get_weights()
    logits = grid.mean(axis=(1, 2)) @ kernel + bias
    np.testing.assert_allclose(logits, classifier(image, training=False).numpy(), atol=1e-3)


def test_wrong_weights_file_is_refused_naming_the_file():
    lite2_file = weights_path("lite2")
    with pytest.raises(PthFormatError, match=r"efficientnet-lite2.*\.pth.*shapes"):
        build_encoder("lite0", weights=lite2_file)


def test_photo_as_weights_file_is_refused(sample_photos):
    photo = str(sample_photos / "000000000285.jpg")
    with pytest.raises(PthFormatError, match="000000000285.jpg"):
        build_encoder("lite0", weights=photo)


def test_unknown_encoder_name_is_refused():
    with pytest.raises(ValueError, match="unknown encoder 'lite9'"):
        build_encoder("lite9")


def test_imagenet_labels_are_offline_and_ordered():
    labels = imagenet_labels()
    assert len(labels) == 1000
    assert labels[0] == "tench" and labels[294] == "brown bear"


def test_saved_in_tf_module_reloads_with_identical_outputs(tmp_path, sample_photos):
    encoder = build_encoder("lite0")

    class Wrapper(tf.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec([None, 224, 224, 3], tf.float32)])
        def features(self, pixels):
            return self.model(pixels, training=False)

    images = np.stack([load_photo(sample_photos / f, 224) for f in
                       ("000000000285.jpg", "000000013348.jpg")])
    module = Wrapper(encoder)
    before = module.features(tf.constant(images)).numpy()
    tf.saved_model.save(module, str(tmp_path / "saved"))
    reloaded = tf.saved_model.load(str(tmp_path / "saved"))
    after = reloaded.features(tf.constant(images)).numpy()
    np.testing.assert_array_equal(before, after)
    np.testing.assert_allclose(before, encoder(images, training=False).numpy(), atol=1e-4)


def test_registered_encoders_are_found_and_built_by_name():
    from tests.support.tiny import TINY_ENCODER, TinyEncoder

    spec = encoder_spec(TINY_ENCODER)
    assert (spec.image_size, spec.grid, spec.channels) == (32, 4, 16)
    assert encoder_spec("lite0") == ENCODERS["lite0"]
    grid = build_encoder(TINY_ENCODER, weights=None, seed=3)(tf.zeros([1, 32, 32, 3]))
    assert isinstance(build_encoder(TINY_ENCODER), TinyEncoder)
    assert grid.shape == (1, spec.grid, spec.grid, spec.channels)
    with pytest.raises(ValueError, match="unknown encoder 'nope'.*'lite0'.*'tiny'"):
        encoder_spec("nope")
    with pytest.raises(ValueError, match="needs build"):
        register_encoder(EncoderSpec("bare", 8, 1, 1))


def test_a_child_process_finds_a_plugin_encoder_through_the_environment():
    """A process that never imported tests.support.tiny (a CLI run by a test) finds the
    encoder when ALTBEAM_PLUGINS names the registering module, and only then."""
    from tests.support.paths import REPO
    from tests.support.tiny import plugin_env

    code = ("from altbeam.model.nets.encoder import encoder_spec; "
            "s = encoder_spec('tiny'); print(s.name, s.image_size, s.grid, s.channels)")
    env = plugin_env({k: v for k, v in os.environ.items() if k != PLUGINS_ENV})
    found = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=120)
    assert found.returncode == 0, found.stderr
    assert found.stdout.split() == ["tiny", "32", "4", "16"]
    env.pop(PLUGINS_ENV)
    missing = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode != 0 and "unknown encoder 'tiny'" in missing.stderr
