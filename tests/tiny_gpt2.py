"""Tiny keras-hub GPT-2 language models built from configs (no presets, no
downloads) and the batches keras-hub's CausalLMPreprocessor yields: shared
by the keras-hub tests. Import it after `pytest.importorskip("keras_hub")`."""

import keras
import keras_hub
import numpy as np

VOCAB, LENGTH, BATCH = 40, 10, 4


def lm(layers, width, seed, vocab=VOCAB):
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=vocab,
        num_layers=layers,
        num_heads=2,
        hidden_dim=width,
        intermediate_dim=2 * width,
        max_sequence_length=LENGTH,
        dropout=0.0,  # deterministic steps, so that two calls can be compared
    )
    return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)


def batch(seed=0):
    """What keras-hub's CausalLMPreprocessor yields: x with the padding mask,
    y the next tokens, sample_weight the next tokens' padding mask; padding
    in every row."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, VOCAB, (BATCH, LENGTH)).astype("int32")
    padding = np.ones((BATCH, LENGTH), "int32")
    padding[:, 7:] = 0
    padding[0, 4:] = 0
    tokens[padding == 0] = 0
    labels = np.roll(tokens, -1, axis=1)
    sample_weight = np.roll(padding, -1, axis=1).astype("float32")
    sample_weight[:, -1] = 0.0
    return {"token_ids": tokens, "padding_mask": padding}, labels, sample_weight
