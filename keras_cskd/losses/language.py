"""The divergences of language-model distillation, per token: reverse KL,
generalized Jensen-Shannon (GKD), skew KL (DistiLLM) and total variation.
Forward KL is `KLDivergenceDistillation` (`"kd"`, alias `"forward_kl"`).

Logits are `(batch, tokens, vocabulary)` (or `(batch, classes)`); with a
mask (the `Distiller` takes it from keras-hub's `padding_mask`, the
student's Keras mask or a per-token `sample_weight`) each is the mean over
the real tokens. Each is `tau^2`-scaled like KD; language-model recipes use
`tau = 1` (the default here), where the value is the plain divergence.
"""

from keras_cskd import ops as kd_ops
from keras_cskd.checks import tensors as tensor_checks
from keras_cskd.losses.base import DistillationLoss, register


class _TokenDivergence(DistillationLoss):
    temperature_of_target = "temperature"

    def __init__(self, temperature, name, reduction, dtype):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        tensor_checks.check_positive("temperature", temperature)
        self.temperature = float(temperature)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


def _check_unit_interval(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"`{name}` must be a number in [0, 1], got {value!r}.")


@register
class ReverseKLDistillation(_TokenDivergence):
    """Reverse KL, `tau^2 * KL(p_s || p_t)`: mode-seeking (the student puts its
    mass where the teacher's is largest rather than covering every mode;
    torchtune's ReverseKL, MiniLLM at the token level).

    Example:

    >>> import numpy as np
    >>> from keras_cskd.losses import ReverseKLDistillation
    >>> t = np.array([[2.0, 0.0, -1.0]], "float32")
    >>> round(float(ReverseKLDistillation()(t, np.zeros_like(t))), 4)
    0.7379
    """

    def __init__(
        self, temperature=1.0, name="reverse_kl_distillation", reduction="sum_over_batch_size",
        dtype=None,
    ):  # fmt: skip
        super().__init__(temperature, name, reduction, dtype)

    def call(self, y_true, y_pred):
        return kd_ops.reverse_kl_divergence(y_true, y_pred, self.temperature)


@register
class JensenShannonDistillation(_TokenDivergence):
    """Generalized Jensen-Shannon divergence (GKD, Agarwal et al. 2024), as
    TRL's `generalized_jsd_loss`: with `m = beta p_t + (1 - beta) p_s`,
    `beta * KL(p_t || m) + (1 - beta) * KL(p_s || m)`, `tau^2`-scaled;
    `beta = 0` is forward KL and `beta = 1` reverse KL (TRL's endpoints),
    `beta = 0.5` the symmetric JSD.

    Example:

    >>> import numpy as np
    >>> from keras_cskd.losses import JensenShannonDistillation
    >>> t = np.array([[9.0, -9.0]], "float32")
    >>> round(float(JensenShannonDistillation(beta=0.5)(t, -t)), 4)
    0.6931
    """

    def __init__(
        self, beta=0.5, temperature=1.0, name="jensen_shannon_distillation",
        reduction="sum_over_batch_size", dtype=None,
    ):  # fmt: skip
        super().__init__(temperature, name, reduction, dtype)
        _check_unit_interval("beta", beta)
        self.beta = float(beta)

    def call(self, y_true, y_pred):
        return kd_ops.jensen_shannon_divergence(y_true, y_pred, self.beta, self.temperature)

    def get_config(self):
        return {**super().get_config(), "beta": self.beta}


@register
class SkewKLDistillation(_TokenDivergence):
    """Skew KL (DistiLLM, Ko et al. 2024): `KL(p_t || alpha p_t + (1 - alpha)
    p_s)`, or with `reverse=True` skew reverse KL `KL(p_s || alpha p_s +
    (1 - alpha) p_t)`, `tau^2`-scaled; `alpha = 0.1` as in the paper.

    Example:

    >>> import numpy as np
    >>> from keras_cskd.losses import SkewKLDistillation
    >>> t = np.array([[2.0, 0.0, -1.0]], "float32")
    >>> float(SkewKLDistillation()(t, t))
    0.0
    """

    def __init__(
        self, alpha=0.1, reverse=False, temperature=1.0, name="skew_kl_distillation",
        reduction="sum_over_batch_size", dtype=None,
    ):  # fmt: skip
        super().__init__(temperature, name, reduction, dtype)
        _check_unit_interval("alpha", alpha)
        if alpha == 1.0:
            raise ValueError("`alpha` = 1 compares the teacher with itself: use alpha < 1.")
        self.alpha = float(alpha)
        self.reverse = bool(reverse)

    def call(self, y_true, y_pred):
        return kd_ops.skew_kl_divergence(y_true, y_pred, self.alpha, self.temperature, self.reverse)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "reverse": self.reverse}


@register
class TotalVariationDistillation(_TokenDivergence):
    """Total variation distance, `tau^2 * 1/2 sum |p_t - p_s|`, in [0, tau^2].

    Example:

    >>> import numpy as np
    >>> from keras_cskd.losses import TotalVariationDistillation
    >>> t = np.array([[9.0, -9.0]], "float32")
    >>> round(float(TotalVariationDistillation()(t, -t)), 4)
    1.0
    """

    def __init__(
        self, temperature=1.0, name="total_variation_distillation",
        reduction="sum_over_batch_size", dtype=None,
    ):  # fmt: skip
        super().__init__(temperature, name, reduction, dtype)

    def call(self, y_true, y_pred):
        return kd_ops.total_variation_distance(y_true, y_pred, self.temperature)
