"""`altbeam export`: a training run folder -> one serving SavedModel + model_card.json.

The SavedModel holds the encoder (with its ImageNet weights), the trained decoder,
the vocabulary and the beam search, so serving needs TensorFlow only. Several run
folders that share a vocabulary export as one ensemble (model/nets/ensemble.py).

``--concepts`` attaches a concept head (model/nets/concept_head.py): the encoder's
ImageNet layer, read from the same weights file as the encoder (``--encoder-weights``),
mapped to the concept vocabulary, plus ``--detectors FILE.npz`` when given; the model
then also returns ``concepts`` and ``concept_scores``.

``--concept-decoding bias|transfer`` (with a concept head) steers the beam search by
the concept scores and, with transfer, adds words the decoder never learned
(model/serving/concept_guide.py); recorded in the card's ``concept_decoding``.

``--jit-compile`` compiles the beam search with XLA (model/serving/captioner.py;
docs/benchmarks.md has what it gains); recorded in the card's ``jit_compile``.

``--from-saved-model MODEL`` re-exports an exported model whose run folders are gone
(model/serving/rebuild.py): same weights and storage, so the same captions and scores,
with a concept head or other decoding settings.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import shutil
import sys

from altbeam.model.nets.decoder import MATMUL_DTYPES, reads_concepts
from altbeam.model.nets.ensemble import load_runs
from altbeam.model.serving.captioner import Captioner, config_card
from altbeam.model.training.concept_inputs import RECORD_FILE, check_export_head, run_detectors

# How each --weights choice stores the decoder; the encoder always stays float32.
WEIGHT_FORMATS = {
    "float32": "float32",
    "float16": "float16 (decoder), float32 (encoder)",
    "int8": "int8 with a float32 scale per output column (decoder matrices), float16 "
            "(decoder biases), float32 (encoder)",
}
NO_REPEAT_SUFFIX = "+norep"   # version suffix: --block-repeated-words
BFLOAT16_SUFFIX = "+bf16"     # version suffix: --matmul-dtype bfloat16
CONCEPTS_SUFFIX = "+concepts"  # version suffix of a model with a concept head


def build_encoder_for(config, weights: str | None = "imagenet"):
    """The encoder a run was trained on (built in or registered; seeded like the run)."""
    from altbeam.model.nets.encoder import build_encoder
    return build_encoder(config.encoder, weights=weights, seed=config.seed)


def decoding_changes(beam_width: int | None = None, length_alpha: float | None = None,
                     max_length: int | None = None,
                     block_repeated_trigrams: bool | None = None,
                     block_repeated_words: bool | None = None,
                     matmul_dtype: str | None = None) -> dict:
    """The decoding settings asked for (None: keep the model's)."""
    return {k: v for k, v in (("beam_width", beam_width), ("length_alpha", length_alpha),
                              ("max_length", max_length),
                              ("block_repeated_trigrams", block_repeated_trigrams),
                              ("block_repeated_words", block_repeated_words),
                              ("matmul_dtype", matmul_dtype))
            if v is not None}


def concept_head_for(encoder: str, encoder_weights: str | None = "imagenet",
                     detectors: str | None = None, top_k: int | None = None):
    """The concept head of ``encoder``: its ImageNet layer from ``encoder_weights``
    ("imagenet": the installed package, or a .pth path), plus the detectors file."""
    from altbeam.model.nets.concept_head import (
        DEFAULT_TOP_K,
        imagenet_concept_head,
        load_detectors,
    )
    if encoder_weights is None:
        raise ValueError("--concepts needs the encoder's ImageNet weights "
                         "(--encoder-weights imagenet or a .pth path)")
    found = load_detectors(detectors) if detectors else None
    return imagenet_concept_head(encoder, encoder_weights, found, top_k or DEFAULT_TOP_K)


def add_guide_flags(ap, default_note: str) -> None:
    """The concept-decoding flags `altbeam export` and `altbeam evaluate --run` share
    (read back with `guide_settings`)."""
    ap.add_argument("--concept-decoding", choices=["none", "bias", "transfer"],
                    help="steer the beam search by the concept scores (bias), and add words "
                    "the decoder never learned (transfer); needs a concept head "
                    f"(model/serving/concept_guide.py; {default_note})")
    ap.add_argument("--concept-alpha", type=float, help="penalty slope below the threshold")
    ap.add_argument("--concept-boost", type=float, help="reward slope above the threshold")
    ap.add_argument("--concept-threshold", type=float, help="concept score below which a "
                    "word is penalised")
    ap.add_argument("--transfer-templates", metavar="FILE.tsv",
                    help="novel word -> template table (default model/data/"
                    "transfer_templates.tsv)")


def guide_settings(mode: str | None = None, alpha: float | None = None,
                   boost: float | None = None, threshold: float | None = None,
                   templates: str | None = None) -> dict | None:
    """The concept decoding asked for (None: keep the model's; {"mode": "none"}: none)."""
    given = {"alpha": alpha, "boost": boost, "threshold": threshold, "templates": templates}
    if mode is None:
        if any(v is not None for v in given.values()):
            raise SystemExit("--concept-alpha/-boost/-threshold and --transfer-templates "
                             "need --concept-decoding")
        return None
    return {"mode": mode, **{k: v for k, v in given.items() if v is not None}}


def attach_guide(words, concept_head, settings: dict | None):
    """The ConceptGuide ``settings`` describe over ``words``, or None."""
    from altbeam.model.serving.concept_guide import guide_for
    if not settings:
        return None
    settings = dict(settings)
    return guide_for(settings.pop("mode"), words, concept_head, **settings)


def source_guide_settings(card: dict) -> dict | None:
    """The concept decoding a source model was exported with (None: none)."""
    recorded = card.get("concept_decoding") or {}
    if recorded.get("mode", "none") == "none":
        return None
    keys = ("mode", "alpha", "boost", "threshold", "eps")
    return {k: recorded[k] for k in keys if k in recorded}


def model_version(version: str, head, guide, config) -> str:
    """The exported model's version: the concept head and guide (`concepts_version`),
    then ``+norep`` when it never says a word twice in a row and ``+bf16`` when its
    decoder multiplies in bfloat16. Decoding that changes the captions shows in the
    version, which every catalog row carries."""
    base = version.replace(NO_REPEAT_SUFFIX, "").replace(BFLOAT16_SUFFIX, "")
    return (concepts_version(base, head, guide)
            + (NO_REPEAT_SUFFIX if config.block_repeated_words else "")
            + (BFLOAT16_SUFFIX if config.matmul_dtype == "bfloat16" else ""))


def concepts_version(version: str, head, guide=None) -> str:
    """``version`` with the concept head in it: ``…+concepts`` (ImageNet only) or
    ``…+concepts-d<hash>`` (with detectors; the hash tells detector files apart), then
    ``+<mode>-<hash>`` for concept-guided decoding: its captions differ, so catalogs
    (incremental runs, provenance) must be able to tell the models apart."""
    base = version.split(CONCEPTS_SUFFIX)[0]
    if head is None:
        return base
    if head.detectors is None:
        versioned = base + CONCEPTS_SUFFIX
    else:
        digest = hashlib.sha256(head.detectors.kernel.tobytes() + head.detectors.bias.tobytes()
                                + "\t".join(head.detectors.concepts).encode()).hexdigest()
        versioned = f"{base}{CONCEPTS_SUFFIX}-d{digest[:8]}"
    if guide is not None:    # a ConceptGuide: its effective settings, however given
        settings = json.dumps(guide.settings(), sort_keys=True).encode()
        versioned += f"+{guide.mode}-{hashlib.sha256(settings).hexdigest()[:6]}"
    return versioned


def _clear(out: str, overwrite: bool) -> None:
    if os.path.exists(out):
        if not overwrite:
            raise SystemExit(f"altbeam export: {out} exists (use --overwrite)")
        shutil.rmtree(out)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def export(run_dir: str | list[str], out: str, beam_width: int | None = None,
           length_alpha: float | None = None, max_length: int | None = None,
           weights: str = "float16", encoder_weights: str | None = "imagenet",
           card: dict | None = None, overwrite: bool = False,
           block_repeated_trigrams: bool | None = None, concept_head=None,
           concept_decoding: dict | None = None, jit_compile: bool | None = None,
           block_repeated_words: bool | None = None, matmul_dtype: str | None = None) -> str:
    """``concept_head``: a ConceptHead to attach (`concept_head_for`), or None;
    ``concept_decoding``: `guide_settings` (None: no guide); ``jit_compile``: compile the
    beam search with XLA (None: no)."""
    if weights not in WEIGHT_FORMATS:  # before loading any run
        raise ValueError(f"weights={weights!r}: use one of {', '.join(WEIGHT_FORMATS)}")
    run_dirs = [run_dir] if isinstance(run_dir, str) else list(run_dir)
    from altbeam.model.nets.encoder_cut import fine_tuned_encoder, fine_tuning_of
    tuned = fine_tuning_of(run_dirs)   # altbeam train --fine-tune: the run's own encoder
    decoder, vocab, config = load_runs(run_dirs)
    if reads_concepts(decoder):
        check_export_head(run_dirs, concept_head)
    config = config.replace(**decoding_changes(beam_width, length_alpha, max_length,
                                               block_repeated_trigrams, block_repeated_words,
                                               matmul_dtype))
    decoder.config = config
    if weights == "float16":
        decoder.to_float16()
    elif weights == "int8":
        decoder.to_int8()
    _clear(out, overwrite)
    histories, pretraining = {}, {}
    for d in run_dirs:
        path = os.path.join(d, "history.json")
        key = os.path.basename(os.path.abspath(d))
        key = os.path.abspath(d) if key in histories else key
        histories[key] = json.load(open(path)) if os.path.exists(path) else []
        for record in ("lm_pretrain.json", RECORD_FILE):  # --lm-text, --concept-inputs
            path = os.path.join(d, record)
            if os.path.exists(path):
                pretraining.setdefault(record[:-5], {})[key] = json.load(open(path))
    if len(run_dirs) > 1:
        training = {"ensemble": len(run_dirs), "runs": histories}
    else:
        (name, history), = histories.items()
        training = {"history": history, "run_dir": name}
    training.update(pretraining)
    variant = config.decoder + (f"-x{len(run_dirs)}" if len(run_dirs) > 1 else "")
    variant += f"-ft{tuned['cut_at']}" if tuned else ""
    version = _now().strftime("%Y.%m.%d-") + config.encoder + "-" + variant
    guide = attach_guide(vocab.words, concept_head, concept_decoding)
    info = {
        "ensemble": len(run_dirs),
        "version": model_version(version, concept_head, guide, config),
        "exported_at": _now().isoformat(timespec="seconds"),
        "weights_dtype": WEIGHT_FORMATS[weights],
        "training": training,
    }
    if tuned:
        info["encoder_fine_tuned"] = tuned
    info.update(card or {})
    encoder = (fine_tuned_encoder(run_dirs[0], encoder_weights) if tuned
               else build_encoder_for(config, encoder_weights))
    model = Captioner(encoder, decoder, vocab.words, config,
                      concept_head, guide, jit_compile=bool(jit_compile))
    model.save(out, info)
    return out


def export_from_saved_model(source: str, out: str, changes: dict | None = None,
                            concepts: bool = False, encoder_weights: str | None = "imagenet",
                            detectors: str | None = None, concepts_top_k: int | None = None,
                            card: dict | None = None, overwrite: bool = False,
                            concept_head=None, concept_decoding: dict | None = None,
                            jit_compile: bool | None = None) -> str:
    """Re-export ``source`` (an exported SavedModel) with its own weights, storage and
    card, the decoding ``changes`` and, with ``concepts`` (or a ready ``concept_head``),
    a concept head; RebuildError when its variables cannot all be matched.
    ``concept_decoding``: `guide_settings`; None keeps the source's (its card's), as
    ``jit_compile`` None does."""
    from altbeam.model.serving.rebuild import (
        check_encoder_weights,
        has_concept_head,
        rebuild_captioner,
    )
    if os.path.abspath(source) == os.path.abspath(out):
        raise SystemExit("altbeam export: --out must differ from --from-saved-model")
    if (detectors or concepts_top_k) and not concepts:
        raise SystemExit("altbeam export: --detectors and --concepts-top-k need --concepts")
    if has_concept_head(source) and not (concepts or concept_head is not None):
        raise SystemExit(f"altbeam export: {source} has a concept head; pass --concepts "
                         "(with --detectors if it had them) to rebuild it")
    model, info = rebuild_captioner(source, changes)
    config = model.config
    if concepts:
        concept_head = concept_head_for(config.encoder, encoder_weights, detectors,
                                        concepts_top_k)
        check_encoder_weights(model.encoder, config.encoder, encoder_weights)
    if concept_decoding is None:
        concept_decoding = source_guide_settings(info)
    words = [w.decode() for w in model.words.numpy()]
    guide = attach_guide(words, concept_head, concept_decoding)
    _clear(out, overwrite)
    for key in config_card(config):  # follow the config, not the source's card
        info.pop(key, None)
    if "decoding" in info:
        info["decoding"].update((k, v) for k, v in (changes or {}).items()
                                if k in info["decoding"])
    info.pop("size_bytes", None)  # the source's; tools/default_model_card.py measures it
    info.update({
        "version": model_version(str(info.get("version", "unknown")), concept_head, guide,
                                 config),
        "exported_at": _now().isoformat(timespec="seconds"),
        "rebuilt_from": {"saved_model": source, "version": info.get("version"),
                         "exported_at": info.get("exported_at")},
    })
    info.update(card or {})
    if jit_compile is None:
        jit_compile = bool(info.get("jit_compile", False))
    Captioner(model.encoder, model.decoder, words, config, concept_head, guide,
              jit_compile).save(out, info)
    return out


def main(argv) -> int:
    ap = argparse.ArgumentParser(prog="altbeam export", description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", nargs="*", help="training run folder (from `altbeam train`); "
                    "several that share a vocabulary export as one ensemble")
    ap.add_argument("--from-saved-model", metavar="MODEL",
                    help="re-export this exported SavedModel instead of run folders (same "
                    "weights and storage; e.g. to add --concepts)")
    ap.add_argument("--out", required=True, help="SavedModel folder to write")
    ap.add_argument("--beam-width", type=int, help="beams K returned (default: training config)")
    ap.add_argument("--length-alpha", type=float, help="length normalisation exponent")
    ap.add_argument("--max-length", type=int, help="words generated at most")
    ap.add_argument("--block-trigrams", action=argparse.BooleanOptionalAction, default=None,
                    help="never repeat a word trigram within a caption (default: run config)")
    ap.add_argument("--block-repeated-words", action=argparse.BooleanOptionalAction,
                    default=None, help="never say a word twice in a row (\"a large large "
                    "building\"; default: run config / the model's)")
    ap.add_argument("--weights", choices=list(WEIGHT_FORMATS), default=None,
                    help="how the decoder weights are stored: float16 (the default; half of "
                    "float32's size), int8 (a quarter; per-column scales) or float32; "
                    "--from-saved-model keeps the model's")
    ap.add_argument("--encoder-weights",
                    help="'imagenet' (the installed weights package, the default) or a .pth "
                    "path; a Keras backbone (inception_v3, resnet50, vgg16) needs its local "
                    ".keras/.h5 file; --concepts reads the ImageNet layer from it too; a "
                    "fine-tuned run's default is the file its features were cut with")
    ap.add_argument("--concepts", action="store_true",
                    help="add a concept head: outputs concepts and concept_scores")
    ap.add_argument("--detectors", metavar="FILE.npz",
                    help="concept detectors for the head (format: model/nets/concept_head.py)")
    ap.add_argument("--concepts-top-k", type=int, help="concepts returned per image (10)")
    add_guide_flags(ap, "--from-saved-model: default keeps the model's")
    ap.add_argument("--matmul-dtype", choices=MATMUL_DTYPES,
                    help="the decoder's per-step matrix products: bfloat16 halves the bytes "
                    "a step reads (faster; a few captions change, version suffix +bf16); "
                    "default: the run's float32, --from-saved-model keeps the model's")
    ap.add_argument("--jit-compile", action=argparse.BooleanOptionalAction, default=None,
                    help="compile the beam search with XLA: same captions, faster decoding "
                    "(docs/benchmarks.md); compiles once per new batch size (default: off; "
                    "--from-saved-model keeps the model's)")
    ap.add_argument("--card", help="JSON file merged into model_card.json (e.g. scores)")
    ap.add_argument("--overwrite", action="store_true")
    a = ap.parse_args(argv)
    card = json.load(open(a.card)) if a.card else None
    changes = decoding_changes(a.beam_width, a.length_alpha, a.max_length, a.block_trigrams,
                               a.block_repeated_words, a.matmul_dtype)
    guide = guide_settings(a.concept_decoding, a.concept_alpha, a.concept_boost,
                           a.concept_threshold, a.transfer_templates)
    if a.from_saved_model:
        if a.run_dir or a.weights:
            ap.error("--from-saved-model takes no run folders and keeps the model's --weights")
        path = export_from_saved_model(a.from_saved_model, a.out, changes, a.concepts,
                                       a.encoder_weights or "imagenet", a.detectors,
                                       a.concepts_top_k, card, a.overwrite,
                                       concept_decoding=guide,
                                       jit_compile=a.jit_compile)
    else:
        if not a.run_dir:
            ap.error("name training run folders, or --from-saved-model MODEL")
        if (a.detectors or a.concepts_top_k) and not a.concepts:
            ap.error("--detectors and --concepts-top-k need --concepts")
        from altbeam.model.config import ModelConfig
        from altbeam.model.nets.encoder_cut import run_encoder_weights
        encoder = ModelConfig.from_json(open(os.path.join(a.run_dir[0], "config.json")).read()
                                        ).encoder
        # A fine-tuned top sits on the bottom it was trained on: its record is the default.
        encoder_weights = a.encoder_weights or run_encoder_weights(a.run_dir[0])
        head = (concept_head_for(encoder, encoder_weights,
                                 a.detectors or run_detectors(a.run_dir[0]), a.concepts_top_k)
                if a.concepts else None)
        path = export(a.run_dir, a.out, a.beam_width, a.length_alpha, a.max_length,
                      a.weights or "float16", encoder_weights, card, a.overwrite,
                      a.block_trigrams, head, guide, a.jit_compile,
                      block_repeated_words=a.block_repeated_words,
                      matmul_dtype=a.matmul_dtype)
    print(f"exported {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
