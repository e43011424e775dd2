"""DKD (Zhao et al. 2022): KL split into target and non-target parts."""

from keras_cskd import ops as kd_ops
from keras_cskd.checks import tensors as tensor_checks
from keras_cskd.losses.base import DistillationLoss, register


@register
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

    temperature_of_target = "temperature"

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
        tensor_checks.check_positive("temperature", temperature)
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
