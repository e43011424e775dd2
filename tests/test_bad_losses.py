"""Bad input: losses and `compile` -- misspelt loss names, cross-entropies
that read logits as probabilities, a loss scaler that skips steps, and
batches too small for the batch-wise losses (CSKD, STKD, DIST). One case
per row of docs/reliability.md's table; the harness is `bad_inputs.py`."""

import warnings

import keras
import numpy as np
import pytest
import reference
from bad_inputs import CLASSES, Batches, Cases, to_numpy

from keras_cskd import Distiller

cases = Cases("Losses, compile and batch sizes")


@cases.bad_input(
    "unknown_loss",
    "Misspelt loss name `'cskdd'`",
    ValueError,
    ["Unknown distillation loss 'cskdd'", "'cskd'"],
)
def _(lab):
    student, teacher = lab.model("student"), lab.model("teacher")
    return lambda: Distiller(student, teacher, "cskdd")


@cases.bad_input(
    "probability_cross_entropy",
    "`compile(loss=SparseCategoricalCrossentropy())` (reads the logits as probabilities)",
    ValueError,
    ["from_logits=True"],
)
def _(lab):
    distiller = Distiller(lab.model("student"), lab.model("teacher"), "kd")
    return lambda: distiller.compile(loss=keras.losses.SparseCategoricalCrossentropy())


def _student_loss_reads_logits(lab, loss, labels):
    """Compiles with `loss` and returns the student loss of one batch and
    NumPy's cross-entropy of the student's logits on it."""
    distiller = lab.distiller(distillation_loss_weight=0.0)
    distiller.compile(optimizer="adam", loss=loss)
    x = lab.x[:8]
    value = distiller.compute_loss(x=x, y=labels, y_pred=distiller(x, training=True))
    logits = to_numpy(distiller.student(x))
    classes = labels if labels.ndim == 1 else labels.argmax(axis=1)
    expected = -np.mean([reference.log_softmax_row(row)[c] for row, c in zip(logits, classes)])
    np.testing.assert_allclose(float(to_numpy(value)), expected, rtol=1e-5)
    return distiller, expected


@cases.behaviour(
    "cross_entropy_function",
    "`compile(loss=keras.losses.sparse_categorical_crossentropy)` (the function, whose "
    "default is `from_logits=False`)",
)
def _(lab):
    distiller, _ = _student_loss_reads_logits(
        lab, keras.losses.sparse_categorical_crossentropy, lab.y[:8]
    )
    assert type(distiller.loss).__name__ == "StudentCrossEntropy"
    return (
        "Accepted and resolved with `from_logits=True` (a `StudentCrossEntropy`): the "
        "student loss of a batch equals NumPy's cross-entropy of the logits.",
        "Trains on the right loss; its labels are checked like the default loss's (next row).",
    )


@cases.bad_input(
    "cross_entropy_function_labels_out_of_range",
    "`compile(loss=keras.losses.sparse_categorical_crossentropy)` with labels >= the number "
    "of classes",
    ValueError,
    ["class indices in [0, 3)", "max 3"],
)
def _(lab):
    distiller = lab.distiller()
    distiller.compile(optimizer="adam", loss=keras.losses.sparse_categorical_crossentropy)
    y = lab.y.copy()
    y[5] = CLASSES
    return lambda: lab.fit(distiller, y=y)


@cases.behaviour(
    "cross_entropy_class_name",
    "`compile(loss='CategoricalCrossentropy')` (the class name: Keras builds it with "
    "`from_logits=False`), one-hot labels",
)
def _(lab):
    one_hot = np.eye(CLASSES, dtype="float32")[lab.y[:8]]
    distiller, _ = _student_loss_reads_logits(lab, "CategoricalCrossentropy", one_hot)
    assert distiller.loss.kind == "categorical"
    return (
        "Accepted and resolved with `from_logits=True`: the student loss equals NumPy's "
        "cross-entropy of the logits (so does `'SparseCategoricalCrossentropy'`).",
        "Trains on the right loss.",
    )


