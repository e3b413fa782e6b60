"""altbeam.model.evaluation.metrics: COCO-tool scores, checked against numbers computed independently here."""
from __future__ import annotations

import json
import math
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from altbeam.model.evaluation import metrics
from altbeam.model.evaluation.metrics import (
    JavaNotFoundError,
    MetricError,
    find_java,
    meteor,
    ptb_tokenize,
    score_captions,
    score_captions_per_image,
)

needs_java = pytest.mark.skipif(find_java() is None, reason="no Java: PTB tokenizer and METEOR skipped")

# Real Flickr8k captions (train split) as references; hypotheses of graded quality.
REFERENCES = {
    "1000268201_693b08cb0e": [
        "A child in a pink dress is climbing up a set of stairs in an entry way .",
        "A girl going into a wooden building .",
        "A little girl climbing into a wooden playhouse .",
        "A little girl climbing the stairs to her playhouse .",
        "A little girl in a pink dress going into a wooden cabin .",
    ],
    "1001773457_577c3a7d70": [
        "A black dog and a spotted dog are fighting",
        "A black dog and a tri-colored dog playing with each other on the road .",
        "A black dog and a white dog with brown spots are staring at each other in the street .",
        "Two dogs of different breeds looking at each other on the road .",
        "Two dogs on pavement moving toward each other .",
    ],
    "1002674143_1b742ab4b8": [
        "A little girl covered in paint sits in front of a painted rainbow with her hands in a bowl .",
        "A little girl is sitting in front of a large painted rainbow .",
        "A small girl in the grass plays with fingerpaints in front of a white canvas with a rainbow on it .",
        "There is a girl with pigtails sitting in front of a rainbow painting .",
        "Young girl with pigtails painting outside in the grass .",
    ],
}
GOOD = {
    "1000268201_693b08cb0e": "A little girl climbing into a wooden playhouse .",  # one of its refs
    "1001773457_577c3a7d70": "two dogs playing on the road",
    "1002674143_1b742ab4b8": "a girl sitting in front of a rainbow painting",
}
# Awkward input the Java tools choke on when fed naively: the METEOR field separator,
# line breaks, non-ASCII, an empty caption.
AWKWARD = {
    "1000268201_693b08cb0e": "a girl ||| in a\npink dress",
    "1001773457_577c3a7d70": "",
    "1002674143_1b742ab4b8": "a naïve girl\u2028painting — outside",
}


@pytest.fixture(scope="module")
def full_scores():
    """PTB + all four scorers, twice at once from two threads (one JVM each)."""
    with ThreadPoolExecutor(2) as pool:
        good = pool.submit(score_captions_per_image, REFERENCES, GOOD)
        awkward = pool.submit(score_captions_per_image, REFERENCES, AWKWARD)
        return good.result(timeout=300), awkward.result(timeout=300)


def test_identical_hypothesis_scores_one():
    refs = {"x": ["a dog runs on the grass"], "y": ["two people ride bikes down a road"]}
    hyps = {"x": "a dog runs on the grass", "y": "two people ride bikes down a road"}
    scores = score_captions(refs, hyps, scorers=("bleu", "rouge"), tokenizer="simple")
    for name in ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L"):
        assert scores[name] == pytest.approx(1.0, abs=1e-6), name


def test_bleu_and_rouge_match_hand_computation():
    # hyp: a dog on the grass (5 words); ref: a dog runs on green grass (6 words).
    refs = {"x": ["A dog runs on green grass."]}
    hyps = {"x": "A dog on the grass"}
    scores = score_captions(refs, hyps, scorers=("bleu", "rouge"), tokenizer="simple")
    brevity = math.exp(1 - 6 / 5)
    p1, p2 = 4 / 5, 1 / 4  # unigrams a,dog,on,grass; bigram "a dog"
    assert scores["BLEU-1"] == pytest.approx(brevity * p1, abs=1e-6)
    assert scores["BLEU-2"] == pytest.approx(brevity * math.sqrt(p1 * p2), abs=1e-6)
    # LCS "a dog on grass" = 4; ROUGE-L F with beta 1.2.
    prec, rec, beta2 = 4 / 5, 4 / 6, 1.2**2
    assert scores["ROUGE-L"] == pytest.approx((1 + beta2) * prec * rec / (rec + beta2 * prec))
    assert list(scores) == ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L"]


