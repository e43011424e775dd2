"""Callbacks that record or schedule what a `Distiller` does: per-class
temperatures and cosines, the distillation weight's warm-up."""

import keras
import numpy as np


class TemperatureRecorder(keras.callbacks.Callback):
    """Records, each epoch, the per-class CSKD cosine similarity and the
    per-class temperature of a `keras_cskd.Distiller`, and plots them.

    With per-sample CSWT the class temperature is the mean temperature of
    the samples the teacher assigns to that class. Works with any
    `CosineSimilarityDistillation` loss (a fixed temperature shows as a
    constant). After `fit`, `cosine_similarity` and `temperature` are arrays
    of shape `(epochs, classes)`; `plot(path)` writes a heatmap PNG
    (needs matplotlib).

    Example:

    >>> import keras, numpy as np, keras_cskd
    >>> teacher = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    >>> student = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    >>> distiller = keras_cskd.Distiller(student, teacher, "cskd_cswt")
    >>> distiller.compile(optimizer="adam")
    >>> recorder = keras_cskd.callbacks.TemperatureRecorder()
    >>> x, y = np.random.rand(32, 8).astype("float32"), np.arange(32) % 3
    >>> _ = distiller.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[recorder])
    >>> recorder.temperature.shape
    (2, 3)
    """

    def __init__(self):
        super().__init__()
        self._cosine = []
        self._temperature = []

    def on_train_begin(self, logs=None):
        statistics = getattr(self.model, "class_statistics", None)
        if statistics is None:
            raise ValueError(
                "TemperatureRecorder needs a keras_cskd.Distiller with a "
                "CosineSimilarityDistillation loss and a known number of "
                "classes (pass num_classes= for a subclassed student)."
            )
        self._cosine, self._temperature = [], []

    def on_epoch_end(self, epoch, logs=None):
        result = self.model.class_statistics.result()
        self._cosine.append(keras.ops.convert_to_numpy(result["class_cosine_similarity"]))
        self._temperature.append(keras.ops.convert_to_numpy(result["class_temperature"]))

    @property
    def cosine_similarity(self):
        """Per-class cosine similarity, shape `(epochs, classes)`."""
        return np.asarray(self._cosine, dtype="float32")

    @property
    def temperature(self):
        """Per-class temperature, shape `(epochs, classes)`."""
        return np.asarray(self._temperature, dtype="float32")

    def plot(self, filepath, class_names=None):
        """Writes two heatmaps (cosine, temperature; epochs x classes) to a
        PNG file and returns its path."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError as error:  # pragma: no cover
            raise ImportError(
                "TemperatureRecorder.plot needs matplotlib: pip install 'keras-cskd[plot]'"
            ) from error
        figure, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
        for axis, values, title, cmap in (
            (axes[0], self.cosine_similarity, "class cosine similarity", "viridis"),
            (axes[1], self.temperature, "class temperature", "magma"),
        ):
            image = axis.imshow(values.T, aspect="auto", origin="lower", cmap=cmap)
            axis.set_xlabel("epoch")
            axis.set_ylabel("class")
            axis.set_title(title)
            if class_names is not None:
                axis.set_yticks(range(len(class_names)), class_names)
            figure.colorbar(image, ax=axis)
        figure.savefig(filepath, dpi=100)
        plt.close(figure)
        return str(filepath)


class DistillationWeightWarmup(keras.callbacks.Callback):
    """Linearly warms the `Distiller`'s distillation loss weight up from 0
    to its configured value over `epochs` epochs (DKD's 20-epoch recipe).

    Example:

    >>> from keras_cskd.callbacks import DistillationWeightWarmup
    >>> warmup = DistillationWeightWarmup(epochs=20)
    >>> warmup.factor(0), warmup.factor(9), warmup.factor(25)
    (0.05, 0.5, 1.0)
    """

    def __init__(self, epochs=20):
        super().__init__()
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}.")
        self.epochs = int(epochs)
        self._target = None

    def factor(self, epoch):
        """The fraction of the full weight used during `epoch` (0-based)."""
        return min(1.0, (epoch + 1) / self.epochs)

    def on_train_begin(self, logs=None):
        self._target = self.model.configured_loss_weights[1]

    def on_epoch_begin(self, epoch, logs=None):
        self.model.distillation_loss_weight.assign(self._target * self.factor(epoch))

    def on_train_end(self, logs=None):
        self.model.distillation_loss_weight.assign(self._target)
