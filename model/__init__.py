"""The captioning model: encoder, decoder, beam search, training, export (TensorFlow only)."""

import pathlib as _pathlib

# The bundled default SavedModel (with model_card.json beside saved_model.pb).
DEFAULT_MODEL_DIR = str(_pathlib.Path(__file__).resolve().parent / "default")
