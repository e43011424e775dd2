"""Callbacks for distillation runs."""

import json
import os
import warnings

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
        self._target = self.model._distillation_loss_weight_value

    def on_epoch_begin(self, epoch, logs=None):
        self.model.distillation_loss_weight.assign(self._target * self.factor(epoch))

    def on_train_end(self, logs=None):
        self.model.distillation_loss_weight.assign(self._target)


class SkippedStepWarning(keras.callbacks.Callback):
    """Warns at the end of an epoch in which a
    `keras.optimizers.LossScaleOptimizer` (what `compile` uses under the
    `mixed_float16` policy) skipped more than `fraction` of the steps, and
    at least 2: it skips a step, and halves its loss scale, whenever the
    gradients are not finite, so a model whose gradients are always NaN/inf
    otherwise trains nothing without a word. A few skips while the scale
    settles are normal. The `Distiller` adds it to `fit` when its optimizer
    scales the loss. Reads the optimizer's step counter once per epoch (no
    per-step host synchronisation).

    Example:

    >>> import warnings, keras, numpy as np
    >>> from keras_cskd.callbacks import SkippedStepWarning
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile(keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD()), "mse")
    >>> x = np.full((8, 2), np.inf, "float32")  # every gradient non-finite
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     _ = model.fit(x, np.zeros((8, 1)), batch_size=2, verbose=0,
    ...                   callbacks=[SkippedStepWarning()])
    >>> print(next(w.message for w in caught if w.category is RuntimeWarning))
    Epoch 1: the loss scaler skipped 4 of 4 training steps ...
    """

    def __init__(self, fraction=0.5):
        super().__init__()
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"fraction must be in [0, 1), got {fraction}.")
        self.fraction = float(fraction)
        self._start = 0
        self._steps = 0

    @classmethod
    def add_to(cls, callbacks):
        """`callbacks` (a list, or None) with a `SkippedStepWarning`, unless
        they hold one (a `CallbackList` is returned unchanged)."""
        if isinstance(callbacks, keras.callbacks.CallbackList):
            return callbacks
        callbacks = list(callbacks or [])
        if not any(isinstance(callback, cls) for callback in callbacks):
            callbacks.append(cls())
        return callbacks

    def _iterations(self):
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def on_epoch_begin(self, epoch, logs=None):
        optimizer = getattr(self.model, "optimizer", None)
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            self._start = self._iterations()
        self._steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self._steps = batch + 1

    def on_epoch_end(self, epoch, logs=None):
        optimizer = getattr(self.model, "optimizer", None)
        if not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            return
        skipped = self._steps - (self._iterations() - self._start)
        if skipped >= 2 and skipped > self.fraction * self._steps:
            scale = float(keras.ops.convert_to_numpy(optimizer.dynamic_scale))
            warnings.warn(
                f"Epoch {epoch + 1}: the loss scaler skipped {skipped} of {self._steps} "
                f"training steps (non-finite float16 gradients; loss scale now {scale:g}), "
                "so the model did not learn from those batches. Check the inputs for "
                "NaN/inf and lower the learning rate, or train in float32 "
                "(keras.config.set_dtype_policy('float32')).",
                RuntimeWarning,
                stacklevel=2,
            )


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore` that resumes mid-epoch exactly.

    Same arguments as the Keras callback. With an integer `save_freq`, Keras
    3 backs up every `save_freq` batches, but after an interruption it
    restarts the interrupted epoch from its first batch *with the weights
    saved mid-epoch*: the batches before the backup are trained on twice,
    and a backup made after a resume records epoch 0. This subclass replays
    those batches (their updates are discarded), then reloads the backup,
    so training continues from the batch after the backup with exactly the
    saved weights, optimizer state and mixup generator. With a data order
    that depends only on the epoch (`shuffle=False`, or a seeded dataset)
    and no other unsaved randomness (Keras saves no Dropout/augmentation
    random state), the resumed run ends with the same weights as a run that
    never stopped. The epoch's logged metrics include the replayed batches.

    Example:

    >>> import tempfile
    >>> from keras_cskd.callbacks import BackupAndRestore
    >>> backup = BackupAndRestore(tempfile.mkdtemp(), save_freq=50)
    >>> backup.save_freq
    50
    """

    def __init__(
        self, backup_dir, save_freq="epoch", double_checkpoint=False, delete_checkpoint=True
    ):
        super().__init__(
            backup_dir,
            save_freq=save_freq,
            double_checkpoint=double_checkpoint,
            delete_checkpoint=delete_checkpoint,
        )
        self._resume_after_batch = None

    def _load_model(self):
        super()._load_model()
        self._resume_after_batch = None
        if self.save_freq == "epoch" or not os.path.exists(self._training_metadata_path):
            return
        with open(self._training_metadata_path) as handle:
            metadata = json.load(handle)
        self._current_epoch = int(metadata["epoch"])
        self._resume_after_batch = int(metadata.get("batch", 0))

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self._resume_after_batch is not None:
            if batch < self._resume_after_batch:
                return  # replaying a batch the backup already includes
            self.model.load_weights(self._weights_path)
            self._resume_after_batch = None
            self._last_batch_seen = batch
            self._batches_seen_since_last_saving = 0
            return
        super().on_train_batch_end(batch, logs)


class AtomicCheckpoint(keras.callbacks.Callback):
    """Saves the model at the end of every epoch to `filepath` atomically:
    written to a temporary file first and then renamed, so an interruption
    (Ctrl-C, a killed job) never leaves a half-written checkpoint.

    Example:

    >>> import keras, numpy as np, tempfile, os
    >>> from keras_cskd.callbacks import AtomicCheckpoint
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> path = os.path.join(tempfile.mkdtemp(), "last.keras")
    >>> _ = model.fit(np.zeros((4, 2)), np.zeros((4, 1)), verbose=0,
    ...               callbacks=[AtomicCheckpoint(path)])
    >>> os.path.exists(path)
    True
    """

    def __init__(self, filepath):
        super().__init__()
        self.filepath = str(filepath)
        if not self.filepath.endswith(".keras"):
            raise ValueError(f"filepath must end in .keras, got {self.filepath!r}.")

    def on_epoch_end(self, epoch, logs=None):
        import os

        temporary = self.filepath[: -len(".keras")] + ".partial.keras"
        self.model.save(temporary)
        os.replace(temporary, self.filepath)
