"""The math of keras-cskd: small pure functions of `keras.ops`.

This module is the one place to check a formula against the papers. Every
function takes teacher and student *logits* of shape `(batch, classes)`, or
`(batch, ..., classes)` where every leading axis is a position (tokens of a
sequence, pixels of an image), and computes in float32 whatever the input
dtype (float16/bfloat16 logits are upcast before the softmax), so the same
code is used under mixed precision, on every backend, inside or outside a
compiled step.

Notation used in the docstrings: `t`, `s` are teacher and student logits,
`B` the batch size, `C` the number of classes, `p = softmax(z / tau)` over
classes. "Columns" are the `C` vectors of length `B` (one per class, across
the batch); "rows" are the `B` vectors of length `C` (one per sample).

Positions: per-sample functions (KD, logit MSE, DKD) return one value per
position, shape `(batch, ...)`. Batch-wise functions (CSKD, STKD, DIST,
CSWT) first flatten all leading axes into `N` rows (`flatten_positions`),
so a class column holds the class's probability at every position of the
batch. Their `mask` (shape `(batch, ...)`, bool or 0/1) drops positions:
the result equals the function on the kept rows alone, whatever the masked
logits hold (they are replaced by zeros with `where` before any softmax, so
NaN or huge padding values cannot reach the result or the gradient).

Example:

>>> import numpy as np
>>> from keras_cskd import ops as kd_ops
>>> t = np.array([[2.0, 0.5, -1.0], [0.1, 1.5, 0.3]], "float32")
>>> float(kd_ops.cosine_similarity_distillation(t, t, temperature=4.0))
0.0
"""

from keras import ops

# Floor under squared norms before a square root: keeps gradients finite for
# all-zero columns (`sqrt` has an infinite derivative at 0).
_TINY = 1e-30


def _as_float32(x):
    x = ops.convert_to_tensor(x)
    if x.dtype != "float32":
        x = ops.cast(x, "float32")
    return x


def flatten_positions(logits):
    """`(..., C)` logits as `(N, C)` rows, one per position (`N` is the
    product of the leading axes), in float32. `(B, C)` is returned as is.

    Example:

    >>> import numpy as np
    >>> from keras_cskd import ops as kd_ops
    >>> tuple(kd_ops.flatten_positions(np.zeros((2, 5, 3), "float32")).shape)
    (10, 3)
    """
    logits = _as_float32(logits)
    if len(logits.shape) == 2:
        return logits
    return ops.reshape(logits, (-1, logits.shape[-1]))


def to_positions(values, logits):
    """Per-sample or per-position `values` (a sample weight or a mask:
    shape `(B,)`, the leading axes `(B, ...)`, or either with a trailing 1)
    broadcast over the positions of `logits` `(B, ..., C)` and flattened to
    `(N,)`, matching `flatten_positions(logits)`.

    Example:

    >>> import numpy as np
    >>> from keras_cskd import ops as kd_ops
    >>> w = np.array([1.0, 2.0], "float32")  # one weight per sequence
    >>> np.asarray(kd_ops.to_positions(w, np.zeros((2, 3, 4))), "float64").tolist()
    [1.0, 1.0, 1.0, 2.0, 2.0, 2.0]
    """
    values = ops.convert_to_tensor(values)
    rank = len(logits.shape) - 1
    if len(values.shape) == rank + 1 and values.shape[-1] == 1:
        values = ops.squeeze(values, axis=-1)
    if len(values.shape) == rank and rank == 1:
        return values
    while len(values.shape) < rank:
        values = ops.expand_dims(values, axis=-1)
    values = ops.broadcast_to(values, ops.shape(logits)[:-1])
    return ops.reshape(values, (-1,))


def _keep(mask):
    """A mask (bool or 0/1, any shape) as booleans."""
    mask = ops.convert_to_tensor(mask)
    if mask.dtype == "bool":
        return mask
    return ops.cast(mask, "float32") > 0.5


