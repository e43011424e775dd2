"""Bad input: the data `fit` gets -- arrays, labels, sample weights, cached
teacher logits and datasets (`tf.data`, `PyDataset`, generators), NaN and
empty data, token labels, and masks, padding and zero sample weights in
the Distiller. One case per row of docs/reliability.md's table; the
harness is `bad_inputs.py`."""

import contextlib
import io
import warnings

import keras
import numpy as np
import pytest
from bad_inputs import CLASSES, Batches, Cases, normalise, to_numpy

from keras_cskd import Distiller

cases = Cases("Data: arrays, labels, sample weights, datasets")


class SubclassedStudent(keras.Model):
    """A subclassed student: its class count is unknown until called."""

    def __init__(self):
        super().__init__(name="subclassed_student")
        self.dense = keras.layers.Dense(CLASSES, name="student_logits")

    def call(self, x):
        return self.dense(x)


@cases.bad_input(
    "x_wrong_rank",
    "Images `(n, 8, 8, 1)` given to a model built for flat vectors `(n, 64)`",
    ValueError,
    ["incompatible", "expected shape=(None, 64), found shape=(8, 8, 8)"],
    hint="Keras' message: reshape the data (or add a `Flatten` layer to both models).",
)
def _(lab):
    distiller = lab.distiller(
        student=lab.model("student", features=64), teacher=lab.model("teacher", features=64)
    )
    images = np.zeros((32, 8, 8, 1), "float32")
    return lambda: lab.fit(distiller, x=images)


@cases.bad_input(
    "labels_wrong_rank",
    "Labels of shape `(n, 1, 1)`",
    ValueError,
    ["shape (32, 1, 1)", "class indices of shape (n,)"],
)
def _(lab):
    distiller = lab.distiller()
    return lambda: lab.fit(distiller, y=lab.y[:, None, None])


@cases.bad_input(
    "labels_out_of_range",
    "Sparse labels >= number of classes (labels 5..7 for 3 classes)",
    ValueError,
    ["class indices in [0, 3)", "32 label(s) lie outside", "Remap"],
)
def _(lab):
    distiller = lab.distiller()
    return lambda: lab.fit(distiller, y=lab.y + 5)


@cases.bad_input(
    "labels_out_of_range_subclassed",
    "Labels >= number of classes, with a subclassed student (class count known only once called)",
    ValueError,
    ["class indices in [0, 3)", "max 3"],
)
def _(lab):
    distiller = lab.distiller(student=lab.keep(SubclassedStudent()))
    y = lab.y.copy()
    y[0] = CLASSES
    return lambda: lab.fit(distiller, y=y)


@cases.bad_input(
    "labels_negative",
    "Negative labels (e.g. -1 for 'unlabelled')",
    ValueError,
    ["class indices in [0, 3)", "min -1"],
)
def _(lab):
    distiller = lab.distiller()
    y = lab.y.copy()
    y[::4] = -1
    return lambda: lab.fit(distiller, y=y)


@cases.bad_input(
    "labels_not_integer",
    "Float labels with fractional values, shape `(n,)`",
    ValueError,
    ["non-integer values", "soft labels"],
)
def _(lab):
    distiller = lab.distiller()
    return lambda: lab.fit(distiller, y=lab.y + 0.5)


@cases.bad_input(
    "one_hot_wrong_width",
    "One-hot labels with 5 columns for 3 classes",
    ValueError,
    ["5 columns", "(n, 3)"],
)
def _(lab):
    distiller = lab.distiller()
    return lambda: lab.fit(distiller, y=np.eye(5, dtype="float32")[lab.y])


@cases.bad_input(
    "dkd_smoothed_labels",
    "Label-smoothed one-hot labels with DKD (defined on hard labels)",
    ValueError,
    ["DecoupledKDDistillation needs hard labels", "32 row(s)", "np.argmax"],
)
def _(lab):
    distiller = lab.distiller("dkd")
    smoothed = np.eye(CLASSES, dtype="float32")[lab.y] * 0.9 + 0.1 / CLASSES
    return lambda: lab.fit(distiller, y=smoothed)


@cases.bad_input(
    "multi_hot_labels",
    "Multi-hot labels (two 1s per row, rows summing to 2)",
    ValueError,
    ["32 row(s) are not (row 0 sums to 2)", "Multi-label (multi-hot)"],
)
def _(lab):
    distiller = lab.distiller()
    eye = np.eye(CLASSES, dtype="float32")
    return lambda: lab.fit(distiller, y=eye[lab.y] + eye[(lab.y + 1) % CLASSES])


