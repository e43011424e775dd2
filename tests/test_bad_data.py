"""Bad input: the data `fit` gets -- arrays, labels, sample weights, cached
teacher logits and datasets (`tf.data`, `PyDataset`, generators), NaN and
empty data. One case per row of docs/reliability.md's table; the harness
is `bad_inputs.py`."""

import contextlib
import io

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


@pytest.mark.parametrize("key", list(cases))
def test_bad_input(key, tmp_path_factory):
    cases.check(key, tmp_path_factory)


def test_reliability_table_is_current(tmp_path_factory):
    cases.check_page(tmp_path_factory, __name__)
