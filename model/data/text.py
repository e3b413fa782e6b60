"""Caption text normalisation shared by the vocabulary, the datasets and the metrics.

Pure Python (no TensorFlow) so it is cheap to import anywhere. The rules are
deliberately simple and stable: changing them changes the model's vocabulary, so a
trained model's `model_card.json` only stays valid while these functions do not move.

`clean_caption` rules, in order:
1. Unicode NFKC normalisation (full-width letters, ligatures, non-breaking spaces).
2. Lower-case.
3. Apostrophes are deleted, first re-attaching a detached clitic, so the Flickr8k
   spelling "dog 's ball" and the plain "dog's ball" both become "dogs ball"
   (what Karpathy's split files do); "don't" -> "dont".
4. Every other non-letter, non-digit character (punctuation, symbols, `_`) becomes a
   space, so "tri-colored" -> "tri colored" and "dog." -> "dog".
5. Numbers are kept as written, as their own words: "3 dogs" -> "3 dogs",
   "3rd" -> "3rd" (not spelled out; digits are rare in captions and spelling them
   out would be a guess).
6. Whitespace is collapsed to single spaces and stripped.
Letters outside ASCII are kept ("café" stays "café").
"""
from __future__ import annotations

import re
import unicodedata

# Straight and typographic apostrophes / single quotes.
_APOSTROPHES = "'\u2019\u2018\u02bc`\u00b4"
# A clitic split off by Flickr8k-style tokenisation: "dog 's", "they 're", "do n't".
_DETACHED_CLITIC = re.compile(
    r"(\w)\s+([" + _APOSTROPHES + r"](?:s|re|ve|ll|d|m|t)\b|n[" + _APOSTROPHES + r"]t\b)"
)
_APOSTROPHE = re.compile("[" + _APOSTROPHES + "]")
# Anything that is not a letter or digit (\w minus the underscore).
_NON_WORD = re.compile(r"[\W_]+")


def clean_caption(text: str) -> str:
    """Normalise one caption: lower-case words and numbers separated by single spaces."""
    if not isinstance(text, str):
        raise TypeError(f"caption must be a str, got {type(text).__name__}: {text!r}")
    text = unicodedata.normalize("NFKC", text).lower()
    text = _DETACHED_CLITIC.sub(r"\1\2", text)
    text = _APOSTROPHE.sub("", text)
    text = _NON_WORD.sub(" ", text)
    return " ".join(text.split())


def tokenize(text: str) -> list[str]:
    """The words of `clean_caption(text)`."""
    return clean_caption(text).split()
