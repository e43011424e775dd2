"""The Distiller on the active backend: training step semantics, logging,
cached teacher, mixup, mixed precision, interop and accuracy on digits."""

import os

import keras
import numpy as np
import pytest
from helpers import never_trains_its_teachers
from keras import ops

import keras_cskd
from keras_cskd import losses
from keras_cskd.data import load_digits
from keras_cskd.models import mlp, small_cnn

BACKEND = keras.backend.backend()


def _np(x):
    return np.asarray(ops.convert_to_numpy(x))


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _np_cross_entropy(y, logits):
    p = _softmax(logits.astype("float64"))
    return float(np.mean(-np.log(p[np.arange(len(y)), y])))


def _np_kd(t, s, tau):
    pt = _softmax(t.astype("float64") / tau)
    ps = _softmax(s.astype("float64") / tau)
    return float(tau**2 * np.mean(np.sum(pt * (np.log(pt) - np.log(ps)), axis=1)))


@pytest.fixture(scope="module")
def digits():
    return load_digits(seed=0)


@pytest.fixture(scope="module")
def teacher(digits):
    (x, y), _ = digits
    keras.utils.set_random_seed(0)
    model = mlp(x.shape[1:], 10, hidden=(256,), name="teacher")
    model.compile(
        keras.optimizers.Adam(3e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, batch_size=64, epochs=20, verbose=0)
    return model


def _accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, verbose=0), -1) == y))


@pytest.mark.slow  # trains a teacher and two students
def test_distillation_beats_cross_entropy_on_noisy_digits(digits, teacher):
    """Kim et al.: KD (and CSKD) on 40%-noisy labels beats CE-only training
    of the same student from the same seeds, by more than a point on the
    mean over two seeds."""
    (x, y), (x_test, y_test) = digits
    rng = np.random.default_rng(0)
    noisy = y.copy()
    flip = rng.random(len(y)) < 0.4
    noisy[flip] = rng.integers(0, 10, int(flip.sum()))
    scores = {}
    for method in ("ce", "kd", "cskd"):
        accuracies = []
        for seed in (0, 1):
            keras.utils.set_random_seed(seed)
            student = mlp(x.shape[1:], 10, hidden=(32,), name="student")
            if method == "ce":
                model = student
                model.compile(
                    keras.optimizers.Adam(3e-3),
                    keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                )
            else:
                model = keras_cskd.Distiller(student, teacher, method)
                model.compile(keras.optimizers.Adam(3e-3))
            model.fit(x, noisy, batch_size=64, epochs=30, verbose=0)
            accuracies.append(_accuracy(student, x_test, y_test))
        scores[method] = np.mean(accuracies)
    assert scores["kd"] > scores["ce"] + 0.01, scores
    assert scores["cskd"] > scores["ce"] + 0.01, scores


def _pair(seed=0, classes=4, features=6):
    keras.utils.set_random_seed(seed)
    teacher = mlp((features,), classes, hidden=(16,), name="t")
    student = mlp((features,), classes, hidden=(8,), name="s")
    return teacher, student


def _batch(n=16, classes=4, features=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype("float32")
    y = rng.integers(0, classes, n).astype("int32")
    return x, y


def test_total_loss_matches_numpy_formula():
    teacher, student = _pair()
    distiller = keras_cskd.Distiller(
        student,
        teacher,
        losses.KLDivergenceDistillation(temperature=3.0),
        student_loss_weight=0.3,
        distillation_loss_weight=0.7,
    )
    distiller.compile(optimizer="sgd")
    x, y = _batch()
    y_pred = distiller(x, training=True)
    total = distiller.compute_loss(x, y, y_pred, training=True)
    s = np.asarray(ops.convert_to_numpy(student(x)))
    t = np.asarray(ops.convert_to_numpy(teacher(x)))
    expected = 0.3 * _np_cross_entropy(y, s) + 0.7 * _np_kd(t, s, 3.0)
    np.testing.assert_allclose(float(_np(total)), expected, rtol=1e-5)


def test_string_cross_entropy_is_read_from_logits():
    """keras.distillation's trap: 'sparse_categorical_crossentropy' on logits."""
    teacher, student = _pair()
    distiller = keras_cskd.Distiller(student, teacher, "kd", distillation_loss_weight=0.0)
    distiller.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x, y = _batch()
    total = distiller.compute_loss(x, y, distiller(x, training=True), training=True)
    s = np.asarray(ops.convert_to_numpy(student(x)))
    np.testing.assert_allclose(float(_np(total)), _np_cross_entropy(y, s), rtol=1e-5)
    with pytest.raises(ValueError, match="from_logits=True"):
        distiller.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy())


