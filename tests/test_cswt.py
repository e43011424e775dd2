"""The CSWT layer (both granularities) and `ops.cswt_temperatures` against
the float64 reference, plus its defining behaviours: best agreement gets
`low`, worst `high`, the midpoint when all similarities are equal, no
gradient, float32 output."""

import keras
import numpy as np
import pytest
import reference
from helpers import random_logits, to_numpy, value_and_grad

from keras_cskd import ops as kd_ops
from keras_cskd.layers import CosineSimilarityWeightedTemperature

SHAPES = [(2, 2), (8, 10), (64, 100), (7, 3)]
# Scales at which the similarities spread over a well-conditioned range
# (the min-max map amplifies float32 rounding by (high - low) / spread).
SCALES = [1.0, 3.0, 10.0]
RANGES = [(2.0, 6.0), (1.0, 1.5), (0.5, 20.0)]
GRANULARITIES = ["sample", "class"]


def _logits(shape, scale, seed=0):
    rng = np.random.default_rng([seed, shape[0], shape[1], int(scale * 10)])
    t, s = random_logits(rng, shape, scale)
    return t.astype("float32"), s.astype("float32")


def _well_conditioned_logits(shape, scale, granularity):
    """The first seeded draw whose similarities spread by more than 1e-2
    (at large scales and tiny shapes, rows may all agree on the argmax)."""
    for seed in range(100):
        t, s = _logits(shape, scale, seed)
        sim = reference.cswt_similarities(t.astype("float64"), s.astype("float64"), granularity)
        if sim.max() - sim.min() > 1e-2:
            return t, s
    raise AssertionError(f"no well-conditioned draw for {shape}, scale {scale}")


def _expected_tolerance(t, s, granularity, low, high):
    """float32 similarities are good to ~1e-7 relative; the map multiplies
    their error by (high - low) / spread."""
    sim = reference.cswt_similarities(t, s, granularity)
    return 1e-6 * (high - low) / (sim.max() - sim.min())


@pytest.mark.parametrize("low,high", RANGES, ids=lambda v: f"{v}")
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_layer_matches_reference(granularity, shape, scale, low, high):
    t, s = _well_conditioned_logits(shape, scale, granularity)
    t64, s64 = t.astype("float64"), s.astype("float64")
    layer = CosineSimilarityWeightedTemperature(low=low, high=high, granularity=granularity)
    temps = layer(t, s)
    expected = reference.cswt_temperatures(t64, s64, low, high, granularity)
    assert tuple(temps.shape) == expected.shape
    assert tuple(temps.shape) == ((shape[0], 1) if granularity == "sample" else (1, shape[1]))
    atol = max(1e-6, _expected_tolerance(t64, s64, granularity, low, high))
    np.testing.assert_allclose(to_numpy(temps), expected, rtol=1e-5, atol=atol)
    # The ops function is the same computation.
    np.testing.assert_allclose(
        to_numpy(kd_ops.cswt_temperatures(t, s, low, high, granularity)),
        expected,
        rtol=1e-5,
        atol=atol,
    )


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_extremes_get_low_and_high(granularity):
    t, s = _logits((8, 10), 3.0, seed=1)
    sim = reference.cswt_similarities(t.astype("float64"), s.astype("float64"), granularity)
    temps = to_numpy(CosineSimilarityWeightedTemperature(2.0, 6.0, granularity)(t, s)).ravel()
    assert temps[np.argmax(sim)] == pytest.approx(2.0, abs=1e-6)
    assert temps[np.argmin(sim)] == pytest.approx(6.0, abs=1e-6)
    assert np.all(temps >= 2.0) and np.all(temps <= 6.0)
    # Monotone: better agreement, lower temperature.
    order = np.argsort(sim)
    assert np.all(np.diff(temps[order]) <= 1e-6)