def _cider_d(refs: dict[str, list[list[str]]], hyps: dict[str, list[str]]) -> float:
    """CIDEr-D from the paper's definition (Vedantam et al. 2015, coco-caption variant)."""

    def grams(words, n):
        return Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))

    log_n = math.log(len(refs))
    total = 0.0
    for key, hyp in hyps.items():
        per_n = []
        for n in range(1, 5):
            df = Counter(g for rs in refs.values() for g in set().union(*(grams(r, n) for r in rs)))

            def vec(words, n=n, df=df):
                return {g: c * (log_n - math.log(max(1.0, df[g]))) for g, c in grams(words, n).items()}

            vh = vec(hyp)
            norm_h = math.sqrt(sum(v * v for v in vh.values()))
            sims = []
            for ref in refs[key]:
                vr = vec(ref)
                norm_r = math.sqrt(sum(v * v for v in vr.values()))
                dot = sum(min(vh[g], vr.get(g, 0.0)) * vr.get(g, 0.0) for g in vh)
                sim = dot / (norm_h * norm_r) if norm_h and norm_r else 0.0
                sims.append(sim * math.exp(-((len(hyp) - len(ref)) ** 2) / (2 * 6.0**2)))
            per_n.append(sum(sims) / len(sims))
        total += 10.0 * sum(per_n) / 4
    return total / len(hyps)


def test_cider_is_cider_d_as_defined():
    scores = score_captions(REFERENCES, GOOD, scorers=("cider",), tokenizer="simple")
    from altbeam.model.data.text import tokenize

    refs = {k: [tokenize(r) for r in v] for k, v in REFERENCES.items()}
    hyps = {k: tokenize(v) for k, v in GOOD.items()}
    assert scores == {"CIDEr": pytest.approx(_cider_d(refs, hyps), rel=1e-9)}
    assert scores["CIDEr"] > 1.0  # good captions; a mismatched set scores far lower
    shuffled = dict(zip(GOOD, list(GOOD.values())[1:] + list(GOOD.values())[:1]))
    assert score_captions(REFERENCES, shuffled, scorers=("cider",), tokenizer="simple")["CIDEr"] < 0.3


@needs_java
def test_ptb_tokenize_matches_coco_caption_rules():
    out = ptb_tokenize({
        "a": ['A Dog, running on "grass".', "A dog 's toy", ""],
        "b": ["two\nlines\r\nhere", "Café  naïve!", ""],
    })
    assert out == {
        "a": ["a dog running on grass", "a dog 's toy", ""],
        "b": ["two lines here", "café naïve", ""],
    }


@needs_java
def test_full_scores_with_ptb_and_meteor(full_scores):
    (corpus, per_image), _ = full_scores
    assert list(corpus) == list(metrics.METRIC_NAMES)
    exact = per_image["1000268201_693b08cb0e"]  # the hypothesis is one of the references
    assert exact["BLEU-4"] == pytest.approx(1.0, abs=1e-6)
    assert exact["METEOR"] == pytest.approx(1.0)
    assert exact["ROUGE-L"] == pytest.approx(1.0)
    for image_id in ("1001773457_577c3a7d70", "1002674143_1b742ab4b8"):
        assert 0.1 < per_image[image_id]["METEOR"] < exact["METEOR"]
    assert 0.2 < corpus["METEOR"] < 1.0
    # The Java-free path scores these already-clean captions almost identically.
    simple = score_captions(REFERENCES, GOOD, scorers=("bleu", "rouge", "cider"), tokenizer="simple")
    for name, value in simple.items():
        assert value == pytest.approx(corpus[name], abs=0.05), name