@pytest.mark.parametrize(
    "loss, one_hot",
    [
        ("sparse_categorical_crossentropy", False),
        ("SparseCategoricalCrossentropy", False),
        (keras.losses.sparse_categorical_crossentropy, False),
        (keras.metrics.sparse_categorical_crossentropy, False),
        ({"class_name": "SparseCategoricalCrossentropy", "config": {"from_logits": True}}, False),
        ("categorical_crossentropy", True),
        ("CategoricalCrossentropy", True),
        (keras.losses.categorical_crossentropy, True),
        (keras.losses.CategoricalCrossentropy(from_logits=True), True),
    ],
    ids=lambda v: v if isinstance(v, str) else getattr(v, "__name__", type(v).__name__),
)
def test_every_cross_entropy_name_reads_logits(loss, one_hot):
    """Names, class names, functions and configs of a cross-entropy all give
    the cross-entropy of the student's logits (NumPy reference)."""
    teacher, student = _pair()
    distiller = keras_cskd.Distiller(student, teacher, "kd", distillation_loss_weight=0.0)
    distiller.compile(optimizer="sgd", loss=loss)
    assert distiller.labels_are_classes()
    x, y = _batch()
    labels = np.eye(4, dtype="float32")[y] if one_hot else y
    total = distiller.compute_loss(x, labels, distiller(x, training=True), training=True)
    s = np.asarray(ops.convert_to_numpy(student(x)))
    np.testing.assert_allclose(float(_np(total)), _np_cross_entropy(y, s), rtol=1e-5)


@pytest.mark.parametrize(
    "loss, named",
    [
        (keras.losses.SparseCategoricalCrossentropy(), "SparseCategoricalCrossentropy("),
        (keras.losses.CategoricalFocalCrossentropy(), "CategoricalFocalCrossentropy("),
        ("binary_crossentropy", "'binary_crossentropy'"),
        ("BinaryCrossentropy", "'BinaryCrossentropy'"),
        (keras.losses.binary_crossentropy, "keras.losses.binary_crossentropy"),
        (keras.losses.categorical_focal_crossentropy, "categorical_focal_crossentropy"),
        ({"class_name": "CategoricalCrossentropy", "config": {}}, "CategoricalCrossentropy("),
    ],
    ids=lambda v: v if isinstance(v, str) else getattr(v, "__name__", type(v).__name__),
)
def test_cross_entropy_reading_probabilities_is_refused(loss, named):
    teacher, student = _pair()
    distiller = keras_cskd.Distiller(student, teacher, "kd")
    with pytest.raises(ValueError, match="from_logits=True") as error:
        distiller.compile(optimizer="sgd", loss=loss)
    assert named in str(error.value) and "as probabilities" in str(error.value)


def test_one_hot_labels_and_logs(digits):
    (x, y), (x_test, y_test) = digits
    teacher, student = (
        mlp(x.shape[1:], 10, hidden=(32,), name="t"),
        mlp(x.shape[1:], 10, hidden=(8,), name="s"),
    )
    distiller = keras_cskd.Distiller(student, teacher, "cskd_cswt")
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    one_hot = np.eye(10, dtype="float32")[y[:256]]
    history = distiller.fit(
        x[:256],
        one_hot,
        batch_size=64,
        epochs=1,
        verbose=0,
        validation_data=(x_test[:64], np.eye(10, dtype="float32")[y_test[:64]]),
    )
    logs = history.history
    for key in (
        "loss",
        "student_loss",
        "distillation_loss",
        "accuracy",
        "cosine_similarity",
        "temperature",
        "val_loss",
        "val_accuracy",
    ):
        assert key in logs, sorted(logs)
    # evaluate() runs the student alone: no distillation entries.
    assert "val_distillation_loss" not in logs
    assert 2.0 <= logs["temperature"][0] <= 6.0
    assert 0.0 <= logs["cosine_similarity"][0] <= 1.0 + 1e-6