@cases.bad_input(
    "binary_cross_entropy_name",
    "`compile(loss='binary_crossentropy')` (reads probabilities; no way to say "
    "`from_logits` in a name)",
    ValueError,
    ["would read the student's logits as probabilities", "BinaryCrossentropy(from_logits=True)"],
)
def _(lab):
    distiller = Distiller(lab.model("student"), lab.model("teacher"), "kd")
    return lambda: distiller.compile(loss="binary_crossentropy")


@cases.behaviour(
    "loss_scaler_skips_every_step",
    "`LossScaleOptimizer` (mixed precision) whose gradients turn non-finite after the "
    "first batch (NaN in the later batches of a `PyDataset`)",
)
def _(lab):
    distiller = lab.distiller()
    distiller.compile(optimizer=keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam()))
    x = lab.x.copy()
    x[8:, 0] = np.nan  # batches 1-3 of 4; the first batch is checked ahead
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        distiller.fit(Batches(x, lab.y, 8), verbose=0, shuffle=False)
    messages = [str(w.message) for w in caught if "loss scaler" in str(w.message)]
    assert len(messages) == 1, messages
    assert "skipped 3 of 4 training steps" in messages[0]
    assert float(to_numpy(distiller.optimizer.dynamic_scale)) == 2.0**15 / 2**3
    for weight in distiller.student.weights:
        assert np.all(np.isfinite(to_numpy(weight)))
    return (
        f"`RuntimeWarning` at the end of the epoch: {messages[0]}",
        "The skipped steps change nothing: the student's weights stay finite.",
    )


@cases.bad_input(
    "cskd_batch_size_1",
    "`batch_size=1` with CSKD (compares each class across the batch)",
    ValueError,
    ["CosineSimilarityDistillation", "batch_size=1 gives batches of one sample", "batch_size=2"],
)
def _(lab):
    distiller = lab.distiller("cskd")
    return lambda: lab.fit(distiller, batch_size=1)


@cases.bad_input(
    "stkd_batch_size_1",
    "`batch_size=1` with STKD",
    ValueError,
    ["SimilarityTransferDistillation", "at least 2 samples per batch"],
)
def _(lab):
    distiller = lab.distiller("stkd")
    return lambda: lab.fit(distiller, batch_size=1)


@cases.bad_input(
    "dist_last_batch_of_1",
    "DIST with 33 samples in batches of 16 (last batch of one sample)",
    ValueError,
    ["DISTDistillation", "33 training samples in batches of 16 leave a last batch of one sample"],
)
def _(lab):
    distiller = lab.distiller("dist")
    x = np.concatenate([lab.x, lab.x[:1]])
    y = np.concatenate([lab.y, lab.y[:1]])
    return lambda: lab.fit(distiller, x=x, y=y, batch_size=16)


@cases.bad_input(
    "cskd_dataset_batches_of_1",
    "CSKD fed a `PyDataset` of one-sample batches (not read ahead; its first batch is checked)",
    ValueError,
    ["the first batch holds one sample", "CosineSimilarityDistillation", "at least 2 samples"],
)
def _(lab):
    distiller = lab.distiller("cskd")
    return lambda: distiller.fit(Batches(lab.x, lab.y, 1), verbose=0, shuffle=False)


@cases.behaviour(
    "cskd_dataset_last_batch_of_1",
    "CSKD fed a `PyDataset` whose last batch holds one sample (33 samples in batches of 16)",
)
def _(lab):
    distiller = lab.distiller("cskd")
    x = np.concatenate([lab.x, lab.x[:1]])
    y = np.concatenate([lab.y, lab.y[:1]])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = distiller.fit(Batches(x, y, 16, ragged=True), verbose=0, shuffle=False)
    messages = [str(w.message) for w in caught if "nothing to distil" in str(w.message)]
    assert len(messages) == 1, [str(w.message) for w in caught]
    assert "1 of its 3 training steps" in messages[0]
    assert np.isfinite(history.history["distillation_loss"][0])
    return (
        f"`RuntimeWarning` at the end of the epoch: {messages[0]}",
        "The one-sample step trains on cross-entropy alone; its CSKD term (0) is left "
        "out of the logged `distillation_loss`.",
    )


@pytest.mark.parametrize("key", list(cases))
def test_bad_input(key, tmp_path_factory):
    cases.check(key, tmp_path_factory)


def test_reliability_table_is_current(tmp_path_factory):
    cases.check_page(tmp_path_factory, __name__)
