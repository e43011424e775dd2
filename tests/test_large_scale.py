"""Cosines and correlations at the sizes users reach: class counts up to
262,144 (a language model's vocabulary) and up to 8,192 positions, against
float64 NumPy, values and gradients, including near-identical and
near-orthogonal columns.

keras-cskd 0.1 added an absolute epsilon to the product of the norms
(`||a|| ||b|| + 1e-8`): with probabilities around 1/C the columns' norms are
~1e-5 and the epsilon dominated (CSKD 13.42 against 0.44 at C = 32,000).
The references here are vectorised float64 NumPy written from the formulas
(a cosine has no epsilon), so that these sizes run in a second.
"""

import numpy as np
import pytest
from helpers import BACKEND, to_numpy, value_and_grad

from keras_cskd import losses
from keras_cskd import ops as kd_ops

# (positions, classes): from a 2-sample batch over a 256k vocabulary to
# 8,192 token positions.
SIZES = [(2, 262_144), (16, 32_000), (64, 1_000), (8_192, 64)]
SIZE_IDS = [f"{n}x{c}" for n, c in SIZES]


# Norm-wise relative error of the gradient (measured on each backend; the
# largest seen, then rounded up). Random logits: float32 rounding, ~1e-6.
# Near-identical columns: the gradient of the largest entries of two
# near-parallel unit vectors is a second-order difference that float32
# resolves to ~1e-2 at 2 x 262,144 (perturbing the logits by their own
# float32 resolution moves the float64 gradient by ~1e-3). Near-orthogonal
# rows are saturated: the peak's gradient is `g - p * sum(g)` with the sum
# over 262,144 background entries ~25x larger than the result, so float32
# summation error shows (4e-3 with XLA's and PyTorch's reductions; 0.11
# with TensorFlow's CPU kernels).
GRADIENT_RTOL = {"random": 1e-4, "near_identical": 2e-2, "near_orthogonal": 1e-2}
GRADIENT_RTOL_TF_SATURATED_262K = 0.2


def _log_softmax(z):
    top = np.max(z, axis=1, keepdims=True)
    return z - top - np.log(np.sum(np.exp(z - top), axis=1, keepdims=True))


def _cskd_reference(t, s, temperature, weight=None):
    """`(loss, d loss / d s)` of CSKD in float64: `T^2 (1 - mean_c cos_c)`
    over the columns of softmax(z / T), weighted inner products, and the
    gradient by the chain rule through the cosine and the softmax."""
    p_t = np.exp(_log_softmax(t / temperature))
    p_s = np.exp(_log_softmax(s / temperature))
    root = np.ones(len(t)) if weight is None else np.sqrt(weight)
    a, b = p_t * root[:, None], p_s * root[:, None]
    norm_a, norm_b = np.linalg.norm(a, axis=0), np.linalg.norm(b, axis=0)
    cos = np.sum(a * b, axis=0) / (norm_a * norm_b)
    classes = t.shape[1]
    loss = temperature**2 * (1.0 - np.mean(cos))
    # d cos_c / d b_ic, then through the weights' sqrt and the softmax.
    d_cos = a / (norm_a * norm_b) - cos * b / norm_b**2
    d_p = -(temperature**2 / classes) * d_cos * root[:, None]
    grad = p_s * (d_p - np.sum(d_p * p_s, axis=1, keepdims=True)) / temperature
    return loss, grad


def _pearson_columns(a, b, w):
    total = np.sum(w)
    a = a - np.sum(w[:, None] * a, axis=0) / total
    b = b - np.sum(w[:, None] * b, axis=0) / total
    dot = np.sum(w[:, None] * a * b, axis=0)
    return dot / np.sqrt(np.sum(w[:, None] * a * a, axis=0) * np.sum(w[:, None] * b * b, axis=0))


def _dist_reference(t, s, temperature):
    """DIST in float64: `T^2 [(1 - mean_i pearson(rows)) + (1 - mean_c
    pearson(columns))]`."""
    p_t = np.exp(_log_softmax(t / temperature))
    p_s = np.exp(_log_softmax(s / temperature))
    ones = np.ones(len(t))
    inter = 1.0 - np.mean(_pearson_columns(p_s.T, p_t.T, np.ones(t.shape[1])))
    intra = 1.0 - np.mean(_pearson_columns(p_s, p_t, ones))
    return temperature**2 * (inter + intra)


