"""Input checks shared by the losses, the CSWT layer, the Distiller and the
command line.

Shape checks are static (they run at trace time, at no cost per step);
value checks (NaN/inf, probabilities passed as logits) run only on concrete
tensors, i.e. in eager calls, never inside a compiled training step. The
checks of the models given to a `Distiller` and of the arrays given to its
`fit` follow; last, the checks of each batch of a dataset, generator or
`PyDataset`, run as the batch is read (on the host, outside the step).
"""

import types

import keras
import numpy as np
from keras import ops

from keras_cskd import _backend
from keras_cskd._backend import is_concrete


def check_positive(name, value):
    """Raises unless `value` is a positive number.

    Example:

    >>> from keras_cskd.validation import check_positive
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

    >>> from keras_cskd.validation import check_temperature_range
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
    >>> from keras_cskd.validation import check_logits
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
    >>> from keras_cskd.validation import check_values
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
            "[0, 1] and sums to 1), but logits are expected. Remove the "
            "final softmax (e.g. `Dense(n, activation=None)`), or rebuild "
            "the model up to the layer before it."
        )


def looks_like_probabilities(values):
    """True when every row of a (batch, classes) array lies in [0, 1] and
    sums to 1 (to 1e-3).

    Example:

    >>> from keras_cskd.validation import looks_like_probabilities
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


# --------------------------------------------------------------------------
# Checks of the arrays given to `Distiller.fit`: run once per `fit`, on the
# host, before any weight is updated (datasets and generators are not read
# ahead; their batches get the static checks above at trace time).


