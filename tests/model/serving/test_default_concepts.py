"""The bundled default model's concept head, and the card tool's --rebuilt mode."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from altbeam.model import DEFAULT_MODEL_DIR
from altbeam.model.data.concepts import CONCEPTS
from altbeam.model.serving.export import export, export_from_saved_model
from altbeam.model.serving.saved_model import LoadedModel, read_model_info
from altbeam.pipelines.caption.decode import decode_image
from tests.support.fake_runs import fake_run
from tests.support.paths import REPO, load_tool

MODEL = pathlib.Path(DEFAULT_MODEL_DIR)
TOP = {"000000017029.jpg": "dog", "000000000285.jpg": "bear", "000000555705.jpg": "cat",
       "000000013348.jpg": "airplane"}


@pytest.mark.skipif(not (MODEL / "saved_model.pb").exists(), reason="no bundled model")
def test_bundled_model_names_the_concepts_it_sees(sample_photos):
    info = read_model_info(str(MODEL))
    assert info.concepts == 10
    card = json.loads((MODEL / "model_card.json").read_text())
    assert card["concept_head"]["vocabulary_size"] == len(CONCEPTS)
    # "+concepts-d<hash>": the concept head with the committed detectors (then the
    # concept-guided decoding, "+bias-<hash>", when it has one).
    assert any(part.startswith("concepts-d") for part in card["version"].split("+"))
    assert card["concept_head"]["sources"]["detectors"]["file"] == "concept_detectors.npz"
    pixels = np.stack([decode_image((sample_photos / n).read_bytes(), 224, n).pixels
                       for n in TOP])
    out = LoadedModel(str(MODEL), info.image_size).predict(pixels)
    assert out.concepts.shape == out.concept_scores.shape == (len(TOP), 10)
    assert [c.decode() for c in out.concepts[:, 0]] == list(TOP.values())
    assert (out.concept_scores[:, 0] > 0.4).all()


def test_card_tool_refreshes_a_rebuilt_card_and_keeps_its_evaluation(tmp_path):
    source = export(fake_run(tmp_path / "run", seed=1), str(tmp_path / "src"))
    card_path = os.path.join(source, "model_card.json")
    card = json.load(open(card_path))
    card.update({"members": [{"run": "gone"}], "evaluation": {"model": {"CIDEr": 0.5}},
                 "size_bytes": 1})
    json.dump(card, open(card_path, "w"))
    tool = [sys.executable, str(REPO / "tools" / "default_model_card.py")]
    refused = subprocess.run([*tool, source, "--rebuilt"], capture_output=True, text=True)
    assert refused.returncode == 2 and "not a re-export" in refused.stderr

    out = export_from_saved_model(source, str(tmp_path / "out"))
    subprocess.run([*tool, out, "--rebuilt", "--note", "n"], check=True, capture_output=True)
    new = json.load(open(os.path.join(out, "model_card.json")))
    assert new["evaluation"] == card["evaluation"] and new["members"] == card["members"]
    assert new["note"] == "n" and new["size_bytes"] > 10_000
    assert "concept head" not in new["license"]  # this one has none


def test_card_tool_records_a_concept_input_members_text_captions(tmp_path):
    tool = load_tool("default_model_card")
    runs = [fake_run(tmp_path / f"run{s}", seed=s) for s in (1, 2)]
    for run in runs:
        json.dump([{"epoch": 1, "loss": 3.0, "val_cider": 0.4, "train_seconds": 60.0}],
                  open(os.path.join(run, "history.json"), "w"))
    text = [str(tmp_path / "coco" / "captions_val2017.json")]
    json.dump({"text": text, "exclude": ["x.txt"], "text_captions": 12, "images_dropped": 3,
               "detectors": "concept_detectors.npz"},
              open(os.path.join(runs[0], "concept_inputs.json"), "w"))
    dev = tmp_path / "dev.json"
    json.dump({"images": 4, "scores": {"model m": {"BLEU-4": 0.2, "METEOR": 0.2}}}, open(dev, "w"))
    card = tool.trained("M", str(dev), runs, {"beam_width": 3, "length_alpha": 1.0})
    first, second = card["members"]
    assert first["concept_inputs"] == {"text": text, "exclude": ["x.txt"], "text_captions": 12,
                                       "images_dropped": 3}
    assert "concept_inputs" not in second
    assert "text-only captions" in card["training_data"]
    assert os.path.relpath(text[0]) in card["training_data"]
