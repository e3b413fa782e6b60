"""A Captioner rebuilt from an exported SavedModel, for when its training runs are gone.

`altbeam export --from-saved-model MODEL` uses it to re-export a model with other
decoding settings or a concept head. The Python objects are rebuilt from the model's
own files: the settings from ``model_card.json`` (``config``), the decoder shapes,
variants, ensemble size and weight storage (float32, float16 or int8) from the
variables checkpoint (``MODEL/variables/variables``), the vocabulary from its
``words`` variable. Every variable is then restored from that checkpoint, and the
rebuild fails unless each value of the checkpoint found its variable and each
variable its value, so the re-exported captions and scores are the source's exactly.
A concept head or concept guide the source has is not restored: export attaches the
ones it is asked for (a guide holds no learned weights: it is rebuilt from the card's
``concept_decoding`` settings).
"""
from __future__ import annotations

import json
import os
import tempfile

import numpy as np
import tensorflow as tf

from altbeam.model.config import ModelConfig
from altbeam.model.nets.decoder import VARIANT_MARKERS, CaptionDecoder
from altbeam.model.nets.ensemble import DecoderEnsemble
from altbeam.model.serving.captioner import Captioner

_VALUE = "/.ATTRIBUTES/VARIABLE_VALUE"
_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
CONCEPT_HEAD_SCOPE = "concept_head/"  # the Captioner attribute's checkpoint scope
CONCEPT_GUIDE_SCOPE = "concept_guide/"  # model/serving/concept_guide.py
_NOT_RESTORED = (CONCEPT_HEAD_SCOPE, CONCEPT_GUIDE_SCOPE)


class RebuildError(ValueError):
    """The SavedModel cannot be rebuilt as a Captioner exactly."""


def checkpoint_prefix(model_dir: str) -> str:
    return os.path.join(model_dir, "variables", "variables")


def read_source_card(model_dir: str) -> dict:
    path = os.path.join(model_dir, "model_card.json")
    if not os.path.exists(path):
        raise RebuildError(f"{model_dir}: no model_card.json; a rebuild needs its 'config'")
    card = json.load(open(path, encoding="utf-8"))
    if "config" not in card:
        raise RebuildError(f"{path} has no 'config': not exported by `altbeam export`")
    return card


def has_concept_head(model_dir: str) -> bool:
    shapes = tf.train.load_checkpoint(checkpoint_prefix(model_dir)).get_variable_to_shape_map()
    return any(k.startswith(CONCEPT_HEAD_SCOPE) for k in shapes)


def decoder_storage(shapes: dict, dtypes: dict, scope: str = "decoder/") -> str:
    """How the decoder's weights are stored: "int8", "float16" or "float32"."""
    members = sorted({k.split("/")[2] for k in shapes if k.startswith(scope + "members/")})
    first = f"{scope}members/{members[0]}/" if members else scope
    if first + "embedding/q" + _VALUE in shapes:
        return "int8"
    key = first + "embedding" + _VALUE
    if key not in dtypes:
        raise RebuildError(f"no decoder embedding under {first!r} in the checkpoint")
    return "float16" if dtypes[key] == tf.float16 else "float32"


def _member_config(shapes: dict, scope: str, config: ModelConfig) -> ModelConfig:
    """The decoder under ``scope``: sizes and variant read from its variable shapes."""
    def shape(name):
        for key in (scope + name + _VALUE, scope + name + "/q" + _VALUE):
            if key in shapes:
                return shapes[key]
        raise RebuildError(f"no variable {scope + name} in the checkpoint")

    vocab, embedding = shape("embedding")
    variant = next((v for v, marker in VARIANT_MARKERS.items()
                    if any(k.startswith(f"{scope}{marker}/") for k in shapes)), None)
    if variant is None:
        raise RebuildError(f"no decoder variant's weights under {scope!r} in the checkpoint")
    attention = variant == "attention"
    concepts = any(k.startswith(f"{scope}concept_in/") for k in shapes)
    narrowed = any(k.startswith(f"{scope}context_proj/") for k in shapes)
    return config.replace(
        context_units=shape("context_proj")[1] if narrowed else 0,
        concept_inputs=concepts,
        concept_count=shape("concept_in")[0] if concepts else 0,
        decoder=variant, vocab_size=vocab,
        embedding_dim=embedding, lstm_units=shape("lstm_bias")[0] // 4,
        feature_channels=shape("merge_image" if variant == "merge" else "init_h")[0],
        attention_units=shape("att_feat")[1] if attention else config.attention_units)


