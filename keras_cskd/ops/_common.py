"""Shared tensor helpers of `keras_cskd.ops`: float32 upcasting, positions
and masks, log-softmax and one-hot encodings. Private to the package."""

from keras import ops

# Floor under squared norms before a square root: keeps gradients finite for
# all-zero vectors (`sqrt` has an infinite derivative at 0).
TINY = 1e-30

# Stands for a removed logit: finite, so that `0 * (masked - masked)` stays 0
# in values and gradients, and far below any real logit.
MASKED = -1e9


def as_float32(x):
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
    logits = as_float32(logits)
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


def keep_of(mask):
    """A mask (bool, or numbers where > 0 means kept) as booleans."""
    mask = ops.convert_to_tensor(mask)
    if mask.dtype == "bool":
        return mask
    return ops.cast(mask, "float32") > 0.0


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
    logits = as_float32(logits)
    if mask is None:
        return logits
    keep = ops.expand_dims(keep_of(mask), axis=-1)
    return ops.where(keep, logits, ops.zeros_like(logits))


def mask_weights(mask):
    """A mask as per-position weights in float32: a boolean mask as 0/1, a
    numeric one as it is (0 drops a position, a positive value keeps it
    with that weight)."""
    mask = ops.convert_to_tensor(mask)
    return ops.cast(mask, "float32")


def flat_positions(teacher_logits, student_logits, sample_weight=None, mask=None):
    """`(t, s, weight, keep)` for the batch-wise functions: the logits as
    `(N, C)` rows with masked rows zeroed, the sample weights over the
    positions times the mask's values (`None` when there are neither), and
    the mask as `(N,)` 0/1 floats (`None` without a mask)."""
    t = mask_logits(teacher_logits, mask)
    s = mask_logits(student_logits, mask)
    weight = None if sample_weight is None else as_float32(to_positions(sample_weight, t))
    keep = None
    if mask is not None:
        keep = ops.cast(to_positions(keep_of(mask), t), "float32")
        values = ops.where(keep > 0, to_positions(mask_weights(mask), t), 0.0)
        weight = values if weight is None else weight * values
    return flatten_positions(t), flatten_positions(s), weight, keep


def gate_batchwise(loss, weight, rows):
    """A batch-wise loss (CSKD, DIST: it compares positions with each
    other) where fewer than two positions are kept: 0, with a zero
    gradient, instead of a degenerate value. `weight` holds the positions'
    weights (`None`: each of the `rows` positions, `(N, C)` rows, counts)."""
    if weight is None:
        kept = ops.cast(ops.shape(rows)[0], "float32")
    else:
        kept = ops.sum(ops.cast(weight > 0, "float32"))
    return ops.where(kept >= 2.0, loss, ops.zeros_like(loss))


def log_softmax(logits):
    """`log softmax(logits)` over the last axis as `logits - logsumexp`.

    At large `C` the losses are bound by passes over `(B, C)` arrays.
    `ops.softmax` writes `exp(z - max)` and then its quotient by the row
    sums, two arrays; `exp(z - logsumexp(z))` is one element-wise
    expression after the two reductions, which XLA fuses with its consumer
    (`benchmarks/loss_passes.py`)."""
    return logits - ops.logsumexp(logits, axis=-1, keepdims=True)


def softened_probabilities(logits, temperature=1.0):
    """Softmax over classes of `logits / temperature`, computed in float32.

    `temperature` is a Python number or a tensor that broadcasts against
    `logits`: shape `(B, 1)` gives one temperature per sample. (One
    temperature per class inside one softmax would re-rank the classes;
    CSKD's per-class temperatures act on its columns instead, see
    `cosine_similarity_distillation`.)

    Example:

    >>> import numpy as np
    >>> from keras_cskd import ops as kd_ops
    >>> logits = np.array([[2.0, 0.0], [2.0, 0.0]], "float32")
    >>> p = kd_ops.softened_probabilities(logits, np.array([[1.0], [4.0]], "float32"))
    >>> np.round(np.asarray(p, "float64"), 4).tolist()  # one temperature per sample
    [[0.8808, 0.1192], [0.6225, 0.3775]]
    """
    return ops.exp(log_softmax(as_float32(logits) / as_float32(temperature)))


def mean_temperature(temperature, keep=None):
    """The mean of the temperatures; per-position ones `(N, 1)` over the
    kept positions only."""
    if keep is None or len(temperature.shape) != 2 or temperature.shape[1] != 1:
        return ops.mean(temperature)
    return ops.sum(ops.reshape(temperature, (-1,)) * keep) / ops.maximum(ops.sum(keep), 1.0)


def one_hot(indices, num_classes):
    """`ops.one_hot(indices, num_classes)` in float32 as a comparison with
    `arange`: PyTorch's `one_hot` checks the index range on the host (two
    device syncs per call on a GPU); this needs none. Indices outside
    `[0, num_classes)` give a row of zeros."""
    indices = ops.expand_dims(ops.cast(indices, "int32"), -1)
    return ops.cast(ops.equal(indices, ops.arange(num_classes, dtype="int32")), "float32")


def target_mask(labels, logits):
    """One-hot targets of the shape of `logits` `(..., C)`, from class ids
    (the leading shape, optionally with a trailing 1) or one-hot labels."""
    labels = ops.convert_to_tensor(labels)
    num_classes = logits.shape[-1]
    rank = len(logits.shape)
    if len(labels.shape) == rank and labels.shape[-1] == num_classes and num_classes != 1:
        return as_float32(labels)
    if rank == 2:
        labels = ops.reshape(labels, (-1,))
    elif len(labels.shape) == rank:
        labels = ops.squeeze(labels, axis=-1)
    return one_hot(labels, num_classes)
