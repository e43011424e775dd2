"""Metrics of the `Distiller`."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_cskd")
class ClassStatistics(keras.metrics.Metric):
    """Per-class means of the CSKD cosine similarity and temperature over an
    epoch (read by `keras_cskd.callbacks.TemperatureRecorder`); kept out of
    the progress bar and history.

    Example:

    >>> import numpy as np
    >>> from keras_cskd.metrics import ClassStatistics
    >>> statistics = ClassStatistics(num_classes=2)
    >>> statistics.update_state(np.array([0.5, 1.0]), np.array([6.0, 2.0]))
    >>> statistics.update_state(np.array([0.7, 1.0]), np.array([4.0, 2.0]))
    >>> {k: np.round(np.asarray(v, "float64"), 3).tolist() for k, v in statistics.result().items()}
    {'class_cosine_similarity': [0.6, 1.0], 'class_temperature': [5.0, 2.0]}
    """

    def __init__(self, num_classes, name="class_statistics", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = int(num_classes)
        shape = (self.num_classes,)
        self.cosine_sum = self.add_variable(shape, "zeros", name="cosine_sum")
        self.temperature_sum = self.add_variable(shape, "zeros", name="temperature_sum")
        self.steps = self.add_variable((), "zeros", name="steps")

    def update_state(self, class_cosine, class_temperature, sample_weight=None):
        """Adds one step's per-class values; `sample_weight` (a scalar, 1 by
        default) weighs the step (0 leaves it out)."""
        weight = ops.ones((), self.dtype)
        if sample_weight is not None:
            weight = ops.cast(sample_weight, self.dtype)
        self.cosine_sum.assign_add(weight * ops.cast(class_cosine, self.dtype))
        self.temperature_sum.assign_add(weight * ops.cast(class_temperature, self.dtype))
        self.steps.assign_add(weight)

    def result(self):
        steps = ops.maximum(self.steps, 1e-12)
        return {
            "class_cosine_similarity": self.cosine_sum / steps,
            "class_temperature": self.temperature_sum / steps,
        }

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}
