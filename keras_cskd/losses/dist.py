"""DIST (Huang et al. 2022): Pearson correlations, inter- and intra-class."""

from keras_cskd import ops as kd_ops
from keras_cskd.checks import tensors as tensor_checks
from keras_cskd.losses.base import BatchwiseLoss, register


@register
class DISTDistillation(BatchwiseLoss):
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

    temperature_of_target = "temperature"

    def __init__(
        self,
        temperature=4.0,
        inter_weight=1.0,
        intra_weight=1.0,
        name="dist_distillation",
        dtype=None,
    ):
        super().__init__(name=name, dtype=dtype)
        tensor_checks.check_positive("temperature", temperature)
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
