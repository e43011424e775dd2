"""`Distiller(..., chunk_size=n)`: the training step from hidden states and
output heads, a chunk of tokens at a time. On a tiny keras-hub GPT-2 pair
(as in test_hub.py) with padding in the batch, one SGD step with chunks of
3 tokens (not dividing the 40 tokens) gives the unchunked step's loss,
logged terms and updated student weights; what cannot be chunked is refused
with a message naming the fix; a saved chunked Distiller loads and trains
on as the original does."""

import keras
import numpy as np
import pytest
from helpers import to_numpy

import keras_cskd
from keras_cskd import losses

keras_hub = pytest.importorskip("keras_hub", reason="keras-hub (the [hub] extra) not installed")

pytestmark = pytest.mark.usefixtures("fast_jax_compilation")

from tiny_gpt2 import BATCH, LENGTH, VOCAB  # noqa: E402,F401
from tiny_gpt2 import batch as _batch  # noqa: E402
from tiny_gpt2 import lm as _lm  # noqa: E402


@pytest.fixture(scope="module")
def pair():
    return _lm(2, 32, 0), _lm(1, 16, 1)


def _step(pair, loss, chunk_size, metrics=None):
    """The logs and the student's weights after one SGD step from the same
    initial weights."""
    teacher, student = pair
    initial = [np.array(w) for w in student.get_weights()]
    try:
        distiller = keras_cskd.Distiller(
            student, teacher, loss, check_roles=False, chunk_size=chunk_size
        )
        distiller.compile(optimizer=keras.optimizers.SGD(0.5), metrics=metrics)
        x, y, sample_weight = _batch()
        logs = distiller.train_on_batch(x, y, sample_weight=sample_weight, return_dict=True)
        return {k: float(to_numpy(v)) for k, v in logs.items()}, [
            np.array(w) for w in student.get_weights()
        ]
    finally:
        _restore(student, initial)


def _restore(student, initial):
    student.set_weights(initial)


