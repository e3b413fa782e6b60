"""tools/compare_models.py: two exported models on one split, differences counted and scored."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

from tests.support.paths import load_tool
from tests.support.tiny import export_tiny_model


def _tool():
    return load_tool("compare_models")


def test_two_models_differences_are_listed_and_both_scored(tmp_path, capsys, monkeypatch):
    rng = np.random.default_rng(0)
    with open(tmp_path / "captions.jsonl", "w") as f:
        for k in range(6):
            Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(
                tmp_path / f"p{k}.png")
            f.write(json.dumps({"file": f"p{k}.png", "captions": ["a dog on the grass",
                                                                   "a man in the water"],
                                "split": "dev"}) + "\n")
    a = export_tiny_model(str(tmp_path / "a"), seed=1)
    b = export_tiny_model(str(tmp_path / "b"), seed=2)
    tool, dataset = _tool(), str(tmp_path / "captions.jsonl")
    out = tmp_path / "out.json"
    assert tool.main([a, b, dataset, "dev", "--tokenizer", "simple", "--json", str(out)]) == 0
    result = json.load(open(out))
    assert result["images"] == 6 and result["differ"]      # two random decoders disagree
    assert set(result["scores"]) == {a, b} and set(result["scores_differing"]) == {a, b}
    assert all(x != y for _, x, y in result["differ"])
    assert f"best caption differs on {len(result['differ'])}" in capsys.readouterr().out
    assert all("METEOR" in row for row in result["scores"].values())
    # A model against itself, on a machine without Java: nothing differs, nothing to
    # score apart, and no METEOR column rather than a made-up one.
    for name in ("ALTBEAM_JAVA", "JAVA_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "no-java-here"))
    assert tool.main([a, a, dataset, "dev", "--tokenizer", "simple", "--json", str(out)]) == 0
    same = json.load(open(out))
    assert same["differ"] == [] and same["scores_differing"] is None
    assert all("METEOR" not in row and "CIDEr" in row for row in same["scores"].values())
