"""Feature distillation (FitNets): `keras_cskd.FeatureDistillation` alone and
in the `Distiller`, on the active backend.

The references are NumPy: the features recomputed from the layers' weights
(`relu(x @ kernel + bias)`) and the loss written out, never keras-cskd
itself. Checked: the value with a projection of known weights (alone, next
to a logit loss, with sample weights, on rank-2 and rank-4 features), the
layer lookup by name, the projection choices, that the projection trains
with the student and stays out of `export_student`, that the teacher does
not change, the `.keras` round trip, `keras.distillation` interop, and the
errors.
"""

import json

import keras
import numpy as np
import pytest
import reference
from keras import ops

import keras_cskd
from keras_cskd import FeatureDistillation

FEATURES, CLASSES = 6, 3


def as_json(data):
    return json.loads(json.dumps(data))


def _np(x):
    return np.asarray(ops.convert_to_numpy(x), dtype="float64")


def _mlp(name, widths, seed):
    """Dense layers `{name}_h0, {name}_h1, ...` (ReLU), then `{name}_logits`."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((FEATURES,))
    x = inputs
    for i, width in enumerate(widths):
        x = keras.layers.Dense(width, activation="relu", name=f"{name}_h{i}")(x)
    outputs = keras.layers.Dense(CLASSES, name=f"{name}_logits")(x)
    return keras.Model(inputs, outputs, name=name)


def _np_forward(model, x):
    """`{layer name: output}` of an `_mlp`, in NumPy float64."""
    outputs, h = {}, np.asarray(x, "float64")
    for layer in model.layers[1:]:
        kernel, bias = (np.asarray(w, "float64") for w in layer.get_weights())
        h = h @ kernel + bias
        if layer.name != model.layers[-1].name:
            h = np.maximum(h, 0.0)
        outputs[layer.name] = h
    return outputs


def _np_cross_entropy(y, logits, sample_weight=None):
    p = reference.softmax(logits)
    return reference.batch_reduce(-np.log(p[np.arange(len(y)), y]), sample_weight)


def _batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(n, FEATURES)).astype("float32"),
        rng.integers(0, CLASSES, n).astype("int32"),
    )


def _set_projection(loss, seed=7):
    """Gives the projection known random weights; returns them (float64)."""
    rng = np.random.default_rng(seed)
    layer = loss.projection_layer
    kernel = rng.normal(size=layer.kernel.shape).astype("float32")
    bias = rng.normal(size=layer.bias.shape).astype("float32")
    layer.kernel.assign(kernel)
    layer.bias.assign(bias)
    return kernel.astype("float64"), bias.astype("float64")


# ------------------------------------------------------------------ values
@pytest.mark.parametrize("teacher_layer", ["t_h0", "t_h1"])
@pytest.mark.parametrize("weighted", [False, True])
def test_distiller_value_matches_numpy_with_a_logit_loss(teacher_layer, weighted):
    """CE + KD + 0.5 * mean((P(f_s) - f_t)^2), the features of the layers
    named (two teacher layers of different widths: the lookup must pick
    the right one), P of known weights."""
    teacher, student = _mlp("t", (12, 8), seed=0), _mlp("s", (5,), seed=1)
    fitnets = FeatureDistillation("mse", teacher_layer, "s_h0")
    distiller = keras_cskd.Distiller(
        student,
        teacher,
        [(keras_cskd.losses.KLDivergenceDistillation(2.0), 1.0), (fitnets, 0.5)],
        distillation_loss_weight=1.0,  # CE + the distillation term
    )
    distiller.compile(optimizer="sgd")
    kernel, bias = _set_projection(fitnets)
    x, y = _batch()
    sample_weight = np.linspace(0.2, 1.8, len(y)).astype("float32") if weighted else None

    value = distiller.compute_loss(x, y, distiller(x, training=True), sample_weight)

    t, s = _np_forward(teacher, x), _np_forward(student, x)
    assert kernel.shape == (5, t[teacher_layer].shape[1])
    per_sample = np.mean((s["s_h0"] @ kernel + bias - t[teacher_layer]) ** 2, axis=1)
    expected = (
        _np_cross_entropy(y, s["s_logits"], sample_weight)
        + reference.kd_loss(t["t_logits"], s["s_logits"], 2.0, sample_weight)
        + 0.5 * reference.batch_reduce(per_sample, sample_weight)
    )
    np.testing.assert_allclose(float(_np(value)), expected, rtol=1e-5)


@pytest.mark.parametrize("loss", ["mse", "mae", "cosine_similarity"])
def test_rank4_features_with_projection_match_numpy(loss):
    """Feature maps (B, H, W, C): a 1x1 projection of the student's channels,
    the loss averaged over positions, then Keras' batch reduction."""
    rng = np.random.default_rng(0)
    t = rng.normal(size=(4, 3, 2, 6)).astype("float32")
    s = rng.normal(size=(4, 3, 2, 2)).astype("float32")
    sample_weight = np.array([1.0, 0.0, 2.0, 0.5], "float32")
    fitnets = FeatureDistillation(loss)
    fitnets.build(t.shape, s.shape)
    kernel, bias = _set_projection(fitnets)

    value = fitnets(t, s, sample_weight=sample_weight)

    projected = s.astype("float64") @ kernel + bias
    if loss == "mse":
        per_position = np.mean((projected - t) ** 2, axis=-1)
    elif loss == "mae":
        per_position = np.mean(np.abs(projected - t), axis=-1)
    else:

        def unit(v):
            return v / np.linalg.norm(v, axis=-1, keepdims=True)

        per_position = -np.sum(unit(projected) * unit(t.astype("float64")), axis=-1)
    per_sample = per_position.reshape(4, -1).mean(axis=1)
    np.testing.assert_allclose(
        float(_np(value)), reference.batch_reduce(per_sample, sample_weight), rtol=1e-5
    )


