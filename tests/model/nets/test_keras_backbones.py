"""Keras-applications backbones offline: weights files the tests make (random weights, each
Keras format), each backbone's own preprocessing, clear errors, and one end to end run
(`altbeam features` -> train -> export -> captions) with VGG16."""
from __future__ import annotations

import json
import os

import keras
import numpy as np
import pytest

from altbeam.model.nets.encoder import KERAS_BACKBONES, build_encoder, encoder_spec
from altbeam.model.nets.keras_backbones import (
    BACKBONES,
    BackbonePreprocess,
    BackboneWeightsError,
)

# Each backbone saved in another of the formats users bring (see docs/encoder.md):
# a .keras model with the top, the Keras 3 save_weights file, a legacy .h5 with the top
# (laid out like the *_tf_kernels.h5 files Keras downloads).
SAVED_AS = {"inception_v3": ("model.keras", True), "vgg16": (".weights.h5", False),
            "resnet50": ("model.h5", True)}


def application(name: str, include_top: bool = False) -> keras.Model:
    """The keras.applications model itself, random weights (the tests never download)."""
    cls = getattr(keras.applications, BACKBONES[name].application)
    return cls(include_top=include_top, weights=None)


def save(model: keras.Model, folder, name: str, saved_as: str) -> str:
    path = str(folder / f"{name}{'-top' if saved_as != '.weights.h5' else ''}{saved_as}")
    if saved_as == ".weights.h5":
        model.save_weights(path)
    else:
        model.save(path)
    return path


def preprocess(name: str, pixels: np.ndarray) -> np.ndarray:
    module = getattr(keras.applications, BACKBONES[name].module)
    return module.preprocess_input(pixels.copy())  # numpy inputs are changed in place


def photo_pixels(size: int, count: int = 2) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (count, size, size, 3)).astype(np.float32)


@pytest.mark.parametrize("name", sorted(SAVED_AS))
def test_a_weights_file_loads_through_the_encoder_path(name, tmp_path):
    saved_as, with_top = SAVED_AS[name]
    reference = application(name, include_top=with_top)
    path = save(reference, tmp_path, name, saved_as)
    encoder = build_encoder(name, weights=path)

    spec = encoder_spec(name)
    assert spec == KERAS_BACKBONES[name]
    assert encoder.input_shape == (None, spec.image_size, spec.image_size, 3)
    assert encoder.output_shape == (None, spec.grid, spec.grid, spec.channels)
    backbone = encoder.get_layer(reference.name)
    # Same constructor: the variables without the top come first, in the same order.
    loaded, saved = backbone.get_weights(), reference.get_weights()
    assert len(saved) - len(loaded) == (2 if with_top else 0)   # the top's Dense, unused
    for got, want in zip(loaded, saved):
        np.testing.assert_array_equal(got, want)
    pixels = photo_pixels(spec.image_size, 1)
    last_conv = backbone.layers[-1].name
    without_top = keras.Model(reference.input, reference.get_layer(last_conv).output)
    np.testing.assert_allclose(encoder(pixels, training=False).numpy(),
                               without_top(preprocess(name, pixels)).numpy(),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_preprocessing_is_the_backbones_own(name):
    pixels = photo_pixels(8)
    layer = BackbonePreprocess(name)
    np.testing.assert_allclose(layer(pixels).numpy(), preprocess(name, pixels), atol=1e-5)
    rgb = np.array([[[[0.0, 127.5, 255.0], [10.0, 20.0, 30.0]]]], np.float32)
    got = layer(rgb).numpy()[0, 0]
    if name == "inception_v3":   # [-1, 1]
        np.testing.assert_allclose(got[0], [-1.0, 0.0, 1.0], atol=1e-6)
    else:   # "caffe": BGR, ImageNet channel means removed
        np.testing.assert_allclose(got[1], [30 - 103.939, 20 - 116.779, 10 - 123.68], atol=1e-4)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_imagenet_weights_are_refused_not_downloaded(name):
    with pytest.raises(BackboneWeightsError, match=rf"{name}: weights='imagenet' would "
                       r"download.*local \.keras/\.h5 file"):
        build_encoder(name, weights="imagenet")


def test_a_missing_or_foreign_weights_file_is_refused_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"vgg16 weights file .*nope\.keras"):
        build_encoder("vgg16", weights=str(tmp_path / "nope.keras"))
    with pytest.raises(BackboneWeightsError, match=r"lite0\.pth: vgg16 weights must be a "
                       r"\.keras or \.h5"):
        build_encoder("vgg16", weights=str(tmp_path / "lite0.pth"))
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"not a zip" * 8)
    with pytest.raises(BackboneWeightsError, match=r"junk\.keras does not hold vgg16 weights"):
        build_encoder("vgg16", weights=str(junk))
    vgg = save(application("vgg16"), tmp_path, "vgg16", ".weights.h5")
    with pytest.raises(BackboneWeightsError, match=r"vgg16\.weights\.h5 does not hold resnet50 "
                       r"weights.*shape.*\(7, 7, 3, 64\).*\(3, 3, 3, 64\)"):
        build_encoder("resnet50", weights=vgg)


