"""The record of one training step, built once in `Distiller.call(training=
True)` and read by `compute_loss` and `compute_metrics`.

Data flows one way: `call` runs the models and fills a `Step`;
`compute_loss` hands it to the losses (`DistillationTerms`) and updates the
loss trackers from what they return; `compute_metrics` reads the student's
logits (and, under mixup, the dominant labels) from it. A `NamedTuple`, so
that every backend's compiled step (a JAX pytree, a `tf.function`
structure) carries it as it is.
"""

import typing

import keras
from keras import ops

from keras_cskd import _backend
from keras_cskd import ops as kd_ops


class Step(typing.NamedTuple):
    """What one training step computed.

    Attributes:
        student_logits: the student's logits, `(batch, ..., classes)`.
        teacher_logits: a tuple of logits, one per teacher (or per cached
            teacher), without gradient.
        mask: per-position weights from the student's Keras mask or the
            model's `padding_mask` input (0 drops a position), or None.
        mixup: the `MixupDraw` of this step, or None.
        student_features: the student's features, one per
            `FeatureDistillation` (a tuple, empty without one).
        teacher_features: the teacher's matching features, without gradient.
        chunked: with `Distiller(chunk_size=n)`, the models' final hidden
            states and output heads (`distiller.chunked.ChunkedHeads`); the
            step then holds no teacher logits, and `student_logits` are
            None, or the student's logits without gradient when `metrics=`
            were compiled.
    """

    student_logits: typing.Any
    teacher_logits: tuple
    mask: typing.Any = None
    mixup: typing.Any = None
    student_features: tuple = ()
    teacher_features: tuple = ()
    chunked: typing.Any = None


PADDING_MASK_KEY = "padding_mask"


def input_mask(x, student_logits):
    """The positions a step counts, from what the batch says, as float
    weights of the logits' leading shape (None: every position counts):

    1. the student logits' Keras mask (e.g. `Embedding(mask_zero=True)`);
    2. otherwise, for per-position logits, a `padding_mask` entry of dict
       inputs with the logits' leading shape (keras-hub's token inputs).

    The `Distiller` multiplies it with a per-position `sample_weight`
    (keras-hub's preprocessors mark the positions with a next-token label
    so) in `compute_loss`."""
    mask = _backend.keras_mask(student_logits)
    if mask is None and len(student_logits.shape) > 2 and isinstance(x, dict):
        padding = x.get(PADDING_MASK_KEY)
        if padding is not None and tuple(padding.shape) == tuple(student_logits.shape[:-1]):
            mask = padding
    if mask is None:
        return None
    return ops.cast(mask, "float32")


IGNORE_LABEL = -100  # token datasets' label for a position without one


def position_weights(mask, sample_weight, student_logits, labels=None):
    """The weights of the positions the terms count, for per-position logits
    `(batch, ..., classes)`: the step's mask, times a per-position
    `sample_weight` (shape `(batch, ...)`: keras-hub's preprocessors mark
    the positions with a label so), times 0 where an integer label is
    `-100` (token datasets' "no label here"); None when there are none of
    these. For `(batch, classes)` logits: the mask (a per-sample
    `sample_weight` is not a mask: it weighs the samples)."""
    if len(student_logits.shape) <= 2:
        return mask
    weights = mask
    if sample_weight is not None and _per_position(sample_weight, student_logits):
        per_position = ops.reshape(
            ops.cast(kd_ops.to_positions(sample_weight, student_logits), "float32"),
            ops.shape(student_logits)[:-1],
        )
        weights = per_position if weights is None else weights * per_position
    if labels is not None and _ids_per_position(labels, student_logits):
        labelled = ops.cast(
            ops.reshape(labels, ops.shape(student_logits)[:-1]) != IGNORE_LABEL, "float32"
        )
        weights = labelled if weights is None else weights * labelled
    return weights


def _ids_per_position(labels, logits):
    if keras.tree.is_nested(labels) or not hasattr(labels, "shape"):
        return False
    shape = tuple(labels.shape)
    if len(shape) == len(logits.shape) and shape[-1] == 1:
        shape = shape[:-1]
    dtype = keras.backend.standardize_dtype(labels.dtype)
    return len(shape) == len(logits.shape) - 1 and ("int" in dtype or "float" in dtype)


def _per_position(sample_weight, logits):
    shape = tuple(sample_weight.shape)
    if len(shape) == len(logits.shape) and shape[-1] == 1:
        shape = shape[:-1]
    return len(shape) == len(logits.shape) - 1


class _PositionMask(keras.layers.Layer):
    """Returns the logits with a Keras mask of the positions that count:
    Keras' metrics apply a prediction's Keras mask (to `metrics=` too,
    which take no `sample_weight`), so padding never counts in them."""

    def __init__(self):
        super().__init__(name="position_mask")
        self.supports_masking = True

    def call(self, inputs):
        return ops.multiply(inputs[0], ops.ones((), inputs[0].dtype))

    def compute_mask(self, inputs, previous_mask=None):
        return inputs[1]


_POSITION_MASK = _PositionMask()


def with_position_mask(logits, weights):
    """`logits` carrying the Keras mask `weights > 0` (for the metrics)."""
    return _POSITION_MASK((logits, ops.cast(weights, "float32") > 0))
