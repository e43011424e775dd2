"""Bad input: the models and their roles -- a teacher or student that outputs
probabilities, class counts that differ, several outputs, shared weights,
the same model twice, a frozen student, a trainable teacher, a diverged
teacher, float16 policies, swapped roles, keras-cskd losses inside
`keras.distillation.Distiller`. One case per row of docs/reliability.md's
first table; the harness is `bad_inputs.py`."""

import keras
import numpy as np
import pytest
from bad_inputs import CLASSES, Batches, Cases, to_numpy

import keras_cskd
from keras_cskd import Distiller

cases = Cases("Models and their roles")


class SoftmaxStudent(keras.Model):
    """A subclassed student that applies softmax inside `call`."""

    def __init__(self):
        super().__init__(name="softmax_student")
        self.dense = keras.layers.Dense(CLASSES, name="student_logits")

    def call(self, x):
        return keras.ops.softmax(self.dense(x))


class TwoHeadTeacher(keras.Model):
    """A subclassed teacher returning a list of two logits tensors."""

    def __init__(self):
        super().__init__(name="two_head_teacher")
        self.head_a = keras.layers.Dense(CLASSES, name="head_a")
        self.head_b = keras.layers.Dense(CLASSES, name="head_b")

    def call(self, x):
        return [self.head_a(x), self.head_b(x)]


@cases.bad_input(
    "teacher_softmax_activation",
    "Teacher outputs probabilities: `Dense(n, activation='softmax')` head",
    ValueError,
    ["ends with a softmax", "logits", "activation to linear", "keras.activations.linear"],
)
def _(lab):
    teacher = lab.model("teacher", activation="softmax")
    student = lab.model("student")
    return lambda: Distiller(student, teacher, "kd")


@cases.bad_input(
    "teacher_softmax_layer",
    "Teacher outputs probabilities: linear `Dense(n)` followed by a `Softmax()` layer",
    ValueError,
    ["ends with a softmax", "teacher.layers[-2].output"],
)
def _(lab):
    teacher = lab.model("teacher", extra=keras.layers.Softmax(name="teacher_softmax"))
    student = lab.model("student")
    return lambda: Distiller(student, teacher, "kd")


@cases.bad_input(
    "teacher_softmax_activation_layer",
    "Teacher outputs probabilities: linear `Dense(n)` followed by `Activation('softmax')`",
    ValueError,
    ["ends with a softmax"],
)
def _(lab):
    teacher = lab.model("teacher", extra=keras.layers.Activation("softmax", name="teacher_act"))
    student = lab.model("student")
    return lambda: Distiller(student, teacher, "kd")


@cases.bad_input(
    "teacher_softmax_op",
    "Teacher outputs probabilities: `keras.ops.softmax` applied to a linear head in a "
    "functional model",
    ValueError,
    ["teacher logits look like probabilities", "activation to linear"],
)
def _(lab):
    inputs = keras.Input((8,), name="teacher_input")
    logits = keras.layers.Dense(CLASSES, name="teacher_logits")(inputs)
    teacher = lab.keep(keras.Model(inputs, keras.ops.softmax(logits), name="teacher"))
    distiller = lab.distiller(teacher=teacher)
    return lambda: lab.fit(distiller)


class SoftmaxTeacher(keras.Model):
    """A subclassed teacher that applies softmax inside `call`."""

    def __init__(self):
        super().__init__(name="softmax_teacher")
        self.dense = keras.layers.Dense(CLASSES, name="teacher_logits")

    def call(self, x):
        return keras.ops.softmax(self.dense(x))


@cases.bad_input(
    "teacher_softmax_in_call_tf_dataset",
    "Subclassed teacher that applies softmax in `call()`, fed by a `tf.data.Dataset` "
    "(not read ahead)",
    ValueError,
    ["teacher logits look like probabilities", "before the softmax from call()"],
)
def _(lab):
    import tensorflow as tf

    distiller = lab.distiller(teacher=lab.keep(SoftmaxTeacher()))
    data = tf.data.Dataset.from_tensor_slices((lab.x, lab.y)).batch(8)
    return lambda: distiller.fit(data, verbose=0)


