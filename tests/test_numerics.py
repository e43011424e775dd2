"""Numerical robustness: low-precision inputs, a batch of one, degenerate
logits (all equal, one-hot-like, -1e4 columns), with finite values and
finite gradients throughout."""

import keras
import numpy as np
import pytest
import reference
from helpers import (
    LOSS_CASE_IDS,
    LOSS_CASES,
    METHOD_CASE_IDS,
    METHOD_CASES,
    as_tensor,
    random_labels,
    random_logits,
    rounded,
    to_numpy,
    value_and_grad,
)

from keras_cskd import ops as kd_ops
from keras_cskd.layers import CosineSimilarityWeightedTemperature

# Loose agreement of a low-precision input's loss with the float32 input's
# loss (the inputs themselves differ by the rounding: 2^-11 or 2^-8).
LOW_PRECISION_RTOL = {"float16": 5e-3, "bfloat16": 5e-2, "float32": 1e-6}


def _logits(shape=(8, 10), scale=3.0, seed=0):
    rng = np.random.default_rng([seed, *shape])
    t, s = random_logits(rng, shape, scale)
    return t.astype("float32"), s.astype("float32"), random_labels(rng, *shape)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("case", METHOD_CASES, ids=METHOD_CASE_IDS)
def test_low_precision_inputs(case, dtype):
    t, s, labels = _logits(seed=1)
    loss = case.make()
    value = case(loss, as_tensor(t, dtype), as_tensor(s, dtype), labels=labels)
    assert keras.backend.standardize_dtype(value.dtype) == "float32"
    value = float(to_numpy(value))
    assert np.isfinite(value)
    # Computed in float32 from the rounded inputs: float32 accuracy.
    t_r, s_r = rounded(t, dtype), rounded(s, dtype)
    np.testing.assert_allclose(value, case.ref(t_r, s_r, labels, None), rtol=1e-5)
    # Close to the float32 input's value.
    full = float(to_numpy(case(loss, t, s, labels=labels)))
    np.testing.assert_allclose(value, full, rtol=LOW_PRECISION_RTOL[dtype])
    # Finite gradients in the input dtype.
    _, grad = value_and_grad(lambda tt, ss: case(loss, tt, ss, labels=labels), t, s, dtype=dtype)
    assert np.all(np.isfinite(grad))
    assert np.any(grad != 0)


# ----------------------------------------------------------------------------
# Batch of one.


def _ops_functions(labels):
    """Every ops-level loss, reduced to a scalar."""
    return {
        "kd": lambda t, s: keras.ops.mean(kd_ops.kl_divergence_distillation(t, s, 4.0)),
        "mse": lambda t, s: keras.ops.mean(kd_ops.logit_mse(t, s)),
        "cskd": lambda t, s: kd_ops.cosine_similarity_distillation(t, s, 4.0),
        "dist": lambda t, s: kd_ops.dist_distillation(t, s, 4.0),
        "dkd": lambda t, s: keras.ops.mean(kd_ops.decoupled_kd(t, s, labels, 4.0)),
        "cskd_cswt_sample": lambda t, s: kd_ops.cosine_similarity_distillation(
            t, s, kd_ops.cswt_temperatures(t, s, granularity="sample")
        ),
        "cskd_cswt_class": lambda t, s: kd_ops.cosine_similarity_distillation(
            t, s, kd_ops.cswt_temperatures(t, s, granularity="class")
        ),
    }


@pytest.mark.parametrize(
    "name", ["kd", "mse", "cskd", "dist", "dkd", "cskd_cswt_sample", "cskd_cswt_class"]
)
def test_ops_batch_of_one_is_finite(name):
    t, s, labels = _logits((1, 10), 3.0, seed=2)
    fn = _ops_functions(labels)[name]
    value, grad = value_and_grad(fn, t, s)
    assert np.isfinite(value)
    assert np.all(np.isfinite(grad))


