"""Find known terms (object names and their synonyms) in caption text.

One rule for every place that asks "which things does this caption name": the
hallucination metric (model/evaluation/chair.py, COCO's 80 objects) and the concept
vocabulary (model/data/concepts.py, the targets of concept detectors). Each passes its
own table of terms; the reading of the text is the same. Pure Python, no TensorFlow.

How a caption is read, in order:
1. `text.clean_caption`: lower-case words, punctuation gone ("hot-dog" -> "hot dog",
   "tv's" -> "tvs").
2. Surface forms: every synonym in a table is written singular; its plural forms are
   generated (`plural_forms`, regular rules plus an irregular list: men, children,
   people, knives, geese, …). A form written explicitly in the table wins over a
   generated plural of another term ("glasses" may be eyewear, not two glasses).
3. Longest match first, left to right: "hot dog" is read before "dog", "teddy bear"
   before "bear", "toilet bowl" before "bowl". A table may list *blockers*: phrases
   that contain a term's word but name nothing ("bus stop", "flower bed"); they are
   consumed and yield nothing.
4. Qualifiers: "baby", "adult", "mother", "passenger" directly before another term
   modify it and name nothing themselves: "baby elephant" is an elephant, "passenger
   train" a train, not a person (the rule of Rohrbach et al. 2018's CHAIR code).
5. Modifier homonyms: singular "orange" or "glass" directly before a word that is not
   a function word reads as a colour or material ("orange cat", "orange and white
   cat", "glass bowl"), not the thing ("an orange", "orange slices", "an orange on a
   plate", "oranges", "a glass of wine").
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from altbeam.model.data.text import tokenize

_VOWELS = "aeiou"
# Plurals that the suffix rules get wrong; an empty tuple means "no plural form".
_IRREGULAR_PLURALS: dict[str, tuple[str, ...]] = {
    "person": ("people", "persons"), "man": ("men",), "woman": ("women",),
    "gentleman": ("gentlemen",), "policeman": ("policemen",), "fisherman": ("fishermen",),
    "businessman": ("businessmen",), "child": ("children",), "mouse": ("mice",),
    "goose": ("geese",), "ox": ("oxen",), "tooth": ("teeth",), "foot": ("feet",),
    "sheep": ("sheep",), "deer": ("deer",), "fish": ("fish", "fishes"), "bison": ("bison",),
    "moose": ("moose",), "cattle": (), "people": (), "scissors": (), "skis": (),
    "luggage": (), "broccoli": (), "knife": ("knives",), "calf": ("calves",),
    "wolf": ("wolves",), "leaf": ("leaves",), "shelf": ("shelves",), "loaf": ("loaves",),
    "half": ("halves",), "scarf": ("scarves", "scarfs"), "wife": ("wives",),
    "bus": ("buses", "busses"), "cactus": ("cacti", "cactuses"), "octopus": ("octopuses",),
    "hippopotamus": ("hippopotamuses", "hippopotami"), "jeans": (), "glasses": (),
    "sunglasses": (), "goggles": (), "pants": (), "shorts": (),
}
_QUALIFIERS = frozenset({"baby", "babies", "adult", "adults", "mother", "mothers",
                         "passenger", "passengers"})
# Words that also name a colour or material when they modify the next noun.
_MODIFIER_HOMONYMS = frozenset({"orange", "glass"})
_COLOURS = frozenset({
    "white", "black", "red", "blue", "green", "yellow", "brown", "grey", "gray", "pink",
    "purple", "orange", "tan", "silver", "gold", "beige",
})
# Words after which a modifier homonym is still the thing itself ("an orange on a plate").
_NOT_MODIFIED = frozenset({
    "a", "an", "the", "on", "in", "at", "by", "with", "next", "near", "of", "from", "to",
    "into", "onto", "under", "beside", "behind", "inside", "for", "that", "which", "is",
    "are", "was", "were", "has", "have", "sits", "lies", "slice", "wedge", "peel", "half",
    "segment", "tree", "juice", "rind", "slices", "wedges", "peels", "halves", "segments",
    "trees", "rinds",
})


def plural_forms(word: str) -> tuple[str, ...]:
    """The plural spellings of an English noun (singular in): 'bus' -> ('buses', 'busses')."""
    if word in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[word]
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return (word + "es",)
    if word.endswith("y") and len(word) > 1 and word[-2] not in _VOWELS:
        return (word[:-1] + "ies",)
    if word.endswith("o") and len(word) > 1 and word[-2] not in _VOWELS:
        return (word + "s", word + "es")  # both are written: "avocados", "tomatoes"
    return (word + "s",)


def surface_forms(phrase: str) -> tuple[str, ...]:
    """A singular phrase and its plurals (the last word inflects): 'hot dog' -> … 'hot dogs'."""
    words = phrase.split()
    if not words:
        raise ValueError("a term must have at least one word")
    head = " ".join(words[:-1])
    return (phrase,) + tuple(f"{head} {p}".strip() for p in plural_forms(words[-1]))


@dataclass(frozen=True)
class TermMention:
    """One place a caption names a term: the words as cleaned, the term, the word index."""

    words: str
    term: str
    start: int


class TermTable:
    """Terms (canonical name -> singular surface phrases) and blockers, read as above."""

    def __init__(self, terms: Mapping[str, Iterable[str]], blockers: Iterable[str] = ()):
        explicit: dict[str, str] = {}  # surface -> term ("" for a blocker)
        for term, phrases in terms.items():
            for phrase in (term, *phrases):
                _claim(explicit, _normal(phrase), term)
        for phrase in blockers:
            _claim(explicit, _normal(phrase), "")
        forms = dict(explicit)
        for phrase, term in explicit.items():
            for plural in surface_forms(phrase)[1:]:
                if plural not in explicit:  # an explicit form wins over a generated plural
                    _claim(forms, plural, term, generated=True)
        self.terms: tuple[str, ...] = tuple(terms)
        self._forms = {tuple(form.split()): term for form, term in forms.items()}
        self._longest = max((len(k) for k in self._forms), default=0)

    def term_of(self, phrase: str) -> str | None:
        """The term an exact phrase (any surface form) names; None if none ("" a blocker)."""
        return self._forms.get(tuple(tokenize(phrase)))

    def surface_of(self, term: str) -> list[str]:
        """Every surface form (singular and plural) that reads as `term`."""
        return sorted(" ".join(k) for k, t in self._forms.items() if t == term)

    def mentions(self, text: str) -> list[TermMention]:
        """Every place the text names a term, in order (a term named twice counts twice)."""
        words = tokenize(text)
        found: list[TermMention] = []
        i = 0
        while i < len(words):
            match = self._match_at(words, i)
            if match is None:
                i += 1
                continue
            length, term = match
            end = i + length
            if term and not self._is_qualifier(words, i, length) \
                    and not _reads_as_modifier(words, i, length):
                found.append(TermMention(" ".join(words[i:end]), term, i))
            i = end
        return found

    def names(self, text: str) -> list[str]:
        """The distinct terms the text names, in order of first mention."""
        return list(dict.fromkeys(m.term for m in self.mentions(text)))

    def _match_at(self, words: list[str], i: int) -> tuple[int, str] | None:
        for length in range(min(self._longest, len(words) - i), 0, -1):
            term = self._forms.get(tuple(words[i:i + length]))
            if term is not None:
                return length, term
        return None

    def _is_qualifier(self, words: list[str], i: int, length: int) -> bool:
        if length != 1 or words[i] not in _QUALIFIERS:
            return False
        following = self._match_at(words, i + 1)
        return following is not None and bool(following[1])


BLOCKER_ROW = "-"  # a table row of phrases that name nothing


def read_term_table(path: str | os.PathLike) -> TermTable:
    """A TermTable from a committed TSV: `term<TAB>synonym, synonym, …` per line.

    The term itself is a surface form too; `#` starts a comment line; a row whose term
    is "-" lists blockers. Terms keep the file's order.
    """
    terms: dict[str, list[str]] = {}
    blockers: list[str] = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip() or line.startswith("#"):
                continue
            term, _, synonyms = line.rstrip("\n").partition("\t")
            phrases = [s.strip() for s in synonyms.split(",") if s.strip()]
            if term == BLOCKER_ROW:
                blockers += phrases
            elif term in terms or not term.strip():
                raise ValueError(f"{path}:{number}: term {term!r} is empty or repeated")
            else:
                terms[term] = phrases
    return TermTable(terms, blockers)


def _reads_as_modifier(words: list[str], i: int, length: int) -> bool:
    """'orange cat', 'orange and white cat', 'glass bowl': a colour or material."""
    if length != 1 or words[i] not in _MODIFIER_HOMONYMS or i + 1 >= len(words):
        return False
    after = words[i + 1]
    if after in ("and", "or"):
        return i + 2 < len(words) and words[i + 2] in _COLOURS
    return after not in _NOT_MODIFIED and not after.endswith("ing")


def _normal(phrase: str) -> str:
    normal = " ".join(tokenize(phrase))
    if not normal:
        raise ValueError(f"empty term phrase: {phrase!r}")
    return normal


def _claim(forms: dict[str, str], form: str, term: str, generated: bool = False) -> None:
    owner = forms.setdefault(form, term)
    if owner != term:
        kind = "the generated plural" if generated else "the phrase"
        raise ValueError(f"{kind} {form!r} is claimed by both {owner or '(blocker)'!r} "
                         f"and {term or '(blocker)'!r}")