def mask_logits(logits, mask):
    """`logits` `(..., C)` in float32, with the rows of masked positions
    (`mask` of the leading shape, False/0) replaced by zeros: whatever
    padding holds (huge values, NaN, inf), the masked rows are finite and
    their gradient is zero. `mask=None` returns the logits unchanged.

    Example:

    >>> import numpy as np
    >>> from keras_cskd import ops as kd_ops
    >>> logits = np.array([[[1.0, 2.0], [np.nan, np.inf]]], "float32")
    >>> np.asarray(kd_ops.mask_logits(logits, [[True, False]]), "float64").tolist()
    [[[1.0, 2.0], [0.0, 0.0]]]
    """
    logits = _as_float32(logits)
    if mask is None:
        return logits
    keep = ops.expand_dims(_keep(mask), axis=-1)
    return ops.where(keep, logits, ops.zeros_like(logits))


def _flat_positions(teacher_logits, student_logits, sample_weight=None, mask=None):
    """`(t, s, weight, keep)` for the batch-wise functions: the logits as
    `(N, C)` rows with masked rows zeroed, the sample weights over the
    positions times the mask (`None` when there are neither), and the
    mask as `(N,)` 0/1 floats (`None` without a mask)."""
    t = mask_logits(teacher_logits, mask)
    s = mask_logits(student_logits, mask)
    weight = None if sample_weight is None else _as_float32(to_positions(sample_weight, t))
    keep = None
    if mask is not None:
        keep = ops.cast(to_positions(_keep(mask), t), "float32")
        weight = keep if weight is None else weight * keep
    return flatten_positions(t), flatten_positions(s), weight, keep


def _mean_temperature(temperature, keep=None):
    """The mean of the temperatures; per-position ones `(N, 1)` over the
    kept positions only."""
    if keep is None or len(temperature.shape) != 2 or temperature.shape[1] != 1:
        return ops.mean(temperature)
    return ops.sum(ops.reshape(temperature, (-1,)) * keep) / ops.maximum(ops.sum(keep), 1.0)


def _log_softmax(logits):
    """`log softmax(logits)` over the last axis as `logits - logsumexp`.

    At large `C` the losses are bound by passes over `(B, C)` arrays.
    `ops.softmax` writes `exp(z - max)` and then its quotient by the row
    sums, two arrays; `exp(z - logsumexp(z))` is one element-wise
    expression after the two reductions, which XLA fuses with its consumer
    (measured: CSKD's step at B = 64, C = 32,000 needs 47 -> 39 MiB of
    temporaries, `benchmarks/loss_passes.py`)."""
    return logits - ops.logsumexp(logits, axis=-1, keepdims=True)


def softened_probabilities(logits, temperature=1.0):
    """Softmax over classes of `logits / temperature`, computed in float32.

    `temperature` is a Python number or a tensor that broadcasts against
    `logits`: shape `(B, 1)` gives one temperature per sample, `(1, C)` one
    per class.

    Example:

    >>> import numpy as np
    >>> from keras_cskd import ops as kd_ops
    >>> logits = np.array([[2.0, 0.0], [2.0, 0.0]], "float32")
    >>> p = kd_ops.softened_probabilities(logits, np.array([[1.0], [4.0]], "float32"))
    >>> np.round(np.asarray(p, "float64"), 4).tolist()  # one temperature per sample
    [[0.8808, 0.1192], [0.6225, 0.3775]]
    """
    return ops.exp(_log_softmax(_as_float32(logits) / _as_float32(temperature)))


def _safe_norm(x, axis):
    return ops.sqrt(ops.maximum(ops.sum(ops.square(x), axis=axis), _TINY))


def _weighted_columns(x, sample_weight):
    """Scales rows by `sqrt(w)` so inner products over the batch are
    `sum_i w_i a_i b_i` (a weighted cosine)."""
    if sample_weight is None:
        return x
    w = ops.reshape(_as_float32(sample_weight), (-1, 1))
    return x * ops.sqrt(ops.maximum(w, 0.0))


