"""Property-based tests (Hypothesis): finite values and gradients on random
shapes, scales (1e-4 to 1e4) and dtypes; invariances and ranges that hold
for every input."""

import keras
import numpy as np
import pytest
from helpers import (
    METHOD_CASES,
    as_tensor,
    reusable,
    reusable_value_and_grad,
    rounded,
    to_numpy,
    value_and_grad,
)
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from keras_cskd import losses
from keras_cskd import ops as kd_ops
from keras_cskd.checks.tensors import looks_like_probabilities
from keras_cskd.layers import CosineSimilarityWeightedTemperature

pytestmark = pytest.mark.usefixtures("fast_jax_compilation")

SETTINGS = settings(
    max_examples=8,
    deadline=None,
    derandomize=True,  # reproducible in CI
    database=None,  # writes nothing to the working tree
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
DTYPES = ["float16", "bfloat16", "float32"]
PROPERTY_CASES = METHOD_CASES


def _assume_logits(dtype, *arrays):
    """Eager calls rightly reject inputs that look like probabilities (rows
    in [0, 1] summing to 1); those are not logits, so not drawn."""
    for x in arrays:
        assume(not looks_like_probabilities(rounded(x, dtype)))


@st.composite
def logits_pairs(draw, min_batch=1, max_batch=4, max_classes=4, dtypes=DTYPES):
    """(teacher, student, labels, dtype): unit-range float32 arrays (edge
    values, repeats and zeros included) times a log-uniform scale in
    [1e-4, 1e4], then rounded to `dtype`."""
    batch = draw(st.integers(min_batch, max_batch))
    classes = draw(st.integers(2, max_classes))
    unit = hnp.arrays(np.float32, (batch, classes), elements=st.floats(-1, 1, width=32))
    scale = 10.0 ** draw(st.floats(-4, 4))
    dtype = draw(st.sampled_from(dtypes))
    t = draw(unit) * np.float32(scale)
    s = draw(unit) * np.float32(scale)
    labels = np.asarray(draw(st.lists(st.integers(0, classes - 1), min_size=batch, max_size=batch)))
    _assume_logits(dtype, t, s)
    return t, s, labels, dtype


@pytest.mark.parametrize("case", PROPERTY_CASES, ids=lambda c: c.name)
def test_finite_values_and_gradients(case):
    loss = case.make()
    # DIST's Pearson correlation has a gradient proportional to 1 / ||row -
    # mean(row)||: for nearly (not exactly) uniform student probabilities it
    # exceeds float16's range (65504) when cast back to float16 logits. That
    # is the formula, not the rounding (an exactly uniform row is constant:
    # correlation 0, gradient 0, see `test_dist_gradient_at_uniform_student_row`),
    # so DIST is checked with bfloat16 (float32's range) and float32 inputs only.
    dtypes = ["bfloat16", "float32"] if case.name.startswith("dist") else DTYPES

    evaluate = reusable_value_and_grad(lambda tt, ss, y: case(loss, tt, ss, labels=y))

    @SETTINGS
    @given(logits_pairs(min_batch=2 if case.batchwise else 1, dtypes=dtypes))
    def check(inputs):
        t, s, labels, dtype = inputs
        value, grad = evaluate(t, s, labels, dtype=dtype)
        assert np.isfinite(value)
        assert value >= -1e-6 * case.scale  # every loss is non-negative
        assert np.all(np.isfinite(grad))

    check()


def test_dist_gradient_at_uniform_student_row():
    """An exactly uniform student row is constant: its Pearson correlation is
    0, as in DIST's code, and it gets no gradient (keras-cskd 0.1 gave a
    finite but huge one, 1 / epsilon, which overflowed float16)."""
    t = np.array([[0.0, 3.0], [3.0, 3.0]], "float32")
    s = np.zeros((2, 2), "float32")
    value, grad = value_and_grad(lambda tt, ss: losses.DISTDistillation()(tt, ss), t, s)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    # Both terms are at their maximum 1: rows and columns of s are constant.
    np.testing.assert_allclose(value, 16.0 * 2.0, rtol=1e-6)
    np.testing.assert_array_equal(grad, np.zeros_like(grad))


# The value-only properties below evaluate these (compiled once per shape
# under JAX, eager elsewhere).


def _cswt_layer(t, s, granularity):
    return CosineSimilarityWeightedTemperature(2.0, 6.0, granularity)(t, s)


def _cswt_ops(t, s, low, high, granularity):
    return kd_ops.cswt_temperatures(t, s, low, high, granularity)


def _kl_self(x, tau):
    return losses.KLDivergenceDistillation(tau)(x, x), kd_ops.kl_divergence_distillation(x, x, tau)


def _cskd_and_cosines(t, s, tau):
    cos = kd_ops.class_cosine_similarity(
        kd_ops.softened_probabilities(t, tau), kd_ops.softened_probabilities(s, tau)
    )
    return losses.CosineSimilarityDistillation(tau)(t, s), cos


def _cskd_cswt(t, s, granularity):
    cswt = CosineSimilarityWeightedTemperature(2.0, 6.0, granularity)
    return losses.CosineSimilarityDistillation(cswt=cswt).compute_with_statistics(t, s)


cswt_layer = reusable(_cswt_layer, static_argnames=("granularity",))
cswt_ops = reusable(_cswt_ops, static_argnames=("granularity",))
kl_self = reusable(_kl_self, static_argnames=("tau",))
cskd_and_cosines = reusable(_cskd_and_cosines, static_argnames=("tau",))
cskd_cswt = reusable(_cskd_cswt, static_argnames=("granularity",))


@SETTINGS
@given(logits_pairs(min_batch=1), st.sampled_from(["sample", "class"]))
def test_cswt_finite_and_in_range(inputs, granularity):
    t, s, _, dtype = inputs
    temps = to_numpy(cswt_layer(as_tensor(t, dtype), as_tensor(s, dtype), granularity=granularity))
    assert np.all(np.isfinite(temps))
    assert np.all((temps >= 2.0) & (temps <= 6.0))


@SETTINGS
@given(
    logits_pairs(min_batch=2),
    st.floats(0.05, 20.0),
    st.floats(0.0, 20.0),
    st.sampled_from(["sample", "class"]),
)
def test_cswt_temperatures_within_low_high(inputs, low, width, granularity):
    t, s, _, dtype = inputs
    high = low + width
    temps = to_numpy(
        cswt_ops(
            as_tensor(t, dtype),
            as_tensor(s, dtype),
            np.float32(low),
            np.float32(high),
            granularity=granularity,
        )
    )
    # float32 low/high round by at most one float32 ulp.
    tol = 1e-6 * high
    assert np.all(np.isfinite(temps))
    assert np.all((temps >= low - tol) & (temps <= high + tol)), (temps, low, high)


@SETTINGS
@given(logits_pairs(min_batch=1), st.sampled_from([1.0, 4.0, 20.0]))
def test_kl_zero_when_student_equals_teacher(inputs, tau):
    t, _, _, dtype = inputs
    value, per_sample = kl_self(as_tensor(t, dtype), tau=tau)
    assert float(to_numpy(value)) == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_allclose(to_numpy(per_sample), 0.0, atol=1e-6)


@SETTINGS
@given(logits_pairs(min_batch=2), st.sampled_from([0.5, 1.0, 4.0, 10.0]), st.booleans())
def test_cskd_in_zero_tau_squared(inputs, tau, same):
    t, s, _, dtype = inputs
    if same:  # the lower end: parallel columns
        s = t
    value, cos = cskd_and_cosines(as_tensor(t, dtype), as_tensor(s, dtype), tau=tau)
    assert 0.0 <= float(to_numpy(value)) <= tau**2
    cos = to_numpy(cos)
    assert np.all((cos >= 0.0) & (cos <= 1.0))


@SETTINGS
@given(logits_pairs(min_batch=2), st.sampled_from(["sample", "class"]))
def test_cskd_cswt_in_zero_mean_temperature_squared(inputs, granularity):
    t, s, _, dtype = inputs
    value, stats = cskd_cswt(as_tensor(t, dtype), as_tensor(s, dtype), granularity=granularity)
    bound = float(to_numpy(stats["temperature"])) ** 2
    assert 0.0 <= float(to_numpy(value)) <= bound * (1 + 1e-6)


# ----------------------------------------------------------------------------
# Invariance to a per-row constant.
#
# Logits are drawn on a dyadic grid (integers times 2^e, |integer| <= 128 and
# row constants <= 128 in magnitude), so the shifted logits are exactly
# representable in every dtype (bfloat16 has 8 significant bits) and the
# invariance is tested without rounding of the inputs getting in the way.


@st.composite
def shifted_pairs(draw):
    batch = draw(st.integers(2, 4))
    classes = draw(st.integers(2, 4))
    exponent = draw(st.integers(-20, 6))  # scales ~1e-4 .. ~1e4
    ints = hnp.arrays(np.int32, (batch, classes), elements=st.integers(-128, 128))
    shifts = hnp.arrays(np.int32, (batch, 1), elements=st.integers(-128, 128))
    unit = np.float32(2.0**exponent)
    t, s = draw(ints) * unit, draw(ints) * unit
    t_shifted = t + draw(shifts) * unit
    s_shifted = s + draw(shifts) * unit
    dtype = draw(st.sampled_from(DTYPES))
    _assume_logits(dtype, t, s, t_shifted, s_shifted)
    return t, s, t_shifted, s_shifted, dtype


def _cskd(t, s, tau):
    return losses.CosineSimilarityDistillation(tau)(t, s)


def _cswt_loss(t, s, granularity):
    cswt = CosineSimilarityWeightedTemperature(2.0, 6.0, granularity)
    return losses.CosineSimilarityDistillation(cswt=cswt)(t, s)


cskd = reusable(_cskd, static_argnames=("tau",))
cswt_loss = reusable(_cswt_loss, static_argnames=("granularity",))


@SETTINGS
@given(shifted_pairs(), st.sampled_from([1.0, 2.0, 4.0]))
def test_cskd_invariant_to_row_constants(pairs, tau):
    t, s, t2, s2, dtype = pairs
    a = float(to_numpy(cskd(as_tensor(t, dtype), as_tensor(s, dtype), tau=tau)))
    b = float(to_numpy(cskd(as_tensor(t2, dtype), as_tensor(s2, dtype), tau=tau)))
    assert b == pytest.approx(a, rel=1e-5, abs=1e-6 * tau**2)


@SETTINGS
@given(shifted_pairs(), st.sampled_from(["sample", "class"]))
def test_cswt_invariant_to_row_constants(pairs, granularity):
    t, s, t2, s2, dtype = pairs
    a = to_numpy(cswt_layer(as_tensor(t, dtype), as_tensor(s, dtype), granularity=granularity))
    b = to_numpy(cswt_layer(as_tensor(t2, dtype), as_tensor(s2, dtype), granularity=granularity))
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    if granularity == "class":
        # Per-class temperatures divide each class's logits by its own T_c,
        # so a row constant k becomes k / T_c, different for every class:
        # the per-class CSWT *loss* is not shift-invariant (only its
        # temperatures are). The per-sample loss is.
        return
    # The CSKD loss with per-sample temperatures: logits divided by a
    # non-power-of-two T round differently, by at most an ulp of |z| / T.
    la = float(to_numpy(cswt_loss(as_tensor(t, dtype), as_tensor(s, dtype), granularity="sample")))
    lb = float(
        to_numpy(cswt_loss(as_tensor(t2, dtype), as_tensor(s2, dtype), granularity="sample"))
    )
    biggest = max(np.max(np.abs(t2)), np.max(np.abs(s2)), np.max(np.abs(t)), np.max(np.abs(s)))
    rounding = 2.0**-23 * biggest / 2.0  # T >= low = 2
    assert lb == pytest.approx(la, rel=1e-5, abs=36.0 * (1e-6 + 8.0 * rounding))


def test_row_constant_invariance_of_probabilities_is_exact_on_grid():
    """The premise of the two tests above, checked once on the backend."""
    t = np.array([[3.0, -128.0, 5.0], [0.0, 1.0, 2.0]], "float32") * np.float32(2.0**-20)
    shifted = t + np.array([[128.0], [-128.0]], "float32") * np.float32(2.0**-20)
    np.testing.assert_array_equal(
        to_numpy(kd_ops.softened_probabilities(as_tensor(t, "bfloat16"), 4.0)),
        to_numpy(kd_ops.softened_probabilities(as_tensor(shifted, "bfloat16"), 4.0)),
    )
    assert keras.backend.standardize_dtype(as_tensor(t, "bfloat16").dtype) == "bfloat16"
