"""STKD-style similarity transfer (Zhao et al. 2021): KL plus CSKD on
mixup's virtual samples."""

from keras_cskd import ops as kd_ops
from keras_cskd.checks import tensors as tensor_checks
from keras_cskd.losses.base import BatchwiseLoss, register


@register
class SimilarityTransferDistillation(BatchwiseLoss):
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

    temperature_of_target = "temperature"

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
        tensor_checks.check_positive("temperature", temperature)
        if mixup_alpha is not None:
            tensor_checks.check_positive("mixup_alpha", mixup_alpha)
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
