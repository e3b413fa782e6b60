"""tools/measure_gate.py's tuner: the lowest CHAIR-s among `ok` captions that keeps the
floor of them ok, over all thresholds or only the ones named (the defaults' choice)."""
from __future__ import annotations

import numpy as np
import pytest

from altbeam.model.serving.caption_status import GateThresholds, covered_concepts
from tests.support.paths import load_tool


def _tool():
    return load_tool("measure_gate")


DOG_REFS = ["a dog runs on the grass", "a brown dog in a field", "a dog plays outside",
            "the dog runs", "a dog on green grass"]
MAN_REFS = ["a man walks down the street", "a man in a city", "a person on a sidewalk",
            "a man outside", "a guy walking"]


def _scored(tool):
    # Ten photos: eight right captions, two naming a person who is not there, whose
    # person score (a context detector's) is middling; the right person captions score high.
    captions = ["a dog runs on the grass"] * 4 + ["a man walks down the street"] * 4 + \
        ["a man is playing with a dog"] * 2
    refs = [DOG_REFS] * 4 + [MAN_REFS] * 4 + [DOG_REFS] * 2
    concepts = [(["dog", "grass"], [0.95, 0.6])] * 4 + [(["person", "street"], [0.97, 0.5])] * 4 \
        + [(["dog", "person"], [0.9, 0.55])] * 2
    return tool.Scored(captions, np.full(10, -0.7, np.float32), concepts, refs, [""] * 10)


def test_tuning_only_person_support_keeps_the_other_thresholds():
    tool = _tool()
    scored = _scored(tool)
    covered = covered_concepts(["person", "grass", "street"])
    assert scored.hallucinated.tolist() == [False] * 8 + [True] * 2
    start = GateThresholds(min_caption_score=-1.2, support=0.01, person_support=0.0,
                           contradict_below=0.02, confident=0.9)
    t = tool.tune(scored, covered, ok_floor=0.8, only=["person_support"], start=start)
    assert (t.min_caption_score, t.support, t.contradict_below, t.confident) == \
        (-1.2, 0.01, 0.02, 0.9)
    # 0.6 is the lowest grid value above the absent person's 0.55 and below the 0.97.
    assert t.person_support == 0.6
    statuses = scored.statuses(t, covered)
    assert statuses == ["ok"] * 8 + ["unsure"] * 2
    # A floor the rule cannot keep: holding back the two would leave only 80 % ok.
    assert tool.tune(scored, covered, 0.9, only=["person_support"], start=start).person_support \
        < 0.55
    with pytest.raises(ValueError, match="unknown threshold"):
        tool.tune(scored, covered, 0.8, only=["person"])
