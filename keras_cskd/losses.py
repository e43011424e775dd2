"""Distillation losses: thin `keras.losses.Loss` wrappers over `keras_cskd.ops`.

Every loss is called as `loss(teacher_logits, student_logits)` (the teacher
in the `y_true` slot) and returns a scalar. Logits are `(batch, classes)`,
or `(batch, ..., classes)` where every leading axis is a position (tokens,
pixels); `mask=` (the leading shape, bool or 0/1; by default the student
logits' Keras mask, if any) drops positions, so the loss equals the loss on
the kept positions alone whatever padding holds. Each one is also a
`keras.distillation.DistillationLoss`, so it plugs into Keras' own
`keras.distillation.Distiller` unchanged:

```python
distiller = keras.distillation.Distiller(
    teacher=teacher,
    student=student,
    distillation_losses=keras_cskd.losses.CosineSimilarityDistillation(),
)
```

The formulas live in `keras_cskd.ops`; the classes here add the input checks
and Keras' reduction. Per-sample losses (KD, MSE, DKD) follow Keras'
`Loss` contract: `call` returns one value per sample and `reduction`
(`"sum_over_batch_size"`, `"sum"`, `"none"`, ...) and `sample_weight` work as
in `keras.losses`; over positions, `call` returns one value per position
and the reduction averages over the (kept) positions. Batch-wise losses
(CSKD, STKD, DIST) compare each class across the batch (over positions:
across all positions of the batch), so there is no per-sample value to
reduce: they reduce themselves and weight samples inside the batch
statistics.

`get(name)` builds a loss from the one registry of named methods
(`METHODS`), which the `Distiller` and the command line use too.
"""

import sys
import typing
import warnings

import keras
from keras import ops

from keras_cskd import _backend
from keras_cskd import ops as kd_ops
from keras_cskd.checks import tensors as tensors_checks
from keras_cskd.layers import CosineSimilarityWeightedTemperature

try:  # Keras >= 3.12 ships `keras.distillation`.
    _KERAS_DISTILLATION_BASES = (keras.distillation.DistillationLoss,)
except AttributeError:  # pragma: no cover - older Keras
    _KERAS_DISTILLATION_BASES = ()

_register = keras.saving.register_keras_serializable(package="keras_cskd")