def cosine_similarity(a, b, axis, epsilon=1e-8):
    """`|<a, b>| / (||a|| ||b|| + epsilon)` along `axis`, in float32.

    Clipped at 1: for (near-)parallel vectors the rounded quotient can
    exceed 1 by an ulp, which would make CSKD slightly negative. The clip
    moves the value only: its gradient is the unclipped quotient's (a
    `minimum(cos, 1)` would have zero gradient where float32 rounds the
    cosine to >= 1, and so drop, near convergence, the gradient of the
    columns that are best matched).

    Example:

    >>> import numpy as np
    >>> from keras_cskd import ops as kd_ops
    >>> a = np.array([[1.0, 0.0], [1.0, 1.0]], "float32")
    >>> b = np.array([[3.0, 0.0], [0.0, 1.0]], "float32")
    >>> np.round(np.asarray(kd_ops.cosine_similarity(a, b, axis=1), "float64"), 4).tolist()
    [1.0, 0.7071]
    """
    a = _as_float32(a)
    b = _as_float32(b)
    dot = ops.sum(a * b, axis=axis)
    cosine = ops.abs(dot) / (_safe_norm(a, axis) * _safe_norm(b, axis) + epsilon)
    # cosine - (cosine - 1)^+ with the excess held constant: the value is
    # min(cosine, 1), the gradient that of `cosine`.
    return cosine - ops.stop_gradient(ops.maximum(cosine - 1.0, 0.0))


