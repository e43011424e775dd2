"""Distillation losses: thin `keras.losses.Loss` wrappers over `keras_cskd.ops`.

Every loss is called as `loss(teacher_logits, student_logits)` (the teacher
in the `y_true` slot) and returns a scalar. Each one is also a
`keras.distillation.DistillationLoss`, so it plugs into Keras' own
`keras.distillation.Distiller` unchanged:

```python
distiller = keras.distillation.Distiller(
    teacher=teacher,
    student=student,
    distillation_losses=keras_cskd.losses.CosineSimilarityDistillation(),
)
```
"""

import sys
import warnings

import keras
from keras import ops

from keras_cskd import ops as kd_ops
from keras_cskd import validation
from keras_cskd.layers import CosineSimilarityWeightedTemperature

try:  # Keras >= 3.12 ships `keras.distillation`.
    _KERAS_DISTILLATION_BASES = (keras.distillation.DistillationLoss,)
except AttributeError:  # pragma: no cover - older Keras
    _KERAS_DISTILLATION_BASES = ()

_register = keras.saving.register_keras_serializable(package="keras_cskd")


class DistillationLoss(keras.losses.Loss, *_KERAS_DISTILLATION_BASES):
    """Base class of the keras-cskd losses.

    Subclasses implement `compute(teacher_logits, student_logits,
    sample_weight=None, labels=None)`, which returns a float32 scalar and
    does no input checking (it runs inside compiled training steps).
    `__call__` checks the inputs first (shapes always; NaN/inf and
    probabilities-instead-of-logits in eager calls) and raises a
    `ValueError` that names the problem.

    Class attributes:
        batchwise: the loss compares samples across the batch (needs B >= 2).
        requires_labels: the loss needs the ground-truth labels (`labels=`).

    Example:

    >>> import numpy as np
    >>> from keras import ops
    >>> from keras_cskd.losses import DistillationLoss
    >>> class L1Distillation(DistillationLoss):
    ...     def compute(self, teacher_logits, student_logits, sample_weight=None, labels=None):
    ...         return ops.mean(ops.abs(student_logits - teacher_logits))
    >>> t = np.array([[1.0, 2.0], [3.0, 4.0]], "float32")
    >>> float(L1Distillation(name="l1")(t, t + 0.5))
    0.5
    >>> L1Distillation(name="l1")(t, np.array([[0.5, 0.5], [0.2, 0.8]], "float32"))
    Traceback (most recent call last):
    ...
    ValueError: L1Distillation: student logits look like probabilities ...
    """

    batchwise = False
    requires_labels = False

    def __init__(self, name=None, dtype=None):
        super().__init__(name=name, reduction="sum_over_batch_size", dtype=dtype)

    def __call__(self, teacher_logits, student_logits, sample_weight=None, labels=None):
        teacher_logits = ops.convert_to_tensor(teacher_logits)
        student_logits = ops.convert_to_tensor(student_logits)
        self.check_inputs(teacher_logits, student_logits, labels)
        return self.compute(
            teacher_logits, student_logits, sample_weight=sample_weight, labels=labels
        )

    def check_inputs(self, teacher_logits, student_logits, labels=None):
        """Raises a `ValueError` naming the problem with these inputs."""
        owner = type(self).__name__
        validation.check_logits(
            teacher_logits,
            student_logits,
            owner,
            min_batch_size=2 if self.batchwise else 1,
        )
        if self.requires_labels and labels is None:
            raise ValueError(
                f"{owner} needs the ground-truth labels: call it as "
                "`loss(teacher_logits, student_logits, labels=y)`; "
                "`keras_cskd.Distiller` passes them for you."
            )

    def compute(self, teacher_logits, student_logits, sample_weight=None, labels=None):
        """The loss value (float32 scalar), without input checks."""
        raise NotImplementedError

    def compute_with_statistics(
        self, teacher_logits, student_logits, sample_weight=None, labels=None
    ):
        """`(loss, statistics)`; statistics is a dict of tensors that the
        `Distiller` logs (e.g. mean cosine similarity and temperature)."""
        loss = self.compute(teacher_logits, student_logits, sample_weight, labels)
        return loss, {}

    def call(self, y_true, y_pred):
        return self.compute(y_true, y_pred)

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
        return {"name": self.name, "dtype": self.dtype}


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
        if item in (keras.losses.sparse_categorical_crossentropy, keras.losses.categorical_crossentropy)
        or (
            isinstance(item, (keras.losses.SparseCategoricalCrossentropy, keras.losses.CategoricalCrossentropy))
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


def _weighted_mean(per_sample, sample_weight):
    """Keras' "sum_over_batch_size": `sum(w * loss) / B`."""
    if sample_weight is None:
        return ops.mean(per_sample)
    weight = ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
    return ops.sum(per_sample * weight) / ops.cast(ops.shape(per_sample)[0], "float32")


@_register
class KLDivergenceDistillation(DistillationLoss):
    """Hinton et al.'s knowledge distillation loss, `tau^2`-scaled.

    `L = tau^2 * mean_i KL(softmax(t_i / tau) || softmax(s_i / tau))`.

    Args:
        temperature: softmax temperature `tau > 0` (4 is the CIFAR-100
            standard; Kim et al. sweep 1 to 100).

    Example:

    >>> import numpy as np
    >>> from keras_cskd.losses import KLDivergenceDistillation
    >>> t = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]], "float32")
    >>> loss = KLDivergenceDistillation(temperature=4.0)
    >>> float(loss(t, t))
    0.0
    >>> round(float(loss(t, np.zeros_like(t))), 4)
    0.568
    """

    def __init__(self, temperature=4.0, name="kl_divergence_distillation", dtype=None):
        super().__init__(name=name, dtype=dtype)
        validation.check_positive("temperature", temperature)
        self.temperature = float(temperature)

    def compute(self, teacher_logits, student_logits, sample_weight=None, labels=None):
        per_sample = kd_ops.kl_divergence_distillation(
            teacher_logits, student_logits, self.temperature
        )
        return _weighted_mean(per_sample, sample_weight)

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

    def __init__(self, name="logit_mse_distillation", dtype=None):
        super().__init__(name=name, dtype=dtype)

    def compute(self, teacher_logits, student_logits, sample_weight=None, labels=None):
        per_sample = kd_ops.logit_mse(teacher_logits, student_logits)
        return _weighted_mean(per_sample, sample_weight)


@_register
class CosineSimilarityDistillation(DistillationLoss):
    """CSKD (Ham et al. 2023): cosine similarity of the batch predictions.

    For each class `c`, the column of the batch's softened predictions
    `softmax(s / tau)[:, c]` (B values) is compared with the teacher's by
    cosine similarity; `L = tau^2 * (1 - mean_c cos_c)`, in `[0, tau^2]`.
    With `cswt=` a `CosineSimilarityWeightedTemperature` layer the
    temperatures adapt per sample (or per class) and `tau^2` becomes
    `mean(T)^2`. The batch must hold at least 2 samples.

    `sample_weight` weights the inner products over the batch
    (`sum_i w_i p_s[i, c] p_t[i, c]`), so a sample of weight 0 is ignored.

    Args:
        temperature: fixed temperature `tau > 0`, used when `cswt` is None.
        cswt: optional `CosineSimilarityWeightedTemperature` layer.
        epsilon: added to the product of the norms.

    Example:

    >>> import numpy as np
    >>> from keras_cskd.losses import CosineSimilarityDistillation
    >>> t = np.array([[3.0, 0.0], [0.0, 3.0]], "float32")
    >>> loss = CosineSimilarityDistillation(temperature=1.0)
    >>> float(loss(t, 2.0 * t)) < 0.05  # same direction, different scale
    True
    """

    batchwise = True

    def __init__(
        self,
        temperature=4.0,
        cswt=None,
        epsilon=1e-8,
        name="cosine_similarity_distillation",
        dtype=None,
    ):
        super().__init__(name=name, dtype=dtype)
        validation.check_positive("temperature", temperature)
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

    def _temperatures(self, teacher_logits, student_logits):
        if self.cswt is None:
            return ops.convert_to_tensor(self.temperature, "float32")
        # `compute` runs inside the training step, after the inputs were
        # checked: the layer's `call` skips `Layer.__call__`'s bookkeeping,
        # which eager PyTorch would otherwise pay on every step.
        return self.cswt.call(teacher_logits, student_logits)

    def compute_with_statistics(
        self, teacher_logits, student_logits, sample_weight=None, labels=None
    ):
        temperature = self._temperatures(teacher_logits, student_logits)
        p_t = kd_ops.softened_probabilities(teacher_logits, temperature)
        p_s = kd_ops.softened_probabilities(student_logits, temperature)
        class_cosine = kd_ops.class_cosine_similarity(
            p_t, p_s, sample_weight, self.epsilon
        )
        loss = ops.square(ops.mean(temperature)) * (1.0 - ops.mean(class_cosine))
        statistics = {
            "cosine_similarity": ops.mean(class_cosine),
            "class_cosine_similarity": class_cosine,
            "temperature": ops.mean(temperature),
            "temperatures": temperature,
        }
        return loss, statistics

    def compute(self, teacher_logits, student_logits, sample_weight=None, labels=None):
        temperature = self._temperatures(teacher_logits, student_logits)
        return kd_ops.cosine_similarity_distillation(
            teacher_logits, student_logits, temperature, sample_weight, self.epsilon
        )

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
class SimilarityTransferDistillation(DistillationLoss):
    """STKD-style similarity transfer (Zhao et al. 2021).

    `L = kl_weight * tau^2 * KL(p_t || p_s) + batch_weight * CSKD(tau)` on
    the same batch: the KL term transfers each sample's class similarities,
    the batch term (`CosineSimilarityDistillation`) the similarities across
    samples. STKD computes both on mixup's virtual samples: give the
    `Distiller` `mixup_alpha` (it defaults to this loss's `mixup_alpha`), so
    teacher and student see the same mixed batch and the supervised term
    uses the mixed labels. The paper leaves the weights open; the defaults
    (1, 1, tau = 4, alpha = 1) are keras-cskd's choice (see docs/methods.md).

    Example:

    >>> import numpy as np
    >>> from keras_cskd.losses import SimilarityTransferDistillation
    >>> t = np.array([[3.0, 0.0, 1.0], [0.0, 3.0, 1.0]], "float32")
    >>> float(SimilarityTransferDistillation()(t, t))
    0.0
    """

    batchwise = True

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
        validation.check_positive("temperature", temperature)
        if mixup_alpha is not None:
            validation.check_positive("mixup_alpha", mixup_alpha)
        self.temperature = float(temperature)
        self.kl_weight = float(kl_weight)
        self.batch_weight = float(batch_weight)
        self.mixup_alpha = None if mixup_alpha is None else float(mixup_alpha)

    def compute(self, teacher_logits, student_logits, sample_weight=None, labels=None):
        kl = _weighted_mean(
            kd_ops.kl_divergence_distillation(
                teacher_logits, student_logits, self.temperature
            ),
            sample_weight,
        )
        batch = kd_ops.cosine_similarity_distillation(
            teacher_logits, student_logits, self.temperature, sample_weight
        )
        return self.kl_weight * kl + self.batch_weight * batch

    def get_config(self):
        return {
            **super().get_config(),
            "temperature": self.temperature,
            "kl_weight": self.kl_weight,
            "batch_weight": self.batch_weight,
            "mixup_alpha": self.mixup_alpha,
        }


@_register
class DISTDistillation(DistillationLoss):
    """DIST (Huang et al. 2022): Pearson correlation, inter- and intra-class.

    `L = tau^2 * [inter_weight * mean_i (1 - pearson(p_s[i], p_t[i]))
    + intra_weight * mean_c (1 - pearson(p_s[:, c], p_t[:, c]))]`.
    The intra-class term compares each class across the batch, like CSKD
    but centred; the batch must hold at least 2 samples. The CIFAR-100
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
    >>> round(float(DISTDistillation()(t, t)), 5)
    0.0
    """

    batchwise = True

    def __init__(
        self,
        temperature=4.0,
        inter_weight=1.0,
        intra_weight=1.0,
        name="dist_distillation",
        dtype=None,
    ):
        super().__init__(name=name, dtype=dtype)
        validation.check_positive("temperature", temperature)
        self.temperature = float(temperature)
        self.inter_weight = float(inter_weight)
        self.intra_weight = float(intra_weight)

    def compute(self, teacher_logits, student_logits, sample_weight=None, labels=None):
        return kd_ops.dist_distillation(
            teacher_logits,
            student_logits,
            self.temperature,
            self.inter_weight,
            self.intra_weight,
            sample_weight,
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
    `(B,)` or one-hot labels `(B, C)`. `keras_cskd.Distiller` passes the
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
        dtype=None,
    ):
        super().__init__(name=name, dtype=dtype)
        validation.check_positive("temperature", temperature)
        self.temperature = float(temperature)
        self.target_weight = float(target_weight)
        self.non_target_weight = float(non_target_weight)

    def compute(self, teacher_logits, student_logits, sample_weight=None, labels=None):
        per_sample = kd_ops.decoupled_kd(
            teacher_logits,
            student_logits,
            labels,
            self.temperature,
            self.target_weight,
            self.non_target_weight,
        )
        return _weighted_mean(per_sample, sample_weight)

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


def get(identifier):
    """Returns a keras-cskd loss from a name (`"kd"`, `"mse"`, `"cskd"`,
    `"cskd_cswt"`, `"stkd"`, `"dist"`, `"dkd"`), a config dict or an
    instance.

    Example:

    >>> from keras_cskd import losses
    >>> type(losses.get("cskd")).__name__
    'CosineSimilarityDistillation'
    """
    if isinstance(identifier, DistillationLoss):
        return identifier
    if isinstance(identifier, dict):
        return keras.saving.deserialize_keras_object(identifier)
    factories = {
        "kd": KLDivergenceDistillation,
        "kl": KLDivergenceDistillation,
        "mse": LogitMSEDistillation,
        "cskd": CosineSimilarityDistillation,
        "cskd_cswt": lambda: CosineSimilarityDistillation(
            cswt=CosineSimilarityWeightedTemperature()
        ),
        "cskd_cswt_class": lambda: CosineSimilarityDistillation(
            cswt=CosineSimilarityWeightedTemperature(granularity="class")
        ),
        "stkd": SimilarityTransferDistillation,
        "dist": DISTDistillation,
        "dkd": DecoupledKDDistillation,
    }
    key = str(identifier).lower().replace("-", "_").replace("+", "_")
    if key not in factories:
        raise ValueError(
            f"Unknown distillation loss {identifier!r}; choose one of "
            f"{sorted(factories)} or pass a keras_cskd.losses instance."
        )
    return factories[key]()