class DistillationLoss(keras.losses.Loss, *_KERAS_DISTILLATION_BASES):
    """Base class of the keras-cskd losses.

    A per-sample loss implements `call(teacher_logits, student_logits)`,
    returning one value per sample `(B,)`; Keras' `Loss.__call__` then
    applies `sample_weight` and `reduction`, as for any `keras.losses` loss.
    A batch-wise loss (`batchwise = True`) overrides `compute` instead and
    returns a scalar. `__call__` checks the inputs first (shapes always;
    NaN/inf and probabilities-instead-of-logits in eager calls) and raises
    a `ValueError` that names the problem; `compute` is the same loss
    without the checks (the `Distiller` calls it inside compiled steps).

    Class attributes:
        batchwise: the loss compares samples across the batch (needs B >= 2)
            and reduces itself.
        requires_labels: the loss needs the ground-truth labels (`labels=`);
            its `call` then receives `y_true = (teacher_logits, labels)`.

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

    def __init__(self, name=None, reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def __call__(self, teacher_logits, student_logits, sample_weight=None, labels=None, mask=None):
        if mask is None and self.per_position:  # e.g. Embedding(mask_zero=True)
            mask = _backend.keras_mask(student_logits)
        teacher_logits = ops.convert_to_tensor(teacher_logits)
        student_logits = ops.convert_to_tensor(student_logits)
        masking = {} if mask is None else {"mask": ops.convert_to_tensor(mask)}
        self.check_inputs(teacher_logits, student_logits, labels, **masking)
        return self.compute(
            teacher_logits, student_logits, sample_weight=sample_weight, labels=labels, **masking
        )

    def check_inputs(self, teacher_logits, student_logits, labels=None, mask=None):
        """Raises a `ValueError` naming the problem with these inputs."""
        owner = type(self).__name__
        tensors_checks.check_logits(
            teacher_logits,
            student_logits,
            owner,
            min_batch_size=2 if self.batchwise else 1,
            mask=mask,
        )
        if self.requires_labels and labels is None:
            raise ValueError(
                f"{owner} needs the ground-truth labels: call it as "
                "`loss(teacher_logits, student_logits, labels=y)`; "
                "`keras_cskd.Distiller` passes them for you."
            )
        if self.requires_labels:
            tensors_checks.check_hard_labels(
                labels, owner, logits_rank=len(student_logits.shape), mask=mask
            )

    def compute(self, teacher_logits, student_logits, sample_weight=None, labels=None, mask=None):
        """The loss, without input checks: Keras' `Loss.__call__` (dtype
        conversion, `call`, `sample_weight`, `reduction`), as the value of
        the whole batch on every `tf.distribute` replica (see
        `_backend.unscale_loss_for_distribution`). A `mask` zeroes the
        masked positions' logits (and integer labels) and weights, and
        rescales the weights so that the means run over kept positions."""
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
        `Distiller` logs (e.g. mean cosine similarity and temperature)."""
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

    # keras.distillation.DistillationLoss interface.
    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        """Entry point used by `keras.distillation.Distiller`."""
        _warn_if_student_loss_reads_probabilities(self, sys._getframe(1).f_locals.get("self"))
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
        if self.requires_labels:
            raise ValueError(
                f"{type(self).__name__} needs the labels, which "
                "`keras.distillation.Distiller` does not pass to its losses. "
                "Use `keras_cskd.Distiller` for this loss."
            )

    def get_config(self):
        config = {"name": self.name, "dtype": self.dtype}
        if not self.batchwise:
            config["reduction"] = self.reduction
        return config