@needs_java
def test_awkward_input_is_scored_not_fatal(full_scores):
    _, (corpus, per_image) = full_scores
    assert per_image["1001773457_577c3a7d70"]["METEOR"] == 0.0  # empty hypothesis
    assert per_image["1000268201_693b08cb0e"]["METEOR"] > 0.1
    assert per_image["1002674143_1b742ab4b8"]["METEOR"] > 0.1
    assert all(math.isfinite(v) for v in corpus.values())


def _child_pids() -> set[int]:
    pids = set()
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/children") as f:
            pids.update(int(p) for p in f.read().split())
    return pids


@needs_java
def test_meteor_timeout_stops_the_jvm():
    before = _child_pids()
    start = time.monotonic()
    with pytest.raises(MetricError, match="did not finish within"):
        meteor({"x": ["a dog"]}, {"x": "a dog"}, timeout_s=0.3)
    assert time.monotonic() - start < 10
    assert _child_pids() <= before  # killed and reaped, no zombie JVM left


@needs_java
def test_meteor_reports_a_failing_jvm():
    # An impossible heap size makes the JVM exit at once: the error says so.
    with pytest.raises(MetricError, match="METEOR returned no statistics.*heap"):
        meteor({"x": ["a dog"]}, {"x": "a dog"}, java_heap="1k")


def test_missing_java_is_a_clear_error_unless_simple_is_chosen(monkeypatch):
    for var in ("ALTBEAM_JAVA", "JAVA_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(JavaNotFoundError, match="PTB tokenizer.*tokenizer='simple'"):
        score_captions(REFERENCES, GOOD, scorers=("bleu",))
    with pytest.raises(JavaNotFoundError, match="METEOR"):
        score_captions(REFERENCES, GOOD, tokenizer="simple")
    with pytest.raises(JavaNotFoundError, match="'/no/java' is not an executable"):
        meteor(REFERENCES, GOOD, java="/no/java")
    scores = score_captions(REFERENCES, GOOD, scorers=("bleu", "rouge", "cider"), tokenizer="simple")
    assert set(scores) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr"}


@pytest.mark.parametrize(
    ("refs", "hyps", "message"),
    [
        ({"a": ["x y"]}, {}, "no hypotheses"),
        ({"a": ["x y"], "b": ["z"]}, {"a": "x"}, r"1 references have no hypothesis \(e.g. \['b'\]\)"),
        ({"a": ["x y"]}, {"a": "x", "c": "y"}, r"1 hypotheses have no references \(e.g. \['c'\]\)"),
        ({"a": []}, {"a": "x"}, "image 'a': references must be a non-empty list"),
        ({"a": "x y"}, {"a": "x"}, "image 'a': references must be a non-empty list"),
        ({"a": ["x y"]}, {"a": ["x"]}, "image 'a': the hypothesis must be one string"),
    ],
)
def test_bad_input_is_a_clear_error(refs, hyps, message):
    with pytest.raises(MetricError, match=message):
        score_captions(refs, hyps, scorers=("bleu",), tokenizer="simple")


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="scorers"):
        score_captions(REFERENCES, GOOD, scorers=("spice",), tokenizer="simple")
    with pytest.raises(ValueError, match="tokenizer"):
        score_captions(REFERENCES, GOOD, scorers=("bleu",), tokenizer="nltk")


@needs_java
@pytest.mark.slow
def test_thousand_images_five_refs_well_under_a_minute(shared_datasets):
    rows = [json.loads(line) for line in (shared_datasets / "flickr8k" / "captions.jsonl").open()]
    dev = [r for r in rows if r["split"] == "dev"][:1000]
    refs = {r["file"]: r["captions"] for r in dev}
    # Each image "captioned" with its neighbour's first caption: realistic lengths, low scores.
    hyps = {r["file"]: dev[(i + 1) % len(dev)]["captions"][0] for i, r in enumerate(dev)}
    start = time.monotonic()
    scores = score_captions(refs, hyps)
    elapsed = time.monotonic() - start
    assert elapsed < 60, f"scoring 1,000 images took {elapsed:.1f} s"
    assert len(refs) == 1000
    assert scores["BLEU-1"] < 0.6 and scores["CIDEr"] < 0.3 and scores["METEOR"] < 0.2
