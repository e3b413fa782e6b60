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
- `ConceptCaptionIndex` / `concept_retrieval_captions`: the concepts-only retrieval
  baseline of issue 17 — no pixels beyond the CNN's concept scores, no decoder. A
  text-only corpus is grouped by the set of concepts each caption names
  (model/data/concepts.py, person kinds as person: caption_status.judged_as). For an
  image, each group scores the sum over its concepts of: the concept's score minus
  `present_above` when the CNN can judge it (so a confident concept adds, one scored
  low or not among the top T subtracts: a contradicted object costs most), and minus
  `unjudged_penalty` when it cannot (no ImageNet class or detector: unsupported).
  The best group wins, ties to the larger (more typical) group; its caption is the
  group's consensus (`expected_bleu_consensus`, the measure of `most_common_caption`).
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from altbeam.model.data.concepts import concepts_in_caption
from altbeam.model.data.text import clean_caption
from altbeam.model.serving.caption_status import covered_concepts, judged_as, keywords


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
    return expected_bleu_consensus(cleaned)


def expected_bleu_consensus(cleaned: Sequence[str]) -> str:
    """Of non-empty cleaned captions, the one whose n-grams the others share most: the
    expected BLEU-4 of `most_common_caption` (linear in the captions, not quadratic)."""
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


@dataclass(frozen=True)
class RetrievalWeights:
    """How `ConceptCaptionIndex` scores a caption against an image's concept scores.

    Fixed by reasoning, not tuned on any dev set: `present_above` sits between the
    gate's `contradict_below` (0.05) and `confident` (0.3), so a concept the CNN is
    lukewarm about adds little either way; an object the CNN cannot judge costs less
    than one it scores 0, since it may well be there (captions name shirts and flags).
    """

    present_above: float = 0.2    # a named, judgeable concept adds (its score - this)
    unjudged_penalty: float = 0.1  # a named concept the CNN cannot judge subtracts this


class ConceptCaptionIndex:
    """Text-only captions grouped by the concepts they name, for concepts-only retrieval
    (see the module docstring).

    captions: (image id, caption) pairs; every caption of an id in `exclude` is left out
    (the photos a score is reported on). covered: the concepts the CNN can judge
    (default: caption_status.covered_concepts(), the bundled model's).
    """

    def __init__(self, captions: Iterable[tuple[str, str]], exclude: Iterable[str] = (),
                 covered: Iterable[str] | None = None):
        excluded = set(exclude)
        groups: dict[tuple[str, ...], list[str]] = {}
        for image_id, caption in captions:
            cleaned = clean_caption(caption)
            if image_id in excluded or not cleaned:
                continue
            groups.setdefault(named_concepts(cleaned), []).append(cleaned)
        if not groups:
            raise ValueError("no captions left to retrieve from")
        self.keys = sorted(groups)   # sorted: ties between equal groups go to the first
        self._captions = [groups[k] for k in self.keys]
        self.sizes = np.array([len(c) for c in self._captions])
        self.vocabulary = sorted({c for k in self.keys for c in k})
        column = {c: i for i, c in enumerate(self.vocabulary)}
        self._membership = np.zeros((len(self.keys), len(self.vocabulary)), np.float32)
        for g, key in enumerate(self.keys):
            self._membership[g, [column[c] for c in key]] = 1.0
        self.covered = frozenset(covered_concepts() if covered is None else covered)
        self._judgeable = np.array([c in self.covered for c in self.vocabulary], bool)
        self._consensus: dict[int, str] = {}

    def __len__(self) -> int:
        return int(self.sizes.sum())

    def group_scores(self, concepts: Sequence, concept_scores: Sequence[float],
                     weights: RetrievalWeights = RetrievalWeights()) -> np.ndarray:
        """[groups] score of each concept group for one image's concepts (top T, any
        order, bytes decoded; a concept not listed scores 0)."""
        seen: dict[str, float] = {}
        for word, score in zip(*keywords(concepts, concept_scores, min_score=-np.inf)):
            seen[judged_as(word)] = max(score, seen.get(judged_as(word), 0.0))
        present = np.array([seen.get(c, 0.0) for c in self.vocabulary], np.float32)
        per_concept = np.where(self._judgeable, present - weights.present_above,
                               -weights.unjudged_penalty)
        return self._membership @ per_concept

    def retrieve(self, concepts: Sequence, concept_scores: Sequence[float],
                 weights: RetrievalWeights = RetrievalWeights()) -> str:
        """The best-matching caption (cleaned) for one image's concepts."""
        scores = self.group_scores(concepts, concept_scores, weights)
        tied = np.flatnonzero(scores >= scores.max() - 1e-6)
        best = int(tied[np.argmax(self.sizes[tied])])   # argmax: the first of equal sizes
        if best not in self._consensus:
            self._consensus[best] = expected_bleu_consensus(self._captions[best])
        return self._consensus[best]


def named_concepts(caption: str) -> tuple[str, ...]:
    """The distinct concepts a caption names, person kinds as person, sorted."""
    return tuple(sorted({judged_as(c) for c in concepts_in_caption(caption)}))


def concept_retrieval_captions(index: ConceptCaptionIndex, concepts: np.ndarray,
                               concept_scores: np.ndarray,
                               weights: RetrievalWeights = RetrievalWeights()) -> list[str]:
    """For each image (rows of the model's `concepts` [N, T] and `concept_scores`
    [N, T] outputs), the best-matching caption of the index."""
    if len(concepts) != len(concept_scores):
        raise ValueError(f"{len(concepts)} concept rows but {len(concept_scores)} score rows")
    return [index.retrieve(c, s, weights) for c, s in zip(concepts, concept_scores)]
