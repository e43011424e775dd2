"""CSWT: the cosine-similarity weighted temperature layer."""

import keras
import numpy as np

from keras_cskd import ops as kd_ops
from keras_cskd.checks import tensors as tensors_checks


@keras.saving.register_keras_serializable(package="keras_cskd")
class CosineSimilarityWeightedTemperature(keras.layers.Layer):
    """Adaptive distillation temperatures from teacher/student agreement.

    Called as `layer(teacher_logits, student_logits)`; returns temperatures
    without gradient, low (`low`) where the student already agrees with the
    teacher (high cosine similarity) and high (`high`) where it does not:
    `T = low + (M - sim) / (M - m) * (high - low)` with `m`, `M` the batch
    min and max of the similarities (taken at temperature 1).

    - `granularity="sample"` (the authors' code): `sim_i` is the cosine of
      sample `i`'s rows `softmax(s_i)`, `softmax(t_i)`; returns `(B, 1)`.
    - `granularity="class"` (a keras-cskd extension, experimental): `sim_c`
      is the cosine of class `c`'s columns across the batch, mapped without
      stretching, `T_c = low + (1 - sim_c) * (high - low)`, and rounded to
      the nearest of `levels` evenly spaced temperatures in `[low, high]`;
      returns `(1, C)`. `CosineSimilarityDistillation` then takes class
      `c`'s column from a softmax over all classes at `T_c`, which keeps
      every sample's ranking of the classes (dividing each class's logit
      by its own temperature inside one softmax, keras-cskd 0.1's
      per-class mode, re-ranked them).

    Per-position logits `(B, ..., C)` are flattened to `N` rows first (one
    per position; per-sample temperatures are then `(N, 1)`), and `mask`
    (the leading shape, bool or 0/1) leaves positions out of the
    similarities and of the min and max (they get the midpoint).

    Per sample, when all similarities are equal (within `epsilon`), e.g. a
    batch of one sample, every temperature is `(low + high) / 2`: the
    authors' formula divides by zero there.

    Args:
        low: temperature of the best-agreeing sample/class (default 2).
        high: temperature of the worst-agreeing sample/class (default 6).
        granularity: `"sample"` or `"class"`.
        epsilon: spread of similarities below which the midpoint is used
            (per sample).
        levels: how many temperatures per-class CSWT rounds to (>= 2;
            each is one softmax pass in CSKD).

    Example:

    >>> import numpy as np
    >>> from keras_cskd.layers import CosineSimilarityWeightedTemperature
    >>> cswt = CosineSimilarityWeightedTemperature(low=2.0, high=6.0)
    >>> t = np.array([[4.0, 0.0], [4.0, 0.0], [0.0, 4.0]], "float32")
    >>> s = np.array([[4.0, 0.0], [0.0, 0.0], [4.0, 0.0]], "float32")
    >>> np.round(np.asarray(cswt(t, s), "float64").ravel(), 3).tolist()
    [2.0, 3.163, 6.0]
    """

    def __init__(self, low=2.0, high=6.0, granularity="sample", epsilon=1e-6, levels=9, **kwargs):
        # Temperatures are computed in float32 even under mixed precision.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        tensors_checks.check_temperature_range(low, high)
        if granularity not in ("sample", "class"):
            raise ValueError(
                f"granularity must be 'sample' (one temperature per sample, "
                f"the authors' CSWT) or 'class' (one per class), got "
                f"{granularity!r}."
            )
        # The `mask` argument is the positions to use; the temperatures
        # themselves carry no Keras mask (see `compute_mask`).
        self.supports_masking = True
        self.low = float(low)
        self.high = float(high)
        self.granularity = granularity
        self.epsilon = float(epsilon)
        if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
            raise ValueError(f"`levels` must be an integer >= 2, got {levels!r}.")
        self.levels = levels

    @property
    def temperature_levels(self):
        """The temperatures per-class CSWT takes (`ops.cswt_levels`)."""
        return kd_ops.cswt_levels(self.low, self.high, self.levels)

    def call(self, teacher_logits, student_logits, mask=None):
        return kd_ops.cswt_temperatures(
            teacher_logits,
            student_logits,
            self.low,
            self.high,
            self.granularity,
            self.epsilon,
            mask,
            self.levels,
        )

    def __call__(self, teacher_logits, student_logits, mask=None, **kwargs):
        teacher_logits = keras.ops.convert_to_tensor(teacher_logits)
        student_logits = keras.ops.convert_to_tensor(student_logits)
        if mask is not None:
            mask = keras.ops.convert_to_tensor(mask)
        tensors_checks.check_logits(teacher_logits, student_logits, type(self).__name__, mask=mask)
        return super().__call__(teacher_logits, student_logits, mask=mask, **kwargs)

    def compute_mask(self, inputs, previous_mask=None):
        return None

    def compute_output_shape(self, teacher_shape, student_shape, mask_shape=None):
        if self.granularity == "class":
            return (1, teacher_shape[-1])
        if len(teacher_shape) == 2:
            return (teacher_shape[0], 1)
        leading = teacher_shape[:-1]
        positions = None if None in leading else int(np.prod(leading))
        return (positions, 1)

    def get_config(self):
        return {
            **super().get_config(),
            "low": self.low,
            "high": self.high,
            "granularity": self.granularity,
            "epsilon": self.epsilon,
            "levels": self.levels,
        }


__all__ = ["CosineSimilarityWeightedTemperature"]


def __dir__():  # what `dir()` and tab completion show: the public names only
    return __all__