def test_predict_and_evaluate_use_the_student(digits):
    (x, y), _ = digits
    teacher, student = _pair()
    distiller = keras_cskd.Distiller(student, teacher, "kd")
    distiller.compile(optimizer="adam")
    xb, yb = _batch(32)
    np.testing.assert_allclose(
        distiller.predict(xb, verbose=0), student.predict(xb, verbose=0), rtol=1e-6
    )
    loss = distiller.evaluate(xb, yb, verbose=0, return_dict=True)["loss"]
    s = student.predict(xb, verbose=0)
    np.testing.assert_allclose(loss, _np_cross_entropy(yb, s), rtol=1e-4)


def test_only_the_student_is_trained():
    keras.utils.set_random_seed(0)
    teacher = small_cnn((8, 8, 1), 10, filters=(4,), dense=0, name="t")
    teacher.trainable = True  # the Distiller must never train it
    student = mlp((8, 8, 1), 10, hidden=(8,), name="s")
    before_teacher = [np.array(w) for w in teacher.get_weights()]
    before_student = [np.array(w) for w in student.get_weights()]
    distiller = keras_cskd.Distiller(student, teacher, "cskd")
    assert never_trains_its_teachers(distiller) and teacher.trainable  # left as it was
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    x = np.random.default_rng(0).random((64, 8, 8, 1)).astype("float32")
    y = np.arange(64) % 10
    distiller.fit(x, y, batch_size=16, epochs=2, verbose=0)
    for old, new in zip(before_teacher, teacher.get_weights()):  # incl. BN statistics
        np.testing.assert_array_equal(old, new)
    assert any(not np.allclose(old, new) for old, new in zip(before_student, student.get_weights()))


