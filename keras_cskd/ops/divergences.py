"""Per-position divergences: KD (Hinton), logit MSE (Kim et al.), DKD, and the
divergences of language-model distillation (reverse KL, generalized JSD,
skew KL, total variation)."""

import numpy as np
from keras import ops

from keras_cskd.ops._common import MASKED, as_float32, target_mask


def kl_divergence_distillation(teacher_logits, student_logits, temperature=4.0):
    """Hinton et al.'s KD loss per sample: `tau^2 * KL(p_t || p_s)`, shape `(B,)`
    (one value per position, `(B, ...)`, for logits `(B, ..., C)`).

    The batch mean of this is the usual "batchmean" KD loss. Computed with
    log-softmax, so it is exact (no `log(0)`) for one-hot-like teachers.

    Example:

    >>> import numpy as np
    >>> from keras_cskd import ops as kd_ops
    >>> t = np.array([[4.0, 0.0], [0.0, 0.0]], "float32")
    >>> per_sample = kd_ops.kl_divergence_distillation(t, np.zeros_like(t), temperature=2.0)
    >>> np.round(np.asarray(per_sample, "float64"), 4).tolist()
    [1.3113, 0.0]
    """
    temperature = as_float32(temperature)
    t = as_float32(teacher_logits) / temperature
    s = as_float32(student_logits) / temperature
    kl = kl_divergence(t, s, ops.logsumexp(t, axis=-1), ops.logsumexp(s, axis=-1))
    return kl * ops.square(temperature)


def kl_divergence(t, s, lse_t, lse_s):
    """`KL(softmax(t) || softmax(s))` over the last axis, from the logits
    and their log-sum-exps over it (shape `(...)`, without the last axis).

    The value is `sum_c p_t (log p_t - log p_s)` with `log p = z - lse`,
    `p_t = exp(log p_t)`, as precise as the log-softmax form; no `(B, C)`
    log-probabilities or softmax of their own are needed. The gradient
    with respect to `s` is the KL's, `softmax(s) - p_t`: `lse_s` is held
    constant inside the sum and added back as `lse_s - stop_gradient(lse_s)`
    (0 in value). Otherwise autodiff would sum `p_t` times the upstream
    gradient over the classes (`d KL / d lse_s = sum_c p_t`, which is 1),
    one more pass over a `(B, C)` array at large `C`."""
    fixed_lse_s = ops.stop_gradient(lse_s)
    log_p_t = t - ops.expand_dims(lse_t, -1)
    log_p_s = s - ops.expand_dims(fixed_lse_s, -1)
    kl = ops.sum(ops.exp(log_p_t) * (log_p_t - log_p_s), axis=-1)
    return kl + (lse_s - fixed_lse_s)


def logit_mse(teacher_logits, student_logits):
    """Kim et al.'s logit matching per sample: mean over classes of
    `(s - t)^2`, shape `(B,)` (`(B, ...)` for logits `(B, ..., C)`). The
    batch mean is the element-wise MSE of the authors' code.

    Example:

    >>> import numpy as np
    >>> from keras_cskd import ops as kd_ops
    >>> t = np.array([[1.0, 2.0], [0.0, 0.0]], "float32")
    >>> s = np.array([[2.0, 4.0], [0.0, 0.0]], "float32")
    >>> np.asarray(kd_ops.logit_mse(t, s), "float64").tolist()
    [2.5, 0.0]
    """
    diff = as_float32(student_logits) - as_float32(teacher_logits)
    return ops.mean(ops.square(diff), axis=-1)


def decoupled_kd(
    teacher_logits,
    student_logits,
    labels,
    temperature=4.0,
    target_weight=1.0,
    non_target_weight=8.0,
):
    """DKD (Zhao et al. 2022) per sample: `alpha * TCKD + beta * NCKD`,
    shape `(B,)` (`(B, ...)`: one value per position), each term
    `tau^2`-scaled.

    `labels` are integer class ids `(B,)` or one-hot `(B, C)` (for
    positions: ids of the leading shape `(B, ...)` or one-hot `(B, ..., C)`). TCKD is the
    binary KL between the teacher's and student's probability of the target
    class versus all others; NCKD is the KL between the distributions over
    the non-target classes only (target logit masked out).

    Example:

    >>> import numpy as np
    >>> from keras_cskd import ops as kd_ops
    >>> t = np.array([[3.0, 0.0, 1.0], [0.0, 3.0, 1.0]], "float32")
    >>> labels = np.array([0, 1])
    >>> np.round(np.asarray(kd_ops.decoupled_kd(t, t, labels), "float64"), 5).tolist()
    [0.0, 0.0]
    >>> tuple(kd_ops.decoupled_kd(t, np.zeros_like(t), labels).shape)
    (2,)
    """
    temperature = as_float32(temperature)
    t = as_float32(teacher_logits) / temperature
    s = as_float32(student_logits) / temperature
    target = target_mask(labels, t) > 0.5
    # The target logit and the log-sum-exp of the others (the target pushed
    # to -1e9) give everything: the full log-sum-exp is their `logaddexp`,
    # and no softmax over all the classes is needed (each is a pass over a
    # `(B, C)` array at large `C`).
    t_target = ops.max(ops.where(target, t, MASKED), axis=-1)
    s_target = ops.max(ops.where(target, s, MASKED), axis=-1)
    t_rest = ops.where(target, MASKED, t)
    s_rest = ops.where(target, MASKED, s)
    lse_t_rest = ops.logsumexp(t_rest, axis=-1)
    lse_s_rest = ops.logsumexp(s_rest, axis=-1)
    lse_t = ops.logaddexp(t_target, lse_t_rest)
    lse_s = ops.logaddexp(s_target, lse_s_rest)
    # Binary (target vs rest) KL.
    log_pt_target = t_target - lse_t
    pt_target = ops.exp(log_pt_target)
    tckd = pt_target * (log_pt_target - (s_target - lse_s)) + (1.0 - pt_target) * (
        (lse_t_rest - lse_t) - (lse_s_rest - lse_s)
    )
    # Non-target distribution: the KL of the softmaxes of the masked logits
    # (the target's probability there is exp(-1e9 - lse) = 0).
    nckd = kl_divergence(t_rest, s_rest, lse_t_rest, lse_s_rest)
    scale = ops.square(temperature)
    return scale * (target_weight * tckd + non_target_weight * nckd)


