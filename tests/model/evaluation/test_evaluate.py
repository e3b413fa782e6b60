"""Evaluation: preprocessing matches serving; the CLI scores a model next to baselines."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from altbeam.model.data.pixels import load_pixels
from altbeam.model.evaluation.evaluate import format_table, main, score_table
from altbeam.pipelines.caption.decode import decode_image


@pytest.mark.parametrize("size", [32, 224, 260])
def test_eval_pixels_match_the_pipeline_decoder(sample_photos, size):
    for photo in sorted(sample_photos.glob("*.jpg"))[:6]:
        served = decode_image(photo.read_bytes(), size, str(photo)).pixels
        np.testing.assert_array_equal(load_pixels(str(photo), size), served)


def _rgba_png(path):
    """Half transparent red over half opaque blue: alpha must be composited on white."""
    rgba = np.zeros((40, 60, 4), np.uint8)
    rgba[:, :30] = (220, 20, 20, 0)
    rgba[:, 30:] = (20, 20, 220, 255)
    Image.fromarray(rgba, "RGBA").save(path)


def _grey16_png(path):
    """A 16-bit greyscale ramp using the full 0..65535 range."""
    ramp = np.tile(np.linspace(0, 65535, 50).astype(np.uint16), (30, 1))
    Image.fromarray(ramp).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I")   # really stored as 16-bit


@pytest.mark.parametrize("write", [_rgba_png, _grey16_png], ids=["rgba", "grey16"])
def test_eval_pixels_match_the_pipeline_for_alpha_and_16_bit(tmp_path, write):
    path = tmp_path / "image.png"
    write(path)
    served = decode_image(path.read_bytes(), 32, str(path)).pixels
    evaluated = load_pixels(str(path), 32)
    np.testing.assert_array_equal(evaluated, served)
    if write is _rgba_png:   # transparent left half on white, not the hidden red
        assert (evaluated[:, :14] == 255).all() and evaluated[:, -14:, 2].min() > 200
    else:                    # the full 16-bit range kept: black to white
        assert evaluated[:, 0].max() < 10 and evaluated[:, -1].min() > 245


def test_format_table_aligns_systems_and_metrics():
    text = format_table({"model": {"BLEU-4": 0.2, "CIDEr": 0.5}, "nn": {"BLEU-4": 0.1}})
    lines = text.splitlines()
    assert lines[0].split() == ["system", "BLEU-4", "CIDEr"]
    assert lines[1].split() == ["model", "0.200", "0.500"] and lines[2].split()[-1] == "-"


def test_score_table_reports_chair_beside_the_caption_metrics():
    refs = {"1": ["a dog runs on the grass"] * 5, "2": ["a man rides a horse"] * 5}
    table = score_table(refs, {"faithful": ["a dog on the grass", "a man on a horse"],
                               "inventing": ["a cat on a couch", "a man on a horse"]},
                        tokenizer="simple")
    assert table["faithful"]["CHAIR-s"] == 0.0 and table["faithful"]["coverage"] == 1.0
    # "cat" and "couch" are named by no reference of image 1; image 2 is fine.
    assert table["inventing"]["CHAIR-s"] == 0.5
    assert table["inventing"]["CHAIR-i"] == pytest.approx(2 / 4)
    assert table["inventing"]["coverage"] == pytest.approx(2 / 3)   # dog missed
    assert table["faithful"]["CIDEr"] > table["inventing"]["CIDEr"]
    assert "CHAIR-s" in format_table(table).splitlines()[0]


def test_evaluate_cli_scores_an_exported_model(tmp_path, sample_photos, capsys):
    from tests.support.tiny import export_tiny_model
    model = export_tiny_model(str(tmp_path / "tiny"))
    rows = [{"image": p.name, "caption": "a dog on the grass", "split": "dev"}
            for p in sorted(sample_photos.glob("*.jpg"))[:4]]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for p in sorted(sample_photos.glob("*.jpg"))[:4]:
        (tmp_path / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "scores.json"
    code = main(["--model", model, "--dataset", str(tmp_path / "pairs.jsonl"), "--split", "dev",
                 "--tokenizer", "simple", "--out", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["images"] == 4
    scores = next(iter(result["scores"].values()))
    assert 0.0 <= scores["BLEU-4"] <= 1.0 and "CIDEr" in scores
    assert 0.0 <= scores["CHAIR-s"] <= 1.0 and 0.0 <= scores["coverage"] <= 1.0
    # The tiny model has no concept head: no gate figures, and the report says why.
    assert result["gate"]["available"] is False and "no concept head" in result["gate"]["reason"]
    printed = capsys.readouterr().out
    assert "BLEU-4" in printed and "caption gate: not available (the model has no" in printed
    # "val" with --model is the dataset's dev split, not a run's carve-out: say so.
    assert main(["--model", model, "--dataset", str(tmp_path / "pairs.jsonl"), "--split",
                 "val", "--tokenizer", "simple", "--no-baselines"]) == 0
    assert "scores the dataset's own dev/validation split" in capsys.readouterr().err


def test_run_scored_on_its_own_validation_images(tmp_path):
    from altbeam.model.data.feature_records import load_split
    from altbeam.model.training.common import carve_validation
    from tests.support.fake_runs import fake_run, write_feature_shard
    run = fake_run(tmp_path / "run", 1)
    feats = str(tmp_path / "features")
    write_feature_shard(feats, "train", [[f"a dog number {k}", "a dog"] for k in range(30)])
    out = tmp_path / "val.json"
    assert main(["--run", run, "--features", feats, "--split", "val",
                 "--tokenizer", "simple", "--out", str(out)]) == 0
    report = json.load(open(out))
    # 30 training images: a fifth (6) are the validation set, chosen by the run's seed.
    expected = carve_validation(load_split(feats, "train"), 6, 1)[1].image_ids
    assert report["images"] == 6 and sorted(report["examples"]) == sorted(expected)
    assert list(report["scores"]) == ["decoder (beam 3, alpha 0)"]  # no baselines on val
    assert report["gate"]["available"] is False and "--model" in report["gate"]["reason"]
    # A run initialised with another seed but the same split seed holds out the same images.
    other = fake_run(tmp_path / "other", 5, split_seed=1)
    assert main(["--run", other, "--features", feats, "--split", "val", "--tokenizer",
                 "simple", "--out", str(out)]) == 0
    assert sorted(json.load(open(out))["examples"]) == sorted(expected)
    moved = fake_run(tmp_path / "moved", 1, split_seed=4)
    assert main(["--run", moved, "--features", feats, "--split", "val", "--tokenizer",
                 "simple", "--out", str(out)]) == 0
    assert sorted(json.load(open(out))["examples"]) != sorted(expected)


def test_a_run_decodes_with_the_concept_guide_as_the_export_would(tmp_path):
    """`evaluate --run --concept-decoding bias`: the run's decoder on cached Lite0 grids,
    its words judged by the committed concept head (the ImageNet layer + detectors)."""
    from altbeam.model.data.concepts import concept_table
    from tests.support.fake_runs import fake_run, write_feature_shard
    run = fake_run(tmp_path / "run", 3, encoder="lite0", feature_channels=1280)
    feats = str(tmp_path / "features")
    write_feature_shard(feats, "train", [["a dog on the grass"]] * 20, channels=1280,
                        encoder="lite0")
    named = lambda caption: {w for w in caption.split() if concept_table().term_of(w)}  # noqa: E731
    base = [*map(str, ["--run", run, "--features", feats, "--split", "val", "--tokenizer",
                       "simple"])]
    plain, guided = tmp_path / "plain.json", tmp_path / "guided.json"
    assert main([*base, "--out", str(plain)]) == 0
    captions = [c for e in json.load(open(plain))["examples"].values() for c in e.values()]
    assert any(named(c) for c in captions)      # the random decoder names dogs, grass, ...
    # A threshold of 1 contradicts every word the head judges: none is said any more.
    assert main([*base, "--concept-decoding", "bias", "--concept-alpha", "50",
                 "--concept-threshold", "1", "--out", str(guided)]) == 0
    report = json.load(open(guided))
    captions = [c for e in report["examples"].values() for c in e.values()]
    assert captions and not any(named(c) for c in captions)
    assert report["model"]["concept_decoding"]["alpha"] == 50
    assert "bias" in next(iter(report["scores"]))


def test_the_concept_guide_flags_are_refused_without_a_run(tmp_path):
    with pytest.raises(SystemExit):
        main(["--dataset", str(tmp_path), "--concept-decoding", "bias"])
    with pytest.raises(SystemExit, match="need --concept-decoding"):
        main(["--run", str(tmp_path), "--features", str(tmp_path), "--concept-alpha", "2"])
