"""Several teachers: each ensemble mode against an independent construction
with one teacher, refusals that name the teacher, cached logits, saving.

- `mean_probs` with two teachers trains exactly like one teacher whose
  logits are `tau * log` of the weighted mean softened distribution;
- identical teachers give the loss of one teacher in every mode;
- `per_teacher`: one SGD step is the weighted sum of the single-teacher
  steps.
"""

import keras
import numpy as np
import pytest
from helpers import to_numpy

import keras_cskd
from keras_cskd.models import mlp

CLASSES = 4
FEATURES = 6


def _data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(n, FEATURES)).astype("float32"),
        rng.integers(0, CLASSES, n).astype("int32"),
    )


def _model(name, hidden, seed):
    keras.utils.set_random_seed(seed)
    return mlp((FEATURES,), CLASSES, hidden=(hidden,), name=name)


def _teachers(count=2):
    return [_model(f"teacher{i}", 16 + 4 * i, 10 + i) for i in range(count)]


def _logits(model, x):
    return np.asarray(keras.ops.convert_to_numpy(model(x, training=False)), "float64")


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _mean_probs_logits(logits, weights, tau):
    """tau * log(sum_i w_i softmax(z_i / tau)), in float64."""
    mean = sum(w * np.exp(_log_softmax(z / tau)) for z, w in zip(logits, weights))
    return tau * np.log(mean)


def _student_weights(distiller):
    return [np.array(keras.ops.convert_to_numpy(w)) for w in distiller.student.weights]


def _one_sgd_step(distiller, x, y):
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    before = _student_weights(distiller)
    distiller.fit(x, y, batch_size=len(y), epochs=1, shuffle=False, verbose=0)
    return [a - b for a, b in zip(_student_weights(distiller), before)]


LOSSES = {
    "kd": lambda: keras_cskd.losses.KLDivergenceDistillation(3.0),
    "cskd": lambda: keras_cskd.losses.CosineSimilarityDistillation(2.0),
    "dist": lambda: keras_cskd.losses.DISTDistillation(4.0),
    "dkd": lambda: keras_cskd.losses.DecoupledKDDistillation(4.0),
}


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_mean_probs_is_one_teacher_with_the_mean_distribution(loss):
    """Two live teachers, weights 0.3/0.7, against one cached teacher whose
    logits are tau * log(0.3 p_1 + 0.7 p_2) at the loss's temperature: the
    same loss and the same SGD step."""
    x, y = _data()
    teachers = _teachers()
    made = LOSSES[loss]()
    tau = made.temperature
    target = _mean_probs_logits([_logits(t, x) for t in teachers], [0.3, 0.7], tau)

    ensemble = keras_cskd.Distiller(
        _model("student", 8, 1),
        teachers,
        made,
        teacher_weights=[3.0, 7.0],  # normalised to 0.3 / 0.7
        distillation_loss_weight=1.0,
        check_roles=False,
    )
    single = keras_cskd.Distiller(
        _model("student", 8, 1), None, LOSSES[loss](), distillation_loss_weight=1.0
    )
    cached = {"x": x, "teacher_logits": target.astype("float32")}
    for distiller in (ensemble, single):
        distiller.compile(optimizer="sgd")
    loss_ensemble = to_numpy(ensemble.compute_loss(x, y, ensemble(x, training=True)))
    loss_single = to_numpy(single.compute_loss(cached, y, single(cached, training=True)))
    np.testing.assert_allclose(loss_ensemble, loss_single, rtol=1e-5, atol=1e-6)
    step_ensemble = _one_sgd_step(ensemble, x, y)
    step_single = _one_sgd_step(single, cached, y)
    for a, b in zip(step_ensemble, step_single):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


# Every mode and loss but mean_probs with logit MSE, which is refused (see
# test_combinations_that_make_no_sense_are_refused).
IDENTICAL_CASES = [
    (ensemble, loss)
    for ensemble in ("mean_probs", "mean_logits", "per_teacher")
    for loss in ("kd", "cskd", "cskd_cswt", "dist", "dkd", "mse")
    if (ensemble, loss) != ("mean_probs", "mse")
]


