"""Checks of the tensors a loss receives, shared by every loss, the CSWT
layer and the Distiller.

Shape checks are static (they run at trace time, at no cost per step);
value checks (NaN/inf, probabilities passed as logits, soft labels where
hard ones are needed) run only on concrete tensors, i.e. in eager calls,
never inside a compiled training step.
"""

import numpy as np
from keras import ops

from keras_cskd._backend import is_concrete


def check_positive(name, value):
    """Raises unless `value` is a positive number.

    Example:

    >>> from keras_cskd.checks.tensors import check_positive
    >>> check_positive("temperature", 4.0)  # fine: returns None
    >>> check_positive("temperature", 0)
    Traceback (most recent call last):
    ...
    ValueError: `temperature` must be a positive, finite number, got 0. Temperatures divide
    the logits: use e.g. 4.0.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"`{name}` must be a positive number, got {value!r}.")
    if not np.isfinite(value) or value <= 0:
        raise ValueError(
            f"`{name}` must be a positive, finite number, got {value!r}. "
            "Temperatures divide the logits: use e.g. 4.0."
        )


def check_temperature_range(low, high):
    """Raises unless `0 < low <= high`.

    Example:

    >>> from keras_cskd.checks.tensors import check_temperature_range
    >>> check_temperature_range(2.0, 6.0)
    >>> check_temperature_range(6.0, 2.0)
    Traceback (most recent call last):
    ...
    ValueError: CSWT needs `low <= high`, got low=6.0 > high=2.0. Swap them: ...
    """
    check_positive("low", low)
    check_positive("high", high)
    if low > high:
        raise ValueError(
            f"CSWT needs `low <= high`, got low={low} > high={high}. "
            "Swap them: `low` is the temperature of the best-agreeing "
            "samples, `high` of the worst."
        )


def check_logits(teacher_logits, student_logits, owner, min_batch_size=1, values=True, mask=None):
    """Checks a (teacher, student) logits pair before a loss sees it.

    Static: both `(batch, classes)` or both `(batch, ..., classes)` with the
    same leading (position) axes, same class count, at least
    `min_batch_size` positions (2 for batch-wise losses), and a `mask` of
    the leading shape. Eager only, and only with `values=True`: finite
    values, and that neither looks like probabilities (at the positions
    the mask keeps: padding may hold anything).

    Example:

    >>> import numpy as np
    >>> from keras_cskd.checks.tensors import check_logits
    >>> t = np.array([[2.0, -1.0, 0.5], [0.0, 1.0, 3.0]], "float32")
    >>> check_logits(t, t, "MyLoss", min_batch_size=2)
    >>> check_logits(t, t[:, :2], "MyLoss")
    Traceback (most recent call last):
    ...
    ValueError: MyLoss: the teacher predicts 3 classes but the student 2. Give the student a
    3-unit output layer (teacher and student must share the label space).
    """
    for role, x in (("teacher", teacher_logits), ("student", student_logits)):
        if len(x.shape) < 2:
            raise ValueError(
                f"{owner} expects {role} logits of shape (batch, classes), or "
                f"(batch, ..., classes) with one row of logits per position, "
                f"got rank {len(x.shape)} with shape {tuple(x.shape)}. "
                "Give the model a last axis of one logit per class."
            )
    if len(teacher_logits.shape) != len(student_logits.shape):
        raise ValueError(
            f"{owner}: teacher logits of shape {tuple(teacher_logits.shape)} (rank "
            f"{len(teacher_logits.shape)}) but student logits of shape "
            f"{tuple(student_logits.shape)} (rank {len(student_logits.shape)}). Both "
            "must have shape (batch, classes), or (batch, ..., classes) with the "
            "same leading (position) axes: one prediction per position in both."
        )
    t_batch, *t_positions, t_classes = teacher_logits.shape
    s_batch, *s_positions, s_classes = student_logits.shape
    if t_classes is not None and s_classes is not None and t_classes != s_classes:
        raise ValueError(
            f"{owner}: the teacher predicts {t_classes} classes but the "
            f"student {s_classes}. Give the student a {t_classes}-unit "
            "output layer (teacher and student must share the label space)."
        )
    if t_batch is not None and s_batch is not None and t_batch != s_batch:
        raise ValueError(
            f"{owner}: teacher batch size {t_batch} != student batch size "
            f"{s_batch}. Both must see the same samples in the same order."
        )
    for t_size, s_size in zip(t_positions, s_positions):
        if t_size is not None and s_size is not None and t_size != s_size:
            raise ValueError(
                f"{owner}: the teacher predicts positions of shape "
                f"{tuple(teacher_logits.shape[1:-1])} per sample but the student "
                f"{tuple(student_logits.shape[1:-1])}. Both must predict the same "
                "positions (e.g. the same sequence length or image size)."
            )
    if s_classes is not None and s_classes < 2:
        raise ValueError(
            f"{owner} needs at least 2 classes, got {s_classes}. For a "
            "binary problem output 2 logits (one per class)."
        )
    positions = student_logits.shape[:-1]
    if mask is not None and len(mask.shape) and tuple(mask.shape) != tuple(positions):
        known = all(a is not None and b is not None for a, b in zip(mask.shape, positions))
        if len(mask.shape) != len(positions) or known:
            raise ValueError(
                f"{owner}: the mask has shape {tuple(mask.shape)} but the logits "
                f"{tuple(student_logits.shape)}: give one mask entry per position, "
                f"shape {tuple(positions)} (the logits' shape without the class axis)."
            )
    count = None if None in positions else int(np.prod(positions))
    if min_batch_size > 1 and len(positions) > 1 and count is not None and count < min_batch_size:
        raise ValueError(
            f"{owner} compares each class across all positions of the batch, so it "
            f"needs at least {min_batch_size} positions; got logits of shape "
            f"{tuple(student_logits.shape)}. Use a larger batch size."
        )
    one_axis = len(positions) == 1
    if min_batch_size > 1 and one_axis and s_batch is not None and s_batch < min_batch_size:
        raise ValueError(
            f"{owner} compares each class across the batch, so it needs a "
            f"batch of at least {min_batch_size} samples; got {s_batch}. "
            "Use a larger batch size, and drop a last batch of 1 sample "
            "(e.g. `dataset.batch(n, drop_remainder=True)`)."
        )
    if values:
        check_values(teacher_logits, "teacher logits", owner, mask)
        check_values(student_logits, "student logits", owner, mask)


def check_values(x, what, owner, mask=None):
    """Eager-only: raises on NaN/inf and on rows that look like
    probabilities (all in [0, 1], each summing to 1); with a `mask` (the
    leading shape of `x`), at the kept positions only.

    Example:

    >>> import numpy as np
    >>> from keras_cskd.checks.tensors import check_values
    >>> check_values(np.array([[2.0, -1.0], [0.5, 0.5]]), "teacher logits", "MyLoss")
    >>> check_values(np.array([[0.2, 0.8], [0.5, 0.5]]), "teacher logits", "MyLoss")
    Traceback (most recent call last):
    ...
    ValueError: MyLoss: teacher logits look like probabilities (every row lies in [0, 1] and
    sums to 1), but logits are expected. ...
    """
    if not is_concrete(x) or (mask is not None and not is_concrete(mask)):
        return
    values = np.asarray(ops.convert_to_numpy(x), dtype="float64")
    if mask is not None and values.ndim >= 2:
        keep = np.asarray(ops.convert_to_numpy(mask)).astype(bool)
        values = values[keep.reshape(values.shape[:-1])]
        if values.size == 0:
            return  # every position is masked: nothing to check
    if values.size == 0:
        raise ValueError(f"{owner} received empty {what} (shape {values.shape}).")
    if not np.all(np.isfinite(values)):
        bad = int(np.size(values) - np.count_nonzero(np.isfinite(values)))
        raise ValueError(
            f"{owner}: {what} contain {bad} NaN/inf value(s). Check the "
            "input data and the model (a diverged teacher, or an unscaled "
            "input) before distilling."
        )
    if looks_like_probabilities(values):
        raise ValueError(
            f"{owner}: {what} look like probabilities (every row lies in "
            "[0, 1] and sums to 1), but logits are expected. Set the last "
            "layer's activation to linear (`model.layers[-1].activation = "
            "keras.activations.linear`), or return the values before the "
            "softmax from call()."
        )


def looks_like_probabilities(values):
    """True when every row of a (batch, classes) array lies in [0, 1] and
    sums to 1 (to 1e-3).

    Example:

    >>> from keras_cskd.checks.tensors import looks_like_probabilities
    >>> looks_like_probabilities([[0.2, 0.8], [1.0, 0.0]]), looks_like_probabilities([[2.0, -1.0]])
    (True, False)
    """
    values = np.asarray(values, dtype="float64")
    if values.ndim > 2:
        values = values.reshape(-1, values.shape[-1])
    if values.ndim != 2 or values.shape[-1] < 2:
        return False
    return bool(
        np.all(values >= 0.0)
        and np.all(values <= 1.0)
        and np.allclose(values.sum(axis=-1), 1.0, atol=1e-3)
    )


def check_single_output(outputs, role, owner):
    """Raises unless a model returned one tensor (not a list/tuple/dict).

    Example:

    >>> import numpy as np
    >>> from keras_cskd.checks.tensors import check_single_output
    >>> check_single_output(np.zeros((2, 3)), "teacher", "Distiller")
    >>> check_single_output([np.zeros((2, 3)), np.zeros((2, 5))], "teacher", "Distiller")
    Traceback (most recent call last):
    ...
    ValueError: Distiller: the teacher returns 2 outputs (list); distillation needs one logits
    tensor ...
    """
    if isinstance(outputs, (list, tuple, dict)):
        raise ValueError(
            f"{owner}: the {role} returns {len(outputs)} outputs "
            f"({type(outputs).__name__}); distillation needs one logits "
            f"tensor of shape (batch, classes). Wrap the {role} so it returns "
            "only its class logits, e.g. keras.Model(model.inputs, "
            "model.outputs[0]) or a subclass whose call() returns one tensor."
        )


def check_hard_labels(labels, owner, what="labels", logits_rank=2, mask=None):
    """Eager-only: raises unless one-hot labels (`(n, C)`, or
    `(n, ..., C)` for logits of rank `logits_rank`) are exactly one-hot
    (each row one 1 and zeros; at the positions `mask` keeps). For losses
    defined on hard labels (DKD): smoothed or mixed labels would silently
    give a different loss. Integer labels `(n,)` (`(n, ...)`) pass; their
    range is `check_class_labels`' business.

    Example:

    >>> import numpy as np
    >>> from keras_cskd.checks.tensors import check_hard_labels
    >>> check_hard_labels(np.eye(3)[[0, 2]], "DecoupledKDDistillation")
    >>> check_hard_labels(np.array([[0.9, 0.05, 0.05]]), "DecoupledKDDistillation")
    Traceback (most recent call last):
    ...
    ValueError: DecoupledKDDistillation needs hard labels: integer class indices (n,) or exact
    one-hot rows (n, C), but 1 row(s) of the labels are soft (e.g. label smoothing or
    mixup). ...
    """
    if not is_concrete(labels):
        return
    values = np.asarray(ops.convert_to_numpy(labels))
    if values.ndim != logits_rank or values.shape[-1] == 1:
        return
    if mask is not None and is_concrete(mask):
        values = values[np.asarray(ops.convert_to_numpy(mask)).astype(bool)]
    values = values.reshape(-1, values.shape[-1])
    ones = values == 1
    hard = (ones | (values == 0)).all(axis=1) & (ones.sum(axis=1) == 1)
    if not hard.all():
        raise ValueError(
            f"{owner} needs hard labels: integer class indices (n,) or exact "
            f"one-hot rows (n, C), but {int(np.count_nonzero(~hard))} row(s) of "
            f"the {what} are soft (e.g. label smoothing or mixup). Pass the "
            "unsmoothed labels, e.g. np.argmax(y, axis=-1), or use another loss."
        )


def check_weights(weights, what, owner):
    """Eager-only: raises unless `weights` (a sample weight or a mask) are
    booleans or finite numbers >= 0. A mask of 0.5 keeps its position with
    weight 0.5; -1 or NaN have no meaning and would silently give a wrong
    loss.

    Example:

    >>> import numpy as np
    >>> from keras_cskd.checks.tensors import check_weights
    >>> check_weights(np.array([[1, 1, 0]]), "mask", "MyLoss")
    >>> check_weights(np.array([[1, -1, 0]]), "mask", "MyLoss")
    Traceback (most recent call last):
    ...
    ValueError: MyLoss: the mask holds 1 negative value(s) (e.g. -1). Masks and sample weights
    are booleans or numbers >= 0: 0 drops a position, a positive value weighs it ...
    """
    if not is_concrete(weights):
        return
    values = np.asarray(ops.convert_to_numpy(weights))
    if values.dtype == bool or values.size == 0:
        return
    if not (np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)):
        raise ValueError(
            f"{owner}: the {what} has dtype {values.dtype}; expected booleans or numbers >= 0."
        )
    values = values.astype("float64")
    fix = (
        "Masks and sample weights are booleans or numbers >= 0: 0 drops a position, a "
        "positive value weighs it (1 keeps it). Use e.g. `mask = token_ids != pad_id`."
    )
    if not np.all(np.isfinite(values)):
        bad = int(np.size(values) - np.count_nonzero(np.isfinite(values)))
        raise ValueError(f"{owner}: the {what} holds {bad} NaN/inf value(s). {fix}")
    negative = values < 0
    if negative.any():
        raise ValueError(
            f"{owner}: the {what} holds {int(negative.sum())} negative value(s) "
            f"(e.g. {values[negative].flat[0]:g}). {fix}"
        )
