"""tools/search_profile.py: rows the beam search steps, and per-op time, on the bundled model."""
from __future__ import annotations

import re

import pytest

from altbeam.model import DEFAULT_MODEL_DIR
from altbeam.model.serving import beam_search
from tests.support.paths import load_tool


def _tool():
    return load_tool("search_profile")


@pytest.mark.slow
def test_rows_and_op_times_of_the_bundled_model(capsys, monkeypatch):
    monkeypatch.setattr(beam_search, "MIN_DROPPED_ROWS", 3)  # 2 images x 5 beams: drop some
    assert _tool().main([str(DEFAULT_MODEL_DIR), "--batch", "2", "--images", "4",
                         "--top", "4", "--calls", "1"]) == 0
    out = capsys.readouterr().out
    shares = {m.group(1).strip(): float(m.group(2)) for m in re.finditer(
        r"^rows stepped, (.+?): +([\d.]+)% of a full search", out, re.M)}
    assert set(shares) == {"shipped rule", "live only"}
    assert 0 < shares["live only"] <= shares["shipped rule"] < 100, out
    ops = re.findall(r"^(\S+) +([\d.]+) +([\d.]+)%$", out, re.M)
    assert len(ops) == 4 and all(float(ms) > 0 for _, ms, _ in ops), out
    assert [float(ms) for _, ms, _ in ops] == sorted((float(ms) for _, ms, _ in ops), reverse=True)
    assert beam_search.worth_dropping.__name__ == "worth_dropping"   # the rule put back
