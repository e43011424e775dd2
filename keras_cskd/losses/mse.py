"""Logit MSE (Kim et al. 2021): match the logits themselves."""

from keras_cskd import ops as kd_ops
from keras_cskd.losses.base import DistillationLoss, register


@register
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
