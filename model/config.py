"""All knobs of the captioning model and its training in one dataclass."""
from __future__ import annotations

import dataclasses
import json


@dataclasses.dataclass
class ModelConfig:
    """Architecture, decoding and training settings (saved beside every checkpoint)."""

    # Encoder: a name model/nets/encoder.py knows ("lite0", "lite2", or one registered
    # with register_encoder, such as the tests' "tiny").
    encoder: str = "lite0"
    image_size: int = 224
    feature_channels: int = 1280
    grid: int = 7
    # Decoder: "attention" (Show, Attend and Tell), "show_and_tell" or "merge" (the Keras
    # tutorials' merge captioner; recipe in docs/training.md).
    decoder: str = "attention"
    embedding_dim: int = 256
    lstm_units: int = 512
    attention_units: int = 512
    # Attention decoder: the width of the context vector the LSTM reads (0: the grid's
    # own C channels). The grid is projected to this once per image, so a step's LSTM
    # kernel is (E + P + U) x 4U instead of (E + C + U) x 4U: with C = 1280, P = 512
    # is ~35 % fewer multiplies per step (issue 21). Needs training from scratch.
    context_units: int = 0
    dropout: float = 0.5
    vocab_size: int = 0          # filled in from the vocabulary
    max_length: int = 22         # words generated at most (not counting <start>)
    # Concept inputs (attention decoder only; model/training/concept_inputs.py): the LSTM
    # reads the concept head's score of every concept at every step and the output layer
    # sees them too, so words learned from text-only captions (whose concepts come from
    # the text, with noise) can be said when the CNN scores their concept. concept_count
    # is filled in from the concept vocabulary.
    concept_inputs: bool = False
    concept_count: int = 0
    # Decoding: beams returned (K) and the length normalisation exponent used to rank
    # finished beams: log p / length**alpha (0 = raw log-probability). The scores
    # returned are always length-normalised (log p / length), whatever the ranking.
    beam_width: int = 3
    length_alpha: float = 0.0
    # Never emit <unk> when decoding: alt text must not contain placeholder tokens.
    ban_unk: bool = True
    # Never repeat a word trigram within a caption ("in front of a building in front of
    # a building"): beam search bans the word that would complete a seen trigram.
    block_repeated_trigrams: bool = False
    # Never say the same word twice in a row ("a large large building"): beam search bans
    # the previous word at each step.
    block_repeated_words: bool = False
    # The decoder's per-step matrix products when decoding: "float32", or "bfloat16"
    # (weights and step inputs rounded to bfloat16, products accumulated in float32:
    # half the bytes a step reads, about 2x faster on CPUs with AVX512-BF16 and on GPUs;
    # scores move by ~1e-2, so a few captions change). Training always runs in float32.
    matmul_dtype: str = "float32"
    # Training
    attention_penalty: float = 1.0   # doubly-stochastic regulariser (lambda in SAT)
    label_smoothing: float = 0.0
    learning_rate: float = 4e-4
    batch_size: int = 64             # caption sequences per step
    epochs: int = 10
    patience: int = 3
    min_word_count: int = 3
    seed: int = 1
    # Seed of the validation carve-out (-1: `seed`). Runs meant to be ensembled should
    # share it, so their common validation images are unseen by every member.
    split_seed: int = -1
    # Concept-input training: the share of image captions whose feature grid is zeroed
    # (the decoder must also caption from concepts alone, as it does for text-only
    # captions), and the share of a text-only caption's named concepts hidden from its
    # concept vector (a classifier misses things). text_per_image: text-only captions
    # drawn afresh each epoch per image caption (0: every text caption, every epoch) —
    # how much of an epoch is text.
    grid_dropout: float = 0.25
    text_concept_drop: float = 0.25
    text_per_image: float = 0.0

    @property
    def validation_seed(self) -> int:
        return self.seed if self.split_seed < 0 else self.split_seed

    @property
    def grid_cells(self) -> int:
        return self.grid * self.grid

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)
