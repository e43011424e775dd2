"""keras-hub causal language models as teacher and student, out of the box:
tiny GPT-2 models built from configs (no presets, no downloads), with the
inputs `{"token_ids", "padding_mask"}` and the `(x, y, sample_weight)`
batches keras-hub's preprocessors produce. Padding never counts: changing
tokens or labels at padded positions changes no loss, metric or gradient,
and each token loss equals a NumPy reference on the real tokens only.
"""

import keras
import numpy as np
import pytest
import reference
from helpers import to_numpy

import keras_cskd

keras_hub = pytest.importorskip("keras_hub", reason="keras-hub (the [hub] extra) not installed")

from tiny_gpt2 import BATCH, LENGTH, VOCAB  # noqa: E402,F401
from tiny_gpt2 import batch as _batch  # noqa: E402
from tiny_gpt2 import lm as _lm  # noqa: E402


@pytest.fixture(scope="module")
def pair():
    return _lm(2, 32, 0), _lm(1, 16, 1)


def _distiller(pair, loss):
    teacher, student = pair
    distiller = keras_cskd.Distiller(
        student, teacher, loss, distillation_loss_weight=1.0, check_roles=False
    )
    distiller.compile(optimizer="sgd", metrics=["accuracy"])
    return distiller


@pytest.mark.parametrize("loss", ["kd", "reverse_kl", "jsd", "cskd", "dist"])
def test_padding_never_counts(pair, loss):
    """Tokens and labels at padded positions changed: the same loss, metric
    and gradient."""
    distiller = _distiller(pair, loss)
    x, y, sample_weight = _batch()
    changed_x = {**x, "token_ids": np.where(x["padding_mask"] > 0, x["token_ids"], 17)}
    changed_y = np.where(sample_weight > 0, y, 5)
    values = []
    for inputs, labels in ((x, y), (changed_x, changed_y)):
        step = distiller(inputs, training=True)
        values.append(to_numpy(distiller.compute_loss(inputs, labels, step, sample_weight)))
        logs = distiller.compute_metrics(inputs, labels, step, sample_weight)
        values.append(to_numpy(logs["accuracy"]))
        distiller.reset_metrics()
    np.testing.assert_allclose(values[0], values[2], rtol=1e-6)
    np.testing.assert_allclose(values[1], values[3], rtol=1e-6)


@pytest.mark.parametrize(
    "loss, per_token",
    [
        ("kd", lambda t, s: reference.kd_per_sample(t, s, 4.0)),
        ("reverse_kl", lambda t, s: reference.reverse_kl_per_sample(t, s)),
        ("jsd", lambda t, s: reference.jsd_per_sample(t, s, 0.5)),
        ("tv", lambda t, s: reference.tv_per_sample(t, s)),
    ],
)
def test_token_losses_are_the_mean_over_real_tokens(pair, loss, per_token):
    """The distillation term and the cross-entropy are each the mean over the
    real (labelled) tokens, whatever the padding fraction of the batch."""
    distiller = _distiller(pair, loss)
    x, y, sample_weight = _batch(seed=1)
    step = distiller(x, training=True)
    total = to_numpy(distiller.compute_loss(x, y, step, sample_weight))
    t = to_numpy(step.teacher_logits[0])
    s = to_numpy(step.student_logits)
    keep = sample_weight > 0
    rows_t, rows_s, rows_y, _ = reference.kept_positions(t, s, y, None, keep)
    log_p = rows_s - rows_s.max(-1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(-1, keepdims=True))
    cross_entropy = -np.mean(log_p[np.arange(len(rows_y)), rows_y])
    expected = cross_entropy + float(np.mean(per_token(rows_t, rows_s)))
    np.testing.assert_allclose(total, expected, rtol=1e-5)


def test_a_causal_lm_pair_trains_and_saves(pair, tmp_path):
    teacher, student = pair
    distiller = _distiller((teacher, student), "kd")
    distiller.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"])
    x, y, sample_weight = _batch(seed=2)
    before = [np.array(w) for w in teacher.get_weights()]
    history = distiller.fit(x, y, sample_weight=sample_weight, batch_size=2, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    for a, b in zip(before, teacher.get_weights()):
        np.testing.assert_array_equal(a, b)
    path = distiller.export_student(tmp_path / "student.keras")
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        to_numpy(loaded(x)), to_numpy(distiller.student(x)), rtol=1e-5, atol=1e-5
    )


def test_a_vocabulary_mismatch_is_refused(pair):
    teacher, _ = pair
    student = _lm(1, 16, 3, vocab=VOCAB + 8)  # e.g. padded to a multiple of 8
    with pytest.raises(ValueError, match=f"predicts {VOCAB} classes but the student {VOCAB + 8}"):
        keras_cskd.Distiller(student, teacher, "kd", check_roles=False)


def test_consecutive_steps_use_each_steps_own_gradient():
    """Three SGD steps of a Distiller with distillation weight 0 are three
    steps of plain Keras training with the same cross-entropy (no padding:
    the same mean). Under PyTorch, torch's `zero_grad` does not reach a
    keras-hub student inside another model: without
    `_backend.clear_gradients` each step added up all earlier gradients."""
    x, y, _ = _batch(3)
    x = {"token_ids": np.where(x["token_ids"] == 0, 5, x["token_ids"]).astype("int32")}
    x["padding_mask"] = np.ones_like(x["token_ids"])
    y = np.roll(x["token_ids"], -1, axis=1)
    cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    plain = _lm(1, 16, 1)
    plain.compile(keras.optimizers.SGD(0.5), cross_entropy)
    student = _lm(1, 16, 1)
    distiller = keras_cskd.Distiller(
        student, _lm(2, 32, 0), "kd", distillation_loss_weight=0.0, check_roles=False
    )
    distiller.compile(keras.optimizers.SGD(0.5), loss=cross_entropy)
    for _ in range(3):
        plain.train_on_batch(x, y)
        distiller.train_on_batch(x, y)
    for mine, want in zip(student.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(mine, want, rtol=1e-4, atol=1e-5)


def test_feature_distillation_reads_transformer_blocks_inside_the_backbone(pair):
    """A transformer block's output inside a CausalLM's backbone, named by
    its path; the widths differ (32 and 16): a learned projection. Features
    only: the term falls as the student learns to match them."""
    teacher, student = pair
    initial = student.get_weights()
    features = keras_cskd.FeatureDistillation(
        "mse",
        f"{teacher.backbone.name}/transformer_layer_1",
        f"{student.backbone.name}/transformer_layer_0",
    )
    distiller = keras_cskd.Distiller(
        student, teacher, features, student_loss_weight=0.0, check_roles=False
    )
    distiller.compile(keras.optimizers.Adam(0.01))
    x, y, weights = _batch()
    try:
        terms = [
            float(distiller.train_on_batch(x, y, sample_weight=weights, return_dict=True)["loss"])
            for _ in range(8)
        ]
    finally:
        student.set_weights(initial)
    assert np.isfinite(terms).all() and terms[0] > 0
    assert terms[-1] < 0.8 * terms[0], terms
