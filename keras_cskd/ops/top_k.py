"""A teacher's distribution kept as its `k` most probable classes (token ids)
and their log-probabilities, for distillation from stored teacher outputs.

The top-k distribution of a teacher is completed in one documented way
everywhere in keras-cskd: the probability mass outside the top `k` (the
*tail*, stored with them) is spread evenly over the other `V - k` classes.
The completed distribution keeps the teacher's top-k probabilities exactly
and its total tail mass exactly; only how the tail is shared among the
rare classes is lost. As logits (`top_k_logits`), it feeds every loss; at a
temperature `tau` it is softened like any logits (its softmax at `tau` is
the completed distribution raised to `1/tau`, renormalised).
"""

import math

from keras import ops

from keras_cskd.ops._common import TINY, as_float32

# Log of the floor under a tail mass: keeps the completed logits finite when
# the top k hold (nearly) all the mass.
_LOG_TINY = math.log(TINY)


def teacher_top_k(teacher_logits, k, temperature=1.0):
    """The `k` most probable classes of `softmax(teacher_logits / tau)`:
    `(ids, log_probs, tail_log_mass)` with `ids` int32 and `log_probs`
    float32 of shape `(..., k)` (most probable first), and `tail_log_mass`
    `(...)`, the log of the probability outside the top `k` (from the
    logits outside it: float32's relative precision even when it is tiny),
    floored at `log(1e-30)`.

    Example:

    >>> import numpy as np
    >>> from keras_cskd import ops as kd_ops
    >>> z = np.log(np.array([[0.1, 0.6, 0.3]], "float32"))
    >>> ids, log_probs, tail = kd_ops.teacher_top_k(z, k=2)
    >>> np.asarray(ids).tolist(), np.exp(np.asarray(log_probs, "float64")).round(4).tolist()
    ([[1, 2]], [[0.6, 0.3]])
    >>> np.exp(np.asarray(tail, "float64")).round(4).tolist()
    [0.1]
    """
    z = as_float32(teacher_logits) / as_float32(temperature)
    vocabulary = z.shape[-1]
    if not 1 <= k <= vocabulary:
        raise ValueError(f"k must be between 1 and the {vocabulary} classes, got {k}.")
    values, ids = ops.top_k(z, k)
    log_total = ops.logsumexp(z, axis=-1, keepdims=True)
    log_probs = values - log_total
    if k == vocabulary:
        return ops.cast(ids, "int32"), log_probs, ops.full(z.shape[:-1], _LOG_TINY)
    # The tail from the logits below the k-th largest, as its own
    # log-sum-exp (relative precision of float32 however small it is). With
    # a tie at the k-th value that set is too small: there, log(1 - P(top
    # k)) = log(-expm1(log P(top k))), exact to float32 of the total.
    kth = values[..., k - 1 :]
    below = ops.where(z < kth, z, -3.0e38)
    direct = ops.logsumexp(below, axis=-1) - log_total[..., 0]
    untied = ops.sum(ops.cast(z >= kth, "int32"), axis=-1) == k
    tail = ops.where(untied, direct, tail_log_mass(log_probs))
    return ops.cast(ids, "int32"), log_probs, ops.maximum(tail, _LOG_TINY)


def tail_log_mass(log_probs):
    """`log(1 - sum(exp(log_probs)))` over the last axis, floored at
    `log(1e-30)`: the tail of stored top-k log-probabilities when it was
    not stored with them.

    Example:

    >>> import numpy as np
    >>> from keras_cskd import ops as kd_ops
    >>> lp = np.log(np.array([[0.5, 0.25]], "float32"))
    >>> np.exp(np.asarray(kd_ops.tail_log_mass(lp), "float64")).round(4).tolist()
    [0.25]
    """
    log_top = ops.minimum(ops.logsumexp(as_float32(log_probs), axis=-1), -TINY)
    return ops.log(ops.maximum(-ops.expm1(log_top), TINY))


def _fill(log_probs, tail, vocabulary_size):
    """The log-probability of each class outside the top k (shape `(...)`)."""
    k = log_probs.shape[-1]
    if tail is None:
        tail = tail_log_mass(log_probs)
    if vocabulary_size == k:
        return ops.full(log_probs.shape[:-1], 2.0 * _LOG_TINY)
    return ops.maximum(as_float32(tail), _LOG_TINY) - math.log(vocabulary_size - k)