def test_keras_loss_instance_is_applied_per_position():
    """A `keras.losses.Loss` instance gives its values before its own
    reduction: Huber(delta=0.5) of each element, averaged."""
    rng = np.random.default_rng(1)
    t = rng.normal(size=(5, 4)).astype("float32")
    s = rng.normal(size=(5, 4)).astype("float32")
    value = FeatureDistillation(keras.losses.Huber(delta=0.5))(t, s)
    error = np.abs(s.astype("float64") - t)
    huber = np.where(error <= 0.5, 0.5 * error**2, 0.5 * (error - 0.25))
    np.testing.assert_allclose(float(_np(value)), huber.mean(), rtol=1e-5)


# ------------------------------------------------------------- projection
@pytest.mark.parametrize(
    "projection, widths, expected_kernel",
    [("auto", (8, 8), None), ("auto", (8, 3), (3, 8)), (True, (8, 8), (8, 8))],
)
def test_projection_choices(projection, widths, expected_kernel):
    fitnets = FeatureDistillation(projection=projection)
    fitnets.build((None, widths[0]), (None, widths[1]))
    if expected_kernel is None:
        assert fitnets.projection_layer is None
    else:
        assert tuple(fitnets.projection_layer.kernel.shape) == expected_kernel


@pytest.mark.slow
def test_projection_trains_with_the_student_and_is_not_exported(tmp_path):
    """Rank-4 features of two CNNs: fit moves the student and the
    projection, never the teacher; the exported student has exactly the
    student's weights (no projection) and predicts like it."""

    def cnn(name, filters, seed):
        keras.utils.set_random_seed(seed)
        inputs = keras.Input((6, 6, 1))
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name="conv")(inputs)
        x = keras.layers.GlobalAveragePooling2D()(x)
        return keras.Model(inputs, keras.layers.Dense(CLASSES, name="logits")(x), name=name)

    teacher, student = cnn("teacher", 8, 0), cnn("student", 4, 1)
    fitnets = FeatureDistillation("mse", "conv", "conv")
    distiller = keras_cskd.Distiller(student, teacher, [("cskd", 1.0), (fitnets, 1.0)])
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2))
    assert tuple(fitnets.projection_layer.kernel.shape) == (4, 8)
    projection_ids = {id(w) for w in fitnets.projection_layer.weights}
    assert projection_ids <= {id(w) for w in distiller.trainable_weights}
    assert not projection_ids & {id(w) for w in student.weights}

    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 6, 6, 1)).astype("float32")
    y = rng.integers(0, CLASSES, 32)
    before = {
        role: [_np(w) for w in model.weights]
        for role, model in (
            ("teacher", teacher),
            ("student", student),
            ("projection", fitnets.projection_layer),
        )
    }
    history = distiller.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    for a, b in zip(before["teacher"], teacher.weights, strict=True):
        np.testing.assert_array_equal(a, _np(b))
    for role, layer in (("student", student), ("projection", fitnets.projection_layer)):
        changed = [not np.allclose(a, _np(b)) for a, b in zip(before[role], layer.weights)]
        assert all(changed), role

    path = distiller.export_student(str(tmp_path / "student.keras"))
    exported = keras.saving.load_model(path)
    assert [w.path for w in exported.weights] == [w.path for w in student.weights]
    assert not any("projection" in w.path for w in exported.weights)
    np.testing.assert_allclose(
        exported.predict(x, verbose=0), student.predict(x, verbose=0), rtol=1e-6, atol=1e-6
    )


