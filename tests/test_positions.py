"""Per-position logits `(batch, ..., classes)` and masks, for every loss.

Every loss on positions is defined as the same loss on the rows of the kept
positions, flattened (`reference.kept_positions`): per-sample losses average
over the kept positions, batch-wise losses (CSKD's class columns, DIST,
CSWT's min/max) run over all kept positions of the batch. The tests compare
with the float64 NumPy reference on those rows, with padding that holds
huge values, NaN and inf.
"""

import keras
import numpy as np
import pytest
import reference
from helpers import (
    METHOD_CASE_IDS,
    METHOD_CASES,
    to_numpy,
    value_and_grad,
)

import keras_cskd
from keras_cskd import losses
from keras_cskd import ops as kd_ops
from keras_cskd.layers import CosineSimilarityWeightedTemperature

RTOL = 1e-5
SHAPES = {"rank3": (3, 5, 6), "rank4": (2, 3, 4, 5)}


def _positions(shape, masked, seed=0, padding=1e30):
    """Teacher/student logits of `shape`, class ids and per-sample weights,
    and a mask (None unless `masked`) whose padding holds `padding`."""
    rng = np.random.default_rng([seed, *shape])
    t = (rng.normal(size=shape) * 3.0).astype("float32")
    s = (rng.normal(size=shape) * 3.0).astype("float32")
    labels = rng.integers(0, shape[-1], size=shape[:-1])
    weights = rng.uniform(0.5, 2.0, size=shape[0]).astype("float32")
    mask = None
    if masked:
        mask = rng.uniform(size=shape[:-1]) < 0.6
        mask.reshape(-1)[:2] = True  # at least two kept positions
        mask.reshape(-1)[-1] = False  # at least one masked one
        t[~mask] = padding
        s[~mask] = -np.asarray(padding)
        labels[~mask] = -1  # padding labels, as many data pipelines use
    return t, s, labels, weights, mask


def _call(case, loss, t, s, labels, weights=None, mask=None):
    kwargs = {"sample_weight": weights, "mask": mask}
    if case.needs_labels:
        kwargs["labels"] = labels
    return loss(t, s, **kwargs)


def _reference(case, t, s, labels, weights=None, mask=None):
    rows = reference.kept_positions(t, s, labels, weights, mask)
    return case.ref(*rows)


pytestmark = pytest.mark.usefixtures("fast_jax_compilation")


@pytest.mark.parametrize(
    "rank,masked,weighted",
    [
        ("rank3", False, False),
        ("rank3", True, False),
        ("rank3", True, True),
        ("rank4", False, True),
        ("rank4", True, True),
    ],
    ids=[
        "rank3",
        "rank3-masked",
        "rank3-masked-weighted",
        "rank4-weighted",
        "rank4-masked-weighted",
    ],
)
@pytest.mark.parametrize("case", METHOD_CASES, ids=METHOD_CASE_IDS)
def test_positions_match_reference_on_kept_rows(case, rank, masked, weighted):
    t, s, labels, weights, mask = _positions(SHAPES[rank], masked)
    weights = weights if weighted else None
    value = to_numpy(_call(case, case.make(), t, s, labels, weights, mask))
    assert value.shape == ()
    expected = _reference(case, t, s, labels, weights, mask)
    np.testing.assert_allclose(value, expected, rtol=RTOL, atol=1e-6 * case.scale)


@pytest.mark.parametrize("case", METHOD_CASES, ids=METHOD_CASE_IDS)
def test_two_dimensional_logits_are_one_position_per_sample(case):
    """`(B, C)` with a mask is the loss of the kept samples."""
    t, s, labels, _, mask = _positions((9, 4), True, seed=1)
    value = to_numpy(_call(case, case.make(), t, s, labels, mask=mask))
    expected = case.ref(t[mask].astype("float64"), s[mask].astype("float64"), labels[mask], None)
    np.testing.assert_allclose(value, expected, rtol=RTOL, atol=1e-6 * case.scale)


