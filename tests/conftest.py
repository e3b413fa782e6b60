"""Shared fixtures: bundled photos, a contract-honouring model, the shared datasets."""
from __future__ import annotations

import os
import pathlib

import pytest

# Keep TensorFlow quiet and within CI's 2 cores.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("NO_GCE_CHECK", "true")

from tests.support.paths import SAMPLES, SHARED


@pytest.fixture(scope="session")
def sample_photos() -> pathlib.Path:
    """The bundled, redistributable sample photos (real COCO JPEGs)."""
    return SAMPLES


@pytest.fixture(scope="session")
def shared_datasets() -> pathlib.Path:
    if not (SHARED / "flickr8k" / "captions.jsonl").exists():
        pytest.skip(f"../shared/datasets not present at {SHARED}: dataset tests skipped")
    return SHARED


@pytest.fixture(scope="session")
def contract_model(tmp_path_factory) -> pathlib.Path:
    """A tiny SavedModel with the serving contract (uint8 images -> captions, scores)."""
    from tests.support.contract_fixture import build_contract_model

    path = tmp_path_factory.mktemp("models") / "contract"
    build_contract_model(str(path))
    return path