def test_ops_batch_of_one_values():
    t, s, labels = _logits((1, 10), 3.0, seed=2)
    t64, s64 = t.astype("float64"), s.astype("float64")
    np.testing.assert_allclose(
        to_numpy(kd_ops.cosine_similarity_distillation(t, s, 4.0)),
        reference.cskd_loss(t64, s64, 4.0),
        atol=1e-5,
    )
    np.testing.assert_allclose(
        to_numpy(kd_ops.dist_distillation(t, s, 4.0)), reference.dist_loss(t64, s64, 4.0), rtol=1e-5
    )
    np.testing.assert_array_equal(to_numpy(kd_ops.cswt_temperatures(t, s)), [[4.0]])


@pytest.mark.parametrize("case", LOSS_CASES, ids=LOSS_CASE_IDS)
def test_loss_classes_batch_of_one(case):
    t, s, labels = _logits((1, 10), 3.0, seed=2)
    loss = case.make()
    if case.batchwise:
        with pytest.raises(ValueError, match="at least 2 samples"):
            case(loss, t, s, labels=labels)
    else:
        value = float(to_numpy(case(loss, t, s, labels=labels)))
        np.testing.assert_allclose(
            value, case.ref(t.astype("float64"), s.astype("float64"), labels, None), rtol=1e-5
        )


# ----------------------------------------------------------------------------
# Degenerate logits.


def _degenerate_inputs(shape=(8, 10)):
    batch, classes = shape
    rng = np.random.default_rng(3)
    normal = rng.normal(size=shape).astype("float32") * 3.0
    one_hot_like = np.full(shape, -30.0, "float32")
    one_hot_like[np.arange(batch), _labels()] = 30.0
    negative_column = normal.copy()
    negative_column[:, 2] = -1e4
    zero_column = normal.copy()
    zero_column[:, 1] = 0.0
    equal = np.full(shape, 1.5, "float32")
    return {
        "all_equal_both": (equal, equal),
        "all_equal_teacher": (equal, normal),
        "all_equal_student": (normal, equal),
        "all_zero_both": (np.zeros_like(equal), np.zeros_like(equal)),
        "one_hot_teacher": (one_hot_like, normal),
        "one_hot_both_agree": (one_hot_like, one_hot_like),
        "one_hot_both_disagree": (one_hot_like, one_hot_like[::-1].copy()),
        "neg1e4_column_both": (negative_column, negative_column[::-1].copy()),
        "neg1e4_column_teacher": (negative_column, normal),
        "neg1e4_column_student": (normal, negative_column),
        "zero_column": (zero_column, normal),
        "huge_scale": (normal * 1e3, rng.normal(size=shape).astype("float32") * 3e3),
    }


def _labels():
    return np.array([0, 1, 2, 3, 4, 5, 6, 9])


DEGENERATE = _degenerate_inputs()


@pytest.mark.parametrize("inputs", sorted(DEGENERATE))
@pytest.mark.parametrize("case", METHOD_CASES, ids=METHOD_CASE_IDS)
def test_degenerate_logits(case, inputs):
    t, s = DEGENERATE[inputs]
    labels = _labels()
    loss = case.make()
    value, grad = value_and_grad(lambda tt, ss: case(loss, tt, ss, labels=labels), t, s)
    assert np.isfinite(value)
    assert np.all(np.isfinite(grad)), grad
    expected = case.ref(t.astype("float64"), s.astype("float64"), labels, None)
    # Logits of magnitude ~1e4 (huge_scale): float32 holds them to ~1e-3, and
    # the reverse-direction divergences weigh log-ratios of that size by the
    # student's probabilities (NumPy in float32 is off by the same amount).
    rtol = 5e-4 if inputs == "huge_scale" else 1e-5
    np.testing.assert_allclose(value, expected, rtol=rtol, atol=1e-5 * case.scale)


