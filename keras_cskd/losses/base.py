"""The base classes of keras-cskd's losses: Keras' `Loss` contract, input
checks, masks and statistics.

A loss is called as `loss(teacher_logits, student_logits)` (the teacher in
the `y_true` slot) and returns a scalar. Logits are `(batch, classes)`, or
`(batch, ..., classes)` where every leading axis is a position (tokens,
pixels).

Masks and sample weights, the one semantics of every loss:

- `sample_weight` weighs samples (`(batch,)`) or positions (`(batch, ...)`)
  as in `keras.losses`; `mask` (the leading shape) selects positions: a
  boolean, or a number where 0 drops the position and a positive value keeps
  it with that weight (a 0/1 mask is the usual case). Both must be finite
  and >= 0: anything else is refused (`checks.tensors.check_weights`).
- With a mask, a per-position loss (KD, MSE, DKD, ...) is the weighted mean
  over the kept positions (`sum(w * l) / kept positions`: e.g. the mean over
  a sequence's real tokens); a batch-wise loss (CSKD, DIST, STKD) is the
  loss of the kept positions alone. Masked positions never reach a value or
  a gradient, whatever their logits hold.
- A selection with nothing in it (every position masked) gives 0 with a
  zero gradient; a batch-wise loss with fewer than two kept positions also
  gives 0 (it compares positions with each other). The `Distiller` leaves
  such steps out of its logged means and counts them (`skipped_steps`).
"""

import keras
from keras import ops

from keras_cskd import _backend
from keras_cskd import ops as kd_ops
from keras_cskd.checks import tensors as tensor_checks

try:  # Keras >= 3.12 ships `keras.distillation`.
    _KERAS_DISTILLATION_BASES = (keras.distillation.DistillationLoss,)
except AttributeError:  # pragma: no cover - older Keras
    _KERAS_DISTILLATION_BASES = ()

register = keras.saving.register_keras_serializable(package="keras_cskd")


