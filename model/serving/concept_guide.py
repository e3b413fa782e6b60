"""Concept-guided decoding: the concept head's scores steer the in-graph beam search.

Training-free, at export (`altbeam export --concept-decoding`), inside the SavedModel:

* ``bias`` (after the soft variant of Anderson et al. 2017's constrained beam search):
  at every step each vocabulary word that names a concept the head can judge (through
  the concept table, model/data/concept_words.tsv; person words as a person, as the
  caption gate judges them: caption_status.judged_as) gets, on its logit,

      bias(s) = alpha * log(max(s, eps) / tau)   if s < tau   (a penalty: contradicted)
              = boost * log(s / tau)              if s >= tau  (a reward: confident)

  with s the word's concept score for the image (all T concepts, not only the top K
  returned). The search then takes the log-softmax of the biased logits, so the mass a
  contradicted word loses goes to the others. Why a threshold rather than
  ``alpha * log(s)`` everywhere: ImageNet-summed scores are low for anything small or
  off-centre (a dog in the background may score 0.05), so a log-linear bias across the
  whole range would push captions toward the one centred object; below ``tau`` the CNN
  says "not there" clearly enough (the gate's contradict_below is 0.05).
* ``transfer`` (Hendricks et al. 2016, DCC, direct transfer): ``bias`` plus novel words
  appended to the output vocabulary (model/data/transfer_templates.tsv): each novel
  word's logit is its template's logit (the same output row and bias) and, fed back,
  it reads the template's embedding. The bias then separates the twins: where "bear"
  scores high and "dog" low, "bear" wins; where neither is confident, both are
  penalised equally and the template wins the tie (it has the lower id). With the
  ensemble the copy is taken of the mixed distribution (one row per word) rather than of
  each member, which is the same for a single decoder.

Words that name no concept, or one the head cannot judge, are never biased; nor are
"orange" and "glass", which a caption mostly uses as a colour or material.
"""
from __future__ import annotations

import csv
import math
import pathlib
import sys
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

# The caption reader's words that also name a colour or material ("orange shirt",
# "glass bowl"): as a single decoder word they are mostly the modifier, never biased.
from altbeam.model.data.caption_terms import _MODIFIER_HOMONYMS as MODIFIER_HOMONYMS
from altbeam.model.data.caption_terms import plural_forms
from altbeam.model.data.concepts import CONCEPT_INDEX, CONCEPTS, concept_table
from altbeam.model.serving.caption_status import covered_concepts, judged_as

MODES = ("none", "bias", "transfer")
TEMPLATES_TSV = pathlib.Path(__file__).parents[1] / "data" / "transfer_templates.tsv"


def read_templates(path: str | pathlib.Path = TEMPLATES_TSV) -> list[tuple[str, str]]:
    """(novel word, template word) rows of a template table, singular, in file order."""
    rows = []
    with open(path, encoding="utf-8", newline="") as f:
        for n, row in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
            if not row or row[0].startswith("#"):
                continue
            if len(row) != 2 or not all(w and " " not in w for w in row):
                raise ValueError(f"{path}:{n}: expected 'novel<TAB>template' (one word each)")
            rows.append((row[0], row[1]))
    return rows


def judged_concept(word: str, covered: frozenset[str]) -> str | None:
    """The concept whose score judges ``word``, or None (no concept, or one not covered)."""
    concept = concept_table().term_of(word)
    if not concept or word in MODIFIER_HOMONYMS:
        return None
    concept = judged_as(concept)
    return concept if concept in covered else None


def transfer_pairs(words: Sequence[str], templates: Sequence[tuple[str, str]],
                   covered: frozenset[str]) -> list[tuple[str, int]]:
    """(novel word form, template id) to append: singular with singular, plural with
    plural, for forms the vocabulary lacks whose template form it has and whose concept
    the head judges."""
    index = {w: i for i, w in enumerate(words)}
    pairs: list[tuple[str, int]] = []
    seen = set(words)
    for novel, template in templates:
        forms = [(novel, template)] + list(zip(plural_forms(novel)[:1], plural_forms(template)))
        for form, template_form in forms:
            if form in seen or template_form not in index or \
                    judged_concept(form, covered) is None:
                continue
            pairs.append((form, index[template_form]))
            seen.add(form)
    return pairs