def test_the_feature_job_refuses_such_weights_before_it_starts(tmp_path):
    from altbeam.pipelines.features.pipeline import run as features_run

    for weights, reason in (("imagenet", "would download"), ("gone.h5", "does not exist")):
        with pytest.raises(SystemExit, match=f"altbeam features: .*{reason}"):
            features_run([str(tmp_path / "captions.jsonl"), "--out", str(tmp_path / "out"),
                          "--encoder", "resnet50", "--weights", weights])
    assert not (tmp_path / "out").exists()   # nothing written, no image list left


@pytest.mark.slow
def test_vgg16_features_train_export_and_caption_offline(tmp_path, sample_photos):
    from altbeam.model.data.feature_records import load_split
    from altbeam.model.data.vocab import Vocabulary
    from altbeam.model.serving.export import export
    from altbeam.model.serving.saved_model import LoadedModel
    from altbeam.model.training.train import ModelConfig, train
    from altbeam.pipelines.features.pipeline import run as features_run

    weights = save(application("vgg16"), tmp_path, "vgg16", ".weights.h5")
    photos = sorted(p for p in sample_photos.iterdir() if p.suffix == ".jpg")[:6]
    captions = ["a dog runs on the grass", "a man rides a bike", "two cats on a sofa"]
    rows = [{"image": p.name, "caption": captions[i % 3], "split": "train" if i < 5 else "dev"}
            for i, p in enumerate(photos)]
    (tmp_path / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for p in photos:   # the dataset reader finds images beside the caption file
        os.symlink(p, tmp_path / p.name)
    feats, run_dir, model = (str(tmp_path / n) for n in ("feats", "run", "model"))

    summary = features_run([str(tmp_path / "captions.jsonl"), "--out", feats, "--encoder",
                            "vgg16", "--weights", weights, "--num-shards", "1"])
    assert (summary["encoder"], summary["image_size"], summary["grid"],
            summary["channels"]) == ("vgg16", 224, 7, 512)
    assert load_split(feats, "train").features.shape == (5, 49, 512)

    config = ModelConfig(embedding_dim=8, lstm_units=16, attention_units=8, dropout=0.0,
                         batch_size=4, epochs=1, min_word_count=1, max_length=6)
    train(config, feats, run_dir, val_images=1)
    with pytest.raises(BackboneWeightsError, match="would download"):
        export(run_dir, model, encoder_weights="imagenet")
    export(run_dir, model, beam_width=2, encoder_weights=weights)

    card = json.load(open(f"{model}/model_card.json"))
    assert (card["backbone"], card["image_size"]) == ("vgg16", 224)
    served = LoadedModel(model).predict(
        np.random.default_rng(1).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8))
    assert served.captions.shape == (2, 2)
    vocab = set(Vocabulary.load(f"{run_dir}/vocab.json").words)
    for caption in served.captions.ravel():
        assert caption and set(caption.decode().split()) <= vocab