class DistillationLoss(keras.losses.Loss, *_KERAS_DISTILLATION_BASES):
    """Base class of the keras-cskd losses.

    A per-sample loss implements `call(teacher_logits, student_logits)`,
    returning one value per sample `(B,)`; Keras' `Loss.__call__` then
    applies `sample_weight` and `reduction`, as for any `keras.losses` loss.
    A batch-wise loss (`batchwise = True`) overrides `compute` instead and
    returns a scalar. `__call__` checks the inputs first (shapes always;
    NaN/inf, masks and probabilities-instead-of-logits in eager calls) and
    raises a `ValueError` that names the problem; `compute` is the same loss
    without the checks (the `Distiller` calls it inside compiled steps).

    Statistics: `compute_with_statistics` returns `(value, statistics)`, a
    dict of scalars and `(C,)` vectors the `Distiller` logs as they are
    (CSKD: `cosine_similarity`, `temperature`, `class_cosine_similarity`,
    `class_temperature`); the base class returns an empty dict.

    Class attributes:
        batchwise: the loss compares samples across the batch (needs B >= 2)
            and reduces itself.
        requires_labels: the loss needs the ground-truth labels (`labels=`);
            its `call` then receives `y_true = (teacher_logits, labels)`.
        temperature_of_target: how the loss reads the teacher's logits when
            several teachers are combined (`keras_cskd.Distiller(ensemble=
            "mean_probs")`): `"temperature"` (softened at the loss's
            `temperature`), `"one"` (at temperature 1, e.g. CSWT), or
            `None` (raw logits: an ensemble of probabilities has none).

    Example:

    >>> import numpy as np
    >>> from keras import ops
    >>> from keras_cskd.losses import DistillationLoss
    >>> class L1Distillation(DistillationLoss):
    ...     def call(self, teacher_logits, student_logits):
    ...         return ops.mean(ops.abs(student_logits - teacher_logits), axis=-1)
    >>> t = np.array([[1.0, 2.0], [3.0, 4.0]], "float32")
    >>> float(L1Distillation(name="l1")(t, t + 0.5))
    0.5
    >>> tuple(L1Distillation(name="l1", reduction="none")(t, t + 0.5).shape)
    (2,)
    >>> L1Distillation(name="l1")(t, np.array([[0.5, 0.5], [0.2, 0.8]], "float32"))
    Traceback (most recent call last):
    ...
    ValueError: L1Distillation: student logits look like probabilities ...
    """

    batchwise = False
    requires_labels = False
    # `call` returns one value per position of `(batch, ..., classes)`
    # logits: sample weights are spread over the positions, and the student
    # logits' Keras mask (if any) drops positions.
    per_position = True
    temperature_of_target = None

    def __init__(self, name=None, reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def __call__(self, teacher_logits, student_logits, sample_weight=None, labels=None, mask=None):
        if mask is None and self.per_position:  # e.g. Embedding(mask_zero=True)
            mask = _backend.keras_mask(student_logits)
        teacher_logits = ops.convert_to_tensor(teacher_logits)
        student_logits = ops.convert_to_tensor(student_logits)
        masking = {} if mask is None else {"mask": ops.convert_to_tensor(mask)}
        self.check_inputs(teacher_logits, student_logits, labels, **masking)
        if sample_weight is not None:
            tensor_checks.check_weights(sample_weight, "sample_weight", type(self).__name__)
        return self.compute(
            teacher_logits, student_logits, sample_weight=sample_weight, labels=labels, **masking
        )

    def check_inputs(self, teacher_logits, student_logits, labels=None, mask=None):
        """Raises a `ValueError` naming the problem with these inputs."""
        owner = type(self).__name__
        tensor_checks.check_logits(
            teacher_logits,
            student_logits,
            owner,
            min_batch_size=2 if self.batchwise else 1,
            mask=mask,
        )
        if mask is not None:
            tensor_checks.check_weights(mask, "mask", owner)
        if self.requires_labels and labels is None:
            raise ValueError(
                f"{owner} needs the ground-truth labels: call it as "
                "`loss(teacher_logits, student_logits, labels=y)`; "
                "`keras_cskd.Distiller` passes them for you."
            )
        if self.requires_labels:
            tensor_checks.check_hard_labels(
                labels, owner, logits_rank=len(student_logits.shape), mask=mask
            )

    def compute(self, teacher_logits, student_logits, sample_weight=None, labels=None, mask=None):
        """The loss, without input checks: Keras' `Loss.__call__` (dtype
        conversion, `call`, `sample_weight`, `reduction`), as the value of
        the whole batch on every `tf.distribute` replica (see
        `_backend.unscale_loss_for_distribution`). A `mask` zeroes the
        masked positions' logits (and integer labels), multiplies the
        weights by its values and makes the averaging reductions the mean
        over the kept positions."""
        if mask is not None:
            teacher_logits = kd_ops.mask_logits(teacher_logits, mask)
            student_logits = kd_ops.mask_logits(student_logits, mask)
            labels = _mask_class_ids(labels, mask, student_logits)
            sample_weight = _masked_sample_weight(
                sample_weight, mask, student_logits, self.reduction
            )
        elif sample_weight is not None and self.per_position and len(student_logits.shape) > 2:
            # One weight per sample, spread over its positions (Keras'
            # reduction broadcasts only weights that differ by one axis).
            sample_weight = ops.reshape(
                kd_ops.to_positions(sample_weight, student_logits),
                ops.shape(student_logits)[:-1],
            )
        y_true = (teacher_logits, labels) if self.requires_labels else teacher_logits
        value = keras.losses.Loss.__call__(self, y_true, student_logits, sample_weight)
        return _backend.unscale_loss_for_distribution(value, self.reduction)

    def compute_with_statistics(
        self, teacher_logits, student_logits, sample_weight=None, labels=None, mask=None
    ):
        """`(loss, statistics)`; statistics is a dict of tensors that the
        `Distiller` logs (see the class docstring); empty here."""
        masking = {} if mask is None else {"mask": mask}
        loss = self.compute(teacher_logits, student_logits, sample_weight, labels, **masking)
        return loss, {}

    def call(self, y_true, y_pred):
        if self.batchwise:
            return self.compute(y_true, y_pred)
        raise NotImplementedError(
            f"{type(self).__name__} must implement `call` (per-sample values) "
            "or, for a batch-wise loss, `compute`."
        )

    # keras.distillation.DistillationLoss interface: these losses also plug
    # into Keras' own `keras.distillation.Distiller`.
    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        """Entry point used by `keras.distillation.Distiller`."""
        return self(teacher_outputs, student_outputs)

    def validate_outputs(self, teacher_outputs, student_outputs):
        for role, outputs in (("teacher", teacher_outputs), ("student", student_outputs)):
            if isinstance(outputs, (list, tuple, dict)):
                raise ValueError(
                    f"{type(self).__name__} distils one logits tensor, but the "
                    f"{role} returns {type(outputs).__name__} of outputs. Wrap "
                    "the model so it returns only its class logits."
                )

    def validate_model_compatibility(self, teacher, student):
        """Called by `keras.distillation.Distiller` when it is built: refuses
        losses that need the labels (it passes none) and a pair whose roles
        look swapped (`checks.models.check_roles_by_size`)."""
        if self.requires_labels:
            raise ValueError(
                f"{type(self).__name__} needs the labels, which "
                "`keras.distillation.Distiller` does not pass to its losses. "
                "Use `keras_cskd.Distiller` for this loss."
            )
        from keras_cskd.checks.models import check_roles_by_size

        check_roles_by_size(student, [teacher], "keras.distillation.Distiller")

    def get_config(self):
        config = {"name": self.name, "dtype": self.dtype}
        if not self.batchwise:
            config["reduction"] = self.reduction
        return config


class BatchwiseLoss(DistillationLoss):
    """A loss over the whole batch (it compares each class across the
    samples): no per-sample value exists, so it reduces itself (Keras'
    `reduction` does not apply) and `sample_weight` weights the samples
    inside its batch statistics."""

    batchwise = True

    def __init__(self, name=None, dtype=None):
        super().__init__(name=name, dtype=dtype)

    def compute(self, teacher_logits, student_logits, sample_weight=None, labels=None, mask=None):
        raise NotImplementedError


def _masked_sample_weight(sample_weight, mask, logits, reduction):
    """Per-position weights `(B, ...)` for a per-sample loss: the sample
    weights (per sample or per position) times the mask's values, scaled
    for the averaging reductions by `positions / kept positions` (as Keras
    does for its own masks), so that `"sum_over_batch_size"` is the mean
    over the kept positions (0 when none is kept)."""
    leading = ops.shape(logits)[:-1]
    values = ops.cast(kd_ops.to_positions(mask, logits), "float32")
    keep = ops.cast(values > 0, "float32")
    weight = ops.reshape(keep * values, leading)
    if sample_weight is not None:
        weight = weight * ops.reshape(
            ops.cast(kd_ops.to_positions(sample_weight, logits), "float32"), leading
        )
    if reduction in ("sum_over_batch_size", "mean"):
        total = ops.cast(ops.size(keep), "float32")
        weight = weight * ops.divide_no_nan(total, ops.sum(keep))
    return weight


def _mask_class_ids(labels, mask, logits):
    """Integer labels of the leading shape with masked positions set to
    class 0, so padding labels (e.g. -100) cannot reach `one_hot`; one-hot
    labels are returned as they are."""
    if labels is None:
        return None
    labels = ops.convert_to_tensor(labels)
    if len(labels.shape) == len(logits.shape) and labels.shape[-1] == logits.shape[-1]:
        return labels
    keep = ops.reshape(kd_ops.to_positions(mask, logits), ops.shape(labels))
    keep = ops.cast(keep, "float32") > 0
    return ops.where(keep, labels, ops.zeros_like(labels))