class ConceptGuide(tf.Module):
    """The per-step pieces beam search calls (module docstring): `bias`, `extend`, `fed`."""

    def __init__(self, words: Sequence[str], covered: frozenset[str], mode: str = "bias",
                 alpha: float = 1.0, boost: float = 0.0, threshold: float = 0.05,
                 eps: float = 1e-4, templates: Sequence[tuple[str, str]] | None = None,
                 templates_source: str = "", name: str = "concept_guide"):
        super().__init__(name=name)
        if mode not in MODES[1:]:
            raise ValueError(f"mode={mode!r}: a guide is one of {', '.join(MODES[1:])}")
        if not 0 < eps < threshold <= 1:
            raise ValueError(f"need 0 < eps < threshold <= 1, got eps={eps}, "
                             f"threshold={threshold}")
        self.mode, self.alpha, self.boost = mode, float(alpha), float(boost)
        self.threshold, self.eps = float(threshold), float(eps)
        self.vocab_size = len(words)
        pairs = transfer_pairs(words, templates if templates is not None
                               else read_templates(), covered) if mode == "transfer" else []
        self.novel = [w for w, _ in pairs]
        self.templates_source = templates_source or (TEMPLATES_TSV.name if pairs else "")
        concept_ids = [CONCEPT_INDEX.get(judged_concept(w, covered), -1) for w in
                       list(words) + self.novel]
        self.judged_words = sum(c >= 0 for c in concept_ids)
        # -1: the word is never biased.
        self.word_concept = tf.Variable(np.array(concept_ids, np.int32), trainable=False,
                                        name="word_concept")
        self.template_ids = tf.Variable(np.array([t for _, t in pairs], np.int32).reshape(-1),
                                        trainable=False, name="template_ids")
        self.novel_words = tf.Variable(np.array(self.novel, dtype=object).astype(bytes)
                                       if pairs else tf.zeros([0], tf.string),
                                       dtype=tf.string, trainable=False, name="novel_words")

    @property
    def extended_size(self) -> int:
        return self.vocab_size + len(self.novel)

    def bias(self, scores):
        """[N, T] concept scores -> [N, V + X] additive logit bias (module docstring)."""
        judged = self.word_concept >= 0
        s = tf.gather(scores, tf.maximum(self.word_concept, 0), axis=1)
        log_ratio = tf.math.log(tf.maximum(s, self.eps)) - math.log(self.threshold)
        slope = tf.where(log_ratio < 0, self.alpha, self.boost)
        return tf.where(judged[None], slope * log_ratio, 0.0)

    def extend(self, logits):
        """[R, V] decoder logits -> [R, V + X]: each novel word a copy of its template."""
        if not self.novel:
            return logits
        return tf.concat([logits, tf.gather(logits, self.template_ids, axis=1)], axis=1)

    def fed(self, last):
        """[R] word ids of the extended vocabulary -> what the decoder reads (a novel
        word reads as its template)."""
        if not self.novel:
            return last
        novel = last >= self.vocab_size
        template = tf.gather(self.template_ids, tf.maximum(last - self.vocab_size, 0))
        return tf.where(novel, template, last)

    def words(self, words):
        """The decoder's words [V] -> the extended lookup table [V + X]."""
        return tf.concat([words, self.novel_words], 0) if self.novel else words

    def an_words(self) -> list[str]:
        """Novel words that take "an": the decoder learned "a" before their template."""
        return [w for w in self.novel if w[0] in "aeiou"]

    def settings(self) -> dict:
        """What re-export needs to build the same guide (`guide_from_settings`)."""
        return {"mode": self.mode, "alpha": self.alpha, "boost": self.boost,
                "threshold": self.threshold, "eps": self.eps}

    def describe(self) -> dict:
        """The model card's record."""
        card = {**self.settings(), "judged_words": self.judged_words,
                "rule": "logit += alpha*log(max(s,eps)/threshold) below threshold, "
                        "boost*log(s/threshold) at or above, s the score of the concept "
                        "the word names (person words: person)"}
        if self.mode == "transfer":
            card["transfer"] = {"templates": self.templates_source,
                                "novel_words": len(self.novel), "words": list(self.novel)}
        return card


def guide_for(mode: str | None, words: Sequence[str], concept_head, **settings):
    """The guide ``mode`` asks for over ``words``, judged by ``concept_head`` (its
    ImageNet map and detectors), or None for "none"/None."""
    if mode in (None, "none"):
        return None
    if concept_head is None:
        raise ValueError("--concept-decoding needs a concept head (--concepts)")
    detectors = concept_head.detectors.concepts if concept_head.detectors is not None else ()
    templates_path = settings.pop("templates", None)
    templates = read_templates(templates_path) if templates_path else None
    source = pathlib.Path(templates_path).name if templates_path else ""
    settings = {k: v for k, v in settings.items() if v is not None}
    return ConceptGuide(words, covered_concepts(detectors), mode, templates=templates,
                        templates_source=source, **settings)


def main(argv) -> int:
    """Candidates for the template table: concepts ``MODEL`` can judge but not say."""
    import json

    card = json.load(open(pathlib.Path(argv[0]) / "model_card.json"))
    reader = tf.train.load_checkpoint(str(pathlib.Path(argv[0]) / "variables" / "variables"))
    words = {w.decode() for w in reader.get_tensor("words/.ATTRIBUTES/VARIABLE_VALUE")}
    detectors = (((card.get("concept_head") or {}).get("sources") or {}).get("detectors")
                 or {}).get("concepts") or ()
    for concept in CONCEPTS:
        if concept in covered_concepts(detectors) and concept not in words \
                and " " not in concept:
            print(concept)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
