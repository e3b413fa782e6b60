"""Smoke runs of the benchmark scripts with the tiny random model, so they do not rot.

No timing is asserted (benchmarks print figures, they do not pass or fail on speed):
only that each script runs end to end, prints its table and writes JSON with the
expected rows and positive throughputs; plus the helpers the figures depend on.
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.support.paths import REPO

BENCH = REPO / "bench"
sys.path.insert(0, str(BENCH))

import _common as bc  # noqa: E402


def run_script(name: str, *args: str, tmp_path: pathlib.Path) -> tuple[str, dict]:
    out = tmp_path / f"{name}.json"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, str(BENCH / f"{name}.py"), *args, "--json", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    assert data["environment"]["cores"] >= 1 and data["environment"]["tensorflow"]
    assert re.search(r"^machine: .+ cores", proc.stdout, re.M), proc.stdout
    assert re.search(r"^versions: Python .+TensorFlow .+Apache Beam", proc.stdout, re.M)
    assert f"bench/{name}.py" in proc.stdout  # the exact command line
    return proc.stdout, data


def test_model_throughput_tiny(tmp_path):
    stdout, data = run_script("model_throughput", "--tiny", "--images", "4",
                              "--batches", "1,4", "--beams", "1,3", tmp_path=tmp_path)
    cells = {(c["batch"], c["beam"]): c for c in data["cells"]}
    assert set(cells) == {(1, 1), (1, 3), (4, 1), (4, 3)}
    for c in cells.values():
        assert c["images_per_s"] > 0 and c["encoder_ms_per_image"] > 0
        assert 0 <= c["encoder_share"] <= 1
        assert c["encoder_share"] + c["decoder_share"] == pytest.approx(1)
    assert cells[(4, 1)]["images"] == 4 and cells[(1, 1)]["images"] == 4
    assert [c["batch"] for c in data["checks"]] == [1, 4]
    for batch in (1, 4):
        assert re.search(rf"beam 3 vs greedy at batch +{batch}: .* (PASS|FAIL)$", stdout, re.M)


@pytest.mark.slow
def test_vs_tutorial_loop_tiny(tmp_path):
    stdout, data = run_script("vs_tutorial_loop", "--tiny", "--images", "6",
                              "--pipeline-images", "9", "--batch-size", "3", tmp_path=tmp_path)
    for row in ("a ", "b1 ", "b1'", "b3 ", "b3'", "c ", "c'"):
        assert re.search(rf"^{re.escape(row)}", stdout, re.M), row
    assert "target c >= 20x a:" in stdout
    assert data["tutorial"]["images_per_s"] > 0
    assert set(data["savedmodel"]) == {"1", "3"}
    for r in data["savedmodel"].values():
        assert r["model_only_images_per_s"] >= r["images_per_s"] > 0
    assert data["pipeline"]["summary"]["captioned"] == 9
    assert data["pipeline"]["images_per_s_wall"] > 0
    assert data["pipeline"]["one_batch_wall_seconds"] > 0
    assert 0 <= data["greedy_captions_equal"] <= 6


@pytest.mark.slow
def test_memory_tiny(tmp_path):
    stdout, data = run_script("memory", "--tiny", "--counts", "2,4", "--batch-size", "2",
                              tmp_path=tmp_path)
    assert [r["images"] for r in data["runs"]] == [2, 4]
    for r in data["runs"]:
        assert r["captioned"] == r["images"] and r["failed"] == 0
        # TensorFlow alone takes well over 100 MiB: a smaller peak means a wrong reading.
        assert r["max_rss_mib"] > 100 and r["peak_tree_rss_mib"] > 100
    assert data["ratio_max_rss"] > 0
    assert "growth 4/2 images" in stdout


def test_copies_have_distinct_bytes_and_identical_pixels(tmp_path):
    files = bc.make_images(tmp_path, len(bc.sample_photos()) + 2)
    assert len({f.read_bytes() for f in files}) == len(files)
    first, wrapped = bc.sample_photos()[0], files[len(bc.sample_photos())]
    assert wrapped.name.endswith(first.name)
    with Image.open(first) as a, Image.open(wrapped) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))
        assert b.info.get("comment", b"").startswith(b"altbeam bench copy")


def test_table_aligns_and_formats():
    text = bc.table(["name", "images/s"], [["a", 1.5], ["long name", float("nan")]])
    lines = text.splitlines()
    assert len({len(line) for line in lines}) == 1
    assert lines[2].endswith("1.50") and lines[3].endswith("n/a")
    assert [bc.ratio(x) for x in (1234.4, 12.345, 0.012345)] == ["1234", "12.35", "0.0123"]


def test_tutorial_loop_is_the_same_greedy_decoder(tmp_path):
    """The Keras tutorial loop and the exported beam-1 model give the same captions on
    the same pixels, so (a) vs (b) compares speed, not different models."""
    import vs_tutorial_loop as vt

    from altbeam.model.serving.export import export
    from altbeam.model.training.common import load_decoder

    run_dir = bc.make_tiny_run(str(tmp_path / "run"))
    decoder, vocab, config = load_decoder(run_dir)
    model_dir = export(run_dir, str(tmp_path / "beam1"), beam_width=1, weights="float32")
    size = config.image_size
    # Images already S x S, so neither loader resizes: both see identical pixels.
    files = []
    for i, photo in enumerate(bc.sample_photos()[:4]):
        path = tmp_path / f"{i}.png"
        Image.open(photo).convert("RGB").resize((size, size)).save(path)
        files.append(path)
    models = vt.tutorial_models(decoder, bc.encoder_for(config))
    tutorial = [vt.tutorial_caption(f, size, models, vocab.words, config.max_length)
                for f in files]
    exported = vt.savedmodel_rate(model_dir, files, size, batch=4)["captions"]
    assert tutorial == exported
    assert all(tutorial)


def test_tutorial_loop_feeds_a_concept_reading_decoder_its_models_concepts(sample_photos):
    """The bundled decoders read the concept head's scores: the tutorial loop gives its
    first member the scores of the head the export attached (the same top concepts the
    SavedModel returns on the same pixels) and captions with them."""
    import tensorflow as tf
    import vs_tutorial_loop as vt

    from altbeam.model import DEFAULT_MODEL_DIR
    from altbeam.model.data.concepts import CONCEPTS
    from altbeam.model.serving.saved_model import LoadedModel
    from altbeam.pipelines.caption.decode import decode_image

    model_dir = str(DEFAULT_MODEL_DIR)
    config = bc.config_from_card(bc.read_card(model_dir))
    assert config.concept_inputs        # else this test checks nothing
    scores = vt.concept_scorer(config)
    names = ["000000000285.jpg", "000000017029.jpg"]     # a bear, a dog
    pixels = np.stack([decode_image((sample_photos / n).read_bytes(), config.image_size,
                                    n).pixels for n in names])
    encoder = bc.encoder_for(config)
    got = scores(encoder(tf.cast(pixels, tf.float32), training=False)).numpy()
    served = LoadedModel(model_dir).predict(pixels)
    for row, concepts in zip(got, served.concepts):
        top = [CONCEPTS[t] for t in np.argsort(-row)[:3]]
        assert top == [c.decode() for c in concepts[:3]]
    decoder, words = vt.decoder_from_savedmodel(model_dir, config)
    models = vt.tutorial_models(decoder, encoder, scores)
    caption = vt.tutorial_caption(sample_photos / names[1], config.image_size, models, words,
                                  config.max_length)
    assert "dog" in caption.split() and set(caption.split()) <= set(words)
    with pytest.raises(ValueError, match="reads concept scores"):  # what the bench did before
        vt.tutorial_caption(sample_photos / names[1], config.image_size,
                            vt.tutorial_models(decoder, encoder), words, config.max_length)


def test_decoder_from_savedmodel_restores_the_weights(tmp_path):
    import tensorflow as tf
    import vs_tutorial_loop as vt

    from altbeam.model.nets.decoder import CaptionDecoder
    from tests.support.tiny import TINY_WORDS, export_tiny_model, tiny_config

    model_dir = export_tiny_model(str(tmp_path / "tiny"))
    config = bc.config_from_card(bc.read_card(model_dir))
    # Another seed, so the weights can only match the export if they were copied from it.
    decoder, words = vt.decoder_from_savedmodel(model_dir, config.replace(seed=99))
    reference = CaptionDecoder(tiny_config())   # same seed: the weights that were exported
    fresh = CaptionDecoder(tiny_config(seed=99))
    names = [n for n, v in vars(reference).items() if isinstance(v, tf.Variable)]
    assert "lstm_kernel" in names and "embedding" in names
    for name in names:
        np.testing.assert_array_equal(getattr(decoder, name).numpy(),
                                      getattr(reference, name).numpy())
    assert not np.array_equal(fresh.lstm_kernel.numpy(), decoder.lstm_kernel.numpy())
    assert words[4:] == TINY_WORDS


def test_run_all_covers_every_benchmark():
    script = (BENCH / "run_all.sh").read_text()
    for path in BENCH.glob("*.py"):
        if not path.name.startswith("_"):
            assert f"bench/{path.name}" in script, f"run_all.sh does not run {path.name}"
    subprocess.run(["bash", "-n", str(BENCH / "run_all.sh")], check=True)


def test_decoder_width_tiny(tmp_path):
    from tests.support.tiny import export_tiny_model

    model = export_tiny_model(str(tmp_path / "tiny"))
    stdout, data = run_script("decoder_width", "--model", model, "--widths", "8",
                              "--batches", "1,2", "--images", "2", "--rounds", "1",
                              tmp_path=tmp_path)
    cells = {(c["batch"], c["context_units"]): c for c in data["cells"]}
    assert set(cells) == {(1, 0), (1, 8), (2, 0), (2, 8)}
    assert {c["attention_units"] for c in data["cells"]} == {12}
    assert all(c["ms_per_image"] > 0 for c in cells.values())
    assert cells[(1, 0)]["speed_vs_model"] == 1.0
    assert cells[(1, 8)]["lstm_inputs"] < cells[(1, 0)]["lstm_inputs"]
    assert re.search(r"^1 +16 \(full\) +12 +.*1\.00x$", stdout, re.M), stdout


def test_decoder_width_of_a_concept_reading_narrow_model(tmp_path):
    """The bundled model's shape (narrow context, concept inputs): its own shape is the
    baseline arm, and the search gets concept scores as the model's decoders need."""
    from altbeam.model import DEFAULT_MODEL_DIR

    config = bc.config_from_card(bc.read_card(str(DEFAULT_MODEL_DIR)))
    assert config.concept_inputs and config.context_units   # else this checks nothing
    own = (config.context_units, config.attention_units)
    _, data = run_script("decoder_width", "--widths", "512", "--batches", "1", "--images",
                         "1", "--rounds", "1", tmp_path=tmp_path)
    cells = {(c["context_units"], c["attention_units"]): c for c in data["cells"]}
    assert set(cells) == {own, (0, own[1]), (512, own[1])}
    assert cells[own]["speed_vs_model"] == 1.0
    assert cells[(0, own[1])]["lstm_inputs"] > cells[own]["lstm_inputs"]


