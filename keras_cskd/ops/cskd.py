"""CSKD (cosine similarity of the batch predictions) and CSWT (its
cosine-similarity weighted temperatures)."""

from keras import ops

from keras_cskd.ops._common import (
    as_float32,
    flat_positions,
    flatten_positions,
    gate_batchwise,
    keep_of,
    log_softmax,
    mask_logits,
    mean_temperature,
    one_hot,
    to_positions,
)
from keras_cskd.ops.similarity import (
    cosine_and_distance,
    log_weights,
    unit_vectors_from_logs,
)


def cosine_similarity_distillation(
    teacher_logits,
    student_logits,
    temperature=4.0,
    sample_weight=None,
    epsilon=None,
    mask=None,
    temperature_levels=None,
):
    """CSKD: `T^2 * (1 - mean_c cos_c)` on the batch predictions.

    `cos_c` is the cosine of class `c`'s column of `softmax(s / T)` and
    `softmax(t / T)` across the batch (`class_cosine_similarity`), computed
    exactly at any class count from the log-probabilities (see
    `keras_cskd.ops` on numerics). `T` is a number or a tensor of adaptive
    temperatures: `(B, 1)` one per sample (CSWT), or `(1, C)` one per
    class, in which case class `c`'s column is taken from
    `softmax(z / T_c)` over all classes (so every column comes from a
    distribution that keeps the model's ranking of the classes; see
    `temperature_levels`). The loss is then scaled by `mean(T)^2`.
    Returns a scalar in `[0, mean(T)^2]`; 0 (with a zero gradient) when
    fewer than two positions are kept (weight > 0): one sample's columns
    always agree. Logits `(B, ..., C)` are
    flattened first: the columns then run over every position of the batch
    (per-position temperatures are `(N, 1)`); `mask` drops positions
    (0 drops, a positive value weights, like `sample_weight`). No kept
    position gives 0.

    Args:
        temperature_levels: for per-class temperatures, the finitely many
            values they take (e.g. CSWT's), so that one softmax per value
            is computed; None computes one per class (memory `N * C^2`:
            small `C` only).
        epsilon: ignored (kept for code written for keras-cskd 0.1): the
            cosines are exact without one.

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
        teacher_logits,
        student_logits,
        temperature,
        sample_weight,
        epsilon,
        mask,
        temperature_levels,
    )
    return loss


def cosine_similarity_distillation_with_statistics(
    teacher_logits,
    student_logits,
    temperature=4.0,
    sample_weight=None,
    epsilon=None,
    mask=None,
    temperature_levels=None,
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
    t, s, weight, keep = flat_positions(teacher_logits, student_logits, sample_weight, mask)
    temperature = as_float32(temperature)
    log_p_t = column_log_probabilities(t, temperature, temperature_levels)
    log_p_s = column_log_probabilities(s, temperature, temperature_levels)
    log_w = log_weights(weight)
    cosine, distance = cosine_and_distance(
        unit_vectors_from_logs(log_p_t, 0, log_w), unit_vectors_from_logs(log_p_s, 0, log_w), 0
    )
    # Per-position temperatures are averaged over the positions that count.
    counted = keep if weight is None else ops.cast(weight > 0, "float32")
    average_temperature = mean_temperature(temperature, counted)
    loss = gate_batchwise(ops.square(average_temperature) * ops.mean(distance), weight, t)
    statistics = {
        "cosine_similarity": ops.mean(cosine),
        "class_cosine_similarity": cosine,
        "temperature": average_temperature,
        "temperatures": temperature,
    }
    return loss, statistics


def _is_per_class(temperature, num_classes):
    shape = temperature.shape
    return len(shape) == 2 and shape[0] == 1 and shape[1] == num_classes and num_classes != 1


def column_log_probabilities(logits, temperature, temperature_levels=None):
    """`log softmax(z / T)` of `(N, C)` rows, for CSKD's columns. For
    per-class temperatures `(1, C)`, column `c` is that of
    `log softmax(z / T_c)`, a softmax over all classes at class `c`'s
    temperature (one temperature inside one softmax keeps the ranking of
    the classes; dividing each class's logit by its own temperature before
    one softmax would not).

    With `temperature_levels` (the values the temperatures take), one
    log-sum-exp per level; otherwise one per class (`N * C^2` memory)."""
    logits, temperature = as_float32(logits), as_float32(temperature)
    if not _is_per_class(temperature, logits.shape[-1]):
        return log_softmax(logits / temperature)
    temperature = ops.reshape(temperature, (-1,))
    if temperature_levels is None:
        # (N, C, C): row i at class c's temperature.
        lse = ops.logsumexp(
            ops.expand_dims(logits, 1) / ops.reshape(temperature, (1, -1, 1)), axis=-1
        )
        return logits / temperature - lse
    levels = ops.convert_to_tensor([float(v) for v in temperature_levels], "float32")
    index = ops.argmin(ops.abs(ops.expand_dims(temperature, 1) - levels), axis=1)
    chosen = one_hot(index, len(temperature_levels))  # (C, K)
    snapped = ops.sum(chosen * levels, axis=1)  # (C,): exactly a level
    per_level = ops.stack(
        [ops.logsumexp(logits / float(v), axis=-1) for v in temperature_levels], axis=1
    )  # (N, K)
    lse = ops.matmul(per_level, ops.transpose(chosen))  # (N, C)
    return logits / snapped - lse


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
    temperatures = as_float32(temperatures)
    if len(temperatures.shape) == 2 and temperatures.shape[0] == 1:
        return ops.reshape(temperatures, (num_classes,))
    if len(temperatures.shape) == 2:
        teacher_logits = mask_logits(teacher_logits, mask)
        keep = None
        if mask is not None:
            keep = ops.cast(to_positions(keep_of(mask), teacher_logits), "float32")
        teacher_logits = flatten_positions(teacher_logits)
        assigned = one_hot(ops.argmax(teacher_logits, axis=-1), num_classes)
        if keep is not None:
            assigned = assigned * ops.expand_dims(keep, axis=-1)
        counts = ops.sum(assigned, axis=0)
        per_class = ops.sum(assigned * temperatures, axis=0) / ops.maximum(counts, 1.0)
        return ops.where(counts > 0, per_class, mean_temperature(temperatures, keep))
    return ops.ones((num_classes,), "float32") * temperatures


def cswt_temperatures(
    teacher_logits,
    student_logits,
    low=2.0,
    high=6.0,
    granularity="sample",
    epsilon=1e-6,
    mask=None,
    levels=9,
):
    """Cosine-similarity weighted temperatures (CSWT), without gradient.

    The similarities are taken at temperature 1.

    - `granularity="sample"` (the authors' CSWT): the cosine `sim_i` of
      each row of `softmax(s)` and `softmax(t)`, mapped linearly from the
      batch's range `[m, M]` onto `[low, high]`:
      `T_i = low + (M - sim_i) / (M - m) * (high - low)`, the best-agreeing
      sample gets `low`, the worst `high`. Where `M - m <= epsilon` (a
      batch of one, identical agreement everywhere) every temperature is
      the midpoint `(low + high) / 2` instead of the authors' division by
      zero. Returns `(B, 1)`.
    - `granularity="class"` (a keras-cskd extension, experimental): the
      cosine `cos_c` of each class's columns across the batch, mapped
      without stretching, `T_c = low + (1 - cos_c) * (high - low)` (a
      perfectly matched class gets `low`, an orthogonal one `high`; small
      differences stay small), rounded to the nearest of `levels` evenly
      spaced values in `[low, high]` (`cswt_levels`). Returns `(1, C)`,
      for `cosine_similarity_distillation`, which takes class `c`'s column
      from a softmax at `T_c` (the classes' ranking is never changed).

    Logits `(B, ..., C)` are flattened to `N` position rows first
    (per-sample temperatures `(N, 1)`); masked positions take no part in
    the similarities, the min or the max, and get the midpoint.

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
    t, s, _, keep = flat_positions(
        ops.stop_gradient(as_float32(teacher_logits)),
        ops.stop_gradient(as_float32(student_logits)),
        mask=mask,
    )
    log_p_t = log_softmax(t)
    log_p_s = log_softmax(s)
    if granularity == "sample":
        similarity, _ = cosine_and_distance(
            unit_vectors_from_logs(log_p_t, 1), unit_vectors_from_logs(log_p_s, 1), 1
        )
        temperatures = min_max_temperatures(similarity, low, high, epsilon, keep)
        return ops.stop_gradient(ops.reshape(temperatures, (-1, 1)))
    if granularity == "class":
        log_w = log_weights(keep)
        similarity, _ = cosine_and_distance(
            unit_vectors_from_logs(log_p_t, 0, log_w), unit_vectors_from_logs(log_p_s, 0, log_w), 0
        )
        similarity = ops.clip(similarity, 0.0, 1.0)
        temperatures = snap_to_levels(low + (1.0 - similarity) * (high - low), low, high, levels)
        return ops.stop_gradient(ops.reshape(temperatures, (1, -1)))
    raise ValueError(f"granularity must be 'sample' or 'class', got {granularity!r}.")


def cswt_levels(low, high, levels):
    """The `levels` evenly spaced temperatures of `[low, high]` that
    per-class CSWT rounds to (one value when `low == high`).

    Example:

    >>> from keras_cskd import ops as kd_ops
    >>> kd_ops.cswt_levels(2.0, 6.0, 5)
    (2.0, 3.0, 4.0, 5.0, 6.0)
    """
    if levels < 2 or low == high:
        return (float(low),) if low == high else ((low + high) / 2.0,)
    step = (high - low) / (levels - 1)
    return tuple(float(low + k * step) for k in range(levels))


def snap_to_levels(temperatures, low, high, levels):
    """`temperatures` rounded to the nearest of `cswt_levels(low, high,
    levels)` (`low`, `high` may be tensors)."""
    step = (high - low) / (levels - 1)
    safe_step = ops.where(step > 0, step, ops.ones_like(step))
    index = ops.clip(ops.round((temperatures - low) / safe_step), 0, levels - 1)
    return low + index * step


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
    similarity = as_float32(similarity)
    if keep is None:
        smallest = ops.min(similarity)
        largest = ops.max(similarity)
    else:
        kept = keep_of(keep)
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
