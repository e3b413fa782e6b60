"""`altbeam train`: teacher-forced training of the caption decoder on cached features.

The encoder is frozen and its features were computed once (`altbeam features`), so an
epoch over Flickr8k is minutes on two cores. Early stopping watches CIDEr-D on a
validation set carved out of the training split (the dev split stays for reporting).

A run folder holds everything needed to resume or export::

    RUN/config.json  RUN/vocab.json  RUN/history.json
    RUN/checkpoints/  (latest, for --resume)   RUN/best/  (best validation CIDEr)
    RUN/tensorboard/
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import numpy as np
import tensorflow as tf

from altbeam.model.config import ModelConfig
from altbeam.model.data.feature_records import FeatureSet, load_split
from altbeam.model.data.vocab import PAD_ID, Vocabulary
from altbeam.model.nets.decoder import CaptionDecoder


def encode_pairs(data: FeatureSet, vocab: Vocabulary, max_length: int):
    """Every (image index, token ids) pair of a split."""
    return [(i, vocab.encode(c, max_length)) for i, caps in enumerate(data.captions) for c in caps]


def batches(pairs, batch_size: int, rng: np.random.Generator):
    """Shuffled batches, roughly length-bucketed (less padding, same randomness)."""
    order = rng.permutation(len(pairs))
    chunk = batch_size * 32
    for s in range(0, len(order), chunk):
        block = sorted(order[s:s + chunk], key=lambda k: len(pairs[k][1]))
        groups = [block[j:j + batch_size] for j in range(0, len(block), batch_size)]
        for g in rng.permutation(len(groups)):
            yield [pairs[k] for k in groups[g]]


def pad(seqs) -> np.ndarray:
    out = np.full((len(seqs), max(map(len, seqs))), PAD_ID, np.int32)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = s
    return out


def word_mask(tokens):
    """1.0 on the real (non-pad) words of tokens[:, 1:], the positions logits predict."""
    return tf.cast(tf.not_equal(tokens[:, 1:], PAD_ID), tf.float32)


def caption_xent(logits, tokens, config: ModelConfig, mask=None):
    """Mean cross-entropy over the real (non-pad) words of tokens[:, 1:], with the
    config's label smoothing. ``mask``: word_mask(tokens), when the caller has it."""
    targets = tokens[:, 1:]
    mask = word_mask(tokens) if mask is None else mask
    labels = tf.one_hot(targets, config.vocab_size)
    if config.label_smoothing:
        labels = labels * (1 - config.label_smoothing) + config.label_smoothing / config.vocab_size
    xent = tf.nn.softmax_cross_entropy_with_logits(labels, logits)
    return tf.reduce_sum(xent * mask) / tf.reduce_sum(mask)


class Trainer:
    """Owns the decoder, optimiser and the compiled train step."""

    def __init__(self, config: ModelConfig, embeddings: np.ndarray | None = None):
        self.config = config
        self.decoder = CaptionDecoder(config, embeddings)
        import keras
        self.optimizer = keras.optimizers.Adam(config.learning_rate, clipnorm=5.0)
        L, C = config.grid_cells, config.feature_channels
        self.train_step = tf.function(self._train_step, input_signature=[
            tf.TensorSpec([None, L, C], tf.float16), tf.TensorSpec([None, None], tf.int32)])

    def _train_step(self, features, tokens):
        c = self.config
        with tf.GradientTape() as tape:
            logits, alpha = self.decoder.teacher_forced(features, tokens, training=True)
            mask = word_mask(tokens)
            caption_loss = caption_xent(logits, tokens, c, mask)
            loss = caption_loss
            if c.decoder == "attention" and c.attention_penalty:
                # Doubly stochastic attention: each cell attended ~once over the caption.
                coverage = tf.reduce_sum(alpha * mask[..., None], axis=1)
                loss += c.attention_penalty * tf.reduce_mean(tf.reduce_sum(
                    tf.square(1.0 - coverage), axis=-1)) / tf.cast(tf.shape(alpha)[-1], tf.float32)
        variables = self.decoder.trainable_variables
        grads = tape.gradient(loss, variables)
        self.optimizer.apply_gradients(zip(grads, variables))
        return caption_loss