@pytest.mark.parametrize("case", METHOD_CASES, ids=METHOD_CASE_IDS)
def test_padding_never_reaches_value_or_gradient(case):
    """Whatever the masked logits hold (NaN, inf, -inf, 3e38), the value and
    the gradient equal those of the kept rows alone, and the masked rows get
    a zero gradient."""
    padding = np.array([np.nan, np.inf, -np.inf, 3e38, -3e38], "float32")  # one per class
    t, s, labels, _, mask = _positions((3, 4, 5), True, seed=2, padding=padding)
    rows_t, rows_s, rows_y, _ = reference.kept_positions(t, s, labels, None, mask)
    loss = case.make()
    extra = {"labels": labels} if case.needs_labels else {}
    kept_extra = {"labels": rows_y} if case.needs_labels else {}
    value, grad = value_and_grad(lambda a, b: loss.compute(a, b, mask=mask, **extra), t, s)
    kept_value, kept_grad = value_and_grad(
        lambda a, b: loss.compute(a, b, **kept_extra),
        rows_t.astype("float32"),
        rows_s.astype("float32"),
    )
    assert np.all(np.isfinite(grad)), grad
    assert np.all(grad[~mask] == 0.0)
    np.testing.assert_allclose(value, kept_value, rtol=RTOL, atol=1e-6 * case.scale)
    np.testing.assert_allclose(grad[mask], kept_grad, rtol=1e-4, atol=1e-6 * case.scale)


@pytest.mark.parametrize("case", [c for c in METHOD_CASES if not c.batchwise], ids=lambda c: c.name)
def test_per_sample_losses_keep_their_positions_with_reduction_none(case):
    """`reduction="none"`: one value per position, the reference loss of that
    position alone where kept and 0 where masked."""
    t, s, labels, weights, mask = _positions((2, 3, 4), True, seed=3)
    config = case.make().get_config()
    loss = type(case.make()).from_config({**config, "reduction": "none"})
    values = to_numpy(_call(case, loss, t, s, labels, weights, mask))
    assert values.shape == (2, 3)
    for index in np.ndindex(2, 3):
        expected = 0.0
        if mask[index]:
            one = (t[index][None].astype("float64"), s[index][None].astype("float64"))
            expected = weights[index[0]] * case.ref(*one, labels[index][None], None)
        np.testing.assert_allclose(values[index], expected, rtol=RTOL, atol=1e-6 * case.scale)


@pytest.mark.parametrize("granularity", ["sample", "class"])
def test_cswt_temperatures_over_kept_positions(granularity):
    """Per position (`(N, 1)`) or per class (`(1, C)`), the CSWT temperatures
    of the kept positions are the reference's on the kept rows alone; masked
    positions get the midpoint."""
    t, s, _, _, mask = _positions((2, 6, 4), True, seed=4)
    layer = CosineSimilarityWeightedTemperature(low=2.0, high=6.0, granularity=granularity)
    temperatures = to_numpy(layer(t, s, mask=mask))
    rows_t, rows_s, _, _ = reference.kept_positions(t, s, mask=mask)
    expected = reference.cswt_temperatures(rows_t, rows_s, 2.0, 6.0, granularity)
    if granularity == "sample":
        assert temperatures.shape == (12, 1)
        np.testing.assert_allclose(temperatures[mask.reshape(-1)], expected, rtol=1e-4)
        assert np.all(temperatures[~mask.reshape(-1)] == 4.0)
    else:
        assert temperatures.shape == (1, 4)
        np.testing.assert_allclose(temperatures, expected, rtol=1e-4)


def test_cskd_statistics_over_positions():
    """The logged temperature is the mean over kept positions, and the
    per-class temperatures average the positions the teacher assigns to
    each class."""
    t, s, _, _, mask = _positions((2, 6, 4), True, seed=5)
    loss = losses.get("cskd_cswt")
    _, statistics = loss.compute_with_statistics(t, s, mask=mask)
    rows_t, rows_s, _, _ = reference.kept_positions(t, s, mask=mask)
    per_row = reference.cswt_temperatures(rows_t, rows_s).reshape(-1)
    np.testing.assert_allclose(to_numpy(statistics["temperature"]), per_row.mean(), rtol=1e-5)
    per_class = to_numpy(kd_ops.class_temperatures(statistics["temperatures"], t, 4, mask))
    assigned = rows_t.argmax(axis=1)
    for c in range(4):
        expected = per_row[assigned == c].mean() if np.any(assigned == c) else per_row.mean()
        np.testing.assert_allclose(per_class[c], expected, rtol=1e-5)


def test_mask_of_all_positions_equals_no_mask():
    t, s, labels, weights, _ = _positions((2, 3, 4), False, seed=6)
    ones = np.ones((2, 3), bool)
    for case in METHOD_CASES:
        loss = case.make()
        plain = to_numpy(_call(case, loss, t, s, labels, weights))
        masked = to_numpy(_call(case, loss, t, s, labels, weights, ones))
        np.testing.assert_allclose(masked, plain, rtol=1e-6, atol=1e-7 * case.scale)


