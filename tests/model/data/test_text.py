"""altbeam.model.data.text: the caption normalisation the vocabulary and the simple tokenizer rely on."""
from __future__ import annotations

import pytest

from altbeam.model.data.text import clean_caption, tokenize


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        # Real Flickr8k captions (Flickr8k.token.txt spelling: detached punctuation and clitics).
        ("A child in a pink dress is climbing up a set of stairs in an entry way .",
         "a child in a pink dress is climbing up a set of stairs in an entry way"),
        ("A black dog and a tri-colored dog playing with each other on the road .",
         "a black dog and a tri colored dog playing with each other on the road"),
        ("A dog 's toy", "a dogs toy"),
        ("The dog's toy!", "the dogs toy"),
        ("They 're running , but I do n't know", "theyre running but i dont know"),
        ("Two dogs\u2019 toys", "two dogs toys"),
        # Numbers stay as written, as words of their own.
        ("3 dogs at the 2nd gate, no. 42", "3 dogs at the 2nd gate no 42"),
        # Unicode letters survive; NFKC folds look-alikes and odd spaces.
        ("Café\u00a0 NAÏVE", "café naïve"),
        ("ＡＢＣ ﬁsh", "abc fish"),
        ('"Quoted" (bracketed) snake_case', "quoted bracketed snake case"),
        ("  \t\n ", ""),
        ("...", ""),
    ],
)
def test_clean_caption(raw, clean):
    assert clean_caption(raw) == clean


def test_clean_caption_is_idempotent():
    for raw in ["A dog 's toy .", "Tri-colored, 3 dogs!", "Café NAÏVE"]:
        once = clean_caption(raw)
        assert clean_caption(once) == once


def test_tokenize_splits_cleaned_words():
    assert tokenize("A man in a red shirt , climbing .") == [
        "a", "man", "in", "a", "red", "shirt", "climbing"
    ]
    assert tokenize("") == []


def test_non_string_is_a_clear_error():
    with pytest.raises(TypeError, match="caption must be a str"):
        clean_caption(None)  # type: ignore[arg-type]