@pytest.mark.slow
@pytest.mark.parametrize("projection", ["auto", "own layer"])
def test_distiller_with_projection_round_trips_through_a_keras_file(projection, tmp_path):
    """Saved after 2 steps and loaded: same projection and optimizer state,
    and 2 more steps end where the never-saved distiller does."""
    teacher, student = _mlp("t", (12,), seed=0), _mlp("s", (5,), seed=1)
    if projection != "auto":
        projection = keras.layers.Dense(12, activation="tanh", name="regressor")
    fitnets = FeatureDistillation("mse", "t_h0", "s_h0", projection=projection)
    distiller = keras_cskd.Distiller(student, teacher, [("kd", 1.0), (fitnets, 0.5)])
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2))
    x, y = _batch(n=16)

    def fit(model):
        return model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0).history["loss"]

    fit(distiller)
    path = str(tmp_path / "distiller.keras")
    distiller.save(path)
    loaded = keras.saving.load_model(path)
    loaded_fitnets = loaded.distillation_losses[1][0]
    assert isinstance(loaded_fitnets, FeatureDistillation)
    assert as_json(loaded_fitnets.get_config()) == as_json(fitnets.get_config())
    assert loaded_fitnets.projection_layer is not fitnets.projection_layer
    for a, b in zip(
        loaded_fitnets.projection_layer.weights, fitnets.projection_layer.weights, strict=True
    ):
        np.testing.assert_array_equal(_np(a), _np(b))
    assert fit(loaded) == pytest.approx(fit(distiller), rel=1e-6)
    for a, b in zip(loaded.trainable_weights, distiller.trainable_weights, strict=True):
        np.testing.assert_allclose(_np(a), _np(b), rtol=1e-5, atol=1e-6)


def test_config_round_trip():
    for projection in ("auto", True, False):
        # (Keras 3.15's Huber.get_config drops `delta`: a parameter-free loss here.)
        fitnets = FeatureDistillation(keras.losses.LogCosh(), "a", "b", projection)
        copy = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(fitnets))
        assert isinstance(copy, FeatureDistillation)
        assert copy.get_config() == fitnets.get_config()
        assert (copy.teacher_layer_name, copy.student_layer_name) == ("a", "b")
        assert copy.projection == projection
    rng = np.random.default_rng(2)
    t, s = (
        rng.normal(size=(2, 5, 4)).astype("float32"),
        rng.normal(size=(2, 5, 4)).astype("float32"),
    )
    assert isinstance(copy.loss, keras.losses.LogCosh)
    assert float(_np(copy(t, s))) == pytest.approx(float(_np(fitnets(t, s))), rel=1e-6)


