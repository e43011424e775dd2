"""Cosines and correlations, exact in float32 at any scale.

A cosine `<a, b> / (||a|| ||b||)` does not depend on the length of `a` or
`b`, but its float32 evaluation does: with an absolute epsilon in the
denominator (`||a|| ||b|| + 1e-8`, the papers' code) a column of
probabilities around `1 / C` (C = 32,000: norms ~ 1e-5) is dominated by the
epsilon, and squared entries below ~1e-38 underflow. Here every vector is
first divided by its largest entry (held constant under differentiation:
the direction, and so the cosine and its gradient, do not depend on it),
then by its norm, which is then at least 1: no epsilon is needed and
nothing underflows. Vectors of probabilities are scaled from their
logarithms (`exp(log p - max log p)`), so even entries that would underflow
as probabilities keep their ratios. `1 - cos` is computed as
`||a/|a| - b/|b| ||^2 / 2`, which stays exact for near-identical vectors
(where `1 - dot / norms` loses every digit to cancellation).
"""

from keras import ops

from keras_cskd.ops._common import TINY, as_float32

# A vector that varies by less than this fraction of its largest entry is
# constant to float32 precision (its centring is rounding noise): its
# Pearson correlation is 0.
CONSTANT_RTOL = 1e-6

_NO_ENTRY = -1e30  # below any log-probability: stands for a dropped entry


def _normalise(x, axis):
    """`x / ||x||` along `axis` for `x` whose largest entry is 1 (or 0 for
    an all-zero vector, which stays zero with a zero gradient)."""
    squares = ops.sum(ops.square(x), axis=axis, keepdims=True)
    return x / ops.sqrt(ops.maximum(squares, TINY))


def unit_vectors(x, axis):
    """`x / ||x||` along `axis`, exact for any magnitude; zero vectors stay
    zero.

    Example:

    >>> import numpy as np
    >>> from keras_cskd.ops.similarity import unit_vectors
    >>> x = np.array([[3e-30, 4e-30], [0.0, 0.0]], "float32")  # squares underflow
    >>> np.round(np.asarray(unit_vectors(x, axis=1), "float64"), 4).tolist()
    [[0.6, 0.8], [0.0, 0.0]]
    """
    x = as_float32(x)
    scale = ops.stop_gradient(ops.max(ops.abs(x), axis=axis, keepdims=True))
    x = x / ops.where(scale > 0, scale, ops.ones_like(scale))
    return _normalise(x, axis)


def scaled_from_logs(log_x, axis, log_weight=None):
    """`sqrt(w) * exp(log_x)` divided by its largest entry along `axis`,
    computed from the logarithms so that no entry underflows before the
    scaling (the largest entry is 1). `log_weight` (broadcasting against
    `log_x`, e.g. `(N, 1)`) holds `log w`, and any value <= -1e30 drops an
    entry (it is 0); a vector with no entry left is zero."""
    if log_weight is not None:
        log_x = log_x + 0.5 * log_weight
        kept = log_x > _NO_ENTRY
        log_x = ops.where(kept, log_x, _NO_ENTRY)
    top = ops.stop_gradient(ops.max(log_x, axis=axis, keepdims=True))
    shifted = log_x - top  # <= 0, and 0 at the largest entry
    if log_weight is None:
        return ops.exp(shifted)
    # Dropped entries: exp(0), then zeroed (their shift could overflow when
    # every entry of the vector is dropped).
    scaled = ops.exp(ops.where(kept, shifted, ops.zeros_like(shifted)))
    return ops.where(kept, scaled, ops.zeros_like(scaled))


def unit_vectors_from_logs(log_x, axis, log_weight=None):
    """`sqrt(w) * exp(log_x)` normalised to unit length along `axis`, exact
    where the entries themselves would underflow (`scaled_from_logs`)."""
    return _normalise(scaled_from_logs(log_x, axis, log_weight), axis)


def log_weights(weight):
    """Sample weights `(N,)` (>= 0) as `(N, 1)` log-weights for
    `unit_vectors_from_logs` (`-inf`-like where a weight is 0); None stays
    None."""
    if weight is None:
        return None
    weight = ops.reshape(as_float32(weight), (-1, 1))
    return ops.where(weight > 0, ops.log(ops.maximum(weight, TINY)), 2.0 * _NO_ENTRY)


def cosine_and_distance(unit_a, unit_b, axis):
    """`(cos, 1 - cos)` of unit vectors along `axis`; `1 - cos` as half the
    squared distance (exact near 1). For non-negative vectors (whose cosine
    lies in [0, 1])."""
    cosine = ops.sum(unit_a * unit_b, axis=axis)
    distance = 0.5 * ops.sum(ops.square(unit_a - unit_b), axis=axis)
    return cosine, distance


def cosine_similarity(a, b, axis, epsilon=None):
    """`|<a, b>| / (||a|| ||b||)` along `axis`, in float32, exact at any
    scale (see the module docstring); 0 when either vector is zero.

    `epsilon` is accepted for code written for keras-cskd 0.1 and ignored:
    the vectors are normalised exactly, so no epsilon is needed.

    Example:

    >>> import numpy as np
    >>> from keras_cskd import ops as kd_ops
    >>> a = np.array([[1.0, 0.0], [1.0, 1.0]], "float32")
    >>> b = np.array([[3.0, 0.0], [0.0, 1.0]], "float32")
    >>> np.round(np.asarray(kd_ops.cosine_similarity(a, b, axis=1), "float64"), 4).tolist()
    [1.0, 0.7071]
    >>> tiny = np.full((2, 32000), 1 / 32000, "float32")  # columns of norm ~1e-5
    >>> cos = kd_ops.cosine_similarity(tiny, tiny, axis=0)
    >>> np.round(np.asarray(cos[:2], "float64"), 6).tolist()
    [1.0, 1.0]
    """
    cosine = ops.abs(ops.sum(unit_vectors(a, axis) * unit_vectors(b, axis), axis=axis))
    # Rounding can put the cosine of parallel vectors an ulp above 1; the
    # clip moves the value only, not the gradient.
    return cosine - ops.stop_gradient(ops.maximum(cosine - 1.0, 0.0))