@cases.bad_input(
    "teacher_sigmoid_head",
    "Teacher with a sigmoid head: `Dense(n, activation='sigmoid')` (not a softmax: "
    "its rows do not sum to 1)",
    ValueError,
    ["teacher's outputs on the first batch all lie in [0, 1]", "sigmoid", "logits"],
)
def _(lab):
    distiller = lab.distiller(teacher=lab.model("teacher", activation="sigmoid"))
    return lambda: lab.fit(distiller)


@cases.bad_input(
    "student_softmax_head",
    "Student with a softmax head",
    ValueError,
    ["The student ends with a softmax", "logits"],
)
def _(lab):
    student = lab.model("student", activation="softmax")
    teacher = lab.model("teacher")
    return lambda: Distiller(student, teacher, "kd")


@cases.bad_input(
    "student_softmax_in_call",
    "Subclassed student that applies softmax in `call()`",
    ValueError,
    ["student logits look like probabilities"],
)
def _(lab):
    distiller = lab.distiller(student=lab.keep(SoftmaxStudent()))
    return lambda: lab.fit(distiller)


@cases.bad_input(
    "class_count_mismatch",
    "Teacher predicts 4 classes, student 3",
    ValueError,
    ["teacher predicts 4 classes but the student 3", "4-unit output layer"],
)
def _(lab):
    teacher = lab.model("teacher", classes=4)
    student = lab.model("student")
    return lambda: Distiller(student, teacher, "kd")


@cases.bad_input(
    "class_count_mismatch_cached",
    "Cached teacher logits with 4 columns for a 3-class student",
    ValueError,
    ["teacher predicts 4 classes but the student 3"],
)
def _(lab):
    distiller = Distiller(lab.model("student"), None, "kd")
    distiller.compile(optimizer="adam")
    cached = np.random.default_rng(1).normal(size=(32, 4)).astype("float32")
    return lambda: lab.fit(distiller, x={"x": lab.x, "teacher_logits": cached})


@cases.bad_input(
    "teacher_two_outputs",
    "Functional teacher with two outputs",
    ValueError,
    ["teacher has 2 outputs", "outputs[0]"],
)
def _(lab):
    inputs = keras.Input((8,), name="teacher_input")
    heads = [keras.layers.Dense(CLASSES, name=f"teacher_head_{i}")(inputs) for i in range(2)]
    teacher = lab.keep(keras.Model(inputs, heads, name="teacher"))
    student = lab.model("student")
    return lambda: Distiller(student, teacher, "kd")


@cases.bad_input(
    "teacher_returns_list_arrays",
    "Subclassed teacher whose `call()` returns a list of two tensors (array data)",
    ValueError,
    ["the teacher returns 2 outputs (list)", "returns only its class logits"],
)
def _(lab):
    distiller = lab.distiller(teacher=lab.keep(TwoHeadTeacher()))
    return lambda: lab.fit(distiller)


@cases.bad_input(
    "teacher_returns_list_dataset",
    "Subclassed teacher whose `call()` returns a list of two tensors (a `PyDataset`)",
    ValueError,
    ["the teacher returns 2 outputs (list)"],
)
def _(lab):
    distiller = lab.distiller(teacher=lab.keep(TwoHeadTeacher()))
    return lambda: distiller.fit(Batches(lab.x, lab.y, 8), verbose=0)