def check_single_output(outputs, role, owner):
    """Raises unless a model returned one tensor (not a list/tuple/dict).

    Example:

    >>> import numpy as np
    >>> from keras_cskd.validation import check_single_output
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


def check_finite_array(values, what, owner, chunk_size=4096):
    """Raises on NaN/inf in a float NumPy array (scanned in chunks of
    samples, so no full-size temporary is made).

    Example:

    >>> import numpy as np
    >>> from keras_cskd.validation import check_finite_array
    >>> x = np.ones((5, 2), "float32")
    >>> check_finite_array(x, "x", "Distiller.fit")
    >>> x[3, 1] = np.nan
    >>> check_finite_array(x, "x", "Distiller.fit")
    Traceback (most recent call last):
    ...
    ValueError: Distiller.fit: x contains NaN or inf (first in sample 3). ...
    """
    if not np.issubdtype(values.dtype, np.floating):
        return
    for start in range(0, len(values), chunk_size):
        block = values[start : start + chunk_size]
        finite = np.isfinite(block.reshape(len(block), -1)).all(axis=1)
        if not finite.all():
            first = start + int(np.argmin(finite))
            raise ValueError(
                f"{owner}: {what} contains NaN or inf (first in sample "
                f"{first}). Training on it would turn the student's weights "
                "into NaN. Drop or impute those samples (e.g. "
                "np.nan_to_num, or x[np.isfinite(x).all(axis=...)]) first."
            )


def check_class_labels(labels, num_classes, owner, what="y", position_axes=0):
    """Raises unless `labels` are class indices in `[0, num_classes)` of
    shape `(n,)`/`(n, 1)`, or one-hot/soft labels of shape `(n, C)`; for a
    model with `position_axes` position axes (`(n, ..., C)` logits), of
    shape `(n, ...)`/`(n, ..., 1)` or `(n, ..., C)`.

    Example:

    >>> import numpy as np
    >>> from keras_cskd.validation import check_class_labels
    >>> check_class_labels(np.array([0, 2, 1]), 3, "Distiller.fit")
    >>> check_class_labels(np.array([1, 2, 3]), 3, "Distiller.fit")
    Traceback (most recent call last):
    ...
    ValueError: Distiller.fit: the labels `y` must be class indices in [0, 3) (the student
    predicts 3 classes), but 1 label(s) lie outside (min 1, max 3). ...
    """
    labels = np.asarray(labels)
    if position_axes:
        if labels.ndim == 2 + position_axes and labels.shape[-1] == 1:
            labels = labels[..., 0]
        if labels.ndim == 1 + position_axes:  # class ids, one per position
            labels = labels.reshape(-1)
        elif labels.ndim == 2 + position_axes:
            labels = labels.reshape(-1, labels.shape[-1])
        else:
            raise ValueError(
                f"{owner}: the labels `{what}` have shape {labels.shape}, but the "
                f"student predicts {position_axes} position ax(es) per sample: pass "
                f"class indices of shape (n, ...) (one per position) or one-hot "
                f"labels of shape (n, ..., {num_classes})."
            )
    if labels.ndim == 2 and labels.shape[1] != 1:
        if labels.shape[1] != num_classes:
            raise ValueError(
                f"{owner}: the labels `{what}` have shape {labels.shape}, i.e. "
                f"{labels.shape[1]} columns, but the student predicts "
                f"{num_classes} classes. Pass class indices of shape (n,) or "
                f"one-hot labels of shape (n, {num_classes})."
            )
        check_finite_array(labels, f"the labels `{what}`", owner)
        return
    if labels.ndim not in (1, 2):
        raise ValueError(
            f"{owner}: the labels `{what}` have shape {labels.shape}; expected "
            f"class indices of shape (n,) or one-hot labels of shape (n, {num_classes})."
        )
    if labels.size == 0:
        return
    if not (np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)):
        raise ValueError(
            f"{owner}: the labels `{what}` have dtype {labels.dtype}; expected "
            "integer class indices (map names to indices first, e.g. "
            "np.unique(y, return_inverse=True)[1])."
        )
    if np.issubdtype(labels.dtype, np.floating):
        check_finite_array(labels, f"the labels `{what}`", owner)
        if not np.all(labels == np.round(labels)):
            raise ValueError(
                f"{owner}: the labels `{what}` of shape {labels.shape} hold "
                "non-integer values; class indices must be whole numbers. For "
                f"soft labels pass an array of shape (n, {num_classes})."
            )
    low, high = labels.min(), labels.max()
    if low < 0 or high >= num_classes:
        outside = int(np.count_nonzero((labels < 0) | (labels >= num_classes)))
        raise ValueError(
            f"{owner}: the labels `{what}` must be class indices in "
            f"[0, {num_classes}) (the student predicts {num_classes} classes), "
            f"but {outside} label(s) lie outside (min {low}, max {high}). "
            "Remap the labels to 0..C-1 (e.g. np.unique(y, return_inverse=True)[1]) "
            "or give teacher and student one output per class."
        )


def check_sample_weight(weights, owner, what="sample_weight"):
    """Raises unless `weights` are finite, non-negative numbers: one NaN
    weight makes the loss, and then the student's weights, NaN.

    Example:

    >>> import numpy as np
    >>> from keras_cskd.validation import check_sample_weight
    >>> check_sample_weight(np.array([1.0, 0.5, 0.0]), "Distiller.fit")
    >>> check_sample_weight(np.array([1.0, -2.0, 1.0]), "Distiller.fit")
    Traceback (most recent call last):
    ...
    ValueError: Distiller.fit: `sample_weight` holds 1 negative weight(s) (first in sample 1,
    -2.0). A negative weight trains the student away from its labels: use weights >= 0 ...
    """
    weights = np.asarray(weights)
    if not (np.issubdtype(weights.dtype, np.integer) or np.issubdtype(weights.dtype, np.floating)):
        raise ValueError(
            f"{owner}: `{what}` has dtype {weights.dtype}; expected one number per "
            "sample (e.g. np.ones(len(y), 'float32'))."
        )
    check_finite_array(weights, f"`{what}`", owner)
    negative = np.flatnonzero(weights.reshape(len(weights), -1).min(axis=1) < 0)
    if len(negative):
        first = int(negative[0])
        raise ValueError(
            f"{owner}: `{what}` holds {len(negative)} negative weight(s) (first in "
            f"sample {first}, {weights.reshape(len(weights), -1)[first].min()}). A "
            "negative weight trains the student away from its labels: use weights >= 0 "
            "(0 leaves a sample out)."
        )


def check_trainable_student(student, owner):
    """Raises when the student has no trainable weights (e.g. it was the
    teacher of an earlier `Distiller`, which froze it): `fit` would train
    nothing.

    Example:

    >>> import keras
    >>> from keras_cskd.validation import check_trainable_student
    >>> student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> check_trainable_student(student, "Distiller.fit")
    >>> student.trainable = False
    >>> check_trainable_student(student, "Distiller.fit")
    Traceback (most recent call last):
    ...
    ValueError: Distiller.fit: the student has no trainable weights (student.trainable is
    False), so training would change nothing. ...
    """
    if not student.built or student.trainable_weights or not student.weights:
        return
    raise ValueError(
        f"{owner}: the student has no trainable weights (student.trainable is "
        f"{student.trainable}), so training would change nothing. A Distiller freezes "
        "its teacher: if this model was the teacher of another Distiller (a "
        "teacher-assistant chain), set `student.trainable = True` and compile this "
        "Distiller again before fit."
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
    >>> from keras_cskd.validation import check_hard_labels
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


def check_batch_split(num_samples, batch_size, owner, loss_names, validation_split=0.0):
    """Raises when batch-wise losses would meet a batch of one sample: a
    batch size of 1, or `num_samples` leaving a last batch of 1.

    Example:

    >>> from keras_cskd.validation import check_batch_split
    >>> check_batch_split(128, 32, "Distiller.fit", ["CosineSimilarityDistillation"])
    >>> check_batch_split(129, 32, "Distiller.fit", ["CosineSimilarityDistillation"])
    Traceback (most recent call last):
    ...
    ValueError: Distiller.fit: CosineSimilarityDistillation compare(s) each class across the
    batch and need(s) at least 2 samples per batch, but 129 training samples in batches of 32
    leave a last batch of one sample. Use e.g. batch_size=33, or drop one training sample.
    """
    if validation_split:
        num_samples = int(np.floor(num_samples * (1.0 - validation_split)))
    if num_samples == 1:
        raise ValueError(
            f"{owner}: {', '.join(loss_names)} compare(s) each class across the "
            "batch and need(s) at least 2 training samples; got 1."
        )
    if batch_size == 1:
        problem = "batch_size=1 gives batches of one sample"
    elif num_samples > 1 and num_samples % batch_size == 1:
        problem = (
            f"{num_samples} training samples in batches of {batch_size} "
            "leave a last batch of one sample"
        )
    else:
        return
    suggestion = next(
        size for size in range(max(batch_size, 2), num_samples + 2) if num_samples % size != 1
    )
    raise ValueError(
        f"{owner}: {', '.join(loss_names)} compare(s) each class across the "
        f"batch and need(s) at least 2 samples per batch, but {problem}. "
        f"Use e.g. batch_size={suggestion}, or drop one training sample."
    )


# --------------------------------------------------------------------------
# The models given to a `Distiller`, and the arguments of its `fit`.


def has_softmax_head(model):
    """True when the model's last layer is a softmax (a `Softmax` layer or a
    layer with `activation="softmax"`): it outputs probabilities.

    Example:

    >>> import keras
    >>> from keras_cskd.validation import has_softmax_head
    >>> has_softmax_head(keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, "softmax")]))
    True
    """
    layers = getattr(model, "layers", None)
    if not layers:
        return False
    last = layers[-1]
    if isinstance(last, keras.layers.Softmax):
        return True
    activation = getattr(last, "activation", None)
    return (
        activation is keras.activations.softmax or getattr(activation, "__name__", "") == "softmax"
    )


def check_no_softmax_head(model, role):
    """Raises when `model` (the `role`: "teacher" or "student") ends with a
    softmax; distillation needs logits. The one place of this check."""
    if model is not None and has_softmax_head(model):
        raise ValueError(
            f"The {role} ends with a softmax, so it outputs "
            "probabilities; distillation needs logits. Rebuild it "
            "without the final activation (e.g. Dense(n)) or cut the "
            f"softmax: keras.Model({role}.inputs, {role}.layers[-2].output) "
            "if the softmax is a separate layer."
        )


def output_classes(model, role):
    """The class count of a model with one `(batch, classes)` (or
    per-position `(batch, ..., classes)`) output; None when unknown (a
    subclassed model not yet called). Raises for several outputs or rank 1."""
    outputs = getattr(model, "outputs", None)
    if not outputs:
        return None
    if len(outputs) != 1:
        raise ValueError(
            f"The {role} has {len(outputs)} outputs; Distiller distils one "
            f"logits tensor. Build a model that returns only the {role}'s "
            f"class logits, e.g. keras.Model({role}.inputs, {role}.outputs[0])."
        )
    shape = outputs[0].shape
    if len(shape) < 2:
        raise ValueError(
            f"The {role} outputs shape {tuple(shape)}; Distiller expects "
            "logits of shape (batch, classes), or (batch, ..., classes) with "
            "one row of logits per position."
        )
    return shape[-1]


def output_rank(model):
    """The rank of a model's one output (2 for `(batch, classes)`), or None
    when unknown (a subclassed model not yet called)."""
    outputs = getattr(model, "outputs", None)
    if not outputs or len(outputs) != 1:
        return None
    return len(outputs[0].shape)


def check_models(student, teacher):
    """The checks of `Distiller(student, teacher)`: Keras models, not the
    same one, no shared weights, logits (no softmax head), one output each
    with the same class count."""
    if not isinstance(student, keras.Model):
        raise ValueError(f"student must be a keras.Model, got {type(student).__name__}.")
    if teacher is not None and not isinstance(teacher, keras.Model):
        raise ValueError(
            f"teacher must be a keras.Model (or None with cached teacher "
            f"logits), got {type(teacher).__name__}."
        )
    if teacher is student:
        raise ValueError(
            "The teacher and the student are the same model. Distil into "
            "a fresh student, e.g. keras.models.clone_model(teacher)."
        )
    for role, model in (("student", student), ("teacher", teacher)):
        check_no_softmax_head(model, role)
    if teacher is None:
        return
    student_weights = {id(w) for w in student.weights}
    shared = [w.path for w in teacher.weights if id(w) in student_weights]
    if shared:
        raise ValueError(
            f"The teacher and the student share {len(shared)} weight(s) "
            f"(e.g. {shared[0]}): training the student would change the "
            "teacher. Build the student from fresh layers."
        )
    t_classes = output_classes(teacher, "teacher")
    s_classes = output_classes(student, "student")
    if t_classes is not None and s_classes is not None and t_classes != s_classes:
        raise ValueError(
            f"The teacher predicts {t_classes} classes but the student "
            f"{s_classes}. Give the student a {t_classes}-unit output layer."
        )
    t_rank, s_rank = output_rank(teacher), output_rank(student)
    if t_rank is not None and s_rank is not None and t_rank != s_rank:
        raise ValueError(
            f"The teacher outputs shape {tuple(teacher.outputs[0].shape)} but the "
            f"student {tuple(student.outputs[0].shape)}: both must predict one row "
            "of logits per sample (batch, classes), or per position "
            "(batch, ..., classes) with the same position axes."
        )


def _named_leaves(structure, prefix):
    """`(name, leaf)` pairs of a nested input, e.g. `("x['image']", array)`."""
    if isinstance(structure, dict):
        for key, value in structure.items():
            yield from _named_leaves(value, f"{prefix}[{key!r}]")
    elif isinstance(structure, (list, tuple)):
        for index, value in enumerate(structure):
            yield from _named_leaves(value, f"{prefix}[{index}]")
    else:
        yield prefix, structure


def _check_empty_pydataset(dataset, owner):
    try:
        empty = dataset.num_batches == 0
    except NotImplementedError:
        empty = False
    if empty:
        raise ValueError(
            f"{owner} received an empty data set (the PyDataset has 0 "
            "batches). Check its __len__/num_batches and the data it reads."
        )


def check_fit_arguments(distiller, arguments):
    """The checks of `Distiller.fit` on NumPy arrays (`arguments` are
    `keras.Model.fit`'s, by name), before any weight is updated: not empty,
    no NaN/inf, labels that are class indices (hard ones for DKD), no batch
    of one sample for batch-wise losses, and one eager forward pass on a
    few samples (outputs that are probabilities, NaN or several tensors).
    Datasets and generators are not read ahead."""
    owner = "Distiller.fit"
    x, y = arguments.get("x"), arguments.get("y")
    check_trainable_student(distiller.student, owner)
    if isinstance(x, keras.utils.PyDataset):
        _check_empty_pydataset(x, owner)
        return
    leaves = keras.tree.flatten(x) if x is not None else []
    if not leaves or not all(isinstance(leaf, np.ndarray) for leaf in leaves):
        return  # a dataset, generator or backend tensors: not read ahead
    num_samples = len(leaves[0])
    if num_samples == 0:
        raise ValueError(
            f"{owner} received an empty data set (x has 0 samples). "
            "Check the data loading or filtering step that produced it."
        )
    inputs, cached = distiller.split_inputs(x)
    for path, leaf in _named_leaves(inputs, "x"):
        check_finite_array(leaf, path, owner)
    if isinstance(arguments.get("sample_weight"), np.ndarray):
        check_sample_weight(arguments["sample_weight"], owner)
    if cached is not None:
        check_values(np.asarray(cached, "float32"), "cached teacher logits", owner)
    labels_are_classes = distiller.labels_are_classes()
    num_classes = distiller.num_classes
    position_axes = max((output_rank(distiller.student) or 2) - 2, 0)
    if y is not None and num_classes is not None and labels_are_classes:
        check_class_labels(y, num_classes, owner, position_axes=position_axes)
        validation_data = arguments.get("validation_data")
        if isinstance(validation_data, (tuple, list)) and len(validation_data) > 1:
            if isinstance(validation_data[1], np.ndarray):
                check_class_labels(
                    validation_data[1],
                    num_classes,
                    owner,
                    "validation_data[1]",
                    position_axes=position_axes,
                )
    losses = [loss for loss, _ in distiller.distillation_losses]
    for loss in losses:
        if loss.requires_labels and isinstance(y, np.ndarray):
            check_hard_labels(y, type(loss).__name__, "labels `y`", logits_rank=2 + position_axes)
    batchwise = [type(loss).__name__ for loss in losses if loss.batchwise]
    if batchwise and arguments.get("steps_per_epoch") is None and not position_axes:
        check_batch_split(
            num_samples,
            arguments.get("batch_size") or 32,
            owner,
            batchwise,
            arguments.get("validation_split") or 0.0,
        )
    # One eager forward pass on a few samples: catches outputs that are
    # probabilities, NaN or several tensors, which the static checks of
    # a compiled step cannot see (a softmax applied in call(), a teacher
    # that diverged).
    probe = keras.tree.map_structure(lambda leaf: leaf[:8], inputs)
    student_logits = distiller.student(probe, training=False)
    check_single_output(student_logits, "student", owner)
    if cached is not None:
        teacher_logits = ops.convert_to_tensor(np.asarray(cached[:8], "float32"))
    elif distiller.teacher is not None:
        teacher_logits = distiller.teacher(probe, training=False)
        check_single_output(teacher_logits, "teacher", owner)
    else:
        return
    check_logits(teacher_logits, student_logits, owner, mask=_backend.keras_mask(student_logits))
    if y is not None and num_classes is None and labels_are_classes:
        # A subclassed student: its class count is known only now.
        check_class_labels(
            y,
            int(student_logits.shape[-1]),
            owner,
            position_axes=len(student_logits.shape) - 2,
        )


# --------------------------------------------------------------------------
# Datasets, generators and `PyDataset`s are not read ahead: their labels and
# sample weights get the checks above batch by batch, as each batch leaves
# the pipeline, before the training step that would use it (a min/max over a
# batch's labels on the host; nothing is added to the compiled step).


class BatchChecks:
    """Checks the labels (class indices in `[0, num_classes)`, whole numbers,
    or one-hot rows of width `num_classes`; hard ones for the losses named
    in `hard_labels_for`) and sample weights (finite, non-negative) of each
    batch `(x, y)` / `(x, y, sample_weight)` it is called with; returns the
    batch. `message` keeps the last error, so that `Distiller.fit` can
    report it as it was raised when a pipeline (tf.data) wraps it.

    Example:

    >>> import numpy as np
    >>> from keras_cskd.validation import BatchChecks
    >>> checks = BatchChecks(num_classes=3)
    >>> x = np.zeros((4, 2), "float32")
    >>> _ = checks((x, np.array([0, 1, 2, 0])))
    >>> checks((x, np.array([0, 1, 2, 3])))
    Traceback (most recent call last):
    ...
    ValueError: Distiller.fit (batch 1 of the data): the labels `y` must be class indices in
    [0, 3) (the student predicts 3 classes), but 1 label(s) lie outside (min 0, max 3). ...
    """

    def __init__(self, num_classes, hard_labels_for=(), owner="Distiller.fit", position_axes=0):
        self.num_classes = num_classes
        self.hard_labels_for = tuple(hard_labels_for)
        self.owner = owner
        self.position_axes = position_axes  # of per-position logits (batch, ..., classes)
        self.batches_read = 0
        self.message = None

    @classmethod
    def of(cls, distiller):
        """The checks of the batches given to `distiller.fit`: labels only
        when they are class labels (see `Distiller.labels_are_classes`)."""
        return cls(
            distiller.num_classes if distiller.labels_are_classes() else None,
            [type(l).__name__ for l, _ in distiller.distillation_losses if l.requires_labels],
            position_axes=max((output_rank(distiller.student) or 2) - 2, 0),
        )

    def __call__(self, batch, index=None):
        index = self.batches_read if index is None else index
        self.batches_read += 1
        if not isinstance(batch, tuple):
            return batch
        _, y, sample_weight = keras.utils.unpack_x_y_sample_weight(batch)
        owner = f"{self.owner} (batch {index} of the data)"
        try:
            if y is not None and self.num_classes is not None and not keras.tree.is_nested(y):
                labels = _on_host(y)
                check_class_labels(
                    labels, self.num_classes, owner, position_axes=self.position_axes
                )
                for name in self.hard_labels_for:
                    check_hard_labels(
                        labels,
                        f"{owner}: {name}",
                        "labels `y`",
                        logits_rank=2 + self.position_axes,
                    )
            if sample_weight is not None and not keras.tree.is_nested(sample_weight):
                check_sample_weight(_on_host(sample_weight), owner)
        except ValueError as error:
            self.message = str(error)
            raise
        return batch


def _on_host(value):
    return value if isinstance(value, np.ndarray) else np.asarray(ops.convert_to_numpy(value))


class _CheckedPyDataset(keras.utils.PyDataset):
    """A `PyDataset` whose batches pass through `checks` as they are read."""

    def __init__(self, dataset, checks):
        super().__init__(
            workers=dataset.workers,
            use_multiprocessing=dataset.use_multiprocessing,
            max_queue_size=dataset.max_queue_size,
        )
        self.dataset, self.checks = dataset, checks

    @property
    def num_batches(self):
        return self.dataset.num_batches

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return self.checks(self.dataset[index], index)

    def on_epoch_begin(self):
        self.dataset.on_epoch_begin()

    def on_epoch_end(self):
        self.dataset.on_epoch_end()


def check_each_batch(data, checks):
    """`data` (a `PyDataset`, a Python generator or a `tf.data.Dataset`)
    wrapped so that `checks` sees each batch as it is read; other data
    (arrays, checked ahead; a torch `DataLoader`) is returned unchanged.

    Example:

    >>> import itertools
    >>> import numpy as np
    >>> from keras_cskd.validation import BatchChecks, check_each_batch
    >>> batches = ((np.zeros((2, 4)), np.array([0, k])) for k in (1, 2, 5))
    >>> checked = check_each_batch(batches, BatchChecks(num_classes=3))
    >>> [int(y.max()) for _, y in itertools.islice(checked, 2)]
    [1, 2]
    >>> next(checked)
    Traceback (most recent call last):
    ...
    ValueError: Distiller.fit (batch 2 of the data): the labels `y` must be class indices ...
    """
    if isinstance(data, keras.utils.PyDataset):
        return _CheckedPyDataset(data, checks)
    if isinstance(data, types.GeneratorType):
        return (checks(batch) for batch in data)
    if _backend.is_tf_dataset(data):
        return _backend.check_tf_dataset_batches(data, checks)
    return data