def _weighted_rows(x, sample_weight):
    """Rows scaled by `sqrt(w)`, so inner products over the batch are
    `sum_i w_i a_i b_i` (a weighted cosine)."""
    if sample_weight is None:
        return x
    w = ops.reshape(as_float32(sample_weight), (-1, 1))
    return x * ops.sqrt(ops.maximum(w, 0.0))


def class_cosine_similarity(teacher_probs, student_probs, sample_weight=None, epsilon=None):
    """Cosine of each class column across the batch: shape `(C,)`.

    `cos_c = <p_s[:, c], p_t[:, c]> / (||p_s[:, c]|| ||p_t[:, c]||)`, the
    CSKD similarity of Ham et al. (2023), exact at any class count. With
    `sample_weight` (shape `(B,)`) the inner products are weighted:
    `sum_i w_i p_s[i, c] p_t[i, c]`. (`epsilon` is ignored, see
    `cosine_similarity`.)

    Example:

    >>> import numpy as np
    >>> from keras_cskd import ops as kd_ops
    >>> p_t = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]], "float32")
    >>> cos = kd_ops.class_cosine_similarity(p_t, 0.5 * p_t)  # scale-invariant per column
    >>> np.round(np.asarray(cos, "float64"), 4).tolist()
    [1.0, 1.0]
    >>> w = np.array([1.0, 1.0, 0.0], "float32")  # the third sample is ignored
    >>> p_s = np.array([[0.9, 0.1], [0.2, 0.8], [0.0, 1.0]], "float32")
    >>> np.round(np.asarray(kd_ops.class_cosine_similarity(p_t, p_s, w), "float64"), 4).tolist()
    [1.0, 1.0]
    """
    teacher_probs = _weighted_rows(as_float32(teacher_probs), sample_weight)
    student_probs = _weighted_rows(as_float32(student_probs), sample_weight)
    return cosine_similarity(teacher_probs, student_probs, axis=0)


def sample_cosine_similarity(teacher_probs, student_probs, epsilon=None):
    """Cosine of each sample's row of probabilities: shape `(B,)`.

    Example:

    >>> import numpy as np
    >>> from keras_cskd import ops as kd_ops
    >>> p_t = np.array([[1.0, 0.0], [0.5, 0.5]], "float32")
    >>> p_s = np.array([[0.5, 0.5], [0.5, 0.5]], "float32")
    >>> np.round(np.asarray(kd_ops.sample_cosine_similarity(p_t, p_s), "float64"), 4).tolist()
    [0.7071, 1.0]
    """
    return cosine_similarity(teacher_probs, student_probs, axis=1)


def pearson_correlation(a, b, axis, sample_weight=None, epsilon=None):
    """Pearson correlation of `a` and `b` along `axis` (optionally weighted
    along the batch axis 0 with `sample_weight`), exact at any scale. A
    vector that is constant (it varies by less than `1e-6` of its largest
    entry, float32's resolution) has correlation 0, as in DIST's code.
    (`epsilon` is ignored, see `cosine_similarity`.)

    Example:

    >>> import numpy as np
    >>> from keras_cskd import ops as kd_ops
    >>> a = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]], "float32")
    >>> b = np.array([[2.0, 4.0, 6.0], [3.0, 2.0, 1.0]], "float32")
    >>> np.round(np.asarray(kd_ops.pearson_correlation(a, b, axis=1), "float64"), 4).tolist()
    [1.0, -1.0]
    """
    return centred_correlation(a, b, axis, sample_weight)


def _centred(x, axis, sample_weight, constant_mean):
    """`(x - mean, x)` along `axis`, both scaled by `sqrt(w)` along the
    batch axis when weighted."""
    if sample_weight is None or axis != 0:
        mean = ops.mean(x, axis=axis, keepdims=True)
        if constant_mean:
            mean = ops.stop_gradient(mean)
        return x - mean, x
    w = ops.reshape(as_float32(sample_weight), (-1, 1))
    total = ops.maximum(ops.sum(w), TINY)
    centred = x - ops.sum(w * x, axis=0, keepdims=True) / total
    return _weighted_rows(centred, sample_weight), _weighted_rows(x, sample_weight)


def centred_correlation(a, b, axis, sample_weight=None, constant_means=False):
    """`pearson_correlation`; with `constant_means` the (unweighted) means
    are held constant under differentiation: right, and one reduction
    cheaper, where they are constant anyway (the row mean of a softmax is
    `1 / C`)."""
    centred_a, a = _centred(as_float32(a), axis, sample_weight, constant_means)
    centred_b, b = _centred(as_float32(b), axis, sample_weight, constant_means)
    varies = ops.logical_and(_varies(centred_a, a, axis), _varies(centred_b, b, axis))
    correlation = ops.sum(unit_vectors(centred_a, axis) * unit_vectors(centred_b, axis), axis=axis)
    return ops.where(varies, correlation, ops.zeros_like(correlation))


def _varies(centred, original, axis):
    """Whether a vector varies beyond float32's resolution of its entries."""
    spread = ops.max(ops.abs(centred), axis=axis)
    return spread > CONSTANT_RTOL * ops.max(ops.abs(original), axis=axis)
