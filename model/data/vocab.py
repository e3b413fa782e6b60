"""Caption vocabulary: words seen at least `min_count` times, plus four specials."""
from __future__ import annotations

import collections
import json
from collections.abc import Iterable

from altbeam.model.data.text import tokenize

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = (PAD, START, END, UNK)
PAD_ID, START_ID, END_ID, UNK_ID = range(4)


class Vocabulary:
    """Bidirectional word <-> id map; ids 0..3 are <pad> <start> <end> <unk>."""

    def __init__(self, words: Iterable[str]):
        words = list(words)
        if tuple(words[:4]) != SPECIALS:
            raise ValueError(f"vocabulary must start with {SPECIALS}, got {words[:4]}")
        self.words = words
        self.index = {w: i for i, w in enumerate(words)}

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 3) -> Vocabulary:
        counts = collections.Counter(w for c in captions for w in tokenize(c))
        kept = sorted((w for w, n in counts.items() if n >= min_count),
                      key=lambda w: (-counts[w], w))
        return cls(list(SPECIALS) + kept)

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, caption: str, max_length: int | None = None) -> list[int]:
        """<start> w1 .. wn <end>, unknown words as <unk>, truncated to max_length words."""
        ids = [self.index.get(w, UNK_ID) for w in tokenize(caption)]
        if max_length is not None:
            ids = ids[:max_length - 1]
        return [START_ID] + ids + [END_ID]

    def decode(self, ids: Iterable[int]) -> str:
        out = []
        for i in ids:
            if i == END_ID:
                break
            if i in (PAD_ID, START_ID):
                continue
            out.append(self.words[i])
        return " ".join(out)

    def save(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"words": self.words}, f, ensure_ascii=False)

    @classmethod
    def load(cls, path: str) -> Vocabulary:
        with open(path, encoding="utf-8") as f:
            return cls(json.load(f)["words"])