def class_cosine_similarity(teacher_probs, student_probs, sample_weight=None, epsilon=1e-8):
    """Cosine of each class column across the batch: shape `(C,)`.

    `cos_c = |<p_s[:, c], p_t[:, c]>| / (||p_s[:, c]|| ||p_t[:, c]|| + eps)`,
    the CSKD similarity of Ham et al. (2023). With `sample_weight` (shape
    `(B,)`) the inner products are weighted: `sum_i w_i p_s[i, c] p_t[i, c]`.

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
    teacher_probs = _weighted_columns(_as_float32(teacher_probs), sample_weight)
    student_probs = _weighted_columns(_as_float32(student_probs), sample_weight)
    return cosine_similarity(teacher_probs, student_probs, axis=0, epsilon=epsilon)


def sample_cosine_similarity(teacher_probs, student_probs, epsilon=1e-8):
    """Cosine of each sample's row of probabilities: shape `(B,)`.

    Example:

    >>> import numpy as np
    >>> from keras_cskd import ops as kd_ops
    >>> p_t = np.array([[1.0, 0.0], [0.5, 0.5]], "float32")
    >>> p_s = np.array([[0.5, 0.5], [0.5, 0.5]], "float32")
    >>> np.round(np.asarray(kd_ops.sample_cosine_similarity(p_t, p_s), "float64"), 4).tolist()
    [0.7071, 1.0]
    """
    return cosine_similarity(teacher_probs, student_probs, axis=1, epsilon=epsilon)


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
    temperature = _as_float32(temperature)
    t = _as_float32(teacher_logits) / temperature
    s = _as_float32(student_logits) / temperature
    kl = _kl_divergence(t, s, ops.logsumexp(t, axis=-1), ops.logsumexp(s, axis=-1))
    return kl * ops.square(temperature)


def _kl_divergence(t, s, lse_t, lse_s):
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
    diff = _as_float32(student_logits) - _as_float32(teacher_logits)
    return ops.mean(ops.square(diff), axis=-1)


def cosine_similarity_distillation(
    teacher_logits,
    student_logits,
    temperature=4.0,
    sample_weight=None,
    epsilon=1e-8,
    mask=None,
):
    """CSKD: `T^2 * (1 - mean_c cos_c)` on the batch predictions.

    `cos_c` is the cosine of class `c`'s column of `softmax(s / T)` and
    `softmax(t / T)` across the batch (`class_cosine_similarity`). `T` is a
    number or a tensor of adaptive temperatures (`(B, 1)` per sample or
    `(1, C)` per class, from CSWT); the loss is then scaled by `mean(T)^2`.
    Returns a scalar in `[0, mean(T)^2]`. Logits `(B, ..., C)` are
    flattened first: the columns then run over every position of the batch
    (per-position temperatures are `(N, 1)`); `mask` drops positions.

    Example:

    >>> import numpy as np
    >>> from keras_cskd import ops as kd_ops
    >>> t = np.array([[3.0, 0.0, 1.0], [0.0, 3.0, 1.0]], "float32")
    >>> round(float(kd_ops.cosine_similarity_distillation(t, t, temperature=4.0)), 5)
    0.0
    >>> s = t[::-1]  # the student swaps the two samples
    >>> round(float(kd_ops.cosine_similarity_distillation(t, s, temperature=1.0)), 4)
    0.6004
    >>> temperatures = np.array([[2.0], [6.0]], "float32")  # per sample, e.g. from CSWT
    >>> round(float(kd_ops.cosine_similarity_distillation(t, s, temperatures)), 4)
    3.7246
    >>> padded = np.concatenate([t, np.full((1, 3), 1e30, "float32")])  # a padding row
    >>> round(float(kd_ops.cosine_similarity_distillation(
    ...     padded, padded[[1, 0, 2]], 1.0, mask=[True, True, False])), 4)
    0.6004
    """
    loss, _ = cosine_similarity_distillation_with_statistics(
        teacher_logits, student_logits, temperature, sample_weight, epsilon, mask
    )
    return loss


def cosine_similarity_distillation_with_statistics(
    teacher_logits,
    student_logits,
    temperature=4.0,
    sample_weight=None,
    epsilon=1e-8,
    mask=None,
):
    """`(loss, statistics)`: CSKD (`cosine_similarity_distillation`) and the
    quantities the `Distiller` logs, a dict of `cosine_similarity` (mean
    cosine), `class_cosine_similarity` (`(C,)`), `temperature` (mean) and
    `temperatures` (the temperature tensor as given).

    Example:

    >>> import numpy as np
    >>> from keras_cskd import ops as kd_ops
    >>> t = np.array([[3.0, 0.0], [0.0, 3.0]], "float32")
    >>> loss, stats = kd_ops.cosine_similarity_distillation_with_statistics(t, t, 2.0)
    >>> sorted(stats), round(float(stats["cosine_similarity"]), 4)
    (['class_cosine_similarity', 'cosine_similarity', 'temperature', 'temperatures'], 1.0)
    """
    t, s, weight, keep = _flat_positions(teacher_logits, student_logits, sample_weight, mask)
    temperature = _as_float32(temperature)
    p_t = softened_probabilities(t, temperature)
    p_s = softened_probabilities(s, temperature)
    class_cosine = class_cosine_similarity(p_t, p_s, weight, epsilon)
    mean_cosine = ops.mean(class_cosine)
    mean_temperature = _mean_temperature(temperature, keep)
    loss = ops.square(mean_temperature) * (1.0 - mean_cosine)
    statistics = {
        "cosine_similarity": mean_cosine,
        "class_cosine_similarity": class_cosine,
        "temperature": mean_temperature,
        "temperatures": temperature,
    }
    return loss, statistics


def class_temperatures(temperatures, teacher_logits, num_classes, mask=None):
    """One temperature per class, `(C,)`, from CSKD's temperatures: a scalar
    is repeated, per-class temperatures `(1, C)` are returned as they are,
    per-sample ones `(B, 1)` are averaged over the samples the teacher
    assigns to each class (the overall mean for a class with none). For
    logits `(B, ..., C)` the samples are the positions (`mask` drops some).

    Example:

    >>> import numpy as np
    >>> from keras_cskd import ops as kd_ops
    >>> t = np.array([[3.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 3.0, 0.0]], "float32")
    >>> per_sample = np.array([[2.0], [4.0], [6.0]], "float32")
    >>> np.asarray(kd_ops.class_temperatures(per_sample, t, 3), "float64").tolist()
    [3.0, 6.0, 4.0]
    """
    temperatures = _as_float32(temperatures)
    if len(temperatures.shape) == 2 and temperatures.shape[0] == 1:
        return ops.reshape(temperatures, (num_classes,))
    if len(temperatures.shape) == 2:
        teacher_logits = mask_logits(teacher_logits, mask)
        keep = None
        if mask is not None:
            keep = ops.cast(to_positions(_keep(mask), teacher_logits), "float32")
        teacher_logits = flatten_positions(teacher_logits)
        assigned = _one_hot(ops.argmax(teacher_logits, axis=-1), num_classes)
        if keep is not None:
            assigned = assigned * ops.expand_dims(keep, axis=-1)
        counts = ops.sum(assigned, axis=0)
        per_class = ops.sum(assigned * temperatures, axis=0) / ops.maximum(counts, 1.0)
        return ops.where(counts > 0, per_class, _mean_temperature(temperatures, keep))
    return ops.ones((num_classes,), "float32") * temperatures


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
    t, s, weight, keep = _flat_positions(teacher_logits, student_logits, sample_weight, mask)
    kl = kl_divergence_distillation(t, s, temperature)
    if weight is not None:
        kl = kl * weight
    kl = ops.mean(kl) if keep is None else ops.sum(kl) / ops.maximum(ops.sum(keep), 1.0)
    batch = cosine_similarity_distillation(t, s, temperature, weight)
    return kl_weight * kl + batch_weight * batch


def cswt_temperatures(
    teacher_logits,
    student_logits,
    low=2.0,
    high=6.0,
    granularity="sample",
    epsilon=1e-6,
    mask=None,
):
    """Cosine-similarity weighted temperatures (CSWT), without gradient.

    The similarities are taken at temperature 1: per sample, the cosine of
    each row of `softmax(s)` and `softmax(t)`; per class, the cosine of each
    column across the batch. With `m`, `M` their min and max,
    `T = low + (M - sim) / (M - m) * (high - low)`: the best-agreeing
    sample (class) gets `low`, the worst `high`. Where `M - m <= epsilon`
    (a batch of one, identical agreement everywhere) every temperature is
    the midpoint `(low + high) / 2` instead of the authors' division by zero.

    Returns shape `(B, 1)` for `granularity="sample"` and `(1, C)` for
    `"class"`, ready to divide logits by. Logits `(B, ..., C)` are flattened
    to `N` position rows first (per-position temperatures `(N, 1)`); masked
    positions take no part in the similarities, the min or the max, and get
    the midpoint.

    Example:

    >>> import numpy as np
    >>> from keras_cskd import ops as kd_ops
    >>> t = np.array([[4.0, 0.0], [4.0, 0.0], [0.0, 4.0]], "float32")
    >>> s = np.array([[4.0, 0.0], [0.0, 0.0], [4.0, 0.0]], "float32")
    >>> per_sample = kd_ops.cswt_temperatures(t, s, low=2.0, high=6.0)
    >>> np.round(np.asarray(per_sample, "float64"), 3).tolist()
    [[2.0], [3.163], [6.0]]
    >>> tuple(kd_ops.cswt_temperatures(t, s, granularity="class").shape)
    (1, 2)
    """
    t, s, _, keep = _flat_positions(
        ops.stop_gradient(_as_float32(teacher_logits)),
        ops.stop_gradient(_as_float32(student_logits)),
        mask=mask,
    )
    p_t = softened_probabilities(t)
    p_s = softened_probabilities(s)
    if granularity == "sample":
        similarity = sample_cosine_similarity(p_t, p_s)
        shape = (-1, 1)
    elif granularity == "class":
        similarity = class_cosine_similarity(p_t, p_s, keep)
        shape = (1, -1)
        keep = None  # every class has a temperature
    else:
        raise ValueError(f"granularity must be 'sample' or 'class', got {granularity!r}.")
    temperatures = min_max_temperatures(similarity, low, high, epsilon, keep)
    return ops.stop_gradient(ops.reshape(temperatures, shape))


def min_max_temperatures(similarity, low, high, epsilon=1e-6, keep=None):
    """Maps similarities linearly to `[low, high]`, highest similarity to
    `low`; all `(low + high) / 2` when the similarities span `<= epsilon`.
    With `keep` (0/1, the shape of `similarity`) the min and max are taken
    over the kept entries only, and the others get the midpoint.

    Example:

    >>> import numpy as np
    >>> from keras_cskd import ops as kd_ops
    >>> sim = np.array([0.9, 0.5, 0.1], "float32")
    >>> np.round(np.asarray(kd_ops.min_max_temperatures(sim, 2.0, 6.0), "float64"), 4).tolist()
    [2.0, 4.0, 6.0]
    >>> same = np.array([0.7, 0.7], "float32")  # no spread: the midpoint
    >>> np.asarray(kd_ops.min_max_temperatures(same, 2.0, 6.0), "float64").tolist()
    [4.0, 4.0]
    """
    similarity = _as_float32(similarity)
    if keep is None:
        smallest = ops.min(similarity)
        largest = ops.max(similarity)
    else:
        kept = _keep(keep)
        smallest = ops.min(ops.where(kept, similarity, ops.full_like(similarity, 2.0)))
        largest = ops.max(ops.where(kept, similarity, ops.full_like(similarity, -2.0)))
    spread = largest - smallest
    degenerate = spread <= epsilon
    safe_spread = ops.where(degenerate, ops.ones_like(spread), spread)
    scaled = low + (largest - similarity) / safe_spread * (high - low)
    # `zeros_like + c`, not `full_like`: PyTorch's `full` reads a tensor
    # fill value back to the host (a device sync on a GPU).
    midpoint = ops.zeros_like(similarity) + (low + high) / 2.0
    if keep is not None:
        degenerate = ops.logical_or(degenerate, ops.logical_not(kept))
    return ops.where(degenerate, midpoint, scaled)


def pearson_correlation(a, b, axis, sample_weight=None, epsilon=1e-8):
    """Pearson correlation of `a` and `b` along `axis` (optionally weighted
    along the batch axis 0 with `sample_weight`).

    Example:

    >>> import numpy as np
    >>> from keras_cskd import ops as kd_ops
    >>> a = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]], "float32")
    >>> b = np.array([[2.0, 4.0, 6.0], [3.0, 2.0, 1.0]], "float32")
    >>> np.round(np.asarray(kd_ops.pearson_correlation(a, b, axis=1), "float64"), 4).tolist()
    [1.0, -1.0]
    """
    return _pearson_correlation(a, b, axis, sample_weight, epsilon)


def _pearson_correlation(a, b, axis, sample_weight=None, epsilon=1e-8, constant_means=False):
    """`pearson_correlation`; with `constant_means` the (unweighted) means
    are held constant under differentiation: right, and one reduction
    cheaper, where they are constant anyway (the row mean of a softmax is
    `1 / C`)."""
    a = _as_float32(a)
    b = _as_float32(b)
    if sample_weight is None or axis != 0:
        mean_a = ops.mean(a, axis=axis, keepdims=True)
        mean_b = ops.mean(b, axis=axis, keepdims=True)
        if constant_means:
            mean_a, mean_b = ops.stop_gradient(mean_a), ops.stop_gradient(mean_b)
        a = a - mean_a
        b = b - mean_b
    else:
        w = ops.reshape(_as_float32(sample_weight), (-1, 1))
        total = ops.maximum(ops.sum(w), epsilon)
        a = a - ops.sum(w * a, axis=0, keepdims=True) / total
        b = b - ops.sum(w * b, axis=0, keepdims=True) / total
        a = _weighted_columns(a, sample_weight)
        b = _weighted_columns(b, sample_weight)
    dot = ops.sum(a * b, axis=axis)
    return dot / (_safe_norm(a, axis) * _safe_norm(b, axis) + epsilon)


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
    every position of the batch; `mask` drops positions.

    Example:

    >>> import numpy as np
    >>> from keras_cskd import ops as kd_ops
    >>> t = np.array([[3.0, 0.0, 1.0], [0.0, 3.0, 2.0]], "float32")
    >>> round(float(kd_ops.dist_distillation(t, t, temperature=4.0)), 3)
    0.0
    >>> float(kd_ops.dist_distillation(t, t[::-1], temperature=1.0)) > 0
    True
    """
    t, s, weight, _ = _flat_positions(teacher_logits, student_logits, sample_weight, mask)
    temperature = _as_float32(temperature)
    p_t = softened_probabilities(t, temperature)
    p_s = softened_probabilities(s, temperature)
    # A row of probabilities sums to 1, so its mean needs no gradient (one
    # pass over a `(B, C)` array less in the backward pass).
    inter = 1.0 - _pearson_correlation(p_s, p_t, axis=1, constant_means=True)
    if weight is None:
        inter = ops.mean(inter)
    else:
        inter = ops.sum(weight * inter) / ops.maximum(ops.sum(weight), 1e-8)
    intra = ops.mean(1.0 - pearson_correlation(p_s, p_t, 0, weight))
    return ops.square(temperature) * (inter_weight * inter + intra_weight * intra)


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
    temperature = _as_float32(temperature)
    t = _as_float32(teacher_logits) / temperature
    s = _as_float32(student_logits) / temperature
    target = _target_mask(labels, t) > 0.5
    # The target logit and the log-sum-exp of the others (the target pushed
    # to -1e9) give everything: the full log-sum-exp is their `logaddexp`,
    # and no softmax over all the classes is needed (each is a pass over a
    # `(B, C)` array at large `C`).
    t_target = ops.max(ops.where(target, t, _MASKED), axis=-1)
    s_target = ops.max(ops.where(target, s, _MASKED), axis=-1)
    t_rest = ops.where(target, _MASKED, t)
    s_rest = ops.where(target, _MASKED, s)
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
    nckd = _kl_divergence(t_rest, s_rest, lse_t_rest, lse_s_rest)
    scale = ops.square(temperature)
    return scale * (target_weight * tckd + non_target_weight * nckd)


