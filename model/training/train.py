"""`altbeam train`: teacher-forced training of the caption decoder on cached features.

The encoder is frozen and its features were computed once (`altbeam features`), so an
epoch over Flickr8k is minutes on two cores. With ``--fine-tune`` (on features cut by
`altbeam features --cut-at`) the encoder's top blocks train too (fine_tune.py). Early stopping watches CIDEr-D on a
validation set carved out of the training split (the dev split stays for reporting).

A run folder holds everything needed to resume or export::

    RUN/config.json  RUN/vocab.json  RUN/history.json
    RUN/checkpoints/  (latest, for --resume)   RUN/best/  (best validation CIDEr)
    RUN/tensorboard/  RUN/fine_tune.json  (--fine-tune only)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

import numpy as np
import tensorflow as tf

from altbeam.model.config import ModelConfig
from altbeam.model.data.concepts import CONCEPTS
from altbeam.model.data.feature_records import FeatureSet, load_split
from altbeam.model.data.vocab import Vocabulary
from altbeam.model.nets.decoder import DECODERS
from altbeam.model.nets.encoder_cut import cut_weights, weights_name
from altbeam.model.serving.caption_status import DETECTORS_NPZ
from altbeam.model.training import concept_inputs as concepts
from altbeam.model.training import fine_tune as tuning
from altbeam.model.training.common import validate, validation_split
from altbeam.model.training.lm_pretrain import caption_text, pretrain_from_text
from altbeam.model.training.loop import LoopState, RunFolder, run_epochs
from altbeam.model.training.teacher_forcing import TeacherForcing

__all__ = ["TeacherForcing", "load_glove", "train"]


def train(config: ModelConfig, features_dir: str, run_dir: str, val_images: int = 500,
          limit: int | None = None, resume: bool = False, glove: str | None = None,
          vocab_file: str | None = None, lm_text: list[str] | None = None,
          lm_exclude: list[str] | None = None, lm_epochs: int = 1, fine_tune: bool = False,
          encoder_learning_rate: float | None = None,
          encoder_weights: str | None = "imagenet", concept_head=None,
          concept_text: list[str] | None = None,
          concept_text_exclude: list[str] | None = None) -> dict:
    """``fine_tune``: train the encoder's top blocks too, on cut features (fine_tune.py;
    ``encoder_weights``: the .pth the features were cut with, "imagenet" the package's).
    ``config.concept_inputs``: the decoder reads ``concept_head``'s scores and also trains
    on the text-only captions of ``concept_text`` (concept_inputs.py)."""
    os.makedirs(run_dir, exist_ok=True)
    full = load_split(features_dir, "train", limit)
    tuning.check_features(full, fine_tune)
    if fine_tune:
        config = tuning.fine_tune_config(config, full)
    else:
        config = config.replace(grid=int(np.sqrt(full.features.shape[1])),
                                concept_count=len(CONCEPTS) if config.concept_inputs else 0,
                                feature_channels=full.features.shape[2],
                                encoder=full.encoder or config.encoder,
                                image_size=full.image_size or config.image_size)
    train_set, val_set = validation_split(full, val_images, config)
    text, text_record = _concept_text(config, fine_tune, concept_head, concept_text,
                                      concept_text_exclude)
    vocab = _run_vocabulary(run_dir, resume, vocab_file, train_set, config, text)
    config = config.replace(vocab_size=len(vocab))
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        f.write(config.to_json())
    embeddings = load_glove(glove, vocab, config.embedding_dim) if glove else None
    if fine_tune:
        objective = tuning.FineTuning(config, embeddings, full.cut_at, encoder_weights,
                                      encoder_learning_rate)
        tuning.write_settings(run_dir, full, encoder_weights, config, objective.encoder_lr)
    elif config.concept_inputs:
        objective = concepts.ConceptTeacherForcing(config, concept_head, text, embeddings)
        concepts.keep_with_run(run_dir, concept_head, text_record,
                               weights_name(encoder_weights))
    else:
        objective = TeacherForcing(config, embeddings)
    objective.use_data(train_set, vocab)
    epoch_var, best_var = tf.Variable(0), tf.Variable(-1.0)
    ckpt = tf.train.Checkpoint(**objective.checkpointed(), epoch=epoch_var, best=best_var)
    manager = tf.train.CheckpointManager(ckpt, os.path.join(run_dir, "checkpoints"), 2)
    state = LoopState()
    if resume and manager.latest_checkpoint:
        ckpt.restore(manager.latest_checkpoint)
        history_path = os.path.join(run_dir, "history.json")
        if os.path.exists(history_path):
            with open(history_path) as f:
                state.history = json.load(f)
        print(f"resumed from {manager.latest_checkpoint} (epoch {int(epoch_var)})", flush=True)
    elif lm_text:
        pretrain_from_text(objective.decoder, lm_text, lm_exclude or [], lm_epochs, vocab,
                           config, run_dir)
    state.best = float(best_var)
    if state.history:
        best_epoch = max(state.history, key=lambda h: h["val_cider"])["epoch"]
        state.stale = int(epoch_var) - best_epoch
    print(f"training {config.decoder} decoder"
          f"{f' and {config.encoder} blocks {full.cut_at}..' if fine_tune else ''}: "
          f"{len(train_set)} images, "
          f"{len(objective.pairs)} captions"
          f"{f' ({len(text)} text-only)' if text else ''}, vocab {len(vocab)}, validation "
          f"{len(val_set)} images", flush=True)

    def save_best():
        best_var.assign(state.best)
        tf.train.Checkpoint(**objective.best_weights()).write(
            os.path.join(run_dir, "best", "ckpt"))

    def save_latest(epoch: int):
        epoch_var.assign(epoch)
        manager.save()

    folder = RunFolder(run_dir, ("loss", "val_cider", "val_bleu4", "lr"), save_best, save_latest)
    val_concepts = objective.concepts_of(val_set)   # the grids do not change: once
    run_epochs(objective, range(int(epoch_var) + 1, config.epochs + 1),
               np.random.default_rng(config.seed + int(epoch_var)), state,
               validate=lambda: validate(objective.decoder, objective.validation_set(val_set),
                                         config, vocab.words,
                                         concepts=val_concepts),
               folder=folder, patience=config.patience)
    return {"run_dir": run_dir, "history": state.history, "best_val_cider": float(best_var),
            "config": dataclasses.asdict(config)}


def _concept_text(config: ModelConfig, fine_tune: bool, head, sources, exclude_files):
    """(text-only captions, their record) for a concept-input run; ([], {}) otherwise."""
    if not config.concept_inputs:
        if sources:
            raise SystemExit("altbeam train: --concept-text needs --concept-inputs")
        return [], {}
    if fine_tune or config.decoder != "attention":
        raise SystemExit("altbeam train: --concept-inputs needs the attention decoder on "
                         "cached features (not --fine-tune)")
    if head is None:
        raise SystemExit("altbeam train: --concept-inputs needs a concept head")
    text, dropped = caption_text(sources or [], exclude_files or [])
    print(f"concept inputs: {len(text)} text-only captions, {dropped} image(s) dropped by "
          f"--concept-text-exclude", flush=True)
    return text, {"text": sources or [], "exclude": exclude_files or [],
                  "text_captions": len(text), "images_dropped": dropped}


def _run_vocabulary(run_dir: str, resume: bool, vocab_file: str | None, train_set: FeatureSet,
                    config: ModelConfig, text: list[str] = ()) -> Vocabulary:
    """The run's vocab.json: kept on resume, copied from --vocab, else built (from the
    training captions and any text-only captions)."""
    vocab_path = os.path.join(run_dir, "vocab.json")
    if resume and os.path.exists(vocab_path):
        return Vocabulary.load(vocab_path)
    if vocab_file:  # a shared vocabulary lets several runs be ensembled at export
        vocab = Vocabulary.load(vocab_file)
    else:
        vocab = Vocabulary.build([c for caps in train_set.captions for c in caps] + list(text),
                                 config.min_word_count)
    vocab.save(vocab_path)
    return vocab


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
    ap.add_argument("--fine-tune", action="store_true", help="train the encoder's top "
                    "blocks with the decoder, on features cut by `altbeam features --cut-at "
                    "BLOCK` (BatchNorm frozen; docs/training.md)")
    ap.add_argument("--encoder-learning-rate", type=float, help="with --fine-tune: the "
                    "top blocks' learning rate (default 0.1 x --learning-rate), same schedule")
    ap.add_argument("--encoder-weights", help="with --fine-tune: the .pth the features "
                    "were cut with (default: the one their features.json records); with "
                    "--concept-inputs: the .pth whose ImageNet layer scores the concepts "
                    "(default 'imagenet': the installed package)")
    ap.add_argument("--concept-text", nargs="+", metavar="CAPTIONS", help="with "
                    "--concept-inputs: text-only caption files trained on beside the images, "
                    "their concepts read from the text (any dataset format)")
    ap.add_argument("--concept-text-exclude", nargs="+", default=[], metavar="LIST",
                    help="drop the text of these images (name lists or caption files, e.g. "
                    "the evaluation photos' captions.jsonl)")
    ap.add_argument("--detectors", metavar="FILE.npz", default=str(DETECTORS_NPZ),
                    help="with --concept-inputs: the concept head's detectors (default: the "
                    "committed model/data/concept_detectors.npz)")
    ap.add_argument("--vocab", help="reuse this vocab.json (e.g. another run's) instead of "
                    "building one; runs that share a vocabulary can be exported as an ensemble")
    for f in dataclasses.fields(ModelConfig):
        if f.name in ("vocab_size", "grid", "feature_channels", "image_size", "encoder",
                      "concept_count"):
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            ap.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        else:
            ap.add_argument(flag, type=type(f.default), default=f.default,
                            choices=DECODERS if f.name == "decoder" else None)
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
    # The top must start from the weights its bottom was cut with: their record is the
    # default (the installed ImageNet package for everything else).
    weights = args.encoder_weights or (cut_weights(args.features) if args.fine_tune
                                       else "imagenet")
    head = None
    if config.concept_inputs:
        from altbeam.model.serving.export import concept_head_for
        encoder = load_split(args.features, "train", 1).encoder or config.encoder
        head = concept_head_for(encoder, weights, args.detectors or None)
    result = train(config, args.features, args.out, args.val_images, args.limit, args.resume,
                   args.glove, args.vocab, args.lm_text, args.lm_exclude, args.lm_epochs,
                   args.fine_tune, args.encoder_learning_rate, weights, head,
                   args.concept_text, args.concept_text_exclude)
    print(f"best validation CIDEr {result['best_val_cider']:.3f}; run folder {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
