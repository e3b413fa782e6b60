"""Language-model pre-training on caption-only text: leakage exclusion, what it trains,
and `altbeam train --lm-text` end to end."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from altbeam.model.data.vocab import SPECIALS, Vocabulary
from altbeam.model.serving.export import export
from altbeam.model.training.lm_pretrain import (
    image_keys,
    lm_captions,
    pretrain_language_model,
    read_exclusions,
)
from altbeam.model.training.train import main as train_main
from tests.support.fake_runs import tiny_decoder, write_feature_shard
from tests.support.tiny import TINY_WORDS


def test_a_flickr_photo_is_known_by_name_and_photo_id():
    assert image_keys("1000268201_693b08cb0e.jpg#3") == {"1000268201_693b08cb0e.jpg",
                                                         "1000268201"}
    assert image_keys("/data/flickr30k/1000268201.jpg") == {"1000268201.jpg", "1000268201"}
    assert image_keys("000000005802.jpg") == {"000000005802.jpg", "000000005802"}
    assert image_keys("dog_2.png") == {"dog_2.png"}  # no leading photo id


def _caption_files(tmp_path):
    """A Flickr30k-style caption map and an exclusion list in the Flickr8k formats."""
    text = tmp_path / "flickr30k_val.json"
    text.write_text(json.dumps({
        "1000268201.jpg": ["a child climbs the stairs", "a girl goes into a house"],
        "2000000001.jpg": ["a dog runs on the grass", "a brown dog running"],
        "kitchen.jpg": ["two men cook in a kitchen"]}))
    tokens = tmp_path / "Flickr8k.token.txt"
    tokens.write_text("1000268201_693b08cb0e.jpg#0\tA child in a pink dress .\n"
                      "1000268201_693b08cb0e.jpg#1\tA girl going into a building .\n")
    split = tmp_path / "devImages.txt"
    split.write_text("kitchen.jpg\n\n")
    return text, tokens, split


def test_caption_text_of_excluded_photos_is_dropped(tmp_path):
    text, tokens, split = _caption_files(tmp_path)
    everything, dropped = lm_captions([str(text)], set())
    assert dropped == 0 and len(everything) == 5
    kept, dropped = lm_captions([str(text)], read_exclusions([str(tokens), str(split)]))
    # The Flickr8k photo (same id, other file name) and the listed kitchen photo are out.
    assert dropped == 2
    assert kept == ["a dog runs on the grass", "a brown dog running"]


def test_pretraining_learns_the_text_and_leaves_the_image_paths_alone():
    dec = tiny_decoder(1, dropout=0.0, learning_rate=1e-2, batch_size=4)
    vocab = Vocabulary(list(SPECIALS) + TINY_WORDS)
    words = TINY_WORDS[:6]
    captions = [" ".join(words[k:] + words[:k]) for k in range(6)] * 4
    image_paths = {n: getattr(dec, n).numpy().copy() for n in ("att_feat", "init_h", "gate")}
    text_paths = {n: getattr(dec, n).numpy().copy() for n in ("embedding", "lstm_kernel")}
    history = pretrain_language_model(dec, captions, vocab, dec.config, epochs=6)
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5, 6]
    assert history[-1]["loss"] < 0.6 * history[0]["loss"]
    for name, before in image_paths.items():  # an all-zero grid gives them no gradient
        np.testing.assert_array_equal(getattr(dec, name).numpy(), before, err_msg=name)
    for name, before in text_paths.items():
        assert not np.allclose(getattr(dec, name).numpy(), before), name


def test_train_with_lm_text_pretrains_first_and_records_it(tmp_path, capsys):
    feats = str(tmp_path / "features")
    caps = [["a dog runs on the grass", "a dog on the grass"],
            ["a man rides a bike", "a man on a bike"]] * 6
    write_feature_shard(feats, "train", caps)
    text, tokens, split = _caption_files(tmp_path)
    run = str(tmp_path / "run")
    assert train_main(["--features", feats, "--out", run, "--epochs", "1", "--val-images", "2",
                       "--lstm-units", "16", "--attention-units", "8", "--embedding-dim", "8",
                       "--batch-size", "4", "--min-word-count", "1",
                       "--lm-text", str(text), "--lm-exclude", str(tokens),
                       "--lm-epochs", "2"]) == 0
    record = json.load(open(f"{run}/lm_pretrain.json"))
    assert record["captions"] == 3 and record["images_dropped"] == 1
    assert [h["epoch"] for h in record["history"]] == [1, 2]
    assert np.isfinite(record["history"][-1]["loss"])
    out = capsys.readouterr().out
    assert "language-model pre-training: 3 captions" in out
    assert out.index("language model epoch 2") < out.index("\nepoch 1: loss")
    assert len(json.load(open(f"{run}/history.json"))) == 1
    card = json.load(open(f"{export(run, str(tmp_path / 'model'))}/model_card.json"))
    assert card["training"]["lm_pretrain"]["run"]["captions"] == 3


def test_lm_text_with_nothing_left_is_a_clear_error(tmp_path):
    feats = str(tmp_path / "features")
    write_feature_shard(feats, "train", [["a dog"], ["a cat"]] * 5)
    text = tmp_path / "text.json"
    text.write_text(json.dumps({"1.jpg": ["a dog"]}))
    listing = tmp_path / "all.txt"
    listing.write_text("1.jpg\n")
    with pytest.raises(SystemExit, match="no caption text left in .*text.json"):
        train_main(["--features", feats, "--out", str(tmp_path / "run"), "--epochs", "1",
                    "--val-images", "2", "--min-word-count", "1", "--lm-text", str(text),
                    "--lm-exclude", str(listing)])
    assert tf.io.gfile.exists(str(tmp_path / "run" / "vocab.json"))
