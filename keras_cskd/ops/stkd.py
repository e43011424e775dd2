"""STKD-style similarity transfer: per-sample KL plus CSKD on the same batch."""

from keras import ops

from keras_cskd.ops._common import flat_positions
from keras_cskd.ops.cskd import cosine_similarity_distillation
from keras_cskd.ops.divergences import kl_divergence_distillation


def similarity_transfer_distillation(
    teacher_logits,
    student_logits,
    temperature=4.0,
    kl_weight=1.0,
    batch_weight=1.0,
    sample_weight=None,
    mask=None,
):
    """STKD-style similarity transfer: `kl_weight * mean_i w_i KD_i +
    batch_weight * CSKD`, a scalar (`KD_i` from `kl_divergence_distillation`,
    averaged like Keras' "sum_over_batch_size"; CSKD from
    `cosine_similarity_distillation`, both at `temperature`). Over
    positions `(B, ..., C)`, `i` runs over the (kept) positions.

    Example:

    >>> import numpy as np
    >>> from keras_cskd import ops as kd_ops
    >>> t = np.array([[3.0, 0.0, 1.0], [0.0, 3.0, 1.0]], "float32")
    >>> round(float(kd_ops.similarity_transfer_distillation(t, t)), 5)
    0.0
    """
    t, s, weight, keep = flat_positions(teacher_logits, student_logits, sample_weight, mask)
    kl = kl_divergence_distillation(t, s, temperature)
    if weight is not None:
        kl = kl * weight
    kl = ops.mean(kl) if keep is None else ops.sum(kl) / ops.maximum(ops.sum(keep), 1.0)
    batch = cosine_similarity_distillation(t, s, temperature, weight)
    return kl_weight * kl + batch_weight * batch