def _pairs(kind, positions, classes, seed):
    rng = np.random.default_rng([seed, positions, classes])
    t = rng.normal(size=(positions, classes)) * 3.0
    if kind == "random":
        s = rng.normal(size=(positions, classes)) * 3.0
    elif kind == "near_identical":
        s = t + rng.normal(size=t.shape) * 1e-3
    else:  # near-orthogonal: teacher and student peak on disjoint halves
        half = classes // 2
        t = np.full((positions, classes), -8.0) + rng.normal(size=t.shape) * 0.1
        s = t.copy()
        t[np.arange(positions), rng.integers(0, half, positions)] = 8.0
        s[np.arange(positions), half + rng.integers(0, half, positions)] = 8.0
    return t.astype("float32"), s.astype("float32")


@pytest.mark.parametrize("kind", ["random", "near_identical", "near_orthogonal"])
@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_cskd_value_and_gradient_at_scale(size, kind):
    t, s = _pairs(kind, *size, seed=0)
    weight = np.random.default_rng(1).uniform(0.5, 2.0, size[0])
    for temperature, w in ((1.0, None), (4.0, weight)):
        weights = None if w is None else w.astype("float32")

        def loss(tt, ss, temperature=temperature, weights=weights):
            return kd_ops.cosine_similarity_distillation(tt, ss, temperature, weights)

        value, grad = value_and_grad(loss, t, s)
        expected, expected_grad = _cskd_reference(
            t.astype("float64"), s.astype("float64"), temperature, w
        )
        # Near-identical columns: the loss is ~1e-7 T^2, which
        # `1 - dot / norms` would lose to cancellation; float32 probabilities
        # bound the relative error at ~1e-4 there.
        rtol = 2e-4 if kind == "near_identical" else 2e-6
        np.testing.assert_allclose(value, expected, rtol=rtol)
        error = np.linalg.norm(grad - expected_grad) / np.linalg.norm(expected_grad)
        bound = GRADIENT_RTOL[kind]
        if BACKEND == "tensorflow" and kind == "near_orthogonal" and size[1] > 100_000:
            bound = GRADIENT_RTOL_TF_SATURATED_262K
        assert error < bound


def test_cskd_at_32k_classes_is_not_the_epsilon():
    """2 rows, C = 32,000, where 0.1's `||a|| ||b|| + 1e-8` was off by far:
    the loss is the exact cosine's, not the epsilon's."""
    t, s = _pairs("random", 2, 32_000, seed=3)
    value = float(to_numpy(losses.CosineSimilarityDistillation()(t, s)))
    expected, _ = _cskd_reference(t.astype("float64"), s.astype("float64"), 4.0)
    assert value == pytest.approx(expected, rel=1e-5)
    # The formula with the absolute epsilon, evaluated in float64.
    p_t = np.exp(_log_softmax(t.astype("float64") / 4.0))
    p_s = np.exp(_log_softmax(s.astype("float64") / 4.0))
    norms = np.linalg.norm(p_t, axis=0) * np.linalg.norm(p_s, axis=0)
    with_epsilon = 16.0 * (1.0 - np.mean(np.sum(p_t * p_s, axis=0) / (norms + 1e-8)))
    assert with_epsilon > 2.0 * expected


# Columns of two entries have a Pearson correlation of +-1, a step function:
# DIST's columns need at least 3 positions for a gradient to compare.
@pytest.mark.parametrize("size", [(4, 262_144), (16, 32_000), (8_192, 64)], ids=str)
def test_dist_at_scale(size):
    t, s = _pairs("random", *size, seed=2)
    value, grad = value_and_grad(lambda tt, ss: kd_ops.dist_distillation(tt, ss, 4.0), t, s)
    expected = _dist_reference(t.astype("float64"), s.astype("float64"), 4.0)
    np.testing.assert_allclose(value, expected, rtol=5e-6)
    # The gradient along random directions: central differences of the
    # float64 reference.
    rng = np.random.default_rng(4)
    for _ in range(2):
        direction = rng.normal(size=t.shape)
        step = 1e-3
        up = _dist_reference(t.astype("float64"), s + step * direction, 4.0)
        down = _dist_reference(t.astype("float64"), s - step * direction, 4.0)
        np.testing.assert_allclose(
            np.sum(grad * direction), (up - down) / (2 * step), rtol=2e-3, atol=1e-7
        )