class _BatchwiseLoss(DistillationLoss):
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
    weights (per sample or per position) times the mask, scaled for the
    averaging reductions by `positions / kept positions` (as Keras does for
    its own masks), so that `"sum_over_batch_size"` is the mean over the
    kept positions."""
    leading = ops.shape(logits)[:-1]
    keep = ops.reshape(ops.cast(kd_ops.to_positions(mask, logits), "float32"), leading)
    weight = keep
    if sample_weight is not None:
        weight = keep * ops.reshape(
            ops.cast(kd_ops.to_positions(sample_weight, logits), "float32"), leading
        )
    if reduction in ("sum_over_batch_size", "mean"):
        total = ops.cast(ops.size(keep), "float32")
        weight = weight * ops.divide_no_nan(total, ops.sum(keep))
    return weight


def _mask_class_ids(labels, mask, logits):
    """Integer labels of the leading shape with masked positions set to
    class 0, so padding labels (e.g. -1) cannot reach `one_hot`; one-hot
    labels are returned as they are."""
    if labels is None:
        return None
    labels = ops.convert_to_tensor(labels)
    if len(labels.shape) == len(logits.shape) and labels.shape[-1] == logits.shape[-1]:
        return labels
    keep = ops.reshape(ops.cast(kd_ops.to_positions(mask, logits), "bool"), ops.shape(labels))
    return ops.where(keep, labels, ops.zeros_like(labels))


def _warn_if_student_loss_reads_probabilities(loss, distiller):
    """Warns once when the `keras.distillation.Distiller` calling `loss` was
    compiled with a cross-entropy that reads the student's logits as
    probabilities (e.g. the string "sparse_categorical_crossentropy")."""
    keras_distiller = getattr(getattr(keras, "distillation", None), "Distiller", None)
    if keras_distiller is None or not isinstance(distiller, keras_distiller):
        return
    if getattr(loss, "_checked_student_loss", False):
        return
    loss._checked_student_loss = True
    reads_probabilities = [
        getattr(item, "__name__", type(item).__name__)
        for item in keras.tree.flatten(getattr(distiller, "_student_loss", None))
        if item
        in (keras.losses.sparse_categorical_crossentropy, keras.losses.categorical_crossentropy)
        or (
            isinstance(
                item,
                (keras.losses.SparseCategoricalCrossentropy, keras.losses.CategoricalCrossentropy),
            )
            and not item.from_logits
        )
    ]
    if reads_probabilities:
        warnings.warn(
            f"keras.distillation.Distiller was compiled with loss={reads_probabilities[0]}, "
            "which reads the student's outputs as probabilities, but distillation "
            "students output logits: compile with "
            "loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), or use "
            "keras_cskd.Distiller, which reads that string with from_logits=True.",
            UserWarning,
            stacklevel=3,
        )


@_register
class KLDivergenceDistillation(DistillationLoss):
    """Hinton et al.'s knowledge distillation loss, `tau^2`-scaled.

    `L = tau^2 * mean_i KL(softmax(t_i / tau) || softmax(s_i / tau))`.

    Args:
        temperature: softmax temperature `tau > 0` (4 is the CIFAR-100
            standard; Kim et al. sweep 1 to 100).
        reduction: as in `keras.losses` (`"none"` gives one value per sample).

    Example:

    >>> import numpy as np
    >>> from keras_cskd.losses import KLDivergenceDistillation
    >>> t = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]], "float32")
    >>> loss = KLDivergenceDistillation(temperature=4.0)
    >>> float(loss(t, t))
    0.0
    >>> round(float(loss(t, np.zeros_like(t))), 4)
    0.568
    >>> per_sample = KLDivergenceDistillation(reduction="none")(t, np.zeros_like(t))
    >>> np.round(np.asarray(per_sample, "float64"), 4).tolist()
    [0.8077, 0.3282]
    """

    def __init__(
        self,
        temperature=4.0,
        name="kl_divergence_distillation",
        reduction="sum_over_batch_size",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        tensors_checks.check_positive("temperature", temperature)
        self.temperature = float(temperature)

    def call(self, y_true, y_pred):
        return kd_ops.kl_divergence_distillation(y_true, y_pred, self.temperature)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


@_register
class LogitMSEDistillation(DistillationLoss):
    """Kim et al. (2021)'s logit matching: mean squared error of the logits.

    `L = mean over all B * C elements of (s - t)^2`. The paper trains with
    this loss alone (`student_loss_weight=0`).

    Example:

    >>> import numpy as np
    >>> from keras_cskd.losses import LogitMSEDistillation
    >>> t = np.array([[1.0, 2.0], [3.0, 4.0]], "float32")
    >>> float(LogitMSEDistillation()(t, t + 2.0))
    4.0
    """

    def __init__(self, name="logit_mse_distillation", reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        return kd_ops.logit_mse(y_true, y_pred)


@_register
class CosineSimilarityDistillation(_BatchwiseLoss):
    """CSKD (Ham et al. 2023): cosine similarity of the batch predictions.

    For each class `c`, the column of the batch's softened predictions
    `softmax(s / tau)[:, c]` (B values) is compared with the teacher's by
    cosine similarity; `L = tau^2 * (1 - mean_c cos_c)`, in `[0, tau^2]`.
    With `cswt=` a `CosineSimilarityWeightedTemperature` layer the
    temperatures adapt per sample (or per class) and `tau^2` becomes
    `mean(T)^2`. The batch must hold at least 2 samples.

    Batch-wise: the cosines are taken across the batch, so there is no
    per-sample loss and no `reduction`; `sample_weight` weights the inner
    products over the batch (`sum_i w_i p_s[i, c] p_t[i, c]`), so a sample
    of weight 0 is ignored.

    Args:
        temperature: fixed temperature `tau > 0`, used when `cswt` is None.
        cswt: optional `CosineSimilarityWeightedTemperature` layer.
        epsilon: ignored; kept so that configs saved by keras-cskd 0.1
            load (the cosines are exact without an epsilon, see
            `keras_cskd.ops`).

    Example:

    >>> import numpy as np
    >>> from keras_cskd.losses import CosineSimilarityDistillation
    >>> t = np.array([[3.0, 0.0], [0.0, 3.0]], "float32")
    >>> loss = CosineSimilarityDistillation(temperature=1.0)
    >>> float(loss(t, 2.0 * t)) < 0.05  # same direction, different scale
    True
    """

    def __init__(
        self,
        temperature=4.0,
        cswt=None,
        epsilon=1e-8,
        name="cosine_similarity_distillation",
        dtype=None,
    ):
        super().__init__(name=name, dtype=dtype)
        tensors_checks.check_positive("temperature", temperature)
        if isinstance(cswt, dict):
            cswt = keras.saving.deserialize_keras_object(cswt)
        if cswt is not None and not isinstance(cswt, CosineSimilarityWeightedTemperature):
            raise ValueError(
                "`cswt` must be a keras_cskd.layers."
                f"CosineSimilarityWeightedTemperature, got {cswt!r}."
            )
        self.temperature = float(temperature)
        self.cswt = cswt
        self.epsilon = float(epsilon)

    def _temperatures(self, teacher_logits, student_logits, mask=None):
        if self.cswt is None:
            return ops.convert_to_tensor(self.temperature, "float32")
        # `compute` runs inside the training step, after the inputs were
        # checked: the layer's `call` skips `Layer.__call__`'s bookkeeping,
        # which eager PyTorch would otherwise pay on every step.
        return self.cswt.call(teacher_logits, student_logits, mask=mask)

    def compute_with_statistics(
        self, teacher_logits, student_logits, sample_weight=None, labels=None, mask=None
    ):
        levels = None
        if self.cswt is not None and self.cswt.granularity == "class":
            levels = self.cswt.temperature_levels
        return kd_ops.cosine_similarity_distillation_with_statistics(
            teacher_logits,
            student_logits,
            self._temperatures(teacher_logits, student_logits, mask),
            sample_weight,
            mask=mask,
            temperature_levels=levels,
        )

    def compute(self, teacher_logits, student_logits, sample_weight=None, labels=None, mask=None):
        loss, _ = self.compute_with_statistics(
            teacher_logits, student_logits, sample_weight, mask=mask
        )
        return loss

    def get_config(self):
        config = {
            **super().get_config(),
            "temperature": self.temperature,
            "epsilon": self.epsilon,
            "cswt": None,
        }
        if self.cswt is not None:
            config["cswt"] = keras.saving.serialize_keras_object(self.cswt)
        return config


@_register
class SimilarityTransferDistillation(_BatchwiseLoss):
    """STKD-style similarity transfer (Zhao et al. 2021).

    `L = kl_weight * tau^2 * KL(p_t || p_s) + batch_weight * CSKD(tau)` on
    the same batch: the KL term transfers each sample's class similarities,
    the batch term (`CosineSimilarityDistillation`) the similarities across
    samples. STKD computes both on mixup's virtual samples: give the
    `Distiller` `mixup_alpha` (it defaults to this loss's `mixup_alpha`), so
    teacher and student see the same mixed batch and the supervised term
    uses the mixed labels. Batch-wise (its CSKD term is), so it reduces
    itself. The paper leaves the weights open; the defaults
    (1, 1, tau = 4, alpha = 1) are keras-cskd's choice (see docs/methods.md).

    Example:

    >>> import numpy as np
    >>> from keras_cskd.losses import SimilarityTransferDistillation
    >>> t = np.array([[3.0, 0.0, 1.0], [0.0, 3.0, 1.0]], "float32")
    >>> round(float(SimilarityTransferDistillation()(t, t)), 5)
    0.0
    """

    def __init__(
        self,
        temperature=4.0,
        kl_weight=1.0,
        batch_weight=1.0,
        mixup_alpha=1.0,
        name="similarity_transfer_distillation",
        dtype=None,
    ):
        super().__init__(name=name, dtype=dtype)
        tensors_checks.check_positive("temperature", temperature)
        if mixup_alpha is not None:
            tensors_checks.check_positive("mixup_alpha", mixup_alpha)
        self.temperature = float(temperature)
        self.kl_weight = float(kl_weight)
        self.batch_weight = float(batch_weight)
        self.mixup_alpha = None if mixup_alpha is None else float(mixup_alpha)

    def compute(self, teacher_logits, student_logits, sample_weight=None, labels=None, mask=None):
        return kd_ops.similarity_transfer_distillation(
            teacher_logits,
            student_logits,
            self.temperature,
            self.kl_weight,
            self.batch_weight,
            sample_weight,
            mask,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "temperature": self.temperature,
            "kl_weight": self.kl_weight,
            "batch_weight": self.batch_weight,
            "mixup_alpha": self.mixup_alpha,
        }


@_register
class DISTDistillation(_BatchwiseLoss):
    """DIST (Huang et al. 2022): Pearson correlation, inter- and intra-class.

    `L = tau^2 * [inter_weight * mean_i (1 - pearson(p_s[i], p_t[i]))
    + intra_weight * mean_c (1 - pearson(p_s[:, c], p_t[:, c]))]`.
    The intra-class term compares each class across the batch, like CSKD
    but centred, so the loss is batch-wise and reduces itself (weighted
    mean of the row terms, weighted Pearson of the columns); the batch must
    hold at least 2 samples. The CIFAR-100
    recipe uses tau = 4 and a loss weight of 2 (`Distiller`'s
    `distillation_loss_weight`).

    As in the authors' code, the Pearson correlation of a vector that does
    not vary (e.g. a class with the same probability for every sample of
    the batch) is 0, so such a column adds `intra_weight * tau^2 / C` even
    when the student matches the teacher.

    Example:

    >>> import numpy as np
    >>> from keras_cskd.losses import DISTDistillation
    >>> t = np.array([[8.0, 0.0, -8.0], [0.0, 8.0, -8.0], [-8.0, 0.0, 8.0]], "float32")
    >>> abs(float(DISTDistillation()(t, t))) < 1e-5
    True
    """

    def __init__(
        self,
        temperature=4.0,
        inter_weight=1.0,
        intra_weight=1.0,
        name="dist_distillation",
        dtype=None,
    ):
        super().__init__(name=name, dtype=dtype)
        tensors_checks.check_positive("temperature", temperature)
        self.temperature = float(temperature)
        self.inter_weight = float(inter_weight)
        self.intra_weight = float(intra_weight)

    def compute(self, teacher_logits, student_logits, sample_weight=None, labels=None, mask=None):
        return kd_ops.dist_distillation(
            teacher_logits,
            student_logits,
            self.temperature,
            self.inter_weight,
            self.intra_weight,
            sample_weight,
            mask,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "temperature": self.temperature,
            "inter_weight": self.inter_weight,
            "intra_weight": self.intra_weight,
        }


@_register
class DecoupledKDDistillation(DistillationLoss):
    """DKD (Zhao et al. 2022): KL split into target and non-target parts.

    `L = target_weight * TCKD + non_target_weight * NCKD`, both
    `tau^2`-scaled. DKD needs the ground-truth labels: call it as
    `loss(teacher_logits, student_logits, labels=y)` with integer labels
    `(B,)` or exact one-hot labels `(B, C)`; smoothed or mixed (soft) labels
    are refused with a `ValueError` (in eager calls and in `Distiller.fit`
    on arrays), as DKD's target/non-target split needs one target class.
    `keras_cskd.Distiller` passes the
    batch's labels automatically (this loss cannot be used with mixup, whose
    labels are mixed, nor with `keras.distillation.Distiller`, which does
    not pass labels). The CIFAR-100 recipe (alpha = 1, beta = 8, tau = 4)
    warms the loss weight up linearly over 20 epochs: see
    `keras_cskd.callbacks.DistillationWeightWarmup`.

    Example:

    >>> import numpy as np
    >>> from keras_cskd.losses import DecoupledKDDistillation
    >>> t = np.array([[3.0, 0.0, 1.0], [0.0, 3.0, 1.0]], "float32")
    >>> float(DecoupledKDDistillation()(t, t, labels=np.array([0, 1])))
    0.0
    """

    requires_labels = True

    def __init__(
        self,
        temperature=4.0,
        target_weight=1.0,
        non_target_weight=8.0,
        name="decoupled_kd_distillation",
        reduction="sum_over_batch_size",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        tensors_checks.check_positive("temperature", temperature)
        self.temperature = float(temperature)
        self.target_weight = float(target_weight)
        self.non_target_weight = float(non_target_weight)

    def call(self, y_true, y_pred):
        teacher_logits, labels = y_true
        return kd_ops.decoupled_kd(
            teacher_logits,
            y_pred,
            labels,
            self.temperature,
            self.target_weight,
            self.non_target_weight,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "temperature": self.temperature,
            "target_weight": self.target_weight,
            "non_target_weight": self.non_target_weight,
        }


def cskd_paper_objective(temperature=4.0, low=2.0, high=6.0, balance=1.0):
    """The two-term CSKD objective of the paper (its Eq. 9), as
    `(loss, weight)` pairs for `keras_cskd.Distiller`:

    `CE + balance * [2 * CSKD(tau) + 2 * CSKD(CSWT(low, high))]`.

    Use with `student_loss_weight=1.0` and `distillation_loss_weight=1.0`.
    The authors' training code adds weak/strong augmentation views,
    confidence masks and MLKD's Gram-matrix terms; those are not part of
    this objective (see docs/methods.md).

    Example:

    >>> from keras_cskd.losses import cskd_paper_objective
    >>> [(type(l).__name__, w) for l, w in cskd_paper_objective()]
    [('CosineSimilarityDistillation', 2.0), ('CosineSimilarityDistillation', 2.0)]
    """
    fixed = CosineSimilarityDistillation(temperature=temperature)
    adaptive = CosineSimilarityDistillation(
        cswt=CosineSimilarityWeightedTemperature(low=low, high=high),
        name="cswt_distillation",
    )
    return [(fixed, 2.0 * balance), (adaptive, 2.0 * balance)]


@_register
class StudentCrossEntropy(keras.losses.Loss):
    """Cross-entropy on the student's logits, sparse or one-hot labels.

    Picks sparse or categorical cross-entropy from the labels' shape:
    integer labels `(B,)`/`(B, 1)` or one-hot/soft labels `(B, C)`; for
    per-position logits `(B, ..., C)`, labels `(B, ...)` or `(B, ..., C)`
    (a Keras mask on the logits, e.g. from `Embedding(mask_zero=True)`,
    drops padded positions, as in any Keras loss). Always
    `from_logits=True`: `Distiller` students output logits. The `Distiller`'s
    default supervised loss (`compile(loss="auto")`).

    Example:

    >>> import numpy as np
    >>> from keras_cskd.losses import StudentCrossEntropy
    >>> logits = np.log(np.array([[0.5, 0.25, 0.25]], "float32"))
    >>> round(float(StudentCrossEntropy()(np.array([0]), logits)), 4)
    0.6931
    """

    def __init__(self, kind="auto", name="student_cross_entropy", **kwargs):
        super().__init__(name=name, **kwargs)
        if kind not in ("auto", "sparse", "categorical"):
            raise ValueError(f"kind must be 'auto', 'sparse' or 'categorical', got {kind!r}.")
        self.kind = kind

    def call(self, y_true, y_pred):
        y_pred = ops.cast(y_pred, "float32")
        kind = self.kind
        if kind == "auto":
            one_hot = (
                len(y_true.shape) == len(y_pred.shape)
                and y_true.shape[-1] == y_pred.shape[-1]
                and y_pred.shape[-1] != 1
            )
            kind = "categorical" if one_hot else "sparse"
        if kind == "categorical":
            return keras.losses.categorical_crossentropy(
                ops.cast(y_true, "float32"), y_pred, from_logits=True
            )
        y_true = ops.reshape(ops.cast(y_true, "int32"), ops.shape(y_pred)[:-1])
        return keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)

    def get_config(self):
        return {**super().get_config(), "kind": self.kind}


_CROSS_ENTROPY_NAMES = {
    "sparse_categorical_crossentropy": "sparse",
    "sparsecategoricalcrossentropy": "sparse",
    "categorical_crossentropy": "categorical",
    "categoricalcrossentropy": "categorical",
    "crossentropy": "auto",
    "auto": "auto",
}
_CROSS_ENTROPY_FUNCTIONS = {
    keras.losses.sparse_categorical_crossentropy: "sparse",
    keras.losses.categorical_crossentropy: "categorical",
}
# Keras losses that read probabilities unless built with from_logits=True.
_PROBABILITY_LOSSES = {
    keras.losses.SparseCategoricalCrossentropy: keras.losses.sparse_categorical_crossentropy,
    keras.losses.CategoricalCrossentropy: keras.losses.categorical_crossentropy,
    keras.losses.CategoricalFocalCrossentropy: keras.losses.categorical_focal_crossentropy,
    keras.losses.BinaryCrossentropy: keras.losses.binary_crossentropy,
    keras.losses.BinaryFocalCrossentropy: keras.losses.binary_focal_crossentropy,
}


def student_loss(identifier):
    """Resolves the `Distiller`'s `compile(loss=...)`, so that no way of
    naming a cross-entropy reads the student's logits as probabilities.

    The names of the categorical cross-entropies (`"auto"`,
    `"sparse_categorical_crossentropy"`, `"SparseCategoricalCrossentropy"`,
    `"categorical_crossentropy"`, `"CategoricalCrossentropy"`) and the
    functions `keras.losses.sparse_categorical_crossentropy` /
    `categorical_crossentropy` (whose default is `from_logits=False`) become a
    `StudentCrossEntropy` (`from_logits=True`). A Keras cross-entropy that
    would read probabilities -- an instance built with `from_logits=False`,
    or the name or function of the binary and focal cross-entropies -- is
    refused with the fix. Other losses go to `keras.losses.get` unchanged.

    Example:

    >>> import keras
    >>> from keras_cskd.losses import student_loss
    >>> student_loss("sparse_categorical_crossentropy").kind
    'sparse'
    >>> student_loss(keras.losses.categorical_crossentropy).kind
    'categorical'
    >>> student_loss("binary_crossentropy")
    Traceback (most recent call last):
    ...
    ValueError: compile(loss='binary_crossentropy') would read the student's logits as
    probabilities (from_logits=False). ...
    """
    if identifier is None:
        return None
    if isinstance(identifier, str) and identifier.lower() in _CROSS_ENTROPY_NAMES:
        return StudentCrossEntropy(_CROSS_ENTROPY_NAMES[identifier.lower()])
    if callable(identifier) and identifier in _CROSS_ENTROPY_FUNCTIONS:
        return StudentCrossEntropy(_CROSS_ENTROPY_FUNCTIONS[identifier])
    loss = keras.losses.get(identifier) if isinstance(identifier, (str, dict)) else identifier
    probability_functions = {function: cls for cls, function in _PROBABILITY_LOSSES.items()}
    if isinstance(loss, tuple(_PROBABILITY_LOSSES)):
        reads_probabilities = not getattr(loss, "from_logits", True)
        cls = next(c for c in _PROBABILITY_LOSSES if isinstance(loss, c))
        named = f"{type(loss).__name__}(from_logits=False)"
    elif callable(loss) and loss in probability_functions:
        reads_probabilities = True
        cls = probability_functions[loss]
        named = f"keras.losses.{loss.__name__}"
    else:
        return loss
    if not reads_probabilities:
        return loss
    named = repr(identifier) if isinstance(identifier, str) else named
    fix = (
        "'sparse_categorical_crossentropy' (resolved with from_logits=True)"
        if cls in (keras.losses.SparseCategoricalCrossentropy, keras.losses.CategoricalCrossentropy)
        else f"keras.losses.{cls.__name__}(from_logits=True)"
    )
    why = "" if "from_logits=False" in named else " (from_logits=False)"
    raise ValueError(
        f"compile(loss={named}) would read the student's logits as probabilities{why}. "
        f"Distiller students output logits: pass `from_logits=True`, e.g. {fix}."
    )


# ------------------------------------------------------------------ registry
class Method(typing.NamedTuple):
    """A named distillation method: what `get(name)` builds.

    Attributes:
        label: the name shown in tables and plots (e.g. by the CLI).
        loss_class: the `DistillationLoss` subclass.
        settings: fixed constructor arguments (a callable, so each loss
            gets fresh layers).
        fixed_temperature: the loss has a fixed `temperature` argument (not
            CSWT's adaptive one).
    """

    label: str
    loss_class: type
    settings: typing.Callable[[], dict] = dict
    fixed_temperature: bool = True

    def build(self, **kwargs):
        return self.loss_class(**self.settings(), **kwargs)


def _cswt(granularity="sample"):
    return lambda: {"cswt": CosineSimilarityWeightedTemperature(granularity=granularity)}


METHODS = {
    "kd": Method("KD (KL, tau^2)", KLDivergenceDistillation),
    "mse": Method("Logit MSE", LogitMSEDistillation, fixed_temperature=False),
    "cskd": Method("CSKD", CosineSimilarityDistillation),
    "cskd_cswt": Method(
        "CSKD + CSWT", CosineSimilarityDistillation, _cswt(), fixed_temperature=False
    ),
    "cskd_cswt_class": Method(
        "CSKD + CSWT (per class)",
        CosineSimilarityDistillation,
        _cswt("class"),
        fixed_temperature=False,
    ),
    "stkd": Method("STKD-style", SimilarityTransferDistillation),
    "dist": Method("DIST", DISTDistillation),
    "dkd": Method("DKD", DecoupledKDDistillation),
}
"""The named methods, in display order; `get` also accepts the aliases of
`ALIASES`, and spellings with `-` or `+` for `_`."""
ALIASES = {"kl": "kd"}


def get(identifier, **kwargs):
    """Returns a keras-cskd loss from a name (`"kd"`, `"mse"`, `"cskd"`,
    `"cskd_cswt"`, `"stkd"`, `"dist"`, `"dkd"`, see `METHODS`), a config
    dict or an instance. With a name, `kwargs` go to the loss's constructor.

    Example:

    >>> from keras_cskd import losses
    >>> type(losses.get("cskd")).__name__
    'CosineSimilarityDistillation'
    >>> losses.get("kd", temperature=2.0).temperature
    2.0
    """
    if isinstance(identifier, (DistillationLoss, dict)):
        if kwargs:
            raise ValueError(f"Settings {sorted(kwargs)} apply to a loss name only.")
        if isinstance(identifier, dict):
            return keras.saving.deserialize_keras_object(identifier)
        return identifier
    key = str(identifier).lower().replace("-", "_").replace("+", "_")
    key = ALIASES.get(key, key)
    if key not in METHODS:
        raise ValueError(
            f"Unknown distillation loss {identifier!r}; choose one of "
            f"{sorted([*METHODS, *ALIASES])} or pass a keras_cskd.losses instance."
        )
    return METHODS[key].build(**kwargs)