@cases.bad_input(
    "one_hot_labels_sparse_loss",
    "One-hot labels with `compile(loss='sparse_categorical_crossentropy')`",
    ValueError,
    ["are one-hot or soft, shape (32, 3)", "sparse cross-entropy", "np.argmax(y, axis=-1)"],
)
def _(lab):
    distiller = lab.distiller()
    distiller.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return lambda: lab.fit(distiller, y=np.eye(CLASSES, dtype="float32")[lab.y])


@cases.bad_input(
    "sparse_labels_categorical_loss",
    "Class indices with `compile(loss='categorical_crossentropy')`",
    ValueError,
    ["are class indices, shape (32,)", "categorical cross-entropy", "np.eye(3)[y]"],
)
def _(lab):
    distiller = lab.distiller()
    distiller.compile(optimizer="adam", loss="categorical_crossentropy")
    return lambda: lab.fit(distiller)


T = 6  # positions per sample of the token models


def _token_model(lab, name, width, mask_zero=False, head=None):
    """`Embedding(20, width)` -> `Dense(classes)` over `T` token ids: logits
    `(batch, T, classes)`; `head` (a layer) after the logits."""
    tokens = keras.Input((T,), dtype="int32", name=f"{name}_tokens")
    h = keras.layers.Embedding(20, width, mask_zero=mask_zero, name=f"{name}_embedding")(tokens)
    logits = keras.layers.Dense(CLASSES, name=f"{name}_logits")(h)
    if head is not None:
        logits = head(logits)
    return lab.keep(keras.Model(tokens, logits, name=name), np.ones((4, T), "int32"))


