"""Reference points for the model's scores: a constant caption and nearest-neighbour retrieval.

Both work on cleaned text (model.text.clean_caption) and return cleaned captions;
the metrics lower-case and drop punctuation anyway.

- `most_common_caption`: the one training caption that would score best if it were
  given to every image. Exact repeats are rare in captions, so "most frequent" alone
  picks noise; instead each distinct caption is scored by the BLEU-4 it would get
  against the training captions as a whole: for n = 1..4, the mean fraction of
  training captions that contain each of its n-grams (an expected n-gram precision),
  combined as a geometric mean and times BLEU's brevity penalty against the median
  caption length (so "a dog" cannot win on precision alone). Ties go to the more
  frequent, then the alphabetically first caption.
- `nearest_neighbour_captions`: the "NN" baseline of Devlin et al. 2015 ("Exploring
  Nearest Neighbor Approaches for Image Captioning"): find the training image(s)
  whose pooled encoder features are most cosine-similar to the query's, pool their
  captions, and return the consensus caption — the one with the highest mean
  smoothed sentence BLEU-4 against the other pooled captions. With k=1 (the default)
  that is the most representative caption of the single nearest image.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from altbeam.model.data.text import clean_caption


def _ngrams(words: Sequence[str], n: int) -> Counter:
    return Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def most_common_caption(train: Iterable) -> str:
    """The training caption with the highest consensus (see the module docstring).

    train: CaptionedImage items (anything with a `captions` list of strings).
    """
    cleaned = [clean_caption(c) for item in train for c in item.captions]
    cleaned = [c for c in cleaned if c]
    if not cleaned:
        raise ValueError("most_common_caption needs at least one non-empty training caption")
    frequency = Counter(cleaned)
    tokens = {caption: caption.split() for caption in frequency}
    # Document frequency of every n-gram: in how many training captions it appears.
    doc_freq: Counter = Counter()
    for caption, count in frequency.items():
        for n in range(1, 5):
            for gram in _ngrams(tokens[caption], n):
                doc_freq[gram] += count
    total = len(cleaned)
    median_len = sorted(len(tokens[c]) for c in cleaned)[total // 2]

    def consensus(caption: str) -> float:
        words = tokens[caption]
        log_precision = 0.0
        for n in range(1, 5):
            grams = _ngrams(words, n)
            if not grams:
                return 0.0  # shorter than 4 words: BLEU-4 is 0
            hits = sum(doc_freq[g] * c for g, c in grams.items()) / total
            log_precision += math.log(hits / sum(grams.values())) / 4
        brevity = min(1.0, math.exp(1 - median_len / len(words)))
        return brevity * math.exp(log_precision)

    return max(frequency, key=lambda c: (consensus(c), frequency[c], _reverse_order(c)))


def _reverse_order(text: str) -> tuple[int, ...]:
    """A key under which max() prefers the alphabetically first string."""
    return tuple(-ord(ch) for ch in text)


def sentence_bleu(hypothesis: Sequence[str], references: Sequence[Sequence[str]], max_n: int = 4) -> float:
    """Smoothed sentence BLEU (add-one on n >= 2, Lin & Och 2004) of token lists."""
    if not hypothesis or not references:
        return 0.0
    log_total = 0.0
    for n in range(1, max_n + 1):
        hyp = _ngrams(hypothesis, n)
        best: Counter = Counter()
        for ref in references:
            best |= _ngrams(ref, n)  # clip each n-gram at its largest count in one reference
        matched = sum(min(c, best[g]) for g, c in hyp.items())
        guessed = sum(hyp.values())
        if n == 1 and matched == 0:
            return 0.0
        smooth = 0 if n == 1 else 1
        log_total += math.log((matched + smooth) / (guessed + smooth)) / max_n
    closest = min((abs(len(r) - len(hypothesis)), len(r)) for r in references)[1]
    brevity = min(1.0, math.exp(1 - closest / len(hypothesis)))
    return brevity * math.exp(log_total)


def consensus_caption(captions: Sequence[str]) -> str:
    """The caption with the highest mean sentence BLEU against the others (cleaned)."""
    cleaned = [clean_caption(c) for c in captions]
    cleaned = [c for c in cleaned if c] or cleaned
    if not cleaned:
        raise ValueError("consensus_caption needs at least one caption")
    if len(cleaned) == 1:
        return cleaned[0]
    tokens = [c.split() for c in cleaned]
    scores = [
        sum(sentence_bleu(tokens[i], [tokens[j]]) for j in range(len(tokens)) if j != i)
        for i in range(len(tokens))
    ]
    return cleaned[int(np.argmax(scores))]


def _unit_rows(features: np.ndarray, name: str) -> np.ndarray:
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2:
        raise ValueError(f"{name} must be a 2-D [images, dims] array, got shape {features.shape}")
    if not np.isfinite(features).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, 1e-12)  # a zero row stays zero: similarity 0 to all


def nearest_neighbour_captions(
    train_features: np.ndarray,
    train_captions: list[list[str]],
    query_features: np.ndarray,
    k: int = 1,
    batch_size: int = 1024,
) -> list[str]:
    """For each query image, the consensus caption of its k most cosine-similar training images.

    train_features [n, d] and query_features [m, d]: pooled encoder features (e.g. the
    mean of the spatial grid). train_captions: n lists of captions, aligned with the
    rows of train_features. Ties go to the lower training index. Returns m cleaned
    captions.
    """
    train = _unit_rows(train_features, "train_features")
    query = _unit_rows(query_features, "query_features")
    if len(train_captions) != train.shape[0]:
        raise ValueError(
            f"train_captions has {len(train_captions)} entries for {train.shape[0]} feature rows"
        )
    if train.shape[0] == 0:
        raise ValueError("no training images to retrieve from")
    if query.shape[1] != train.shape[1]:
        raise ValueError(f"feature sizes differ: train {train.shape[1]}, query {query.shape[1]}")
    empty = [i for i, caps in enumerate(train_captions) if not caps]
    if empty:
        raise ValueError(f"training images without captions at rows {empty[:5]}")
    k = max(1, min(k, train.shape[0]))
    result: list[str] = []
    cache: dict[tuple[int, ...], str] = {}
    for start in range(0, query.shape[0], batch_size):
        similarity = query[start:start + batch_size] @ train.T
        # Stable sort on -similarity: highest first, ties by lower index.
        nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
        for row in nearest:
            key = tuple(int(i) for i in row)
            if key not in cache:
                cache[key] = consensus_caption([c for i in key for c in train_captions[i]])
            result.append(cache[key])
    return result
