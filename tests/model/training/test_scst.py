"""Self-critical sequence training: the reward is coco-caption's CIDEr-D, the baseline
is the other samples' mean, and fine-tuning raises the reward it optimises."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from altbeam.model.data.vocab import END_ID, PAD_ID, SPECIALS, Vocabulary
from altbeam.model.evaluation.metrics import score_captions
from altbeam.model.serving.export import export
from altbeam.model.training.common import pad
from altbeam.model.training.scst import CiderD, SelfCritic, advantages, finetune, trim
from altbeam.model.training.train import main as train_main
from tests.support.fake_runs import fake_run, tiny_decoder, write_feature_shard
from tests.support.tiny import TINY_WORDS

REFS = {
    "1": ["a dog runs on the grass", "a brown dog is running", "the dog plays on grass"],
    "2": ["two men ride bikes on a street", "cyclists on the road", "two men on bicycles"],
    "3": ["a child swims in a pool", "a kid in the water", "a young boy swimming"],
}
HYPS = {"1": "a dog runs on grass", "2": "two men on a street", "3": "a dog in the water"}


def test_cider_d_matches_the_coco_caption_scorer():
    words = sorted({w for caps in REFS.values() for c in caps for w in c.split()})
    index = {w: k for k, w in enumerate(words)}
    ids = lambda c: [index[w] for w in c.split()]  # noqa: E731
    cider = CiderD([[ids(c) for c in REFS[k]] for k in REFS])
    ours = np.mean([cider.score(n, ids(HYPS[k])) for n, k in enumerate(REFS)])
    theirs = score_captions(REFS, HYPS, scorers=("cider",), tokenizer="simple")["CIDEr"]
    assert ours == pytest.approx(theirs, rel=1e-6)
    assert cider.score(0, ids(REFS["1"][0])) > cider.score(0, ids(HYPS["1"])) > \
        cider.score(0, ids(HYPS["3"]))


def test_baseline_is_the_mean_of_the_other_samples():
    rewards = np.array([[1.0, 2.0, 3.0], [0.5, 0.5, 0.5]], np.float32)
    adv = advantages(rewards)
    np.testing.assert_allclose(adv[0], [1 - 2.5, 2 - 2.0, 3 - 1.5])
    np.testing.assert_allclose(adv[1], 0.0)


def test_trim_keeps_the_end_token_and_drops_padding():
    assert trim([5, 6, END_ID, PAD_ID, PAD_ID]) == [5, 6, END_ID]
    assert trim([5, 6, 7]) == [5, 6, 7]  # cut at max length: no <end>, reward sees that


def test_samples_follow_the_decoders_distribution_and_respect_bans():
    dec = tiny_decoder(1)
    critic = SelfCritic(dec, 1e-3, max_length=8, ban_unk=True)
    feats = tf.constant(np.random.default_rng(0).normal(size=(64, 16, 16)), tf.float16)
    a = critic.sample(feats, tf.constant(7)).numpy()
    b = critic.sample(feats, tf.constant(7)).numpy()
    c = critic.sample(feats, tf.constant(8)).numpy()
    np.testing.assert_array_equal(a, b)  # seeded: reproducible
    assert (a != c).any()                # and random across seeds
    assert a[:, 0].min() > END_ID        # a caption has at least one word
    assert not np.isin(a, [1, 3]).any()  # never <start> or <unk>
    for row in a:
        ended = np.flatnonzero(row == END_ID)
        if ended.size:
            assert (row[ended[0] + 1:] == PAD_ID).all()


def _toy_task(tmp_path):
    """Two kinds of image whose references always say the same thing."""
    caps = [["a dog on the grass"] * 2, ["two cat sitting in the water"] * 2] * 15
    feats = str(tmp_path / "features")
    write_feature_shard(feats, "train", caps)
    return feats


def test_finetuning_raises_the_sampled_reward_and_keeps_the_best(tmp_path, capsys):
    feats = _toy_task(tmp_path)
    source = fake_run(tmp_path / "xe", 3)
    result = finetune(source, feats, str(tmp_path / "scst"), epochs=3, learning_rate=2e-2,
                      samples=4, batch_images=6, val_images=4)
    history = result["history"]
    assert [h["epoch"] for h in history] == [0, 1, 2, 3] and history[0]["stage"] == "source"
    rewards = [h["sample_cider"] for h in history[1:]]
    assert rewards[-1] > rewards[0] + 0.2, rewards
    assert result["best_val_cider"] == max(h["val_cider"] for h in history)
    assert json.load(open(tmp_path / "scst" / "history.json")) == history
    assert Vocabulary.load(tmp_path / "scst" / "vocab.json").words == \
        Vocabulary.load(tmp_path / "xe" / "vocab.json").words
    assert "scst epoch 3" in capsys.readouterr().out
    # The fine-tuned run exports like any other.
    out = export(str(tmp_path / "scst"), str(tmp_path / "model"))
    result = tf.saved_model.load(out).signatures["serving_default"](
        images=tf.zeros([1, 32, 32, 3], tf.uint8))
    assert result["captions"].shape[0] == 1


def test_cli_refuses_to_overwrite_the_source_run(tmp_path):
    feats = _toy_task(tmp_path)
    source = fake_run(tmp_path / "xe", 3)
    with pytest.raises(ValueError, match="different run folders"):
        train_main(["--scst-from", source, "--features", feats, "--out", source])
    assert os.listdir(os.path.join(source, "best"))  # untouched


@pytest.mark.parametrize("xe_weight", [0.0, 0.5])
def test_cross_entropy_anchor_pulls_toward_the_references(xe_weight):
    dec = tiny_decoder(2)
    critic = SelfCritic(dec, 1e-2, max_length=8, xe_weight=xe_weight)
    feats = tf.constant(np.random.default_rng(1).normal(size=(4, 16, 16)), tf.float16)
    vocab = Vocabulary(list(SPECIALS) + TINY_WORDS)
    refs = tf.constant(pad([vocab.encode("a dog on the grass")] * 4))
    sampled = tf.concat([tf.fill([4, 1], 1), critic.sample(feats, tf.constant(0))], axis=1)
    zero = tf.zeros([4])  # no advantage: only the anchor can move the weights
    before, mask = critic._log_probs(feats, refs)
    for _ in range(10):
        critic.step(feats, sampled, zero, feats, refs)
    after, _ = critic._log_probs(feats, refs)
    gain = float(tf.reduce_sum((after - before) * mask))
    if xe_weight:
        assert gain > 1.0
    else:
        assert gain == 0.0