def test_per_position_sample_weights():
    """Weights of the leading shape weight each position (Keras' temporal
    sample weights)."""
    t, s, labels, _, mask = _positions((2, 3, 4), True, seed=7)
    weights = np.random.default_rng(7).uniform(0.5, 2.0, size=(2, 3)).astype("float32")
    for case in METHOD_CASES:
        value = to_numpy(_call(case, case.make(), t, s, labels, weights, mask))
        expected = _reference(case, t, s, labels, weights, mask)
        np.testing.assert_allclose(value, expected, rtol=RTOL, atol=1e-6 * case.scale)


# ----------------------------------------------------------------------------
# Bad shapes get clear errors.


def test_mask_of_the_wrong_shape():
    t, s, *_ = _positions((2, 3, 4), False)
    with pytest.raises(ValueError, match=r"mask has shape \(3, 2\).*shape \(2, 3\)"):
        losses.get("cskd")(t, s, mask=np.ones((3, 2), bool))
    with pytest.raises(ValueError, match=r"one mask entry per position"):
        losses.get("kd")(t, s, mask=np.ones((2,), bool))


def test_teacher_and_student_positions_differ():
    t, _, *_ = _positions((2, 3, 4), False)
    _, s, *_ = _positions((2, 5, 4), False)
    with pytest.raises(ValueError, match=r"positions of shape \(3,\).*student \(5,\)"):
        losses.get("kd")(t, s)


def test_batchwise_losses_need_two_positions():
    t, s, *_ = _positions((1, 1, 4), False)
    with pytest.raises(ValueError, match="needs at least 2 positions"):
        losses.get("cskd")(t, s)
    t, s, *_ = _positions((1, 3, 4), False)  # one sequence of 3 tokens is enough
    assert np.isfinite(to_numpy(losses.get("cskd")(t, s)))


def test_probability_check_reads_kept_positions_only():
    """Eager value checks skip the padding (it may hold anything) but still
    see probabilities or NaN at kept positions."""
    t, s, _, _, mask = _positions((2, 3, 4), True, padding=np.nan)
    with pytest.raises(ValueError, match="NaN/inf"):
        losses.get("kd")(t, s)
    assert np.isfinite(to_numpy(losses.get("kd")(t, s, mask=mask)))
    probabilities = np.full((2, 3, 4), 0.25, "float32")
    with pytest.raises(ValueError, match="look like probabilities"):
        losses.get("kd")(probabilities, s, mask=mask)


# ----------------------------------------------------------------------------
# The Distiller: token models with padding, pixel models.

VOCAB, CLASSES = 9, 5


