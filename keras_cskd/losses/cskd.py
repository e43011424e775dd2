"""CSKD (Ham et al. 2023): cosine similarity of the batch predictions, with
optional CSWT temperatures; and the paper's two-term objective."""

import keras
from keras import ops

from keras_cskd import ops as kd_ops
from keras_cskd.checks import tensors as tensor_checks
from keras_cskd.layers import CosineSimilarityWeightedTemperature
from keras_cskd.losses.base import BatchwiseLoss, register


@register
class CosineSimilarityDistillation(BatchwiseLoss):
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
        tensor_checks.check_positive("temperature", temperature)
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

    @property
    def temperature_of_target(self):
        """Several teachers' `mean_probs` target: softened at `temperature`,
        or at 1 with CSWT (whose adaptive temperatures then soften it)."""
        return "temperature" if self.cswt is None else "one"

    def _temperatures(self, teacher_logits, student_logits, mask=None, sample_weight=None):
        if self.cswt is None:
            return ops.convert_to_tensor(self.temperature, "float32")
        mask = _kept(mask, sample_weight, student_logits)
        # `compute` runs inside the training step, after the inputs were
        # checked: the layer's `call` skips `Layer.__call__`'s bookkeeping,
        # which eager PyTorch would otherwise pay on every step.
        return self.cswt.call(teacher_logits, student_logits, mask=mask)

    def compute_with_statistics(
        self, teacher_logits, student_logits, sample_weight=None, labels=None, mask=None
    ):
        """`(loss, statistics)`: the loss and, for the `Distiller`'s logs, the
        mean `cosine_similarity` and `temperature`, per class
        `class_cosine_similarity` and `class_temperature` (`(C,)`; with
        per-sample CSWT, the mean temperature of the samples the teacher
        assigns to each class), and `temperatures` as they were used."""
        levels = None
        if self.cswt is not None and self.cswt.granularity == "class":
            levels = self.cswt.temperature_levels
        loss, statistics = kd_ops.cosine_similarity_distillation_with_statistics(
            teacher_logits,
            student_logits,
            self._temperatures(teacher_logits, student_logits, mask, sample_weight),
            sample_weight,
            mask=mask,
            temperature_levels=levels,
        )
        statistics["class_temperature"] = kd_ops.class_temperatures(
            statistics["temperatures"], teacher_logits, teacher_logits.shape[-1], mask
        )
        return loss, statistics

    def compute(self, teacher_logits, student_logits, sample_weight=None, labels=None, mask=None):
        levels = None
        if self.cswt is not None and self.cswt.granularity == "class":
            levels = self.cswt.temperature_levels
        return kd_ops.cosine_similarity_distillation(
            teacher_logits,
            student_logits,
            self._temperatures(teacher_logits, student_logits, mask, sample_weight),
            sample_weight,
            mask=mask,
            temperature_levels=levels,
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


def _kept(mask, sample_weight, logits):
    """The positions CSWT's temperatures look at: those of positive mask and
    sample weight (a sample of weight 0 takes no part in the min and max)."""
    if sample_weight is None:
        return mask
    weights = ops.reshape(kd_ops.to_positions(sample_weight, logits), ops.shape(logits)[:-1])
    kept = ops.cast(ops.cast(weights, "float32") > 0, "float32")
    if mask is None:
        return kept
    return kept * ops.cast(ops.cast(mask, "float32") > 0, "float32")