@pytest.mark.parametrize("size", [(2, 262_144), (16, 32_000)], ids=str)
def test_cosine_of_tiny_and_huge_vectors(size):
    """`ops.cosine_similarity` is scale-invariant in float32: vectors scaled
    by 1e-30 or 1e30 give the float64 cosine of the unscaled ones."""
    rng = np.random.default_rng(size)
    a = rng.uniform(0.0, 1.0, size)
    b = a + rng.uniform(0.0, 0.2, size)
    expected = np.sum(a * b, axis=0) / (np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0))
    for factor in (1e-30, 1e-5, 1.0, 1e30):
        scaled_a, scaled_b = (a * factor).astype("float32"), (b * factor).astype("float32")
        cos = to_numpy(kd_ops.cosine_similarity(scaled_a, scaled_b, 0))
        np.testing.assert_allclose(cos, expected, rtol=1e-5)


def test_class_cswt_at_scale():
    """Per-class CSWT's column cosines at C = 32,000 are the float64 ones
    (0.1's epsilon made every class look orthogonal: all temperatures `high`)."""
    t, s = _pairs("random", 16, 32_000, seed=5)
    temps = to_numpy(kd_ops.cswt_temperatures(t, s, 2.0, 6.0, "class"))
    p_t = np.exp(_log_softmax(t.astype("float64")))
    p_s = np.exp(_log_softmax(s.astype("float64")))
    cos = np.sum(p_t * p_s, axis=0) / (np.linalg.norm(p_t, axis=0) * np.linalg.norm(p_s, axis=0))
    raw = 2.0 + (1.0 - cos) * 4.0
    expected = 2.0 + np.round((raw - 2.0) / 0.5) * 0.5
    # Away from the rounding midpoints between two levels.
    clear = np.abs((raw - 2.0) / 0.5 - np.round((raw - 2.0) / 0.5)) < 0.49
    np.testing.assert_array_equal(temps.reshape(-1)[clear], expected[clear])
    assert clear.mean() > 0.9


def _divergences_reference(t, s):
    """Reverse KL, JSD(0.5), skew KL(0.1) and TV per row, float64 from logs."""
    log_t, log_s = _log_softmax(t), _log_softmax(s)
    p_t, p_s = np.exp(log_t), np.exp(log_s)

    def kl(log_p, log_q):
        return np.sum(np.exp(log_p) * (log_p - log_q), axis=-1)

    log_m = np.logaddexp(np.log(0.5) + log_t, np.log(0.5) + log_s)
    log_skew = np.logaddexp(np.log(0.1) + log_t, np.log(0.9) + log_s)
    return {
        "reverse_kl": kl(log_s, log_t),
        "jsd": 0.5 * kl(log_t, log_m) + 0.5 * kl(log_s, log_m),
        "skew_kl": kl(log_t, log_skew),
        "tv": 0.5 * np.sum(np.abs(p_t - p_s), axis=-1),
    }


@pytest.mark.parametrize("size", [(2, 262_144), (8_192, 64)], ids=str)
def test_language_model_divergences_at_scale(size):
    """The token-level divergences per position, at a 262k vocabulary and at
    8,192 positions, against float64."""
    t, s = _pairs("random", *size, seed=6)
    expected = _divergences_reference(t.astype("float64"), s.astype("float64"))
    values = {
        "reverse_kl": kd_ops.reverse_kl_divergence(t, s),
        "jsd": kd_ops.jensen_shannon_divergence(t, s, 0.5),
        "skew_kl": kd_ops.skew_kl_divergence(t, s, 0.1),
        "tv": kd_ops.total_variation_distance(t, s),
    }
    for name, value in values.items():
        np.testing.assert_allclose(to_numpy(value), expected[name], rtol=2e-5, atol=1e-6)