def top_k_logits(ids, log_probs, vocabulary_size, tail=None):
    """Dense logits `(..., vocabulary_size)` of a stored top-k distribution:
    `log_probs` at `ids`, and the tail (`tail`, or what `log_probs` leave
    of 1) spread evenly over the other classes. Their softmax is the
    completed distribution; a teacher cached this way is used by every
    loss like live teacher logits.

    Example:

    >>> import numpy as np
    >>> from keras_cskd import ops as kd_ops
    >>> ids = np.array([[2, 0]], "int32")
    >>> lp = np.log(np.array([[0.5, 0.3]], "float32"))
    >>> z = kd_ops.top_k_logits(ids, lp, vocabulary_size=4)
    >>> np.exp(np.asarray(z, "float64")).round(4).tolist()
    [[0.3, 0.1, 0.5, 0.1]]
    """
    log_probs = as_float32(log_probs)
    k = log_probs.shape[-1]
    fill = _fill(log_probs, tail, vocabulary_size)
    # Rows of (dynamic) leading positions; the top k written over the fill.
    rows_log_probs = ops.reshape(log_probs, (-1, k))
    rows = ops.shape(rows_log_probs)[0]
    dense = ops.broadcast_to(ops.reshape(fill, (-1, 1)), (rows, vocabulary_size))
    row_ids = ops.repeat(ops.arange(rows, dtype="int32"), k)
    column_ids = ops.reshape(ops.cast(ids, "int32"), (-1,))
    coordinates = ops.stack([row_ids, column_ids], axis=1)
    dense = ops.scatter_update(dense, coordinates, ops.reshape(rows_log_probs, (-1,)))
    return ops.reshape(dense, tuple(ops.shape(log_probs)[:-1]) + (vocabulary_size,))


def top_k_kl_divergence(ids, log_probs, student_logits, temperature=1.0, tail=None):
    """KD (`tau^2 KL(p_t || p_s)` per position, shape `(...)`) against a
    stored top-k teacher, without building the teacher's dense logits:
    equal to `kl_divergence_distillation(top_k_logits(ids, log_probs, V,
    tail), student_logits, tau)`, computed from the student's logits at
    `ids`, its log-sum-exp and its sum over the vocabulary. The memory it
    adds to the student's logits is `(..., k)`.

    Example:

    >>> import numpy as np
    >>> from keras_cskd import ops as kd_ops
    >>> ids = np.array([[2, 0]], "int32")
    >>> lp = np.log(np.array([[0.5, 0.3]], "float32"))
    >>> s = np.zeros((1, 4), "float32")
    >>> sparse = kd_ops.top_k_kl_divergence(ids, lp, s)
    >>> dense = kd_ops.kl_divergence_distillation(kd_ops.top_k_logits(ids, lp, 4), s, 1.0)
    >>> bool(np.allclose(np.asarray(sparse), np.asarray(dense), atol=1e-6))
    True
    """
    temperature = as_float32(temperature)
    s = as_float32(student_logits) / temperature
    vocabulary = s.shape[-1]
    log_probs = as_float32(log_probs)
    k = log_probs.shape[-1]
    fill = _fill(log_probs, tail, vocabulary)
    # The teacher at tau: logits lp / tau at the top k, fill / tau elsewhere.
    top = log_probs / temperature
    rest = fill / temperature
    if vocabulary > k:
        others = ops.expand_dims(rest + math.log(vocabulary - k), -1)
        lse_t = ops.logsumexp(ops.concatenate([top, others], axis=-1), axis=-1)
    else:
        lse_t = ops.logsumexp(top, axis=-1)
    log_p_top = top - ops.expand_dims(lse_t, -1)
    log_p_rest = rest - lse_t
    lse_s = ops.logsumexp(s, axis=-1)
    s_top = ops.take_along_axis(s, ops.cast(ids, "int32"), axis=-1)
    log_q_top = s_top - ops.expand_dims(lse_s, -1)
    kl = ops.sum(ops.exp(log_p_top) * (log_p_top - log_q_top), axis=-1)
    if vocabulary > k:
        # sum over the other classes of log q = (sum_all s - sum_top s) - (V - k) lse_s
        sum_log_q_rest = ops.sum(s, axis=-1) - ops.sum(s_top, axis=-1) - (vocabulary - k) * lse_s
        p_rest = ops.exp(log_p_rest)
        kl = kl + p_rest * ((vocabulary - k) * log_p_rest - sum_log_q_rest)
    return kl * ops.square(temperature)