def test_sample_granularity_uses_rows_at_temperature_one():
    """The documented example: identical rows -> low, opposite rows -> high."""
    t = np.array([[4.0, 0.0], [4.0, 0.0], [0.0, 4.0]], "float32")
    s = np.array([[4.0, 0.0], [0.0, 0.0], [4.0, 0.0]], "float32")
    temps = to_numpy(CosineSimilarityWeightedTemperature(2.0, 6.0)(t, s)).ravel()
    expected = reference.cswt_temperatures(t, s, 2.0, 6.0, "sample").ravel()
    np.testing.assert_allclose(temps, expected, rtol=1e-5)
    np.testing.assert_allclose(temps[[0, 2]], [2.0, 6.0], rtol=1e-6)


def _circulant(row):
    return np.stack([np.roll(row, i) for i in range(len(row))]).astype("float32")


def test_equal_similarities_give_midpoint():
    """Rows that are the same permutations of one teacher row and one
    student row: all similarities are equal, the authors' formula would
    divide by zero; keras-cskd returns (low + high) / 2."""
    rng = np.random.default_rng(2)
    t = _circulant(rng.normal(size=6) * 3.0)
    s = _circulant(rng.normal(size=6) * 3.0)
    temps = to_numpy(CosineSimilarityWeightedTemperature(2.0, 6.0, "sample")(t, s))
    np.testing.assert_allclose(temps, np.full(temps.shape, 4.0), rtol=0, atol=0)
    np.testing.assert_allclose(
        reference.cswt_temperatures(t, s, 2.0, 6.0, "sample"), np.full(temps.shape, 4.0)
    )


def test_per_class_map_does_not_stretch_small_differences():
    """Per class, equal similarities give equal temperatures (not the
    midpoint), and a spread of 0.01 in cosine moves the temperature by at
    most one level, where the authors' min-max map would stretch it over
    [low, high]."""
    rng = np.random.default_rng(2)
    t = _circulant(rng.normal(size=6) * 3.0)
    s = _circulant(rng.normal(size=6) * 3.0)
    temps = to_numpy(CosineSimilarityWeightedTemperature(2.0, 6.0, "class")(t, s))
    cos = reference.cswt_similarities(t, s, "class")
    np.testing.assert_allclose(cos, np.full(6, cos[0]), rtol=1e-12)
    expected = reference.class_map(cos, 2.0, 6.0)
    np.testing.assert_array_equal(temps, expected.reshape(1, -1))
    # Nearly identical student and teacher: every cosine within 0.01 of 1.
    t = rng.normal(size=(32, 10)).astype("float32") * 3.0
    s = t + rng.normal(size=t.shape).astype("float32") * 0.01
    temps = to_numpy(CosineSimilarityWeightedTemperature(2.0, 6.0, "class")(t, s))
    cos = reference.cswt_similarities(t, s, "class")
    assert cos.min() > 0.99
    assert temps.max() - temps.min() <= 0.5  # one level; min-max would give 4


def test_per_class_temperatures_keep_the_teachers_ranking():
    """Per-class CSWT never changes a model's answer: every column CSKD
    compares comes from a softmax over all classes at one temperature, so
    the teacher's top class, read from any of those softmaxes, is its
    logits' top class for every sample (keras-cskd 0.1 divided each class's
    logit by its own temperature inside one softmax, which changed the top
    class). Checked on logits of a trained teacher-like model: peaked,
    with close runners-up, the case where re-ranking happened."""
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(256, 10)).astype("float32") * 2.0
    logits[np.arange(256), rng.integers(0, 10, 256)] += 4.0
    student = logits + rng.normal(size=logits.shape).astype("float32")
    cswt = CosineSimilarityWeightedTemperature(2.0, 6.0, "class")
    temps = to_numpy(cswt(logits, student))
    assert len(np.unique(temps)) > 1  # classes do get different temperatures
    top = np.argmax(logits, axis=1)
    for level in np.unique(temps):
        p = to_numpy(kd_ops.softened_probabilities(logits, float(level)))
        np.testing.assert_array_equal(np.argmax(p, axis=1), top)
    # The columns CSKD uses are those of these softmaxes.
    log_columns = to_numpy(
        kd_ops.cskd.column_log_probabilities(
            keras.ops.convert_to_tensor(logits),
            keras.ops.convert_to_tensor(temps),
            cswt.temperature_levels,
        )
    )
    expected = reference.per_class_log_softmax(logits, temps)
    np.testing.assert_allclose(log_columns, expected, rtol=1e-5, atol=1e-5)
    # What keras-cskd 0.1 did: one softmax of logits / T_c re-ranks.
    old = np.argmax(logits / temps, axis=1)
    assert np.mean(old != top) > 0.0