# ------------------------------------------------------------------------
# The divergences of language-model distillation, per position, each
# `tau^2`-scaled like KD (at the field's usual tau = 1, the plain value).


def _log_probabilities(teacher_logits, student_logits, temperature):
    temperature = as_float32(temperature)
    t = as_float32(teacher_logits) / temperature
    s = as_float32(student_logits) / temperature
    log_p_t = t - ops.logsumexp(t, axis=-1, keepdims=True)
    log_p_s = s - ops.logsumexp(s, axis=-1, keepdims=True)
    return log_p_t, log_p_s, ops.square(temperature)


def _kl_of_logs(log_p, log_q):
    """`KL(p || q) = sum p (log p - log q)` from log-probabilities."""
    return ops.sum(ops.exp(log_p) * (log_p - log_q), axis=-1)


def _mixture(log_p, log_q, weight_p):
    """`log(weight_p * p + (1 - weight_p) * q)` from the logs (exact)."""
    return ops.logaddexp(log_p + float(np.log(weight_p)), log_q + float(np.log1p(-weight_p)))


def reverse_kl_divergence(teacher_logits, student_logits, temperature=1.0):
    """Reverse KL per position: `tau^2 * KL(p_s || p_t)` (mode-seeking; torchtune's
    ReverseKL, MiniLLM at the token level).

    Example:

    >>> import numpy as np
    >>> from keras_cskd import ops as kd_ops
    >>> t = np.array([[2.0, 0.0, -1.0]], "float32")
    >>> round(float(kd_ops.reverse_kl_divergence(t, np.zeros_like(t))[0]), 4)
    0.7379
    """
    log_p_t, log_p_s, scale = _log_probabilities(teacher_logits, student_logits, temperature)
    return scale * _kl_of_logs(log_p_s, log_p_t)


def jensen_shannon_divergence(teacher_logits, student_logits, beta=0.5, temperature=1.0):
    """Generalized Jensen-Shannon divergence per position (GKD, Agarwal et al.
    2024), as TRL's `generalized_jsd_loss` defines it: with the mixture
    `m = beta * p_t + (1 - beta) * p_s`,
    `tau^2 * [beta * KL(p_t || m) + (1 - beta) * KL(p_s || m)]`; at the
    endpoints TRL's convention, `beta = 0`: forward `KL(p_t || p_s)`,
    `beta = 1`: reverse `KL(p_s || p_t)`. `beta = 0.5` is the symmetric JSD
    (at most `log 2`).

    Example:

    >>> import numpy as np
    >>> from keras_cskd import ops as kd_ops
    >>> t = np.array([[9.0, -9.0]], "float32")  # p_t ~ (1, 0)
    >>> round(float(kd_ops.jensen_shannon_divergence(t, -t)[0]), 4)  # disjoint: log 2
    0.6931
    """
    log_p_t, log_p_s, scale = _log_probabilities(teacher_logits, student_logits, temperature)
    if beta == 0.0:
        return scale * _kl_of_logs(log_p_t, log_p_s)
    if beta == 1.0:
        return scale * _kl_of_logs(log_p_s, log_p_t)
    log_m = _mixture(log_p_t, log_p_s, beta)
    return scale * (beta * _kl_of_logs(log_p_t, log_m) + (1.0 - beta) * _kl_of_logs(log_p_s, log_m))


def skew_kl_divergence(teacher_logits, student_logits, alpha=0.1, temperature=1.0, reverse=False):
    """Skew KL per position (DistiLLM, Ko et al. 2024):
    `tau^2 * KL(p_t || alpha p_t + (1 - alpha) p_s)`; with `reverse=True`, skew
    reverse KL `tau^2 * KL(p_s || alpha p_s + (1 - alpha) p_t)`. `alpha = 0`
    is the forward (reverse) KL; the skew keeps the divergence finite where
    the student gives a class almost no probability.

    Example:

    >>> import numpy as np
    >>> from keras_cskd import ops as kd_ops
    >>> t = np.array([[2.0, 0.0, -1.0]], "float32")
    >>> float(kd_ops.skew_kl_divergence(t, t)[0])
    0.0
    """
    log_p_t, log_p_s, scale = _log_probabilities(teacher_logits, student_logits, temperature)
    if reverse:
        log_p_t, log_p_s = log_p_s, log_p_t
    if alpha == 0.0:
        return scale * _kl_of_logs(log_p_t, log_p_s)
    return scale * _kl_of_logs(log_p_t, _mixture(log_p_t, log_p_s, alpha))


def total_variation_distance(teacher_logits, student_logits, temperature=1.0):
    """Total variation distance per position: `tau^2 * 1/2 sum |p_t - p_s|`.

    Example:

    >>> import numpy as np
    >>> from keras_cskd import ops as kd_ops
    >>> t = np.array([[9.0, -9.0]], "float32")
    >>> round(float(kd_ops.total_variation_distance(t, -t)[0]), 4)
    1.0
    """
    log_p_t, log_p_s, scale = _log_probabilities(teacher_logits, student_logits, temperature)
    return scale * 0.5 * ops.sum(ops.abs(ops.exp(log_p_t) - ops.exp(log_p_s)), axis=-1)