@cases.bad_input(
    "student_rank3_output",
    "Student with per-position logits `(batch, 2, classes)`, teacher with `(batch, classes)`",
    ValueError,
    ["student (None, 2, 3)", "(batch, classes)", "per position"],
)
def _(lab):
    inputs = keras.Input((8,), name="student_input")
    outputs = keras.layers.Reshape((2, CLASSES), name="student_reshape")(
        keras.layers.Dense(2 * CLASSES, name="student_logits")(inputs)
    )
    student = lab.keep(keras.Model(inputs, outputs, name="student"))
    teacher = lab.model("teacher")
    return lambda: Distiller(student, teacher, "kd")


@cases.bad_input(
    "shared_layers",
    "Student built on one of the teacher's layers (shared weights)",
    ValueError,
    ["share 2 weight(s)", "teacher_logits/kernel", "fresh layers"],
)
def _(lab):
    teacher = lab.model("teacher")
    inputs = keras.Input((8,), name="student_input")
    student = lab.keep(
        keras.Model(inputs, teacher.get_layer("teacher_logits")(inputs), name="student")
    )
    return lambda: Distiller(student, teacher, "kd")


@cases.bad_input(
    "teacher_is_student",
    "The same model passed as teacher and student",
    ValueError,
    ["same model", "clone_model"],
)
def _(lab):
    model = lab.model("model")
    return lambda: Distiller(model, model, "kd")


@cases.bad_input(
    "not_a_model",
    "A function passed as the student",
    ValueError,
    ["student must be a keras.Model", "function"],
)
def _(lab):
    teacher = lab.model("teacher")
    return lambda: Distiller(lambda x: x, teacher, "kd")


@cases.bad_input(
    "swapped_roles_same_size",
    "Keras' positional order `Distiller(teacher, student)` written against "
    "`keras_cskd.Distiller` (student first), models of the same size: the trained one "
    "predicts the labels, the untrained one does not",
    ValueError,
    ["student already predicts the labels (skill 100% above chance)", "roles look swapped"],
)
def _(lab):
    trained, untrained = lab.model("trained"), lab.model("untrained")
    kernel = np.zeros((8, CLASSES), "float32")
    kernel[:CLASSES] = 10.0 * np.eye(CLASSES)  # predicts argmax(x[:, :3]) exactly
    trained.get_layer("trained_logits").kernel.assign(kernel)
    # A fresh initialisation, the same on every backend (so is the message).
    fresh = np.random.default_rng(0).uniform(-0.7, 0.7, (8, CLASSES)).astype("float32")
    untrained.get_layer("untrained_logits").kernel.assign(fresh)
    y = np.argmax(lab.x[:, :CLASSES], axis=1).astype("int32")
    distiller = Distiller(trained, untrained, "kd")  # read as (student, teacher)
    distiller.compile(optimizer="adam")
    return lambda: lab.fit(distiller, y=y)


@cases.bad_input(
    "keras_distiller_smaller_teacher",
    "A keras-cskd loss in Keras' own `keras.distillation.Distiller(student, teacher, ...)` "
    "(`keras_cskd`'s order: the smaller model in Keras' teacher slot)",
    ValueError,
    ["the teacher 'student' has 27 parameters, fewer than the student 'teacher' (39)"],
)
def _(lab):
    student = lab.model("student")
    teacher = lab.model("teacher", extra=keras.layers.Dense(CLASSES, name="teacher_head"))
    loss = keras_cskd.losses.KLDivergenceDistillation()
    return lambda: keras.distillation.Distiller(student, teacher, loss)


@cases.bad_input(
    "student_without_trainable_weights",
    "A frozen student (`student.trainable = False`)",
    ValueError,
    ["no trainable weights", "student.trainable = True", "compile this Distiller again"],
)
def _(lab):
    student = lab.model("student")
    student.trainable = False
    distiller = lab.distiller(student=student)
    return lambda: lab.fit(distiller)


