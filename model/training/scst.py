"""Self-critical sequence training: fine-tune a trained decoder on CIDEr-D itself.

Teacher forcing optimises the next word given the reference prefix; captions are then
judged on whole sentences the model wrote itself. SCST (Rennie et al. 2017) closes
that gap with REINFORCE: sample S captions per image from the decoder, score each
against the image's references with CIDEr-D, and push up the log-probability of
the samples that beat the mean of the other S-1 (the baseline of Luo 2020, "A Better
Variant of Self-Critical Sequence Training" — no extra greedy decode).

The reward counts <end> as a word, so a caption that stops mid-phrase ("a dog in a")
loses the final n-grams the references have: the known SCST artefact of dangling
endings is penalised rather than learnt.

``altbeam train --scst-from RUN --out RUN2 --features F``: RUN2 starts from RUN's
best decoder, keeps RUN's vocabulary, configuration and validation images, and
keeps the best validation CIDEr (the starting model counts as epoch 0, so SCST can
only replace it by scoring higher).
"""
from __future__ import annotations

import collections
import math
import os
import shutil

import numpy as np
import tensorflow as tf

from altbeam.model.data.feature_records import load_split
from altbeam.model.data.vocab import END_ID, PAD_ID, START_ID
from altbeam.model.serving.beam_search import NEG_INF, words_banned_at
from altbeam.model.training.common import load_decoder, pad, validate, validation_split
from altbeam.model.training.loop import LoopState, RunFolder, run_epochs


def _ngrams(ids, n_max: int = 4) -> collections.Counter:
    return collections.Counter(tuple(ids[i:i + n]) for n in range(1, n_max + 1)
                               for i in range(len(ids) - n + 1))


class CiderD:
    """CIDEr-D (Vedantam et al. 2015, as in coco-caption) on token-id sequences, with
    document frequencies fixed from a reference corpus (the training captions)."""

    def __init__(self, references: list[list[list[int]]], n: int = 4, sigma: float = 6.0):
        self.n, self.sigma = n, sigma
        df = collections.Counter()
        for refs in references:
            df.update(set().union(*(_ngrams(r, n) for r in refs)))
        self.df = df
        self.log_images = math.log(float(len(references)))
        self.refs = [[self._vec(r) for r in refs] for refs in references]

    def _vec(self, ids):
        vec = [{} for _ in range(self.n)]
        norm = [0.0] * self.n
        length = 0
        for gram, tf_ in _ngrams(ids, self.n).items():
            k = len(gram) - 1
            w = tf_ * (self.log_images - math.log(max(1.0, self.df.get(gram, 0.0))))
            vec[k][gram] = w
            norm[k] += w * w
            if k == 1:
                length += tf_
        return vec, [math.sqrt(x) for x in norm], length

    def score(self, image: int, ids) -> float:
        """CIDEr-D of one candidate (ids, <end> included) against image ``image``."""
        vec, norm, length = self._vec(ids)
        total = 0.0
        for rvec, rnorm, rlength in self.refs[image]:
            penalty = math.exp(-((length - rlength) ** 2) / (2 * self.sigma ** 2))
            for k in range(self.n):
                if norm[k] and rnorm[k]:
                    dot = sum(min(w, rvec[k].get(g, 0.0)) * rvec[k].get(g, 0.0)
                              for g, w in vec[k].items())
                    total += penalty * dot / (norm[k] * rnorm[k])
        return 10.0 * total / (self.n * len(self.refs[image]))


def trim(tokens) -> list[int]:
    """Sampled row -> its words and the <end> (if any); <pad> after it dropped."""
    out = []
    for t in tokens:
        if t == PAD_ID:
            break
        out.append(int(t))
        if t == END_ID:
            break
    return out


def advantages(rewards: np.ndarray) -> np.ndarray:
    """rewards [images, S] -> reward minus the mean of the other S-1 samples."""
    s = rewards.shape[1]
    baseline = (rewards.sum(axis=1, keepdims=True) - rewards) / (s - 1)
    return rewards - baseline


