"""DIST (Huang et al. 2022): Pearson correlations of rows and columns."""

from keras import ops

from keras_cskd.ops._common import (
    as_float32,
    flat_positions,
    gate_batchwise,
    log_softmax,
)
from keras_cskd.ops.similarity import (
    centred_correlation,
    log_weights,
    pearson_correlation,
    scaled_from_logs,
)


def dist_distillation(
    teacher_logits,
    student_logits,
    temperature=4.0,
    inter_weight=1.0,
    intra_weight=1.0,
    sample_weight=None,
    mask=None,
):
    """DIST (Huang et al. 2022): `tau^2 * [beta * (1 - mean_i pearson(rows))
    + gamma * (1 - mean_c pearson(columns))]`, a scalar.

    Rows compare each sample's class distribution (inter-class relation);
    columns compare each class across the batch (intra-class relation).
    Logits `(B, ..., C)`: the rows are the positions, the columns run over
    every position of the batch; `mask` drops positions. 0 (with a zero
    gradient) when fewer than two positions are kept (weight > 0).

    Example:

    >>> import numpy as np
    >>> from keras_cskd import ops as kd_ops
    >>> t = np.array([[3.0, 0.0, 1.0], [0.0, 3.0, 2.0]], "float32")
    >>> round(float(kd_ops.dist_distillation(t, t, temperature=4.0)), 3)
    0.0
    >>> float(kd_ops.dist_distillation(t, t[::-1], temperature=1.0)) > 0
    True
    """
    t, s, weight, _ = flat_positions(teacher_logits, student_logits, sample_weight, mask)
    temperature = as_float32(temperature)
    log_p_t = log_softmax(t / temperature)
    log_p_s = log_softmax(s / temperature)
    p_t, p_s = ops.exp(log_p_t), ops.exp(log_p_s)
    # A row of probabilities sums to 1, so its mean needs no gradient (one
    # pass over a `(B, C)` array less in the backward pass).
    inter = 1.0 - centred_correlation(p_s, p_t, axis=1, constant_means=True)
    if weight is None:
        inter = ops.mean(inter)
    else:
        inter = ops.sum(weight * inter) / ops.maximum(ops.sum(weight), 1e-8)
    # Columns scaled by their largest (kept) entry, from the logs: the
    # correlation does not change, and columns whose probabilities would
    # underflow keep their shape. (The weights enter the correlation.)
    log_w = log_weights(weight)
    kept = None if log_w is None else ops.where(log_w > -1e30, 0.0, log_w)
    columns_t = scaled_from_logs(log_p_t, 0, kept)
    columns_s = scaled_from_logs(log_p_s, 0, kept)
    intra = ops.mean(1.0 - pearson_correlation(columns_s, columns_t, 0, weight))
    loss = ops.square(temperature) * (inter_weight * inter + intra_weight * intra)
    return gate_batchwise(loss, weight, t)
