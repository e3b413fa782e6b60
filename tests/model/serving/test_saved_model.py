"""altbeam.model.serving.saved_model: the one loader, on the contract fixture and the tiny model."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from altbeam.model.serving.saved_model import (
    LoadedModel,
    read_model_card,
    read_model_info,
)


def test_info_card_and_batched_captions(contract_model):
    info = read_model_info(str(contract_model))
    assert (info.image_size, info.beam_width, info.version, info.name) == (
        32, 3, "fixture-0", "contract-fixture")
    assert read_model_card(str(contract_model))["backbone"] == "none (fixture)"
    model = LoadedModel(str(contract_model))          # S from the signature
    assert (model.image_size, model.beam_width) == (32, 3)
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    captions, scores = model.caption(images)
    assert captions.shape == scores.shape == (5, 3)
    assert model.best_captions(images) == [c.decode() for c in captions[:, 0]]
    assert model.signature("caption_with_attention") is None
    with pytest.raises(ValueError, match=r"uint8 images of shape \(32, 32, 3\)"):
        model.caption(images[:, :16, :16])


def test_card_less_model_reads_the_signature(contract_model, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(contract_model, bare)
    (bare / "model_card.json").unlink()
    assert read_model_card(str(bare)) == {}
    info = read_model_info(f"file://{bare}")
    assert (info.image_size, info.beam_width, info.version) == (32, 3, "unknown")
    with pytest.raises(FileNotFoundError, match="saved_model.pb missing"):
        read_model_info(str(tmp_path))


def test_tiny_model_has_the_attention_signature(tmp_path):
    from tests.support.tiny import export_tiny_model

    model = LoadedModel(export_tiny_model(str(tmp_path / "tiny")), 32)
    fn = model.signature("caption_with_attention")
    assert fn is not None and set(fn.structured_outputs) >= {"words", "attention"}
    with pytest.raises(ValueError, match="takes 32 px images but image_size is 64"):
        LoadedModel(str(tmp_path / "tiny"), 64)
