"""The captioning model: encoder, decoder, beam search, training, export (TensorFlow only)."""