@cases.behaviour(
    "teacher_assistant_chain",
    "A model that is one `Distiller`'s teacher and, built before it trains, another's "
    "student (a teacher -> assistant -> student chain)",
)
def _(lab):
    assistant = lab.model("assistant")
    first = lab.distiller(student=assistant)
    second = lab.distiller(student=lab.model("student"), teacher=assistant)
    before = [to_numpy(w).copy() for w in assistant.weights]
    lab.fit(first)
    assert any(not np.array_equal(to_numpy(a), b) for a, b in zip(assistant.weights, before))
    trained = [to_numpy(w).copy() for w in assistant.weights]
    lab.fit(second)
    for a, b in zip(assistant.weights, trained, strict=True):
        np.testing.assert_array_equal(to_numpy(a), b)
    return (
        "Accepted: the assistant trains as the first Distiller's student; the second "
        "never trains it (its teachers' weights are left out of what it trains).",
        "The assistant learns in the first `fit` and is bit-identical through the second.",
    )


@cases.behaviour(
    "trainable_teacher",
    "A trainable teacher (`teacher.trainable = True`, the Keras default)",
)
def _(lab):
    teacher = lab.model("teacher")
    assert teacher.trainable
    before = [to_numpy(w).copy() for w in teacher.weights]
    distiller = lab.distiller(teacher=teacher)
    distiller.compile(optimizer=keras.optimizers.AdamW(0.1, weight_decay=0.5))
    lab.fit(distiller)
    assert teacher.trainable  # left as it was
    for a, b in zip(teacher.weights, before, strict=True):
        np.testing.assert_array_equal(to_numpy(a), b)
    return (
        "Accepted: the `Distiller` never trains it (its weights are not among the "
        "Distiller's trainable weights) and leaves `teacher.trainable` as it was.",
        "Teacher weights bit-identical after `fit` with `AdamW(weight_decay=0.5)`.",
    )


@cases.behaviour(
    "teacher_unfrozen_later",
    "Teacher (or one of its layers) made trainable after the `Distiller` was built",
)
def _(lab):
    teacher = lab.model("teacher")
    teacher.trainable = False
    distiller = lab.distiller(teacher=teacher)
    teacher.trainable = True
    teacher.get_layer("teacher_logits").trainable = True
    distiller.compile(optimizer=keras.optimizers.AdamW(0.1, weight_decay=0.5))
    before = [to_numpy(w).copy() for w in teacher.weights]
    lab.fit(distiller)
    assert teacher.get_layer("teacher_logits").trainable  # left as it was
    for a, b in zip(teacher.weights, before, strict=True):
        np.testing.assert_array_equal(to_numpy(a), b)
    return (
        "Accepted: whatever the teacher's flags, the Distiller trains only the student.",
        "Teacher weights bit-identical after `fit` (JAX's AdamW weight decay would "
        "change any weight it trained).",
    )


@cases.behaviour(
    "teacher_trainable_flag_kept",
    "A teacher distilled from, then trained on its own (`teacher.trainable` True, and False)",
)
def _(lab):
    for flag in (True, False):
        teacher = lab.model("teacher")
        teacher.trainable = flag
        before = [to_numpy(w).copy() for w in teacher.weights]
        lab.fit(lab.distiller(teacher=teacher))
        assert teacher.trainable is flag
        for a, b in zip(teacher.weights, before, strict=True):
            np.testing.assert_array_equal(to_numpy(a), b)
        teacher.trainable = True  # the user's own choice, as with any model
        teacher.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        teacher.fit(lab.x, lab.y, batch_size=8, verbose=0)
        assert all(not np.array_equal(to_numpy(a), b) for a, b in zip(teacher.weights, before))
    return (
        "Accepted: after `fit` `teacher.trainable` is as it was (True stays True, False "
        "stays False; 0.1 set it to False for good).",
        "Teacher weights bit-identical through the distillation; a later `teacher.fit` "
        "trains every one of them.",
    )