class SelfCritic:
    """Sampling and the policy-gradient step for one decoder, compiled once."""

    def __init__(self, decoder, learning_rate: float, max_length: int, ban_unk: bool = True,
                 xe_weight: float = 0.0):
        import keras
        self.decoder, self.T, self.ban_unk = decoder, int(max_length), ban_unk
        self.xe_weight = float(xe_weight)
        self.optimizer = keras.optimizers.Adam(learning_rate, clipnorm=5.0)
        L, C = decoder.config.grid_cells, decoder.config.feature_channels
        feats = tf.TensorSpec([None, L, C], tf.float16)
        self.sample = tf.function(self._sample, input_signature=[
            feats, tf.TensorSpec([], tf.int32)])
        self.step = tf.function(self._step, input_signature=[
            feats, tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None], tf.float32),
            feats, tf.TensorSpec([None, None], tf.int32)])

    def _sample(self, features, seed):
        """features [N, L, C] -> one sampled caption per row: tokens [N, T] (pad after <end>)."""
        dec, vocab = self.decoder, self.decoder.embedding.shape[0]
        feats, projected = dec.prepare(features)
        projected = dec.unpack(projected)      # split once, not at every step
        h, c = dec.init_state(feats)
        n = tf.shape(feats)[0]
        last, finished = tf.fill([n], START_ID), tf.zeros([n], tf.bool)
        out = tf.TensorArray(tf.int32, size=self.T)
        for t in tf.range(self.T):
            logits, h, c, _ = dec.step(last, h, c, feats, projected)
            ban = words_banned_at(t, vocab, self.ban_unk)
            word = tf.random.stateless_categorical(logits + ban * NEG_INF, 1,
                                                   seed=tf.stack([seed, t]), dtype=tf.int32)[:, 0]
            word = tf.where(finished, PAD_ID, word)
            out = out.write(t, word)
            finished = finished | tf.equal(word, END_ID)
            last = word
        return tf.transpose(out.stack())

    def _step(self, features, tokens, advantage, ref_features, ref_tokens):
        """tokens [N, T+1] (<start> + sample); REINFORCE with per-sample advantages, plus
        ``xe_weight`` x teacher-forced cross-entropy on one reference per image
        (ref_tokens), which anchors the language model while the policy moves."""
        variables = self.decoder.trainable_variables
        with tf.GradientTape() as tape:
            logp, mask = self._log_probs(features, tokens)
            loss = -tf.reduce_sum(advantage[:, None] * logp * mask) / tf.reduce_sum(mask)
            if self.xe_weight:
                ref_logp, ref_mask = self._log_probs(ref_features, ref_tokens)
                loss += self.xe_weight * -tf.reduce_sum(ref_logp * ref_mask) / tf.reduce_sum(
                    ref_mask)
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    def _log_probs(self, features, tokens):
        logits, _ = self.decoder.teacher_forced(features, tokens, training=False)
        targets = tokens[:, 1:]
        mask = tf.cast(tf.not_equal(targets, PAD_ID), tf.float32)
        return -tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits), mask


