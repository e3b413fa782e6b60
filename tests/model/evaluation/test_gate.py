"""The caption gate's figures in `altbeam evaluate`: statuses as the caption job gives them,
photos per status, and CHAIR over exactly the ok captions."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from altbeam.model.data.concepts import IMAGENET_TO_CONCEPT
from altbeam.model.data.pixels import load_pixels
from altbeam.model.evaluation.chair import chair
from altbeam.model.evaluation.evaluate import main
from altbeam.model.evaluation.gate import (
    format_gate,
    gate_figures,
    photo_pixel_status,
    photo_statuses,
)
from altbeam.model.nets.concept_head import ConceptHead, Detectors
from altbeam.model.serving.caption_status import STATUSES, caption_status
from altbeam.model.serving.captioner import Captioner
from altbeam.model.serving.saved_model import LoadedModel, read_model_info
from tests.support.tiny import build_tiny_captioner

COVERED = frozenset({"dog", "cat", "person"})
CAT_REFS = ["a cat sits on the grass"] * 3 + ["an animal outside", "grass"]
DOG_REFS = ["a dog on the street"] * 5


def test_pixel_statuses_come_first_and_the_rest_are_judged_by_caption():
    statuses = photo_statuses(
        ["a dog on the grass", "a cat on a bed", "a dog runs", "a dog"],
        [-0.5, -0.5, -2.0, -0.5],
        [["dog", "person"], ["dog", "person"], ["dog"], []],
        [[0.9, 0.2], [0.9, 0.2], [0.9], []],
        [None, None, None, "blank"], COVERED)
    # cat scores 0 while dog (not named) scores 0.9: contradicted; -2.0 is below the
    # caption score threshold: unsure; the blank photo's caption is never judged.
    assert statuses == ["ok", "contradicted", "unsure", "blank"]
    with pytest.raises(ValueError, match="one caption, score, concept list and pixel status"):
        photo_statuses(["a dog"], [-0.5], [[]], [[]], [None, None], COVERED)


def test_figures_count_every_photo_and_score_chair_on_the_ok_ones_only():
    captions = ["a cat on the grass", "a cat on the street", "a dog on the street",
                "a cat in a car", "a man"]
    refs = [CAT_REFS, DOG_REFS, DOG_REFS, CAT_REFS, DOG_REFS]
    statuses = ["ok", "ok", "contradicted", "unsure", "too_small"]
    figures = gate_figures(statuses, captions, refs)
    assert figures.counts == {"ok": 2, "unsure": 1, "contradicted": 1, "too_small": 1,
                              "blank": 0}
    assert figures.images == 5 and sum(figures.shares().values()) == pytest.approx(1.0)
    direct = chair(captions[:2], refs[:2])
    assert figures.ok_scores() == direct.as_dict()
    # The second ok caption names a cat no reference of its photo names.
    assert figures.ok.chair_s == 0.5 and figures.ok.coverage == pytest.approx(1 / 2)
    as_json = figures.as_dict()
    assert as_json["ok"] == {"images": 2, **direct.as_dict()}
    assert as_json["shares"]["ok"] == 0.4
    assert "ok 40.0% (2)" in format_gate(figures, 3) and "3 concepts" in format_gate(figures, 3)


def test_no_ok_caption_leaves_chair_among_ok_empty():
    figures = gate_figures(["unsure", "blank"], ["a dog", "a cat"], [DOG_REFS, DOG_REFS])
    assert figures.ok is None and figures.ok_scores() == {}
    assert figures.as_dict()["ok"] == {"images": 0}
    with pytest.raises(ValueError, match="at least one photo"):
        gate_figures([], [], [])
    with pytest.raises(ValueError, match="2 statuses, 1 captions"):
        gate_figures(["ok", "ok"], ["a dog"], [DOG_REFS])


def test_pixel_status_of_a_file_is_the_caption_jobs(tmp_path, sample_photos):
    small, grey = tmp_path / "small.jpg", tmp_path / "grey.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 40, 3), np.uint8)).save(small)
    Image.new("RGB", (64, 48), (120, 120, 120)).save(grey)
    photo = str(next(iter(sorted(sample_photos.glob("*.jpg")))))
    assert photo_pixel_status(str(small), load_pixels(str(small), 32)) == "too_small"
    assert photo_pixel_status(str(grey), load_pixels(str(grey), 32)) == "blank"
    assert photo_pixel_status(photo, load_pixels(photo, 32)) is None


@pytest.fixture(scope="module")
def model_with_concepts(tmp_path_factory) -> str:
    """The tiny captioner with a concept head: random ImageNet weights plus detectors
    that make person certain (sigmoid 9), cat a coin toss (0) and street absent (-9),
    and its word scores sharpened so that some captions clear the score threshold."""
    plain = build_tiny_captioner()
    plain.decoder.out_word.assign(plain.decoder.out_word * 10.0)
    rng = np.random.default_rng(3)
    detectors = Detectors(np.zeros((16, 3), np.float32), np.array([9.0, 0.0, -9.0], np.float32),
                          ("person", "cat", "street"), source="test")
    head = ConceptHead(rng.normal(0, 1, (16, len(IMAGENET_TO_CONCEPT))),
                       rng.normal(0, 1, len(IMAGENET_TO_CONCEPT)), detectors, top_k=6)
    model = Captioner(plain.encoder, plain.decoder, [w.decode() for w in plain.words.numpy()],
                      plain.config, head)
    return model.save(str(tmp_path_factory.mktemp("models") / "concepts"),
                      {"name": "tiny-with-concepts", "version": "tiny-c-1"})


def _dataset(folder, sample_photos) -> list[dict]:
    """The 18 sample photos, one too small and one blank image, as captions.jsonl."""
    rows = []
    for k, photo in enumerate(sorted(sample_photos.glob("*.jpg"))):
        (folder / photo.name).write_bytes(photo.read_bytes())
        rows.append({"file": photo.name, "captions": CAT_REFS if k % 2 else DOG_REFS})
    noise = np.random.default_rng(1).integers(0, 256, (24, 30, 3), np.uint8)
    Image.fromarray(noise).save(folder / "small.jpg")
    Image.new("RGB", (80, 60), (200, 190, 180)).save(folder / "blank.png")
    rows += [{"file": "small.jpg", "captions": DOG_REFS},
             {"file": "blank.png", "captions": CAT_REFS}]
    for row in rows:
        row.update(split="dev", image_id=row["file"])
    (folder / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def test_evaluate_reports_the_gate_of_a_model_with_concepts(
        tmp_path, sample_photos, model_with_concepts, capsys):
    rows = _dataset(tmp_path, sample_photos)
    out = tmp_path / "scores.json"
    assert main(["--model", model_with_concepts, "--dataset", str(tmp_path / "captions.jsonl"),
                 "--tokenizer", "simple", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    gate = report["gate"]
    ids = [r["image_id"] for r in rows]
    assert gate["available"] and gate["images"] == report["images"] == len(rows)
    assert sum(gate["counts"].values()) == len(rows) and list(gate["counts"]) == list(STATUSES)
    assert sum(gate["shares"].values()) == pytest.approx(1.0)
    assert list(gate["statuses"]) == ids
    assert gate["statuses"]["small.jpg"] == "too_small"
    assert gate["statuses"]["blank.png"] == "blank"
    statuses = [gate["statuses"][i] for i in ids]
    assert {s: statuses.count(s) for s in STATUSES} == gate["counts"]

    # Each captioned photo's status, recomputed from the model's own outputs and card.
    info = read_model_info(model_with_concepts)
    assert gate["judged_concepts"] == len(info.judged) and {"cat", "street"} <= info.judged
    served = LoadedModel(model_with_concepts, info.image_size).predict(
        np.stack([load_pixels(str(tmp_path / r["file"]), info.image_size) for r in rows[:-2]]))
    captions = [c.decode() for c in served.captions[:, 0]]
    expected = [caption_status(c, float(s), words, values, covered=info.judged)[0]
                for c, s, words, values
                in zip(captions, served.scores[:, 0], served.concepts, served.concept_scores)]
    assert statuses[:-2] == expected
    assert len(set(expected)) >= 2 and "ok" in expected, "the test set must exercise the gate"

    # CHAIR among ok: chair.py on exactly the ok photos' captions and references.
    ok = [k for k, s in enumerate(statuses) if s == "ok"]
    assert gate["ok"]["images"] == gate["counts"]["ok"] == len(ok)
    model_name = next(iter(report["scores"]))
    assert [report["examples"][ids[k]][model_name] for k in range(len(captions))] == captions
    direct = chair([captions[k] for k in ok], [rows[k]["captions"] for k in ok])
    assert {m: gate["ok"][m] for m in ("CHAIR-s", "CHAIR-i", "coverage")} == direct.as_dict()
    # ... while the table's own CHAIR stays that of every caption, held-back photos too.
    assert report["scores"][model_name]["CHAIR-s"] != gate["ok"]["CHAIR-s"]

    printed = capsys.readouterr().out
    assert f"{model_name}, ok only ({len(ok)})" in printed
    assert f"caption gate on {len(rows)} photos" in printed and "too_small 5.0% (1)" in printed