def _target_mask(labels, logits):
    """One-hot targets of the shape of `logits` `(..., C)`, from class ids
    (the leading shape, optionally with a trailing 1) or one-hot labels."""
    labels = ops.convert_to_tensor(labels)
    num_classes = logits.shape[-1]
    rank = len(logits.shape)
    if len(labels.shape) == rank and labels.shape[-1] == num_classes and num_classes != 1:
        return _as_float32(labels)
    if rank == 2:
        labels = ops.reshape(labels, (-1,))
    elif len(labels.shape) == rank:
        labels = ops.squeeze(labels, axis=-1)
    return _one_hot(labels, num_classes)


def _one_hot(indices, num_classes):
    """`ops.one_hot(indices, num_classes)` in float32 as a comparison with
    `arange`: PyTorch's `one_hot` checks the index range on the host (two
    device syncs per call on a GPU); this needs none. Indices outside
    `[0, num_classes)` give a row of zeros."""
    indices = ops.expand_dims(ops.cast(indices, "int32"), -1)
    return ops.cast(ops.equal(indices, ops.arange(num_classes, dtype="int32")), "float32")


# Stands for a removed logit: finite, so that `0 * (masked - masked)` stays 0
# in values and gradients, and far below any real logit.
_MASKED = -1e9


def sample_beta(alpha, seed, candidates=16):
    """One draw of `Beta(alpha, alpha)` from `keras.random` normals and
    uniforms only, so it compiles under XLA on every backend (TensorFlow's
    gamma kernel does not).

    `Beta(a, a) = X / (X + Y)` with `X, Y ~ Gamma(a)`, each drawn with
    Marsaglia and Tsang's method (with the `U^(1/a)` boost for `a < 1`),
    vectorised over `candidates` proposals of which the first accepted is
    used; the chance that all of them are rejected is below `0.05^16`.

    Example:

    >>> import keras
    >>> from keras_cskd import ops as kd_ops
    >>> lam = kd_ops.sample_beta(1.0, keras.random.SeedGenerator(0))
    >>> 0.0 < float(lam) < 1.0
    True
    """
    import keras

    alpha = float(alpha)
    shape_param = alpha + 1.0 if alpha < 1.0 else alpha
    d = shape_param - 1.0 / 3.0
    c = 1.0 / (9.0 * d) ** 0.5
    z = keras.random.normal((2, candidates), seed=seed)
    u = keras.random.uniform((2, candidates), seed=seed)
    v = ops.power(1.0 + c * z, 3)
    accept = ops.logical_and(
        v > 0.0,
        ops.log(ops.maximum(u, 1e-30))
        < 0.5 * ops.square(z) + d - d * ops.maximum(v, 1e-30) + d * ops.log(ops.maximum(v, 1e-30)),
    )
    first = ops.argmax(ops.cast(accept, "int32"), axis=1)
    draws = ops.take_along_axis(d * ops.maximum(v, 1e-30), ops.reshape(first, (2, 1)), axis=1)
    draws = ops.reshape(draws, (2,))
    if alpha < 1.0:
        boost = keras.random.uniform((2,), seed=seed)
        draws = draws * ops.power(ops.maximum(boost, 1e-30), 1.0 / alpha)
    draws = ops.maximum(draws, 1e-30)
    return draws[0] / (draws[0] + draws[1])