class SelfCriticalTraining:
    """The SCST objective (model/training/loop.py): per batch of images, sample
    ``samples`` captions each, reward them with CIDEr-D and take the policy step."""

    label, unit, progress_every = "scst epoch", "batch", 25
    shown, seconds_key = ("sample_cider", "sample CIDEr-D"), "train_seconds"

    def __init__(self, critic: SelfCritic, data, ref_tokens: list[list[list[int]]],
                 samples: int, batch_images: int, learning_rate: float, xe_weight: float):
        self.critic, self.data, self.ref_tokens = critic, data, ref_tokens
        self.cider = CiderD([[r[1:] for r in refs] for refs in ref_tokens])
        self.samples, self.batch_images = samples, batch_images
        self.learning_rate, self.xe_weight = learning_rate, xe_weight
        self.rng = None

    def begin_epoch(self, epoch: int, rng):
        self.rng = rng
        order = rng.permutation(len(self.data))
        n_batches = (len(order) + self.batch_images - 1) // self.batch_images
        return n_batches, (np.sort(order[b * self.batch_images:(b + 1) * self.batch_images])
                           for b in range(n_batches))

    def step(self, idx) -> dict[str, float]:
        rng, samples = self.rng, self.samples
        images = tf.constant(self.data.features[idx])
        feats = tf.repeat(images, samples, axis=0)
        sampled = self.critic.sample(feats, tf.constant(int(rng.integers(2 ** 31 - 1)), tf.int32))
        rows = [trim(r) for r in sampled.numpy()]
        rewards = np.array([self.cider.score(int(idx[k // samples]), r)
                            for k, r in enumerate(rows)], np.float32).reshape(-1, samples)
        tokens = pad([[START_ID] + r for r in rows])
        refs_now = pad([self.ref_tokens[i][rng.integers(len(self.ref_tokens[i]))] for i in idx])
        loss = self.critic.step(feats, tf.constant(tokens),
                                tf.constant(advantages(rewards).ravel()),
                                images, tf.constant(refs_now))
        return {"loss": float(loss), "sample_cider": float(rewards.mean())}

    def record(self, epoch: int, means: dict[str, float]) -> dict:
        return {"epoch": epoch, "stage": "scst", "loss": means["loss"],
                "xe_weight": self.xe_weight, "sample_cider": means["sample_cider"],
                "lr": self.learning_rate}

    def summary(self, record: dict) -> str:
        return (f"sample CIDEr-D {record['sample_cider']:.3f}  val CIDEr "
                f"{record['val_cider']:.3f}  BLEU-4 {record['val_bleu4']:.3f}")


def finetune(source_run: str, features_dir: str, run_dir: str, epochs: int = 3,
             learning_rate: float = 5e-5, samples: int = 5, batch_images: int = 32,
             val_images: int = 500, limit: int | None = None, seed: int = 0,
             xe_weight: float = 0.0) -> dict:
    """SCST from ``source_run``'s best decoder into the new run folder ``run_dir``."""
    if os.path.abspath(source_run) == os.path.abspath(run_dir):
        raise ValueError("--scst-from and --out must be different run folders")
    from altbeam.model.nets.encoder_cut import refuse_fine_tuned
    refuse_fine_tuned([source_run], "altbeam train --scst-from")
    decoder, vocab, config = load_decoder(source_run)
    if config.concept_inputs:
        raise SystemExit(f"altbeam train --scst-from: {source_run} reads concept scores; "
                         "self-critical training of such a decoder is not supported yet")
    os.makedirs(run_dir, exist_ok=True)
    for name in ("config.json", "vocab.json"):
        shutil.copy(os.path.join(source_run, name), os.path.join(run_dir, name))
    full = load_split(features_dir, "train", limit)
    # The source run's own split, so validation images stay unseen by both stages.
    train_set, val_set = validation_split(full, val_images, config)
    ref_tokens = [[vocab.encode(c, config.max_length) for c in caps]
                  for caps in train_set.captions]
    critic = SelfCritic(decoder, learning_rate, config.max_length, config.ban_unk, xe_weight)
    objective = SelfCriticalTraining(critic, train_set, ref_tokens, samples, batch_images,
                                     learning_rate, xe_weight)

    def save_best():
        tf.train.Checkpoint(decoder=decoder).write(os.path.join(run_dir, "best", "ckpt"))

    def save_latest(epoch: int):
        tf.train.Checkpoint(decoder=decoder).write(os.path.join(run_dir, "checkpoints", "last"))

    folder = RunFolder(run_dir, ("sample_cider", "val_cider", "val_bleu4"), save_best,
                       save_latest)
    # The starting model is epoch 0: SCST can only replace it by scoring higher.
    scores = validate(decoder, val_set, config, vocab.words)
    state = LoopState([{"epoch": 0, "stage": "source", "source": os.path.abspath(source_run),
                        "val_cider": scores["CIDEr"], "val_bleu4": scores["BLEU-4"]}],
                      best=scores["CIDEr"])
    folder.write_history(state.history)
    save_best()
    print(f"SCST from {source_run}: {len(train_set)} images x {samples} samples, "
          f"start val CIDEr {state.best:.3f}", flush=True)
    run_epochs(objective, range(1, epochs + 1), np.random.default_rng(seed), state,
               validate=lambda: validate(decoder, val_set, config, vocab.words), folder=folder)
    return {"run_dir": run_dir, "history": state.history, "best_val_cider": state.best}