def test_own_projection_layer_matches_numpy():
    """A layer given as `projection` is used as given: tanh(s @ K + b)."""
    rng = np.random.default_rng(3)
    t = rng.normal(size=(6, 4)).astype("float32")
    s = rng.normal(size=(6, 3)).astype("float32")
    fitnets = FeatureDistillation(projection=keras.layers.Dense(4, activation="tanh"))
    fitnets.build(t.shape, s.shape)
    kernel, bias = _set_projection(fitnets)
    expected = np.mean((np.tanh(s.astype("float64") @ kernel + bias) - t) ** 2)
    np.testing.assert_allclose(float(_np(fitnets(t, s))), expected, rtol=1e-5)


def test_own_projection_may_change_positions_but_must_reach_the_teacher_shape():
    """A strided convolution maps a (6, 6, 4) map onto the teacher's (3, 3, 8);
    one that misses the teacher's shape is refused, naming both shapes."""
    strided = keras.layers.Conv2D(8, 3, strides=2, padding="same")
    fitnets = FeatureDistillation(projection=strided)
    fitnets.build((None, 3, 3, 8), (None, 6, 6, 4))
    assert fitnets.projection_layer is strided
    with pytest.raises(ValueError, match=r"to \(None, 6, 6, 8\), but the teacher's are"):
        FeatureDistillation(projection=keras.layers.Conv2D(8, 1)).build(
            (None, 3, 3, 8), (None, 6, 6, 4)
        )


# ---------------------------------------------------- keras.distillation
def test_keras_feature_distillation_is_accepted_without_projection():
    """keras.distillation.FeatureDistillation: same layers and loss, no
    projection, the value of the NumPy formula."""
    teacher, student = _mlp("t", (12, 5), seed=0), _mlp("s", (5,), seed=1)
    distiller = keras_cskd.Distiller(  # Keras' keywords: 0 * CE + (1 - 0) * feature loss
        teacher=teacher,
        student=student,
        distillation_losses=[keras.distillation.FeatureDistillation("mae", "t_h1", "s_h0")],
        student_loss_weight=0.0,
    )
    converted = distiller.distillation_losses[0][0]
    assert isinstance(converted, FeatureDistillation) and converted.projection_layer is None
    x, y = _batch()
    value = distiller.compute_loss(x, y, distiller(x, training=True))
    t, s = _np_forward(teacher, x), _np_forward(student, x)
    np.testing.assert_allclose(float(_np(value)), np.mean(np.abs(s["s_h0"] - t["t_h1"])), rtol=1e-5)
    with pytest.raises(ValueError, match="width 12 .* projection='auto'"):
        keras_cskd.Distiller(
            student, teacher, keras.distillation.FeatureDistillation("mse", "t_h0", "s_h0")
        )
    with pytest.raises(ValueError, match="one loss"):
        keras_cskd.Distiller(
            student, teacher, keras.distillation.FeatureDistillation(["mse"], "t_h1", "s_h0")
        )