LOSSES = {
    "kd": "kd",
    "reverse_kl": losses.ReverseKLDistillation(temperature=2.0),
    "cskd": "cskd",
    "mixed": [
        (losses.JensenShannonDistillation(beta=0.3), 1.0),
        (losses.SkewKLDistillation(alpha=0.2, reverse=True), 0.5),
        (losses.TotalVariationDistillation(), 0.25),
    ],
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_a_chunked_step_is_the_unchunked_step(pair, name):
    metrics = ["accuracy"] if name == "kd" else None
    full_logs, full_weights = _step(pair, LOSSES[name], None, metrics)
    logs, weights = _step(pair, LOSSES[name], 3, metrics)
    assert sorted(logs) == sorted(full_logs)
    for key in full_logs:
        if key in full_logs:
            np.testing.assert_allclose(logs[key], full_logs[key], rtol=1e-4, err_msg=key)
    assert full_logs["distillation_loss"] > 0
    for a, b in zip(weights, full_weights):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    initial = pair[1].get_weights()
    moved = sum(not np.allclose(a, b) for a, b in zip(weights, initial))
    assert moved > 0


def _refused(pair, match, loss="kd", teacher="pair", **kwargs):
    teacher_model, student = pair
    teacher = teacher_model if teacher == "pair" else teacher
    with pytest.raises(ValueError, match=match):
        keras_cskd.Distiller(student, teacher, loss, check_roles=False, chunk_size=3, **kwargs)


@pytest.mark.parametrize(
    "loss, name",
    [
        ("dkd", "DecoupledKDDistillation"),
        ("dist", "DISTDistillation"),
        ("stkd", "SimilarityTransferDistillation"),
        ("mse", "LogitMSEDistillation"),
        ("cskd_cswt", "CosineSimilarityDistillation"),
        ([("kd", 1.0), (keras_cskd.FeatureDistillation("mse"), 1.0)], "FeatureDistillation"),
    ],
)
def test_losses_that_cannot_be_chunked_are_refused(pair, loss, name):
    _refused(pair, rf"chunk_size=3\) cannot chunk {name}: it supports .*chunk_size=None", loss)


def test_what_a_chunked_step_cannot_do_is_refused(pair):
    teacher, student = pair
    _refused(pair, "several teachers are not supported", teacher=[teacher, teacher])
    _refused(pair, r"cached teacher logits \(teacher=None\) are not supported", teacher=None)
    _refused(pair, "does not support mixup: pass mixup_alpha=None", mixup_alpha=0.2)
    with pytest.raises(ValueError, match=r"chunk_size=0\): give a positive integer"):
        keras_cskd.Distiller(student, teacher, "kd", check_roles=False, chunk_size=0)
    plain = keras.Sequential(
        [keras.Input((LENGTH,), dtype="int32"), keras.layers.Embedding(VOCAB, 8)]
        + [keras.layers.Dense(VOCAB)]
    )
    with pytest.raises(ValueError, match="needs the student's final hidden states and output"):
        keras_cskd.Distiller(plain, teacher, "kd", check_roles=False, chunk_size=3)
    distiller = keras_cskd.Distiller(student, teacher, "kd", check_roles=False, chunk_size=3)
    with pytest.raises(ValueError, match="sparse cross-entropy from logits"):
        distiller.compile(optimizer="sgd", loss="mse")
    distiller.compile(optimizer="sgd", loss=None)  # distillation alone is fine


@pytest.mark.parametrize("form", ["one_hot", "soft"])
def test_one_hot_or_soft_labels_are_refused_before_a_weight_moves(pair, form):
    """The chunked step reads integer token labels; one-hot (or soft) labels
    of width VOCAB get an error naming the shape, and the student is as it
    was."""
    teacher, student = pair
    initial = [np.array(w) for w in student.get_weights()]
    distiller = keras_cskd.Distiller(student, teacher, "kd", check_roles=False, chunk_size=3)
    distiller.compile(optimizer=keras.optimizers.SGD(0.5))
    x, y, sample_weight = _batch()
    wide = np.eye(VOCAB, dtype="float32")[y]
    if form == "soft":
        wide = 0.9 * wide + 0.1 / VOCAB
    with pytest.raises(ValueError, match=rf"integer token labels .*\({BATCH}, {LENGTH}, {VOCAB}\)"):
        distiller.train_on_batch(x, wide, sample_weight=sample_weight)
    for before, after in zip(initial, student.get_weights()):
        np.testing.assert_array_equal(np.array(after), before)


def test_a_saved_chunked_distiller_loads_and_trains_on(pair, tmp_path):
    teacher, student = pair
    initial = [np.array(w) for w in student.get_weights()]
    try:
        distiller = keras_cskd.Distiller(student, teacher, "kd", check_roles=False, chunk_size=3)
        distiller.compile(optimizer=keras.optimizers.SGD(0.5))
        x, y, sample_weight = _batch()
        distiller.train_on_batch(x, y, sample_weight=sample_weight)
        path = str(tmp_path / "chunked.keras")
        distiller.save(path)
        loaded = keras.saving.load_model(path)
        assert loaded.chunk_size == 3 and loaded.get_config()["chunk_size"] == 3
        x, y, sample_weight = _batch(seed=1)
        logs = [
            d.train_on_batch(x, y, sample_weight=sample_weight, return_dict=True)
            for d in (distiller, loaded)
        ]
        np.testing.assert_allclose(
            float(to_numpy(logs[0]["loss"])), float(to_numpy(logs[1]["loss"])), rtol=1e-5
        )
        for a, b in zip(distiller.student.get_weights(), loaded.student.get_weights()):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    finally:
        _restore(student, initial)


def test_fit_trains_a_chunked_distiller(pair):
    """`fit` (its first-batch checks included) runs the chunked step; the
    teacher is untouched and `evaluate` is the student's."""
    teacher, student = pair
    initial = [np.array(w) for w in student.get_weights()]
    before = [np.array(w) for w in teacher.get_weights()]
    try:
        distiller = keras_cskd.Distiller(
            student, teacher, "reverse_kl", check_roles=False, chunk_size=4
        )
        distiller.compile(optimizer=keras.optimizers.SGD(0.1))
        x, y, sample_weight = _batch()
        history = distiller.fit(
            x, y, sample_weight=sample_weight, batch_size=2, epochs=1, verbose=0
        )
        assert np.all(np.isfinite(history.history["loss"]))
        assert history.history["distillation_loss"][0] > 0
        for a, b in zip(before, teacher.get_weights()):
            np.testing.assert_array_equal(a, b)
        logs = distiller.evaluate(x, y, sample_weight=sample_weight, verbose=0, return_dict=True)
        assert "distillation_loss" not in logs and np.isfinite(logs["loss"])
    finally:
        _restore(student, initial)