def test_cached_teacher_logits_match_the_live_teacher(digits):
    (x, y), _ = digits
    x, y = x[:256], y[:256]
    keras.utils.set_random_seed(3)
    teacher = mlp(x.shape[1:], 10, hidden=(32,), name="t")
    student = mlp(x.shape[1:], 10, hidden=(8,), name="s")
    initial = student.get_weights()
    logits = keras_cskd.cache_teacher_logits(teacher, x)
    results = []
    for cached in (False, True):
        student.set_weights(initial)
        distiller = keras_cskd.Distiller(student, None if cached else teacher, "cskd")
        distiller.compile(optimizer=keras.optimizers.SGD(0.05))
        inputs = {"x": x, "teacher_logits": logits} if cached else x
        distiller.fit(inputs, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
        results.append(student.get_weights())
    for live, from_cache in zip(*results):
        np.testing.assert_allclose(live, from_cache, rtol=1e-4, atol=1e-5)
    assert any(not np.allclose(a, b) for a, b in zip(initial, results[0]))


def test_mixup_feeds_both_networks_the_same_mixed_batch():
    teacher, student = _pair()
    distiller = keras_cskd.Distiller(student, teacher, "stkd", seed=7)
    assert distiller.mixup_alpha == 1.0  # taken from the STKD loss
    x, _ = _batch(16)
    out = distiller(x, training=True)
    lam = float(_np(out.mixup.lam))
    index = np.asarray(ops.convert_to_numpy(out.mixup.index))
    assert 0.0 <= lam <= 1.0
    assert sorted(index.tolist()) == list(range(16))
    mixed = lam * x + (1 - lam) * x[index]
    np.testing.assert_allclose(
        _np(out.student_logits), student.predict(mixed, verbose=0), rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(
        _np(out.teacher_logits[0]), teacher.predict(mixed, verbose=0), rtol=1e-4, atol=1e-5
    )


def test_mixup_labels_follow_the_paper():
    """The supervised term is lam * CE(y) + (1 - lam) * CE(y[index])."""
    teacher, student = _pair()
    distiller = keras_cskd.Distiller(student, teacher, "stkd", distillation_loss_weight=0.0, seed=1)
    distiller.compile(optimizer="sgd")
    x, y = _batch(16)
    out = distiller(x, training=True)
    total = distiller.compute_loss(x, y, out, training=True)
    lam = float(_np(out.mixup.lam))
    index = np.asarray(ops.convert_to_numpy(out.mixup.index))
    s = np.asarray(ops.convert_to_numpy(out.student_logits))
    expected = lam * _np_cross_entropy(y, s) + (1 - lam) * _np_cross_entropy(y[index], s)
    np.testing.assert_allclose(float(_np(total)), expected, rtol=1e-5)


def _mixup_run(seed):
    teacher, student = _pair(seed=0)
    keras.utils.set_random_seed(seed)
    distiller = keras_cskd.Distiller(student, teacher, "stkd")
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    x, y = _batch(64)
    keras.utils.set_random_seed(seed)
    distiller.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    return student.get_weights()


def test_mixup_is_reproducible_with_set_random_seed():
    first, second, other = _mixup_run(5), _mixup_run(5), _mixup_run(6)
    for a, b in zip(first, second):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert any(not np.allclose(a, c) for a, c in zip(first, other))


@pytest.mark.parametrize("alpha", [0.4, 1.0, 2.0])
def test_beta_sampler_matches_the_beta_distribution(alpha):
    from scipy import stats

    generator = keras.random.SeedGenerator(123)
    draws = np.array([float(keras_cskd.ops.sample_beta(alpha, generator)) for _ in range(400)])
    assert np.all((draws >= 0) & (draws <= 1))
    assert stats.kstest(draws, stats.beta(alpha, alpha).cdf).pvalue > 1e-3


def test_loss_lists_and_paper_objective():
    teacher, student = _pair()
    distiller = keras_cskd.Distiller(
        student, teacher, losses.cskd_paper_objective(), distillation_loss_weight=1.0
    )
    distiller.compile(optimizer="sgd")
    x, y = _batch(16)
    out = distiller(x, training=True)
    total = float(_np(distiller.compute_loss(x, y, out, training=True)))
    t, s = out.teacher_logits[0], out.student_logits
    expected = _np_cross_entropy(y, np.asarray(ops.convert_to_numpy(s)))
    for loss, weight in losses.cskd_paper_objective():
        expected += weight * float(_np(loss(t, s)))
    np.testing.assert_allclose(total, expected, rtol=1e-5)


def test_sample_weight_reaches_the_distillation_loss():
    teacher, student = _pair()
    distiller = keras_cskd.Distiller(student, teacher, "kd", student_loss_weight=0.0)
    distiller.compile(optimizer="sgd")
    x, y = _batch(8)
    weight = np.array([1, 0, 1, 0, 1, 0, 1, 0], "float32")
    out = distiller(x, training=True)
    total = float(_np(distiller.compute_loss(x, y, out, sample_weight=weight, training=True)))
    t = np.asarray(ops.convert_to_numpy(out.teacher_logits[0]))
    s = np.asarray(ops.convert_to_numpy(out.student_logits))
    pt, ps = _softmax(t / 4.0), _softmax(s / 4.0)
    per_sample = 16.0 * np.sum(pt * (np.log(pt) - np.log(ps)), axis=1)
    np.testing.assert_allclose(total, np.sum(weight * per_sample) / 8, rtol=1e-5)


def test_dkd_receives_the_labels():
    teacher, student = _pair()
    distiller = keras_cskd.Distiller(student, teacher, "dkd", student_loss_weight=0.0)
    distiller.compile(optimizer="sgd")
    x, y = _batch(8)
    out = distiller(x, training=True)
    total = float(_np(distiller.compute_loss(x, y, out, training=True)))
    expected = float(
        _np(losses.DecoupledKDDistillation()(out.teacher_logits[0], out.student_logits, labels=y))
    )
    np.testing.assert_allclose(total, expected, rtol=1e-6)
    with pytest.raises(ValueError, match="mixup"):
        keras_cskd.Distiller(student, teacher, "dkd", mixup_alpha=0.5)


def test_temperature_recorder_and_warmup(tmp_path, digits):
    (x, y), _ = digits
    teacher = mlp(x.shape[1:], 10, hidden=(32,), name="t")
    student = mlp(x.shape[1:], 10, hidden=(8,), name="s")
    cswt = keras_cskd.layers.CosineSimilarityWeightedTemperature(2.0, 6.0, granularity="class")
    distiller = keras_cskd.Distiller(
        student,
        teacher,
        losses.CosineSimilarityDistillation(cswt=cswt),
        distillation_loss_weight=2.0,
    )
    distiller.compile(optimizer="adam")
    recorder = keras_cskd.callbacks.TemperatureRecorder()
    warmup = keras_cskd.callbacks.DistillationWeightWarmup(epochs=4)
    seen = []

    class Spy(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(float(ops.convert_to_numpy(self.model.distillation_loss_weight)))

    distiller.fit(
        x[:256], y[:256], batch_size=64, epochs=3, verbose=0, callbacks=[warmup, recorder, Spy()]
    )
    np.testing.assert_allclose(seen, [0.5, 1.0, 1.5])
    assert recorder.temperature.shape == (3, 10)
    assert recorder.cosine_similarity.shape == (3, 10)
    # Per-class CSWT maps the classes onto [low, high], extremes included.
    assert np.all(recorder.temperature >= 2.0 - 1e-5) and np.all(recorder.temperature <= 6.0 + 1e-5)
    png = recorder.plot(tmp_path / "temperatures.png")
    assert os.path.getsize(png) > 1000


def test_jit_compiled_training_step():
    if BACKEND == "torch":
        pytest.skip("Keras' torch backend has no XLA jit_compile; covered eagerly")
    teacher, student = _pair()
    distiller = keras_cskd.Distiller(student, teacher, "cskd_cswt")
    distiller.compile(optimizer="adam", jit_compile=True)
    x, y = _batch(64)
    history = distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_mixed_bfloat16_policy():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        teacher, student = _pair()
        distiller = keras_cskd.Distiller(student, teacher, "cskd_cswt")
        distiller.compile(optimizer="adam")
        x, y = _batch(64)
        history = distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][0])
        out = distiller(x[:16], training=True)
        loss = losses.CosineSimilarityDistillation().compute(
            out.teacher_logits[0], out.student_logits
        )
        assert keras.backend.standardize_dtype(loss.dtype) == "float32"
    finally:
        keras.config.set_dtype_policy(previous)


NEEDS_KERAS_DISTILLATION = pytest.mark.skipif(
    not hasattr(keras, "distillation"),
    reason="keras.distillation ships with Keras >= 3.12",
)


@NEEDS_KERAS_DISTILLATION
def test_keras_builtin_distiller_accepts_our_losses():
    teacher, student = _pair()
    ours = losses.CosineSimilarityDistillation(temperature=2.0)
    builtin = keras.distillation.Distiller(
        teacher=teacher, student=student, distillation_losses=ours, student_loss_weight=0.5
    )
    builtin.compile(
        optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    x, y = _batch(16)
    y_pred = builtin(x)
    total = float(_np(builtin.compute_loss(x, y, y_pred)))
    s = np.asarray(ops.convert_to_numpy(student(x)))
    t = np.asarray(ops.convert_to_numpy(teacher(x)))
    pt, ps = _softmax(t / 2.0), _softmax(s / 2.0)
    cos = np.sum(pt * ps, 0) / (np.linalg.norm(pt, axis=0) * np.linalg.norm(ps, axis=0))
    expected = 0.5 * _np_cross_entropy(y, s) + 0.5 * 4.0 * (1 - cos.mean())
    np.testing.assert_allclose(total, expected, rtol=1e-5)
    history = builtin.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    with pytest.raises(ValueError, match="labels"):
        keras.distillation.Distiller(
            teacher=teacher,
            student=student,
            distillation_losses=losses.DecoupledKDDistillation(),
        )