def test_works_in_keras_distiller_without_projection_and_refuses_one():
    teacher, student = _mlp("t", (12, 5), seed=0), _mlp("s", (5,), seed=1)
    distiller = keras.distillation.Distiller(
        teacher=teacher,
        student=student,
        distillation_losses=FeatureDistillation("mse", "t_h1", "s_h0"),
        student_loss_weight=0.0,
    )
    distiller.compile(
        optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    x, y = _batch()
    value = distiller.compute_loss(x, y, distiller(x))
    t, s = _np_forward(teacher, x), _np_forward(student, x)
    np.testing.assert_allclose(float(_np(value)), np.mean((s["s_h0"] - t["t_h1"]) ** 2), rtol=1e-5)
    with pytest.raises(ValueError, match="would not train"):
        keras.distillation.Distiller(
            teacher=teacher,
            student=student,
            distillation_losses=FeatureDistillation("mse", "t_h0", "s_h0"),
        )


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize("role", ["teacher", "student"])
def test_unknown_layer_name_lists_the_layers(role):
    teacher, student = _mlp("t", (12,), seed=0), _mlp("s", (5,), seed=1)
    names = {"teacher_layer_name": "t_h0", "student_layer_name": "s_h0"}
    names[f"{role}_layer_name"] = "hidden"
    layers = "'t_h0', 't_logits'" if role == "teacher" else "'s_h0', 's_logits'"
    with pytest.raises(ValueError, match=f"no layer named 'hidden'. Its layers are .*{layers}"):
        keras_cskd.Distiller(student, teacher, FeatureDistillation(**names))


@pytest.mark.parametrize(
    "teacher_shape, student_shape, match",
    [
        ((None, 8), (None, 3), "width 8 .* but the student's 3, and projection=False"),
        ((None, 4, 4, 8), (None, 8), "same rank"),
        ((None, 4, 4, 8), (None, 2, 2, 8), "Only the last axis"),
    ],
)
def test_shape_mismatch_without_projection_is_refused(teacher_shape, student_shape, match):
    with pytest.raises(ValueError, match=match):
        FeatureDistillation(projection=False).build(teacher_shape, student_shape)
    if "projection=False" in match:  # a projection fixes a width mismatch only
        FeatureDistillation(projection="auto").build(teacher_shape, student_shape)
    else:
        with pytest.raises(ValueError, match=match):
            FeatureDistillation(projection=True).build(teacher_shape, student_shape)


def test_bad_projection_argument():
    with pytest.raises(ValueError, match="'auto' .* True .* False .* or a keras.layers.Layer"):
        FeatureDistillation(projection="yes")
    with pytest.raises(ValueError, match="keras.losses name"):
        FeatureDistillation(loss=3)


def test_subclassed_student_is_refused():
    class Student(keras.Model):
        def __init__(self):
            super().__init__()
            self.hidden = keras.layers.Dense(5, name="hidden")
            self.out = keras.layers.Dense(CLASSES)

        def call(self, x):
            return self.out(self.hidden(x))

    student = Student()
    student(np.zeros((1, FEATURES), "float32"))
    with pytest.raises(ValueError, match="Functional or Sequential student"):
        keras_cskd.Distiller(
            student, _mlp("t", (12,), seed=0), FeatureDistillation("mse", "t_h0", "hidden")
        )


def test_two_output_teacher_is_refused():
    inputs = keras.Input((FEATURES,))
    hidden = keras.layers.Dense(12, name="t_h0")(inputs)
    teacher = keras.Model(
        inputs, [keras.layers.Dense(CLASSES)(hidden), keras.layers.Dense(CLASSES)(hidden)]
    )
    student = _mlp("s", (5,), seed=1)
    with pytest.raises(ValueError, match="teacher has 2 outputs"):
        keras_cskd.Distiller(student, teacher, FeatureDistillation("mse", "t_h0", "s_h0"))


def test_needs_the_live_teacher():
    teacher, student = _mlp("t", (12,), seed=0), _mlp("s", (5,), seed=1)
    with pytest.raises(ValueError, match="needs the live teacher"):
        keras_cskd.Distiller(student, None, FeatureDistillation("mse", "t_h0", "s_h0"))
    distiller = keras_cskd.Distiller(student, teacher, FeatureDistillation("mse", "t_h0", "s_h0"))
    x, _ = _batch()
    cached = {"x": x, "teacher_logits": np.zeros((len(x), CLASSES), "float32")}
    with pytest.raises(ValueError, match="cached teacher logits cannot replace"):
        distiller(cached, training=True)