def rebuild_decoder(shapes: dict, dtypes: dict, config: ModelConfig):
    """The decoder (or ensemble) the checkpoint holds, in its storage, weights not yet read."""
    members = sorted({int(k.split("/")[2]) for k in shapes if k.startswith("decoder/members/")})
    scopes = [f"decoder/members/{i}/" for i in members] or ["decoder/"]
    decoders = [CaptionDecoder(_member_config(shapes, s, config)) for s in scopes]
    decoder = DecoderEnsemble(decoders) if members else decoders[0]
    storage = decoder_storage(shapes, dtypes)
    if storage == "int8":
        decoder.to_int8()
    elif storage == "float16":
        decoder.to_float16()
    if members:
        decoder.config = config  # as export sets it: the decoding settings of the model
    return decoder


def _checkpoint_keys(module: tf.Module) -> set[str]:
    with tempfile.TemporaryDirectory() as tmp:
        path = tf.train.Checkpoint(root=module).write(os.path.join(tmp, "ckpt"))
        return set(tf.train.load_checkpoint(path).get_variable_to_shape_map()) - {_GRAPH_KEY}


def restore_exactly(model: tf.Module, prefix: str) -> None:
    """Read every variable of ``model`` from ``prefix``; RebuildError unless each variable
    got a value and each value of the checkpoint (but a concept head's or guide's) a
    variable."""
    source = set(tf.train.load_checkpoint(prefix).get_variable_to_shape_map()) - {_GRAPH_KEY}
    status = tf.train.Checkpoint(root=model).read(prefix)
    try:
        status.assert_existing_objects_matched()
    except AssertionError as e:
        raise RebuildError(f"{prefix}: the rebuilt captioner has variables the SavedModel "
                           f"lacks: {e}") from None
    unmatched = {k for k in source - _checkpoint_keys(model) if not k.startswith(_NOT_RESTORED)}
    if unmatched:
        raise RebuildError(f"{prefix}: {len(unmatched)} SavedModel values have no variable in "
                           f"the rebuilt captioner, e.g. {sorted(unmatched)[:5]}")
    status.expect_partial()  # the unread rest is the concept head and guide, rebuilt by export


def rebuild_captioner(model_dir: str, changes: dict | None = None) -> tuple[Captioner, dict]:
    """(Captioner with the SavedModel's weights, its model card). ``changes``: decoding
    settings to replace (beam_width, …), which hold no weights."""
    from altbeam.model.nets.encoder import build_encoder

    card = read_source_card(model_dir)
    config = ModelConfig.from_json(json.dumps(card["config"])).replace(**(changes or {}))
    prefix = checkpoint_prefix(model_dir)
    reader = tf.train.load_checkpoint(prefix)
    shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
    words = [w.decode("utf-8") for w in reader.get_tensor("words" + _VALUE)]
    if len(words) != config.vocab_size:
        raise RebuildError(f"{model_dir}: {len(words)} words but the card's vocab_size is "
                           f"{config.vocab_size}")
    decoder = rebuild_decoder(shapes, dtypes, config)
    encoder = build_encoder(config.encoder, weights=None, seed=config.seed)
    model = Captioner(encoder, decoder, words, config)
    restore_exactly(model, prefix)
    return model, card


def check_encoder_weights(encoder, name: str, weights: str) -> None:
    """RebuildError unless the restored ``encoder`` has exactly the weights of ``weights``
    (an ImageNet layer read from another file would not fit the features)."""
    from altbeam.model.nets.encoder import build_encoder

    reference = build_encoder(name, weights=weights).get_weights()
    restored = encoder.get_weights()
    if len(reference) != len(restored) or not all(
            np.array_equal(a, b) for a, b in zip(reference, restored)):
        raise RebuildError(f"the model's {name} encoder weights differ from {weights!r}: "
                           "its ImageNet layer would not match the model's features")