@pytest.mark.parametrize("shape", [(8, 10), (64, 100), (7, 3)], ids=str)
def test_student_equal_teacher_per_sample_gives_midpoint(shape):
    t, _ = _logits(shape, 3.0, seed=3)
    temps = to_numpy(CosineSimilarityWeightedTemperature(2.0, 6.0, "sample")(t, t))
    np.testing.assert_array_equal(temps, np.full((shape[0], 1), 4.0))


def test_batch_of_one_gives_midpoint():
    t, s = _logits((1, 10), 3.0, seed=4)
    temps = to_numpy(CosineSimilarityWeightedTemperature(1.0, 3.0, "sample")(t, s))
    np.testing.assert_array_equal(temps, [[2.0]])
    np.testing.assert_array_equal(to_numpy(kd_ops.cswt_temperatures(t, s, 1.0, 3.0)), [[2.0]])


def test_low_equal_high_is_constant():
    t, s = _logits((7, 3), 3.0, seed=5)
    for granularity in GRANULARITIES:
        temps = to_numpy(CosineSimilarityWeightedTemperature(3.0, 3.0, granularity)(t, s))
        np.testing.assert_allclose(temps, 3.0, rtol=1e-6)


@pytest.mark.parametrize("spread", [1e-7, 5e-7])
def test_min_max_midpoint_threshold(spread):
    """`min_max_temperatures` switches to the midpoint for spreads <= 1e-6."""
    sim = np.array([0.5, 0.5 + spread, 0.5 + spread / 2], "float32")
    out = to_numpy(kd_ops.min_max_temperatures(sim, 2.0, 6.0))
    np.testing.assert_array_equal(out, [4.0, 4.0, 4.0])
    wide = np.array([0.2, 0.9, 0.55], "float32")
    np.testing.assert_allclose(
        to_numpy(kd_ops.min_max_temperatures(wide, 2.0, 6.0)),
        reference.min_max_map(wide.astype("float64"), 2.0, 6.0),
        rtol=1e-5,
    )


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_temperatures_carry_no_gradient(granularity):
    t, s = _logits((7, 3), 3.0, seed=6)
    layer = CosineSimilarityWeightedTemperature(2.0, 6.0, granularity)
    weights = np.arange(1.0, 1.0 + (7 if granularity == "sample" else 3)).astype("float32")

    def fn(t_tensor, s_tensor):
        temps = keras.ops.reshape(layer(t_tensor, s_tensor), (-1,))
        return keras.ops.sum(temps * weights)

    value, grad = value_and_grad(fn, t, s)
    assert np.isfinite(value)
    np.testing.assert_array_equal(grad, np.zeros_like(grad))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_output_is_float32(dtype):
    t, s = _logits((8, 10), 3.0, seed=7)
    tt = keras.ops.convert_to_tensor(t, dtype=dtype)
    ss = keras.ops.convert_to_tensor(s, dtype=dtype)
    for granularity in GRANULARITIES:
        temps = CosineSimilarityWeightedTemperature(granularity=granularity)(tt, ss)
        assert keras.backend.standardize_dtype(temps.dtype) == "float32"


def test_output_shapes():
    assert CosineSimilarityWeightedTemperature(granularity="class").compute_output_shape(
        (4, 9), (4, 9)
    ) == (1, 9)
    assert CosineSimilarityWeightedTemperature().compute_output_shape((4, 9), (4, 9)) == (4, 1)
