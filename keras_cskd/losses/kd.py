"""KD (Hinton et al. 2015): KL divergence of the softened distributions."""

from keras_cskd import ops as kd_ops
from keras_cskd.checks import tensors as tensor_checks
from keras_cskd.losses.base import DistillationLoss, register


@register
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

    temperature_of_target = "temperature"

    def __init__(
        self,
        temperature=4.0,
        name="kl_divergence_distillation",
        reduction="sum_over_batch_size",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        tensor_checks.check_positive("temperature", temperature)
        self.temperature = float(temperature)

    def call(self, y_true, y_pred):
        return kd_ops.kl_divergence_distillation(y_true, y_pred, self.temperature)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}