@pytest.mark.slow
def test_pipeline_throughput_runs_the_caption_pipeline(tmp_path):
    # No --json here: the table is the output. It had broken silently when the caption
    # pipeline moved into its own package.
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, str(BENCH / "pipeline_throughput.py"), "--images", "4",
                           "--batch-size", "2"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"^model .+ images 4  batch 2", proc.stdout, re.M), proc.stdout
    rows = {x[:44].strip(): x.split()[-2:] for x in proc.stdout.splitlines()
            if x.startswith(("raw model", "pipeline,"))}
    assert float(rows["raw model, pre-decoded batches"][0]) > 0, proc.stdout
    assert float(rows["pipeline, wall (incl. start-up)"][0]) > 0, proc.stdout
    # 2 images more than the one-batch run: the steady rate may be noise (or nan), but
    # the row is there.
    assert "pipeline, steady state (full - one batch)" in rows


def test_compare_counts_caption_differences_across_beam_widths():
    # --compare of a beam-5 model with its beam-3 re-export had crashed on the shapes.
    import model_throughput as mt

    class Fixed:
        def __init__(self, captions, scores):
            self.out = (np.array(captions), np.array(scores, np.float32))

        def caption(self, stack):
            return self.out

    five = Fixed([["a", "b", "c", "d", "e"], ["f", "g", "h", "i", "j"]], [[-1.0] * 5] * 2)
    three = Fixed([["a", "b", "x"], ["z", "g", "h"]], [[-1.0, -1.0, -1.5]] * 2)
    (d,) = mt.caption_differences({"five": five, "three": three}, [np.zeros(1), np.zeros(1)])
    assert (d["best_caption_differs"], d["any_beam_differs"]) == (1, 2)
    assert d["max_score_difference"] == pytest.approx(0.5)