def decode_features(decoder, features: np.ndarray, beam_width: int, max_length: int,
                    length_alpha: float, words: list[str], batch: int = 128,
                    ban_unk: bool = True, block_repeated_trigrams: bool = False) -> list[str]:
    """Best caption per image, straight from cached features (no encoder)."""
    from altbeam.model.serving.beam_search import beam_search, tokens_to_text
    table = tf.constant(words)
    search = tf.function(lambda f: tokens_to_text(table, beam_search(
        decoder, f, beam_width, max_length, length_alpha, ban_unk,
        block_repeated_trigrams)["tokens"][:, 0]))
    out = []
    for s in range(0, len(features), batch):
        out += [t.decode() for t in search(tf.constant(features[s:s + batch])).numpy()]
    return out


def validate(decoder, data: FeatureSet, config: ModelConfig, words: list[str],
             beam_width: int | None = None) -> dict:
    from altbeam.model.evaluation.metrics import score_captions
    hyps = decode_features(decoder, data.features, beam_width or config.beam_width,
                           config.max_length, config.length_alpha, words,
                           ban_unk=config.ban_unk,
                           block_repeated_trigrams=config.block_repeated_trigrams)
    refs = {i: caps for i, caps in zip(data.image_ids, data.captions)}
    return score_captions(refs, dict(zip(data.image_ids, hyps)), scorers=("bleu", "cider"),
                          tokenizer="simple")


def carve_validation(train: FeatureSet, n: int, seed: int) -> tuple[FeatureSet, FeatureSet]:
    order = np.random.default_rng(seed).permutation(len(train))
    return train.subset(sorted(order[n:])), train.subset(sorted(order[:n]))


