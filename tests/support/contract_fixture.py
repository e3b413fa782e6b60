"""A minimal SavedModel honouring the serving contract (DESIGN.md), for pipeline tests.

It is not a captioner: it maps the mean colour of each image to K fixed-vocabulary
phrases. It exists so pipeline tests need neither training nor the real encoder;
`tests/support/tiny.py` provides the real architecture with random weights.
"""
from __future__ import annotations

import json
import os

WORDS = ["dog", "cat", "boat", "tree", "person", "bus", "sign", "cake", "bird", "horse"]


def build_contract_model(path: str, image_size: int = 32, beams: int = 3,
                         version: str = "fixture-0") -> str:
    import tensorflow as tf

    class ContractFixture(tf.Module):
        def __init__(self):
            super().__init__()
            rng = tf.random.Generator.from_seed(7)
            self.w = tf.Variable(rng.normal([3, len(WORDS)]) * 4.0)
            self.vocab = tf.constant(WORDS)

        @tf.function(input_signature=[tf.TensorSpec([None, image_size, image_size, 3],
                                                    tf.uint8, name="images")])
        def serve(self, images):
            x = tf.reduce_mean(tf.cast(images, tf.float32) / 255.0, axis=[1, 2])
            logp = tf.nn.log_softmax(tf.matmul(x, self.w), axis=-1)
            top = tf.math.top_k(logp, k=beams)
            words = tf.gather(self.vocab, top.indices)
            captions = tf.strings.join(["a", words, "in a picture"], separator=" ")
            return {"captions": captions, "scores": top.values}

    module = ContractFixture()
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    card = {"name": "contract-fixture", "version": version, "image_size": image_size,
            "beam_width": beams, "backbone": "none (fixture)", "vocab_size": len(WORDS)}
    with open(os.path.join(path, "model_card.json"), "w") as f:
        json.dump(card, f, indent=2)
    return path
