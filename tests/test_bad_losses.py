"""Bad input: losses and `compile` -- misspelt loss names, cross-entropies
that read logits as probabilities, a loss scaler that skips steps, and
batches too small for the batch-wise losses (CSKD, STKD, DIST), large
class counts, and the masks and sample weights every loss takes. One case
per row of docs/reliability.md's table; the harness is `bad_inputs.py`."""

import warnings

import keras
import numpy as np
import pytest
import reference
from bad_inputs import CLASSES, Batches, Cases, to_numpy
from helpers import value_and_grad

import keras_cskd
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


@cases.behaviour(
    "cskd_32k_classes",
    "CSKD on 2 rows of C = 32,000 logits (probabilities ~1/C, columns of norm ~1e-5; "
    "0.1 divided by `||a|| ||b|| + 1e-8`)",
)
def _(lab):
    rng = np.random.default_rng(0)
    t, s = (rng.normal(size=(2, 32_000)).astype("float32") for _ in range(2))
    value = float(to_numpy(keras_cskd.losses.CosineSimilarityDistillation()(t, s)))
    expected = reference.cskd_loss(t, s, 4.0)  # float64, cosine without epsilon
    np.testing.assert_allclose(value, expected, rtol=1e-5)
    p_t, p_s = reference.softmax(t, 4.0), reference.softmax(s, 4.0)
    norms = np.linalg.norm(p_t, axis=0) * np.linalg.norm(p_s, axis=0)
    with_epsilon = 16.0 * (1.0 - np.mean(np.sum(p_t * p_s, axis=0) / (norms + 1e-8)))
    assert with_epsilon > 10 * expected
    return (
        f"The loss equals a float64 NumPy evaluation of the formula (cosine without "
        f"epsilon): {expected:.2f} (0.1 gave {with_epsilon:.2f}).",
        "Trains on the right loss at any class count.",
    )


def _token_logits(seed=0, batch=4, length=6):
    rng = np.random.default_rng(seed)
    t, s = (rng.normal(size=(batch, length, CLASSES)).astype("float32") * 2 for _ in range(2))
    return t, s, rng.integers(0, CLASSES, (batch, length))


MASKED_LOSSES = ("kd", "mse", "dkd", "cskd", "cskd_cswt", "stkd", "dist")


@cases.behaviour(
    "mask_all_zero",
    "`mask=` of zeros (every position dropped) passed to each loss, logits "
    "`(4, 6, classes)` (0.1: CSKD, DIST and STKD gave tau^2)",
)
def _(lab):
    t, s, labels = _token_logits()
    mask = np.zeros(t.shape[:-1], "float32")
    for name in MASKED_LOSSES:
        loss = keras_cskd.losses.get(name)
        value, grad = value_and_grad(
            lambda tt, ss, loss=loss: loss(tt, ss, labels=labels, mask=mask), t, s
        )
        assert float(value) == 0.0, name
        np.testing.assert_array_equal(grad, np.zeros_like(grad), err_msg=name)
    return (
        f"Every loss ({', '.join(MASKED_LOSSES)}) gives 0 with a zero gradient.",
        "An all-padding batch trains nothing through the distillation term.",
    )


@cases.behaviour(
    "mask_fractional",
    "`mask=` holding 0.5 at some positions (0.1 read 0.5 as dropped in the loss, kept in "
    "its checks)",
)
def _(lab):
    t, s, labels = _token_logits(seed=1)
    mask = np.ones(t.shape[:-1], "float32")
    mask[:, -2:] = 0.5
    for name in MASKED_LOSSES:
        loss = keras_cskd.losses.get(name)
        halves = to_numpy(loss(t, s, labels=labels, mask=mask))
        weighted = to_numpy(loss(t, s, labels=labels, mask=np.ones_like(mask), sample_weight=mask))
        np.testing.assert_allclose(halves, weighted, rtol=1e-5, atol=1e-6, err_msg=name)
    return (
        "A mask of 0.5 keeps its position with weight 0.5: every loss equals the loss with "
        "`sample_weight` 0.5 there.",
        "Trains on the weighted loss.",
    )