def validation_split(full: FeatureSet, val_images: int,
                     config: ModelConfig) -> tuple[FeatureSet, FeatureSet]:
    """(training, validation) as `altbeam train` carves them: ``val_images`` (a fifth of
    the split at most), chosen by the run's split seed."""
    return carve_validation(full, min(val_images, len(full) // 5), config.validation_seed)


def train(config: ModelConfig, features_dir: str, run_dir: str, val_images: int = 500,
          limit: int | None = None, resume: bool = False, glove: str | None = None,
          vocab_file: str | None = None, lm_text: list[str] | None = None,
          lm_exclude: list[str] | None = None, lm_epochs: int = 1) -> dict:
    os.makedirs(run_dir, exist_ok=True)
    full = load_split(features_dir, "train", limit)
    config = config.replace(grid=int(np.sqrt(full.features.shape[1])),
                            feature_channels=full.features.shape[2],
                            encoder=full.encoder or config.encoder,
                            image_size=full.image_size or config.image_size)
    train_set, val_set = validation_split(full, val_images, config)
    vocab_path = os.path.join(run_dir, "vocab.json")
    if resume and os.path.exists(vocab_path):
        vocab = Vocabulary.load(vocab_path)
    elif vocab_file:  # a shared vocabulary lets several runs be ensembled at export
        vocab = Vocabulary.load(vocab_file)
        vocab.save(vocab_path)
    else:
        vocab = Vocabulary.build((c for caps in train_set.captions for c in caps),
                                 config.min_word_count)
        vocab.save(vocab_path)
    config = config.replace(vocab_size=len(vocab))
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        f.write(config.to_json())
    embeddings = load_glove(glove, vocab, config.embedding_dim) if glove else None
    trainer = Trainer(config, embeddings)
    epoch_var, best_var = tf.Variable(0), tf.Variable(-1.0)
    ckpt = tf.train.Checkpoint(decoder=trainer.decoder, optimizer=trainer.optimizer,
                               epoch=epoch_var, best=best_var)
    manager = tf.train.CheckpointManager(ckpt, os.path.join(run_dir, "checkpoints"), 2)
    history_path = os.path.join(run_dir, "history.json")
    history = []
    if resume and manager.latest_checkpoint:
        ckpt.restore(manager.latest_checkpoint)
        history = json.load(open(history_path)) if os.path.exists(history_path) else []
        print(f"resumed from {manager.latest_checkpoint} (epoch {int(epoch_var)})", flush=True)
    elif lm_text:
        pretrain_from_text(trainer.decoder, lm_text, lm_exclude or [], lm_epochs, vocab,
                           config, run_dir)
    pairs = encode_pairs(train_set, vocab, config.max_length)
    writer = tf.summary.create_file_writer(os.path.join(run_dir, "tensorboard"))
    rng = np.random.default_rng(config.seed + int(epoch_var))
    print(f"training {config.decoder} decoder: {len(train_set)} images, {len(pairs)} captions, "
          f"vocab {len(vocab)}, validation {len(val_set)} images", flush=True)
    stale = 0
    if history:
        best_epoch = max(history, key=lambda h: h["val_cider"])["epoch"]
        stale = int(epoch_var) - best_epoch
    while int(epoch_var) < config.epochs and stale < config.patience:
        epoch = int(epoch_var) + 1
        lr = config.learning_rate * (0.8 ** max(0, epoch - 3))
        trainer.optimizer.learning_rate.assign(lr)
        start, losses, n_batches = time.time(), [], (len(pairs) + config.batch_size - 1) // config.batch_size
        for step, batch in enumerate(batches(pairs, config.batch_size, rng), 1):
            idx = [i for i, _ in batch]
            loss = trainer.train_step(tf.constant(train_set.features[idx]),
                                      tf.constant(pad([s for _, s in batch])))
            losses.append(float(loss))
            if step % 100 == 0:
                rate = step / (time.time() - start)
                print(f"  epoch {epoch} step {step}/{n_batches} loss {np.mean(losses[-100:]):.3f} "
                      f"({rate:.1f} steps/s, ~{(n_batches - step) / rate:.0f} s left)", flush=True)
        train_s = time.time() - start
        scores = validate(trainer.decoder, val_set, config, vocab.words)
        record = {"epoch": epoch, "loss": float(np.mean(losses)), "lr": lr,
                  "val_cider": scores["CIDEr"], "val_bleu4": scores["BLEU-4"],
                  "train_seconds": round(train_s, 1)}
        history.append(record)
        with writer.as_default():
            for k in ("loss", "val_cider", "val_bleu4", "lr"):
                tf.summary.scalar(k, record[k], step=epoch)
        improved = scores["CIDEr"] > float(best_var)
        if improved:
            best_var.assign(scores["CIDEr"])
            tf.train.Checkpoint(decoder=trainer.decoder).write(os.path.join(run_dir, "best", "ckpt"))
        stale = 0 if improved else stale + 1
        epoch_var.assign(epoch)
        manager.save()
        json.dump(history, open(history_path, "w"), indent=2)
        print(f"epoch {epoch}: loss {record['loss']:.3f}  val CIDEr {scores['CIDEr']:.3f}  "
              f"BLEU-4 {scores['BLEU-4']:.3f}  ({train_s:.0f} s){'  *best' if improved else ''}",
              flush=True)
    return {"run_dir": run_dir, "history": history, "best_val_cider": float(best_var),
            "config": dataclasses.asdict(config)}


def pretrain_from_text(decoder, sources: list[str], exclude_files: list[str], epochs: int,
                       vocab: Vocabulary, config: ModelConfig, run_dir: str) -> dict:
    """Language-model pre-training (model/training/lm_pretrain.py) before the first epoch; the
    record goes to RUN/lm_pretrain.json."""
    from altbeam.model.training.lm_pretrain import (
        lm_captions,
        pretrain_language_model,
        read_exclusions,
    )
    exclude = read_exclusions(exclude_files)
    captions, dropped = lm_captions(sources, exclude)
    if not captions:
        raise SystemExit(f"altbeam train: no caption text left in {', '.join(sources)}")
    print(f"language-model pre-training: {len(captions)} captions from {len(sources)} "
          f"source(s), {dropped} image(s) dropped by --lm-exclude", flush=True)
    history = pretrain_language_model(decoder, captions, vocab, config, epochs, config.seed)
    record = {"sources": sources, "exclude": exclude_files, "captions": len(captions),
              "images_dropped": dropped, "epochs": epochs, "history": history}
    json.dump(record, open(os.path.join(run_dir, "lm_pretrain.json"), "w"), indent=2)
    return record


def load_glove(path: str, vocab: Vocabulary, dim: int) -> np.ndarray:
    """Embedding matrix from a GloVe-format text file (word v1 v2 ...); others random."""
    rng = np.random.default_rng(0)
    matrix = rng.normal(0, 0.1, (len(vocab), dim)).astype(np.float32)
    found = 0
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            word, *values = line.rstrip().split(" ")
            if word in vocab.index:
                if len(values) != dim:
                    raise ValueError(f"{path}:{line_no}: {len(values)} values for {word!r}, "
                                     f"expected embedding_dim={dim}")
                matrix[vocab.index[word]] = np.asarray(values, np.float32)
                found += 1
    print(f"GloVe: {found}/{len(vocab)} words initialised from {path}", flush=True)
    return matrix


def load_decoder(run_dir: str, which: str = "best") -> tuple[CaptionDecoder, Vocabulary, ModelConfig]:
    """Rebuild a trained decoder from a run folder (``best`` or ``latest`` weights)."""
    config = ModelConfig.from_json(open(os.path.join(run_dir, "config.json")).read())
    vocab = Vocabulary.load(os.path.join(run_dir, "vocab.json"))
    decoder = CaptionDecoder(config)
    if which == "best" and tf.io.gfile.exists(os.path.join(run_dir, "best", "ckpt.index")):
        tf.train.Checkpoint(decoder=decoder).read(os.path.join(run_dir, "best", "ckpt")).expect_partial()
    else:
        latest = tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints"))
        if not latest:
            raise FileNotFoundError(f"no checkpoint in {run_dir}: train first")
        tf.train.Checkpoint(decoder=decoder).read(latest).expect_partial()
    return decoder, vocab, config


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="altbeam train", description=__doc__.split("\n")[0])
    ap.add_argument("--features", required=True, help="folder written by `altbeam features`")
    ap.add_argument("--out", required=True, help="run folder (config, vocab, checkpoints)")
    ap.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    ap.add_argument("--val-images", type=int, default=500,
                    help="training images held out for early stopping")
    ap.add_argument("--limit", type=int, help="use only the first N training images")
    ap.add_argument("--glove", help="GloVe-format text file to initialise word embeddings")
    ap.add_argument("--scst-from", metavar="RUN", help="instead of training from scratch, "
                    "fine-tune RUN's best decoder with self-critical sequence training on "
                    "CIDEr-D (model/training/scst.py) into --out")
    ap.add_argument("--scst-epochs", type=int, default=3)
    ap.add_argument("--scst-learning-rate", type=float, default=5e-5)
    ap.add_argument("--scst-samples", type=int, default=5, help="captions sampled per image")
    ap.add_argument("--scst-xe-weight", type=float, default=0.0, help="add this x the "
                    "teacher-forced cross-entropy on the references (keeps the language model "
                    "anchored; 0 = pure SCST)")
    ap.add_argument("--lm-text", nargs="+", metavar="CAPTIONS", help="pre-train the "
                    "decoder as a language model on these caption files first (any dataset "
                    "format; no pixels needed), e.g. Flickr30k or COCO caption json")
    ap.add_argument("--lm-exclude", nargs="+", default=[], metavar="LIST", help="drop "
                    "caption text of the images named in these files (one name per line, "
                    "e.g. Flickr_8k.devImages.txt): keeps evaluation photos out of the text")
    ap.add_argument("--lm-epochs", type=int, default=1, help="language-model epochs")
    ap.add_argument("--vocab", help="reuse this vocab.json (e.g. another run's) instead of "
                    "building one; runs that share a vocabulary can be exported as an ensemble")
    for f in dataclasses.fields(ModelConfig):
        if f.name in ("vocab_size", "grid", "feature_channels", "image_size", "encoder"):
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            ap.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        else:
            ap.add_argument(flag, type=type(f.default), default=f.default)
    return ap.parse_args(argv)


def main(argv) -> int:
    args = parse_args(argv)
    if args.scst_from:
        from altbeam.model.training.scst import finetune
        result = finetune(args.scst_from, args.features, args.out, args.scst_epochs,
                          args.scst_learning_rate, args.scst_samples,
                          val_images=args.val_images, limit=args.limit, seed=args.seed,
                          xe_weight=args.scst_xe_weight)
        print(f"best validation CIDEr {result['best_val_cider']:.3f}; run folder {args.out}")
        return 0
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    config = ModelConfig(**{k: v for k, v in vars(args).items() if k in fields})
    result = train(config, args.features, args.out, args.val_images, args.limit, args.resume,
                   args.glove, args.vocab, args.lm_text, args.lm_exclude, args.lm_epochs)
    print(f"best validation CIDEr {result['best_val_cider']:.3f}; run folder {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