@pytest.mark.parametrize(
    "case",
    [c for c in LOSS_CASES if c.name.startswith(("kd", "mse", "stkd", "dkd"))],
    ids=lambda c: c.name,
)
def test_student_equal_teacher_is_zero(case):
    """KD, MSE, DKD (and STKD's KL part) vanish when the student matches."""
    t, _, labels = _logits((8, 10), 3.0, seed=4)
    value = float(to_numpy(case(case.make(), t, t, labels=labels)))
    if case.name.startswith("stkd"):  # plus CSKD(t, t) ~ 0 up to epsilon
        assert 0.0 <= value < 1e-4 * case.scale
    else:
        assert value == pytest.approx(0.0, abs=1e-6 * case.scale)


def test_cskd_of_one_hot_agreement():
    """Identical one-hot-like teacher and student: every column agrees, so
    the loss is 0 for this perfect student, the two classes no sample
    predicts (7 and 8) included. Their probabilities underflow to 0 in
    float32, but CSKD compares columns from the log-probabilities, where
    they keep their direction (keras-cskd 0.1 compared all-zero columns,
    cosine 0, and charged tau^2 * 2 / 10 here)."""
    t = DEGENERATE["one_hot_both_agree"][0]
    p = kd_ops.softened_probabilities(t, 1.0)
    cos = to_numpy(kd_ops.class_cosine_similarity(p, p))
    np.testing.assert_allclose(np.delete(cos, [7, 8]), 1.0, atol=1e-6)
    # Those columns' probabilities are tiny but not zero: scaled by their
    # largest entry they compare exactly, cosine 1.
    np.testing.assert_allclose(cos[[7, 8]], [1.0, 1.0], atol=1e-6)
    value = to_numpy(kd_ops.cosine_similarity_distillation(t, t, 1.0))
    np.testing.assert_allclose(value, 0.0, atol=1e-6)
    # Disjoint indicator columns: cosine 0 for every class, loss tau^2.
    t2 = np.array([[30.0, -30.0], [-30.0, 30.0]], "float32")
    np.testing.assert_allclose(
        to_numpy(kd_ops.cosine_similarity_distillation(t2, t2[::-1].copy(), 1.0)), 1.0, atol=1e-6
    )


def test_negative_column_has_zero_cosine():
    """A class that neither model ever predicts (logits -1e4): as
    probabilities both columns are zero, and their cosine is 0 (not NaN)."""
    t, s = DEGENERATE["neg1e4_column_both"]
    p_t = kd_ops.softened_probabilities(t, 4.0)
    p_s = kd_ops.softened_probabilities(s, 4.0)
    cos = to_numpy(kd_ops.class_cosine_similarity(p_t, p_s))
    assert np.all(np.isfinite(cos))
    assert cos[2] == 0.0


@pytest.mark.parametrize("granularity", ["sample", "class"])
@pytest.mark.parametrize("inputs", sorted(DEGENERATE))
def test_cswt_degenerate_logits(granularity, inputs):
    t, s = DEGENERATE[inputs]
    temps = to_numpy(CosineSimilarityWeightedTemperature(2.0, 6.0, granularity)(t, s))
    assert np.all(np.isfinite(temps))
    assert np.all((temps >= 2.0) & (temps <= 6.0))
    expected = reference.cswt_temperatures(
        t.astype("float64"), s.astype("float64"), 2.0, 6.0, granularity
    )
    sim = reference.cswt_similarities(t.astype("float64"), s.astype("float64"), granularity)
    spread = sim.max() - sim.min()
    if spread <= 1e-7 or spread > 1e-4:  # away from the midpoint threshold
        atol = 1e-6 if spread <= 1e-7 else max(1e-6, 4e-7 * 4.0 / spread)
        np.testing.assert_allclose(temps, expected, rtol=1e-5, atol=atol)


def test_cswt_all_equal_logits_midpoint():
    """Per sample (the authors' min-max map) no spread gives the midpoint;
    per class (absolute map) perfect agreement gives `low`."""
    equal = DEGENERATE["all_equal_both"][0]
    for granularity, expected in (("sample", 4.0), ("class", 2.0)):
        temps = to_numpy(CosineSimilarityWeightedTemperature(2.0, 6.0, granularity)(equal, equal))
        np.testing.assert_array_equal(temps, np.full(temps.shape, expected))