@cases.bad_input(
    "diverged_teacher",
    "A teacher whose weights are NaN (it diverged)",
    ValueError,
    ["teacher logits contain 24 NaN/inf value(s)", "diverged teacher"],
)
def _(lab):
    teacher = lab.model("teacher")
    teacher.get_layer("teacher_logits").kernel.assign(np.full((8, CLASSES), np.nan, "float32"))
    lab.forget(teacher)  # NaN on purpose: not checked for finiteness
    distiller = lab.distiller(teacher=teacher)
    return lambda: lab.fit(distiller)


def _float32_loss_check(lab, distiller):
    """The loss of a batch equals the loss of the same logits cast to
    float32 (so it is computed in float32), and training works."""
    x, y = lab.x[:8], lab.y[:8]
    y_pred = distiller(x, training=True)
    as_float32 = y_pred._replace(
        student_logits=keras.ops.cast(y_pred.student_logits, "float32"),
        teacher_logits=tuple(keras.ops.cast(t, "float32") for t in y_pred.teacher_logits),
    )
    loss = distiller.compute_loss(x=x, y=y, y_pred=y_pred)
    reference = distiller.compute_loss(x=x, y=y, y_pred=as_float32)
    assert keras.backend.standardize_dtype(loss.dtype) == "float32"
    np.testing.assert_allclose(to_numpy(loss), to_numpy(reference), rtol=1e-6)
    history = lab.fit(distiller)
    assert np.isfinite(history.history["loss"][0])
    return y_pred


@cases.behaviour(
    "float16_teacher",
    "Teacher with a `float16` dtype policy, student `float32`",
)
def _(lab):
    teacher = lab.model("teacher", dtype="float16")
    y_pred = _float32_loss_check(lab, lab.distiller("cskd_cswt", teacher=teacher))
    assert keras.backend.standardize_dtype(y_pred.teacher_logits[0].dtype) == "float16"
    return (
        "Works: float16 teacher logits are upcast, every loss is computed in float32.",
        "Trains normally.",
    )


@cases.behaviour(
    "mixed_float16_student",
    "Student with a `mixed_float16` policy (float16 logits), teacher `float32`",
)
def _(lab):
    student = lab.model("student", dtype="mixed_float16")
    y_pred = _float32_loss_check(lab, lab.distiller("dist", student=student))
    assert keras.backend.standardize_dtype(y_pred.student_logits.dtype) == "float16"
    return (
        "Works: the losses (and the student's cross-entropy) upcast the float16 "
        "logits and compute in float32.",
        "Trains normally.",
    )


@cases.behaviour(
    "keras_distiller_cloned_teacher",
    "keras-cskd losses (KD and CSKD) in `keras.distillation.Distiller` with a teacher made "
    "by `keras.models.clone_model` + `set_weights` (on PyTorch, a false 'NaN/inf' refusal "
    "before)",
)
def _(lab):
    original = lab.model("teacher", extra=keras.layers.Dense(CLASSES, name="teacher_head"))
    teacher = keras.models.clone_model(original)
    teacher.set_weights(original.get_weights())
    student = lab.model("student")
    before = [to_numpy(w).copy() for w in student.weights]
    losses = [keras_cskd.losses.get("kd"), keras_cskd.losses.get("cskd")]
    distiller = keras.distillation.Distiller(teacher, student, losses)
    distiller.compile(
        optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    history = lab.fit(distiller, epochs=2)
    assert np.all(np.isfinite(history.history["distillation_loss"]))
    assert all(not np.array_equal(to_numpy(a), b) for a, b in zip(student.weights, before))
    for a, b in zip(teacher.weights, original.weights, strict=True):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    return (
        "Trains: finite distillation losses every epoch, no refusal.",
        "The student learns; the cloned teacher's weights stay those it was given.",
    )


@pytest.mark.parametrize("key", list(cases))
def test_bad_input(key, tmp_path_factory):
    cases.check(key, tmp_path_factory)


def test_reliability_table_is_current(tmp_path_factory):
    cases.check_page(tmp_path_factory, __name__)
