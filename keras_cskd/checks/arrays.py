"""Checks of the arrays given to `Distiller.fit`, once per `fit`, before any
weight moves: not empty, finite, labels that are class indices, sample
weights >= 0, batches of two or more for the batch-wise losses. Datasets,
generators and `PyDataset`s are not read ahead (`checks.batches`)."""

import keras
import numpy as np

from keras_cskd.checks.models import check_trainable_student, label_spec
from keras_cskd.checks.tensors import check_hard_labels, check_values


def check_finite_array(values, what, owner, chunk_size=4096):
    """Raises on NaN/inf in a float NumPy array (scanned in chunks of
    samples, so no full-size temporary is made).

    Example:

    >>> import numpy as np
    >>> from keras_cskd.checks.arrays import check_finite_array
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


IGNORE_LABEL = -100  # token datasets' label for positions without one


def check_class_labels(
    labels, num_classes, owner, what="y", position_axes=0, positions=None, kind="auto"
):
    """Raises unless `labels` are class indices in `[0, num_classes)` of
    shape `(n,)`/`(n, 1)`, or one-hot/soft labels of shape `(n, C)` (rows
    >= 0 summing to 1); for a model with `position_axes` position axes
    (`(n, ..., C)` logits, `positions` the shape of `...` where known), of
    shape `(n, ...)`/`(n, ..., 1)` or `(n, ..., C)`, where the label `-100`
    marks a position without one (token datasets' convention: the position
    is left out). `kind` is the supervised loss's: `"sparse"` needs class
    indices, `"categorical"` one-hot or soft rows.

    Example:

    >>> import numpy as np
    >>> from keras_cskd.checks.arrays import check_class_labels
    >>> check_class_labels(np.array([0, 2, 1]), 3, "Distiller.fit")
    >>> check_class_labels(np.array([1, 2, 3]), 3, "Distiller.fit")
    Traceback (most recent call last):
    ...
    ValueError: Distiller.fit: the labels `y` must be class indices in [0, 3) (the student
    predicts 3 classes), but 1 label(s) lie outside (min 1, max 3). ...
    """
    labels = np.asarray(labels)
    one_hot_like = labels.ndim == 2 + position_axes and labels.shape[-1] not in (1,)
    if kind == "sparse" and one_hot_like and labels.shape[-1] == num_classes:
        raise ValueError(
            f"{owner}: the labels `{what}` are one-hot or soft, shape {labels.shape}, but "
            "the student's loss is a sparse cross-entropy (class indices). Pass "
            "np.argmax(y, axis=-1), or compile(loss='categorical_crossentropy')."
        )
    if kind == "categorical" and not one_hot_like:
        raise ValueError(
            f"{owner}: the labels `{what}` are class indices, shape {labels.shape}, but the "
            "student's loss is a categorical cross-entropy (one-hot rows). Pass "
            f"np.eye({num_classes})[y], or compile(loss='sparse_categorical_crossentropy')."
        )
    if position_axes:
        if labels.ndim == 2 + position_axes and labels.shape[-1] == 1:
            labels = labels[..., 0]
        if labels.ndim in (1 + position_axes, 2 + position_axes) and positions is not None:
            given = labels.shape[1 : 1 + position_axes]
            if any(p is not None and g != p for g, p in zip(given, positions)):
                raise ValueError(
                    f"{owner}: the labels `{what}` have shape {labels.shape}, but the student "
                    f"predicts positions of shape {tuple(positions)} per sample: give one "
                    f"label per position, shape (n, {', '.join(map(str, positions))}) (for "
                    "a language model, the next token of each position; -100 where there "
                    "is none)."
                )
        if labels.ndim == 1 + position_axes:  # class ids, one per position
            labels = labels.reshape(-1)
            labels = labels[labels != IGNORE_LABEL]
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
        sums = labels.sum(axis=1)
        bad = (labels < 0).any(axis=1) | (np.abs(sums - 1.0) > 1e-3)
        if bad.any():
            first = int(np.argmax(bad))
            raise ValueError(
                f"{owner}: the labels `{what}` of shape {labels.shape} are read as one-hot or "
                f"soft labels (one distribution over the classes per row), but "
                f"{int(bad.sum())} row(s) are not (row {first} sums to {sums[first]:g}). "
                "Multi-label (multi-hot) targets are not class labels: distil one class "
                "per sample, or normalise each row to sum to 1."
            )
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


def check_sample_weight(weights, owner, what="sample_weight", leading=None):
    """Raises unless `weights` are finite, non-negative numbers: one NaN
    weight makes the loss, and then the student's weights, NaN; with
    `leading` (the logits' shape without the class axis, `(n, ...)`, None
    where unknown), unless they are one per sample `(n,)`/`(n, 1)` or one
    per position `(n, ...)`.

    Example:

    >>> import numpy as np
    >>> from keras_cskd.checks.arrays import check_sample_weight
    >>> check_sample_weight(np.array([1.0, 0.5, 0.0]), "Distiller.fit")
    >>> check_sample_weight(np.array([1.0, -2.0, 1.0]), "Distiller.fit")
    Traceback (most recent call last):
    ...
    ValueError: Distiller.fit: `sample_weight` holds 1 negative weight(s) (first in sample 1,
    -2.0). A negative weight trains the student away from its labels: use weights >= 0 ...
    """
    if leading is not None:
        shape = np.shape(weights)
        per_sample = len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)
        per_position = len(shape) == len(leading) and all(
            b is None or a == b for a, b in zip(shape[1:], leading[1:])
        )
        if not (per_sample or (len(leading) > 1 and per_position)):
            expected = "(n,)" + (
                f" or one per position {('n', *leading[1:])}" if len(leading) > 1 else ""
            )
            raise ValueError(
                f"{owner}: `{what}` has shape {shape}; give one weight per sample, shape "
                f"{expected} (for several weights per sample, multiply them first)."
            )
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


def check_batch_split(num_samples, batch_size, owner, loss_names, validation_split=0.0):
    """Raises when batch-wise losses would meet a batch of one sample: a
    batch size of 1, or `num_samples` leaving a last batch of 1.

    Example:

    >>> from keras_cskd.checks.arrays import check_batch_split
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
    of one sample for batch-wise losses. Datasets and generators are not
    read ahead (their first batch is checked by `checks.models.
    check_first_batch`, every batch's labels by `BatchChecks`)."""
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
    spec = label_spec(distiller)
    if isinstance(arguments.get("sample_weight"), np.ndarray):
        check_sample_weight(arguments["sample_weight"], owner, leading=spec["leading"])
    for index, logits in enumerate(cached or ()):
        what = "cached teacher logits" + ("" if len(cached) == 1 else f" of teacher {index}")
        if isinstance(logits, dict):  # top-k outputs: their log-probabilities
            logits, what = logits.get("log_probs"), what + " (top-k log_probs)"
        check_values(np.asarray(logits, "float32"), what, owner)
    labels_are_classes = distiller.labels_are_classes()
    num_classes = distiller.num_classes
    position_axes = spec["position_axes"]
    if y is not None and num_classes is not None and labels_are_classes:
        check_class_labels(
            y,
            num_classes,
            owner,
            position_axes=position_axes,
            positions=spec["positions"],
            kind=spec["kind"],
        )
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
    losses = distiller.terms.losses
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


def check_labels_of_arrays(arguments, num_classes, owner="Distiller.fit"):
    """`check_class_labels` of NumPy labels `y` once the class count is
    known (a subclassed student, after its first call)."""
    y = arguments.get("y")
    if isinstance(y, np.ndarray):
        check_class_labels(y, num_classes, owner)