@cases.bad_input(
    "mask_negative",
    "`mask=` holding -1 (e.g. a padding id used as the mask)",
    ValueError,
    ["the mask holds 1 negative value(s) (e.g. -1)", "0 drops a position"],
)
def _(lab):
    t, s, _ = _token_logits()
    mask = np.ones(t.shape[:-1], "float32")
    mask[0, 0] = -1.0
    return lambda: keras_cskd.losses.get("kd")(t, s, mask=mask)


@cases.behaviour(
    "mask_one_position",
    "`mask=` keeping one position, with a batch-wise loss (0.1: DIST 31.45)",
)
def _(lab):
    t, s, _ = _token_logits()
    mask = np.zeros(t.shape[:-1], "float32")
    mask[1, 2] = 1.0
    for name in ("cskd", "cskd_cswt", "dist"):
        assert float(to_numpy(keras_cskd.losses.get(name)(t, s, mask=mask))) == 0.0, name
    stkd = keras_cskd.losses.get("stkd")
    kept = stkd.kl_weight * reference.kd_loss(t[1:2, 2], s[1:2, 2], stkd.temperature)
    # A small KL (0.006) in float32: cancellation leaves ~1e-6 of absolute error.
    np.testing.assert_allclose(to_numpy(stkd(t, s, mask=mask)), kept, rtol=1e-5, atol=3e-6)
    return (
        "The batch-wise term is 0 (one position has nothing to compare with): CSKD, CSWT "
        "and DIST give 0, STKD its KL term of that position.",
        "A `Distiller` step with one kept position is left out of the logged "
        "`distillation_loss`, with a warning.",
    )


@cases.behaviour(
    "cswt_ignores_weight_zero",
    "CSWT (`'cskd_cswt'`) with a sample of `sample_weight` 0 whose logits disagree the most",
)
def _(lab):
    rng = np.random.default_rng(3)
    t, s = (rng.normal(size=(8, CLASSES)).astype("float32") * 3 for _ in range(2))
    weights = np.ones(8, "float32")
    weights[0] = 0.0
    loss = keras_cskd.losses.get("cskd_cswt")
    before = to_numpy(loss(t, s, sample_weight=weights))
    t2, s2 = t.copy(), s.copy()
    t2[0], s2[0] = t[0] * 10, -s[0] * 10  # the worst agreement: would set the max
    np.testing.assert_allclose(to_numpy(loss(t2, s2, sample_weight=weights)), before, rtol=1e-6)
    np.testing.assert_allclose(
        before, reference.cskd_cswt_loss(t, s, sample_weight=weights), rtol=1e-5
    )
    return (
        "The temperatures ignore it: changing its logits changes nothing, and the loss "
        "equals the float64 NumPy reference on the other samples.",
        "Trains as if the sample were absent.",
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


def _tf_dataset(x, y, batch_size):
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)


@cases.bad_input(
    "cskd_tf_dataset_batches_of_1",
    "CSKD fed a `tf.data.Dataset` batched by 1 (not read ahead)",
    ValueError,
    ["the first batch holds one sample", "CosineSimilarityDistillation", "dataset.batch(32)"],
)
def _(lab):
    distiller = lab.distiller("cskd")
    return lambda: distiller.fit(_tf_dataset(lab.x, lab.y, 1), verbose=0)


@cases.behaviour(
    "cskd_tf_dataset_last_batch_of_1",
    "CSKD fed a `tf.data.Dataset` whose last batch holds one sample (33 samples in batches of 16)",
)
def _(lab):
    distiller = lab.distiller("cskd")
    x = np.concatenate([lab.x, lab.x[:1]])
    y = np.concatenate([lab.y, lab.y[:1]])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = distiller.fit(_tf_dataset(x, y, 16), verbose=0)
    messages = [str(w.message) for w in caught if "nothing to distil" in str(w.message)]
    assert len(messages) == 1 and "1 of its 3 training steps" in messages[0], messages
    assert int(to_numpy(distiller.optimizer.iterations)) == 3
    assert np.isfinite(history.history["distillation_loss"][0])
    return (
        f"Trains, no error; `RuntimeWarning` at the end of the epoch: {messages[0]}",
        "All 3 steps train; the one-sample step on cross-entropy alone, left out of the "
        "logged `distillation_loss`.",
    )


@pytest.mark.parametrize("key", list(cases))
def test_bad_input(key, tmp_path_factory):
    cases.check(key, tmp_path_factory)


def test_reliability_table_is_current(tmp_path_factory):
    cases.check_page(tmp_path_factory, __name__)