def _tokens(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(1, 20, (n, T)).astype("int32"), rng.integers(0, CLASSES, (n, T))


def _token_distiller(lab, loss="kd", mask_zero=False, head=None):
    student = _token_model(lab, "student", 4, mask_zero, head)
    return lab.distiller(loss, student=student, teacher=_token_model(lab, "teacher", 16))


@cases.bad_input(
    "token_labels_one_short",
    "Token labels of shape `(n, T-1)` for logits `(n, T, classes)` (shifted once too often)",
    ValueError,
    ["have shape (32, 5)", "positions of shape (6,)", "shape (n, 6)", "-100 where there is none"],
)
def _(lab):
    distiller = _token_distiller(lab)
    x, y = _tokens()
    return lambda: lab.fit(distiller, x=x, y=y[:, :-1])


@cases.behaviour(
    "token_labels_minus_100",
    "Token labels holding `-100` (no label) at some positions",
)
def _(lab):
    distiller = _token_distiller(lab)
    x, y = _tokens()
    ignored, weights = y.copy(), np.ones(y.shape, "float32")
    ignored[:, -2:], weights[:, -2:] = -100, 0.0
    step = distiller(x[:8], training=True)
    got = to_numpy(distiller.compute_loss(x[:8], ignored[:8], step))
    expected = to_numpy(distiller.compute_loss(x[:8], y[:8], step, weights[:8]))
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    history = lab.fit(distiller, x=x, y=ignored)
    assert np.isfinite(history.history["loss"][0])
    return (
        "Accepted: `-100` marks a position without a label; the loss equals the loss "
        "with those positions given weight 0 (whatever label they held).",
        "Trains on the labelled positions.",
    )


@cases.bad_input(
    "validation_labels_out_of_range",
    "`validation_data` labels out of range",
    ValueError,
    ["validation_data[1]", "[0, 3)"],
)
def _(lab):
    distiller = lab.distiller()
    return lambda: lab.fit(distiller, validation_data=(lab.x, lab.y + 10))


@cases.bad_input(
    "sample_weight_nan",
    "NaN in `sample_weight`",
    ValueError,
    ["`sample_weight` contains NaN or inf", "sample 6"],
)
def _(lab):
    distiller = lab.distiller()
    weights = np.ones(32, "float32")
    weights[6] = np.nan
    return lambda: lab.fit(distiller, sample_weight=weights)


@cases.bad_input(
    "sample_weight_negative",
    "Negative `sample_weight`",
    ValueError,
    ["`sample_weight` holds 1 negative weight(s)", "weights >= 0"],
)
def _(lab):
    distiller = lab.distiller()
    weights = np.ones(32, "float32")
    weights[2] = -1.0
    return lambda: lab.fit(distiller, sample_weight=weights)


@cases.bad_input(
    "sample_weight_two_columns",
    "`sample_weight` of shape `(n, 2)` (two weights per sample)",
    ValueError,
    ["`sample_weight` has shape (32, 2)", "one weight per sample", "multiply them first"],
)
def _(lab):
    distiller = lab.distiller()
    return lambda: lab.fit(distiller, sample_weight=np.ones((32, 2), "float32"))


def _tf_dataset(*arrays):
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices(arrays).batch(8)


@cases.bad_input(
    "labels_negative_tf_dataset",
    "Label -1 inside a `tf.data.Dataset` (not read ahead)",
    ValueError,
    ["batch 0 of the data", "class indices in [0, 3)", "min -1"],
)
def _(lab):
    distiller = lab.distiller()
    y = lab.y.copy()
    y[3] = -1
    return lambda: distiller.fit(_tf_dataset(lab.x, y), verbose=0, shuffle=False)


@cases.bad_input(
    "labels_out_of_range_pydataset",
    "Label 3 (= the number of classes) inside a `PyDataset`",
    ValueError,
    ["batch 0 of the data", "class indices in [0, 3)", "max 3"],
)
def _(lab):
    distiller = lab.distiller()
    y = lab.y.copy()
    y[1] = CLASSES
    return lambda: distiller.fit(Batches(lab.x, y, 8), verbose=0, shuffle=False)


@cases.bad_input(
    "labels_fractional_generator",
    "Fractional labels (`1.5`) from a Python generator",
    ValueError,
    ["batch 0 of the data", "non-integer values"],
)
def _(lab):
    distiller = lab.distiller()
    y = lab.y.astype("float32")
    y[0] = 1.5

    def batches():
        for start in range(0, 32, 8):
            yield lab.x[start : start + 8], y[start : start + 8]

    return lambda: distiller.fit(batches(), verbose=0, shuffle=False)


@cases.bad_input(
    "sample_weight_nan_tf_dataset",
    "NaN in the sample weights of a `tf.data.Dataset` of `(x, y, sample_weight)`",
    ValueError,
    ["batch 0 of the data", "`sample_weight` contains NaN or inf"],
)
def _(lab):
    distiller = lab.distiller()
    weights = np.ones(32, "float32")
    weights[4] = np.nan
    return lambda: distiller.fit(_tf_dataset(lab.x, lab.y, weights), verbose=0, shuffle=False)


class _WeightsAtBatchEnd(keras.callbacks.Callback):
    """The student's weights after each training batch."""

    def __init__(self):
        super().__init__()
        self.weights = []

    def on_train_batch_end(self, batch, logs=None):
        self.weights.append([to_numpy(w).copy() for w in self.model.student.weights])


@cases.behaviour(
    "label_bad_in_last_tf_batch",
    "Label 3 only in the last batch of a `tf.data.Dataset` (not read ahead)",
)
def _(lab):
    distiller = lab.distiller()
    y = lab.y.copy()
    y[-1] = CLASSES
    before = [to_numpy(w).copy() for w in distiller.student.weights]
    spy = _WeightsAtBatchEnd()
    with pytest.raises(ValueError) as error:
        distiller.fit(_tf_dataset(lab.x, y), verbose=0, shuffle=False, callbacks=[spy])
    message = normalise(str(error.value), lab.tmp)
    assert "batch 3 of the data" in message and "max 3" in message, message
    assert len(spy.weights) == 3
    assert any(not np.array_equal(a, b) for a, b in zip(spy.weights[-1], before))
    for a, b in zip(distiller.student.weights, spy.weights[-1], strict=True):
        np.testing.assert_array_equal(to_numpy(a), b)
    return (
        f"`ValueError` when that batch is read, before its step: {message}",
        "The 3 earlier batches trained (the documented limit: a stream is checked batch "
        "by batch, not read ahead); the bad batch changed no weight.",
    )


@cases.bad_input(
    "nan_in_x",
    "NaN in the input array",
    ValueError,
    ["x contains NaN or inf", "sample 3", "nan_to_num"],
)
def _(lab):
    distiller = lab.distiller()
    x = lab.x.copy()
    x[3, 2] = np.nan
    return lambda: lab.fit(distiller, x=x)


@cases.bad_input(
    "inf_in_dict_input",
    "`inf` in one input of a dict of inputs",
    ValueError,
    ["x['pixels'] contains NaN or inf", "sample 9"],
)
def _(lab):
    inputs = {name: keras.Input((4,), name=name) for name in ("pixels", "meta")}
    joined = keras.layers.Concatenate(name="join")([inputs["pixels"], inputs["meta"]])

    x = {"pixels": lab.x[:, :4].copy(), "meta": lab.x[:, 4:]}

    def two_input(name):
        layer = keras.layers.Dense(CLASSES, name=f"{name}_logits")
        probe = {key: value[:4] for key, value in x.items()}
        return lab.keep(keras.Model(inputs, layer(joined), name=name), probe)

    distiller = lab.distiller(student=two_input("student"), teacher=two_input("teacher"))
    x["pixels"][9, 0] = np.inf
    return lambda: lab.fit(distiller, x=x)


@cases.bad_input(
    "nan_in_cached_logits",
    "NaN in cached teacher logits",
    ValueError,
    ["cached teacher logits contain 1 NaN/inf value(s)"],
)
def _(lab):
    distiller = Distiller(lab.model("student"), None, "kd")
    distiller.compile(optimizer="adam")
    cached = np.random.default_rng(1).normal(size=(32, CLASSES)).astype("float32")
    cached[5, 1] = np.nan
    return lambda: lab.fit(distiller, x={"x": lab.x, "teacher_logits": cached})


@cases.bad_input(
    "cached_probabilities",
    "Cached teacher 'logits' that are probabilities",
    ValueError,
    ["cached teacher logits look like probabilities"],
)
def _(lab):
    distiller = Distiller(lab.model("student"), None, "kd")
    distiller.compile(optimizer="adam")
    logits = np.random.default_rng(1).normal(size=(32, CLASSES))
    probabilities = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype("float32")
    return lambda: lab.fit(distiller, x={"x": lab.x, "teacher_logits": probabilities})


@cases.behaviour(
    "nan_in_dataset_terminate_on_nan",
    "NaN inside a `PyDataset` batch (not inspected ahead), with `keras.callbacks.TerminateOnNaN()`",
)
def _(lab):
    distiller = lab.distiller()
    x = lab.x.copy()
    x[10, 0] = np.nan  # batch 1 of 4
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        history = distiller.fit(
            Batches(x, lab.y, 8),
            epochs=3,
            verbose=0,
            shuffle=False,
            callbacks=[keras.callbacks.TerminateOnNaN()],
        )
    assert "Batch 1: Invalid loss, terminating training" in printed.getvalue()
    assert distiller.stop_training and len(history.history["loss"]) == 1
    assert int(to_numpy(distiller.optimizer.iterations)) == 2
    student = distiller.student
    assert isinstance(student, keras.Model) and len(student.weights) == 2
    assert not np.all(np.isfinite(to_numpy(student.weights[0])))
    with pytest.raises(ValueError) as error:
        lab.fit(distiller)
    lab.forget(student)  # NaN, as documented
    message = normalise(str(error.value), lab.tmp)
    assert "student logits contain 24 NaN/inf value(s)" in message
    return (
        "Keras prints `Batch 1: Invalid loss, terminating training` and stops "
        "after the first NaN loss.",
        "The `Distiller` and its student are still there, but the NaN batch's "
        "update already made the student's weights NaN: reload the last "
        "`ModelCheckpoint`/`BackupAndRestore` backup. A further `fit` on "
        f"arrays refuses the NaN student: `ValueError: {message}`",
    )


@cases.bad_input(
    "empty_arrays",
    "Empty arrays (0 samples)",
    ValueError,
    ["empty data set", "0 samples"],
)
def _(lab):
    distiller = lab.distiller()
    return lambda: lab.fit(distiller, x=lab.x[:0], y=lab.y[:0])


@cases.bad_input(
    "empty_pydataset",
    "A `PyDataset` with 0 batches",
    ValueError,
    ["empty data set", "0 batches"],
)
def _(lab):
    distiller = lab.distiller()
    return lambda: distiller.fit(Batches(lab.x, lab.y, 64), verbose=0)


@cases.bad_input(
    "empty_generator",
    "A Python generator that yields nothing",
    ValueError,
    ["at least one batch", "empty generator"],
    hint="Keras' message.",
)
def _(lab):
    distiller = lab.distiller()

    def nothing():
        return
        yield

    return lambda: distiller.fit(nothing(), verbose=0)


@cases.behaviour(
    "all_padding_batch_pydataset",
    "A `PyDataset` with one batch of padding only (token ids 0, `Embedding(mask_zero=True)`)",
)
def _(lab):
    x, y = _tokens()
    x[24:] = 0  # the last of 4 batches

    def logged(distiller, batches):
        distiller.compile(optimizer=keras.optimizers.SGD(0.0))  # comparable steps
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            history = distiller.fit(batches, verbose=0, shuffle=False)
        found = [str(w.message) for w in caught if "nothing to distil" in str(w.message)]
        return history.history["distillation_loss"][0], found

    distiller = _token_distiller(lab, "cskd", mask_zero=True)
    with_padding, messages = logged(distiller, Batches(x, y, 8))
    assert len(messages) == 1 and "1 of its 4 training steps" in messages[0], messages
    again = Distiller(distiller.student, distiller.teacher, "cskd")
    without, _ = logged(again, Batches(x[:24], y[:24], 8))
    np.testing.assert_allclose(with_padding, without, rtol=1e-5)
    return (
        f"`RuntimeWarning` at the end of the epoch: {messages[0]}",
        "The padding batch adds 0 and is not counted: the logged `distillation_loss` "
        "equals that of the 3 other batches alone (0.1 averaged it in; CSKD logged "
        "tau^2 = 16 for it).",
    )


@cases.behaviour(
    "all_zero_sample_weight",
    "Every `sample_weight` 0 (a whole dataset of padding)",
)
def _(lab):
    distiller = lab.distiller("cskd")
    before = [to_numpy(w).copy() for w in distiller.student.weights]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lab.fit(distiller, sample_weight=np.zeros(32, "float32"))
    messages = [str(w.message) for w in caught if "anything to distil" in str(w.message)]
    assert len(messages) == 1 and "none of its 4 training steps" in messages[0], messages
    for a, b in zip(distiller.student.weights, before, strict=True):
        np.testing.assert_array_equal(to_numpy(a), b)
    return (
        f"`RuntimeWarning` at the end of the epoch: {messages[0]}",
        "Every term is 0 with a zero gradient: the student's weights are bit-identical.",
    )


class PoisonPadding(keras.layers.Layer):
    """+inf logits at the positions the Keras mask drops (the mask passes on)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, logits, mask=None):
        keep = keras.ops.expand_dims(mask, -1)
        return keras.ops.where(keep, logits, keras.ops.full_like(logits, np.inf))


@cases.behaviour(
    "inf_logits_at_padding",
    "Student logits `+inf` at padded positions (`Embedding(mask_zero=True)`, CSKD)",
)
def _(lab):
    distiller = _token_distiller(lab, "cskd", mask_zero=True, head=PoisonPadding(name="poison"))
    student = distiller.student
    clean = keras.Model(student.inputs, student.layers[-2].output)
    clean = Distiller(clean, distiller.teacher, "cskd")
    x, y = _tokens()
    x[:, -2:] = 0  # padding
    step = distiller(x[:8], training=True)
    assert np.isinf(to_numpy(step.student_logits)).any()
    total = to_numpy(distiller.compute_loss(x[:8], y[:8], step))
    clean.compile(optimizer="adam")
    expected = to_numpy(clean.compute_loss(x[:8], y[:8], clean(x[:8], training=True)))
    np.testing.assert_allclose(total, expected, rtol=1e-6)
    history = lab.fit(distiller, x=x, y=y)
    assert np.isfinite(history.history["loss"][0])
    assert all(np.all(np.isfinite(to_numpy(w))) for w in student.weights)
    return (
        "Accepted: masked positions reach no term; the total loss is finite and equals "
        "the loss of the same model without the `+inf`.",
        "Trains; its weights stay finite.",
    )


@cases.behaviour(
    "padding_mask_half",
    "A `padding_mask` input holding 0.5 at some positions (token logits)",
)
def _(lab):
    inputs = {
        "tokens": keras.Input((T,), dtype="int32", name="tokens"),
        "padding_mask": keras.Input((T,), name="padding_mask"),
    }
    student, teacher = _token_model(lab, "student", 4), _token_model(lab, "teacher", 16)
    distiller = Distiller(
        keras.Model(inputs, student(inputs["tokens"]), name="student_with_mask"),
        keras.Model(inputs, teacher(inputs["tokens"]), name="teacher_with_mask"),
        "kd",
    )
    distiller.compile(optimizer="adam")
    x, y = _tokens(8)
    half, ones = np.ones((8, T), "float32"), np.ones((8, T), "float32")
    half[:, -2:] = 0.5

    def loss(mask, sample_weight=None):
        batch = {"tokens": x, "padding_mask": mask}
        step = distiller(batch, training=True)
        return float(to_numpy(distiller.compute_loss(batch, y, step, sample_weight)))

    np.testing.assert_allclose(loss(half), loss(ones, half), rtol=1e-6)
    assert abs(loss(half) - loss(np.where(half < 1, 0.0, 1.0).astype("float32"))) > 1e-3
    return (
        "A mask of 0.5 weighs its position: the loss equals the loss with `sample_weight` "
        "0.5 there (0.1 dropped those positions).",
        "Trains on the weighted loss.",
    )


@pytest.mark.parametrize("key", list(cases))
def test_bad_input(key, tmp_path_factory):
    cases.check(key, tmp_path_factory)


def test_reliability_table_is_current(tmp_path_factory):
    cases.check_page(tmp_path_factory, __name__)
