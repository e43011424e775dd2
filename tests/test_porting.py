"""Porting from `keras.distillation.Distiller`: its keywords work on
`keras_cskd.Distiller` with Keras' meaning, and a swapped positional
(teacher, student) pair is flagged. Runs on the active backend.

The references are a float64 NumPy formula and Keras' own distiller given
the same arguments, never keras-cskd itself.
"""

import warnings

import keras
import numpy as np
import pytest
import reference
from keras import ops

import keras_cskd
from keras_cskd import losses
from keras_cskd.models import mlp


def _np_cross_entropy(y, logits):
    p = reference.softmax(logits)
    return float(np.mean(-np.log(p[np.arange(len(y)), y])))


def _models(seed=0, teacher_hidden=32, student_hidden=4, classes=4, features=6):
    keras.utils.set_random_seed(seed)
    teacher = mlp((features,), classes, hidden=(teacher_hidden,), name="t")
    student = mlp((features,), classes, hidden=(student_hidden,), name="s")
    return teacher, student


def _batch(n=16, classes=4, features=6, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(n, features)).astype("float32"),
        rng.integers(0, classes, n).astype("int32"),
    )


def _total_loss(distiller, x, y):
    if isinstance(distiller, keras_cskd.Distiller):
        y_pred = distiller(x, training=True)
    else:
        y_pred = distiller(x)
    return float(np.asarray(ops.convert_to_numpy(distiller.compute_loss(x, y, y_pred))))


def _logits(model, x):
    return np.asarray(ops.convert_to_numpy(model(x)))


@pytest.mark.parametrize("alpha", [None, 0.0, 0.3, 1.0])
def test_keras_keywords_weight_like_keras(alpha):
    """alpha * CE + (1 - alpha) * sum_k w_k L_k, alpha = 0.5 unless given."""
    teacher, student = _models()
    kwargs = {} if alpha is None else {"student_loss_weight": alpha}
    distiller = keras_cskd.Distiller(
        teacher=teacher,
        student=student,
        distillation_losses=[
            losses.KLDivergenceDistillation(temperature=2.0),
            losses.LogitMSEDistillation(),
        ],
        distillation_loss_weights=[1.0, 0.25],
        **kwargs,
    )
    distiller.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x, y = _batch()
    s, t = _logits(student, x), _logits(teacher, x)
    a = 0.5 if alpha is None else alpha
    expected = a * _np_cross_entropy(y, s) + (1 - a) * (
        reference.kd_loss(t, s, 2.0) + 0.25 * reference.mse_loss(t, s)
    )
    np.testing.assert_allclose(_total_loss(distiller, x, y), expected, rtol=1e-5)


def test_single_loss_defaults_match_keras_builtin_distiller():
    """The same constructor call on both classes gives the same loss and,
    after the same steps, the same student."""
    x, y = _batch(32)
    results = []
    for cls in (keras.distillation.Distiller, keras_cskd.Distiller):
        teacher, student = _models(seed=3)
        distiller = cls(
            teacher=teacher,
            student=student,
            distillation_losses=losses.KLDivergenceDistillation(temperature=3.0),
        )
        # keras.distillation needs from_logits=True spelled out; ours accepts
        # the string too (the student outputs logits).
        distiller.compile(
            optimizer=keras.optimizers.SGD(0.1),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        loss = _total_loss(distiller, x, y)
        distiller.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
        results.append((loss, _logits(distiller.student, x), _logits(teacher, x)))
    (keras_loss, keras_student, keras_teacher), (our_loss, our_student, our_teacher) = results
    np.testing.assert_allclose(our_loss, keras_loss, rtol=1e-5)
    np.testing.assert_allclose(our_teacher, keras_teacher, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(our_student, keras_student, rtol=1e-4, atol=1e-5)


def test_keyword_form_trains_the_student_only():
    teacher, student = _models()
    teacher_before = [np.array(w) for w in teacher.get_weights()]
    student_before = [np.array(w) for w in student.get_weights()]
    distiller = keras_cskd.Distiller(teacher=teacher, student=student, distillation_losses="kd")
    assert distiller.student is student and distiller.teacher is teacher
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    x, y = _batch(32)
    distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    for before, after in zip(teacher_before, teacher.get_weights()):
        np.testing.assert_array_equal(before, after)
    assert any(
        not np.allclose(before, after)
        for before, after in zip(student_before, student.get_weights())
    )


def test_swapped_positional_pair_is_refused_with_both_counts():
    """Keras' positional order written against keras_cskd puts the big
    (trained) model in the student slot: refused before any weight moves
    (keras-cskd 0.1 warned, then trained it)."""
    teacher, student = _models(teacher_hidden=32, student_hidden=4)
    before = [np.array(w) for w in teacher.get_weights()]
    with pytest.raises(ValueError) as error:
        keras_cskd.Distiller(teacher, student, "kd")
    message = str(error.value)
    assert f"({teacher.count_params():,})" in message
    assert f"{student.count_params():,} parameters" in message
    assert "Distiller(student=..., teacher=...)" in message
    for old, new in zip(before, teacher.get_weights()):
        np.testing.assert_array_equal(old, new)


@pytest.mark.parametrize(
    "make",
    [
        lambda t, s: keras_cskd.Distiller(s, t, "kd"),  # our order, big teacher
        lambda t, s: keras_cskd.Distiller(student=t, teacher=s, distillation_loss="kd"),
        lambda t, s: keras_cskd.Distiller(t, teacher=s, distillation_loss="kd"),
    ],
    ids=["positional-right-order", "keywords-small-teacher", "teacher-keyword"],
)
def test_no_warning_in_the_right_order_or_with_keywords(make):
    teacher, student = _models(teacher_hidden=32, student_hidden=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        make(teacher, student)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"distillation_losses": "kd", "student_loss_weight": 1.5}, ValueError, r"in \[0, 1\]"),
        (
            {"distillation_losses": ["kd", "mse"], "distillation_loss_weights": [1.0]},
            ValueError,
            "1 entries but distillation_losses has 2",
        ),
        ({"distillation_losses": "kd", "distillation_loss": "mse"}, TypeError, "not both"),
        ({"distillation_loss_weights": [1.0]}, TypeError, "goes with distillation_losses="),
    ],
)
def test_mixed_or_impossible_keywords_are_refused(kwargs, error, message):
    teacher, student = _models()
    with pytest.raises(error, match=message):
        keras_cskd.Distiller(student=student, teacher=teacher, **kwargs)


def test_model_both_by_position_and_keyword_is_refused():
    teacher, student = _models()
    with pytest.raises(TypeError, match="both by position and as student="):
        keras_cskd.Distiller(student, teacher, "kd", student=student)


def test_keyword_form_round_trips_without_warning(tmp_path):
    teacher, student = _models(teacher_hidden=4, student_hidden=32)  # a small teacher
    distiller = keras_cskd.Distiller(
        teacher=teacher,
        student=student,
        distillation_losses=["kd", "mse"],
        distillation_loss_weights=[1.0, 0.5],
        student_loss_weight=0.2,
    )
    distiller.compile(optimizer="sgd")
    x, y = _batch()
    before = _total_loss(distiller, x, y)
    path = tmp_path / "distiller.keras"
    distiller.save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(_total_loss(loaded, x, y), before, rtol=1e-5)