@pytest.mark.parametrize("ensemble, loss", IDENTICAL_CASES)
def test_identical_teachers_are_one_teacher(ensemble, loss):
    x, y = _data(seed=1)
    teacher = _teachers(1)[0]
    twin = keras.models.clone_model(teacher)
    twin.set_weights(teacher.get_weights())
    distillers = [
        keras_cskd.Distiller(
            _model("student", 8, 2), teachers, loss, ensemble=ensemble, check_roles=False
        )
        for teachers in ([teacher, twin], teacher)
    ]
    values = []
    for distiller in distillers:
        distiller.compile(optimizer="sgd")
        values.append(to_numpy(distiller.compute_loss(x, y, distiller(x, training=True))))
    np.testing.assert_allclose(values[0], values[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("loss", ["kd", "cskd", "dist"])
def test_per_teacher_step_is_the_weighted_sum_of_single_teacher_steps(loss):
    """SGD is linear in the gradient: with `per_teacher` and weights 0.25 /
    0.75 (summing to 1, so the cross-entropy counts once), one step equals
    0.25 * (step with teacher 1 alone) + 0.75 * (step with teacher 2 alone)."""
    x, y = _data(seed=2)
    teachers = _teachers()

    def step(teacher_argument, weights=None):
        distiller = keras_cskd.Distiller(
            _model("student", 8, 3),
            teacher_argument,
            loss,
            ensemble="per_teacher",
            teacher_weights=weights,
            student_loss_weight=0.5,
            distillation_loss_weight=2.0,
            check_roles=False,
        )
        return _one_sgd_step(distiller, x, y)

    both = step(teachers, [1.0, 3.0])
    first, second = step(teachers[0]), step(teachers[1])
    for total, a, b in zip(both, first, second):
        np.testing.assert_allclose(total, 0.25 * a + 0.75 * b, rtol=1e-4, atol=1e-6)


def test_cached_logits_of_several_teachers_equal_the_live_teachers():
    x, y = _data(seed=3)
    teachers = _teachers(3)
    cached = {"x": x, "teacher_logits": keras_cskd.cache_teacher_logits(teachers, x)}
    live = keras_cskd.Distiller(_model("student", 8, 4), teachers, "cskd", check_roles=False)
    offline = keras_cskd.Distiller(_model("student", 8, 4), None, "cskd")
    values = []
    for distiller, inputs in ((live, x), (offline, cached)):
        distiller.compile(optimizer="sgd")
        values.append(to_numpy(distiller.compute_loss(inputs, y, distiller(inputs, training=True))))
    np.testing.assert_allclose(values[0], values[1], rtol=1e-5)
    history = offline.fit(cached, y, batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda: mlp((FEATURES,), CLASSES + 1, hidden=(8,), name="wide"),
            r"teacher 1 \('wide'\) predicts 5 classes",
        ),
        (
            lambda: keras.Sequential(
                [keras.Input((FEATURES,)), keras.layers.Dense(CLASSES, activation="softmax")],
                name="softmaxed",
            ),
            r"teacher 1 \('softmaxed'\) ends with a softmax",
        ),
    ],
    ids=["class-count", "softmax-head"],
)
def test_a_mismatched_teacher_is_refused_by_index_and_name(change, message):
    teachers = [_teachers(1)[0], change()]
    with pytest.raises(ValueError, match=message):
        keras_cskd.Distiller(_model("student", 8, 5), teachers, "kd", check_roles=False)


def test_combinations_that_make_no_sense_are_refused():
    teachers = _teachers()
    with pytest.raises(ValueError, match="ensemble='mean_probs' with LogitMSEDistillation"):
        keras_cskd.Distiller(_model("student", 8, 6), teachers, "mse", check_roles=False)
    feature = keras_cskd.FeatureDistillation("mse", "teacher0_hidden_0", "student_hidden_0")
    with pytest.raises(ValueError, match="FeatureDistillation with several teachers"):
        keras_cskd.Distiller(
            _model("student", 8, 6), teachers, [("kd", 1.0), (feature, 1.0)], check_roles=False
        )
    with pytest.raises(ValueError, match="ensemble must be one of"):
        keras_cskd.Distiller(_model("student", 8, 6), teachers, "kd", ensemble="max")
    with pytest.raises(ValueError, match="teacher_weights has 3 entries for 2 teachers"):
        keras_cskd.Distiller(_model("student", 8, 6), teachers, "kd", teacher_weights=[1, 1, 1])


def test_several_teachers_save_load_and_train_on(tmp_path):
    x, y = _data(seed=4)
    teachers = _teachers(3)
    distiller = keras_cskd.Distiller(
        _model("student", 8, 7),
        teachers,
        "kd",
        ensemble="per_teacher",
        teacher_weights=[1.0, 2.0, 1.0],
        check_roles=False,
    )
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    path = tmp_path / "ensemble.keras"
    distiller.save(path)
    loaded = keras.saving.load_model(path)
    assert [t.name for t in loaded.teachers.live] == ["teacher0", "teacher1", "teacher2"]
    assert loaded.teachers.ensemble == "per_teacher"
    assert loaded.teachers.given_weights == [1.0, 2.0, 1.0]
    step = loaded(x, training=True)
    np.testing.assert_allclose(
        to_numpy(loaded.compute_loss(x, y, step)),
        to_numpy(distiller.compute_loss(x, y, distiller(x, training=True))),
        rtol=1e-5,
    )
    before = [np.array(w) for t in loaded.teachers.live for w in t.get_weights()]
    loaded.fit(x, y, batch_size=16, epochs=1, verbose=0)
    after = [np.array(w) for t in loaded.teachers.live for w in t.get_weights()]
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    student_path = loaded.export_student(tmp_path / "student.keras")
    assert keras.saving.load_model(student_path).count_params() == distiller.student.count_params()