def _token_model(name, width, seed):
    """Embedding(mask_zero=True) -> Dense per token: the output carries
    the padding mask (token 0)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None,), dtype="int32", name=f"{name}_tokens")
    hidden = keras.layers.Embedding(VOCAB, width, mask_zero=True)(inputs)
    hidden = keras.layers.Dense(width, activation="tanh")(hidden)
    return keras.Model(inputs, keras.layers.Dense(CLASSES)(hidden), name=name)


def _token_data(samples=8, length=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(1, VOCAB, size=(samples, length)).astype("int32")
    lengths = rng.integers(2, length + 1, size=samples)
    for i, kept in enumerate(lengths):
        x[i, kept:] = 0  # padding at the end
    y = rng.integers(0, CLASSES, size=(samples, length))
    y[x == 0] = 0  # padded labels are still valid class ids
    return x, y


def _log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def test_distiller_passes_the_students_keras_mask():
    """One training-mode forward pass: the Distiller picks up the padding
    mask of the student's output, and its loss is the supervised
    cross-entropy and CSKD on the kept tokens alone (float64 reference)."""
    teacher = _token_model("teacher", 16, 0)
    student = _token_model("student", 4, 1)
    distiller = keras_cskd.Distiller(student, teacher, "cskd", distillation_loss_weight=1.0)
    distiller.compile(optimizer="sgd")
    x, y = _token_data()
    outputs = distiller(x, training=True)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(outputs.mask), x != 0)
    total = to_numpy(distiller.compute_loss(x, y, outputs))
    t = to_numpy(outputs.teacher_logits[0])
    s = to_numpy(outputs.student_logits)
    rows_t, rows_s, rows_y, _ = reference.kept_positions(t, s, y, None, x != 0)
    cross_entropy = -np.mean(_log_softmax(rows_s)[np.arange(len(rows_y)), rows_y])
    expected = cross_entropy + reference.cskd_loss(rows_t, rows_s, 4.0)
    np.testing.assert_allclose(total, expected, rtol=1e-5)


def _weights(model):
    return [np.array(keras.ops.convert_to_numpy(w)) for w in model.weights]


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["cskd_cswt", "kd"])
def test_token_model_with_padding_trains(loss):
    teacher = _token_model("teacher", 16, 0)
    student = _token_model("student", 4, 1)
    before = _weights(teacher)
    distiller = keras_cskd.Distiller(student, teacher, loss)
    distiller.compile(optimizer=keras.optimizers.Adam(0.05), metrics=["accuracy"])
    x, y = _token_data(16)
    start = distiller.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    history = distiller.fit(x, y, batch_size=8, epochs=8, verbose=0).history
    assert np.all(np.isfinite(history["loss"])) and np.all(
        np.isfinite(history["distillation_loss"])
    )
    assert distiller.evaluate(x, y, verbose=0, return_dict=True)["loss"] < start
    for old, new in zip(before, _weights(teacher)):
        np.testing.assert_array_equal(old, new)


def _pixel_model(name, width, seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 1), name=f"{name}_image")
    hidden = keras.layers.Conv2D(width, 3, padding="same", activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Conv2D(3, 1)(hidden), name=name)


@pytest.mark.slow
def test_pixel_model_trains():
    """Per-pixel logits `(batch, H, W, classes)` and labels `(batch, H, W)`."""
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(16, 6, 6, 1)).astype("float32")
    y = np.digitize(x[..., 0], [0.33, 0.66])  # 3 classes per pixel
    teacher = _pixel_model("teacher", 8, 0)
    teacher.compile(
        keras.optimizers.Adam(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    teacher.fit(x, y, epochs=5, verbose=0)
    before = _weights(teacher)
    student = _pixel_model("student", 2, 1)
    distiller = keras_cskd.Distiller(student, teacher, "cskd")
    distiller.compile(optimizer=keras.optimizers.Adam(0.05))
    start = distiller.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    history = distiller.fit(x, y, batch_size=8, epochs=5, verbose=0).history
    assert np.all(np.isfinite(history["distillation_loss"]))
    assert distiller.evaluate(x, y, verbose=0, return_dict=True)["loss"] < start
    for old, new in zip(before, _weights(teacher)):
        np.testing.assert_array_equal(old, new)


def test_fit_checks_per_position_labels():
    teacher = _token_model("teacher", 8, 0)
    student = _token_model("student", 4, 1)
    distiller = keras_cskd.Distiller(student, teacher, "kd")
    distiller.compile(optimizer="sgd")
    x, y = _token_data()
    with pytest.raises(ValueError, match=r"class indices in \[0, 5\)"):
        distiller.fit(x, y + CLASSES, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"1 position ax\(es\) per sample"):
        distiller.fit(x, y[:, 0], epochs=1, verbose=0)


def test_teacher_and_student_of_different_output_ranks():
    teacher = _token_model("teacher", 8, 0)
    inputs = keras.Input((None,), dtype="int32")
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(VOCAB, 4)(inputs))
    student = keras.Model(inputs, keras.layers.Dense(CLASSES)(pooled))
    with pytest.raises(ValueError, match="one row of logits per sample"):
        keras_cskd.Distiller(student, teacher, "kd")


def test_losses_read_the_student_logits_keras_mask():
    """Called directly (or by `keras.distillation.Distiller`), a loss uses
    the Keras mask that travels with the student's logits."""
    student = _token_model("student", 4, 1)
    x, _ = _token_data()
    s = student(x)
    t = keras.ops.convert_to_tensor(np.random.default_rng(0).normal(size=s.shape), "float32")
    rows_t, rows_s, _, _ = reference.kept_positions(to_numpy(t), to_numpy(s), mask=x != 0)
    for name, ref in (("cskd", reference.cskd_loss), ("kd", reference.kd_loss)):
        value = to_numpy(losses.get(name)(t, s))
        np.testing.assert_allclose(value, ref(rows_t, rows_s, 4.0), rtol=1e-5)


def test_per_batch_label_checks_read_labels_of_the_leading_shape():
    """Datasets and generators are checked batch by batch: token labels
    `(batch, length)` are class ids, one per position."""
    from keras_cskd.checks.batches import BatchChecks

    distiller = keras_cskd.Distiller(_token_model("student", 4, 1), _token_model("t", 8, 0), "kd")
    distiller.compile(optimizer="sgd")
    checks = BatchChecks.of(distiller)
    x, y = _token_data()
    assert checks((x, y)) == (x, y)
    with pytest.raises(ValueError, match=r"class indices in \[0, 5\)"):
        checks((x, y + CLASSES))
