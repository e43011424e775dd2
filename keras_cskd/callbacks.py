"""Callbacks for distillation runs."""

import json
import os
import warnings

import keras
import numpy as np

from keras_cskd._files import copy_atomically, partial_path, write_atomically, write_text_atomically


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


class UncountedStepWarning(keras.callbacks.Callback):
    """Warns at the end of an epoch in which some training steps had nothing
    to distil: every position masked (all padding, all-zero sample
    weights), or, for a batch-wise loss (CSKD, DIST, STKD), fewer than two
    positions kept. Those steps add 0 to the distillation term and are left
    out of the logged `distillation_loss`; an epoch with no counted step
    trained the student on its supervised loss alone. The `Distiller`
    adds it to `fit`; it reads the Distiller's `uncounted_steps` metric
    once per epoch.

    Example:

    >>> from keras_cskd.callbacks import UncountedStepWarning
    >>> UncountedStepWarning.add_to(None)  # doctest: +ELLIPSIS
    [<keras_cskd.callbacks.UncountedStepWarning object at ...>]
    """

    def __init__(self):
        super().__init__()
        self._steps = 0

    @classmethod
    def add_to(cls, callbacks):
        """`callbacks` (a list, or None) with an `UncountedStepWarning`,
        unless they hold one (a `CallbackList` is returned unchanged)."""
        if isinstance(callbacks, keras.callbacks.CallbackList):
            return callbacks
        callbacks = list(callbacks or [])
        if not any(isinstance(callback, cls) for callback in callbacks):
            callbacks.append(cls())
        return callbacks

    def on_epoch_begin(self, epoch, logs=None):
        self._steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self._steps = batch + 1

    def on_epoch_end(self, epoch, logs=None):
        counter = getattr(self.model, "uncounted_steps", None)
        if counter is None:
            return
        uncounted = int(round(float(keras.ops.convert_to_numpy(counter.result()))))
        if uncounted <= 0:
            return
        if uncounted >= self._steps:
            what = (
                f"none of its {self._steps} training steps had anything to distil, so the "
                "student learnt from its supervised loss alone"
            )
        else:
            what = (
                f"{uncounted} of its {self._steps} training steps had nothing to distil and "
                "are left out of the logged distillation_loss"
            )
        warnings.warn(
            f"Epoch {epoch + 1}: {what} (every position masked or of weight 0, or fewer "
            "than 2 kept positions for a batch-wise loss). Check the masks, sample weights "
            "and padding of the data, and drop a last batch of one sample.",
            RuntimeWarning,
            stacklevel=2,
        )


class CorruptBackupError(OSError):
    """A backup that cannot be read back: the message names the file and
    what to do (delete the folder to start over)."""


def _nonfinite_variables(model):
    """Paths of the model's float variables (its optimizer's included) that
    hold NaN or inf."""
    variables = list(model.weights)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and getattr(optimizer, "built", False):
        variables += list(optimizer.variables)
    seen, bad = set(), []
    for variable in variables:
        if id(variable) in seen or not keras.backend.is_float_dtype(variable.dtype):
            continue
        seen.add(id(variable))
        if not np.all(np.isfinite(keras.ops.convert_to_numpy(variable))):
            bad.append(variable.path)
    return bad


def unsafe_to_save(model, logs=None):
    """Why `model` must not replace a good checkpoint, or None: a NaN/inf
    logged loss (e.g. the batch that made `TerminateOnNaN` stop training)
    or NaN/inf in any weight or optimizer variable. Every checkpoint
    callback of keras-cskd asks this before writing.

    Example:

    >>> import keras, numpy as np
    >>> from keras_cskd.callbacks import unsafe_to_save
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, name="dense")], name="m")
    >>> print(unsafe_to_save(model))
    None
    >>> unsafe_to_save(model, {"loss": float("nan")})
    'the loss is nan'
    >>> _ = model.layers[0].kernel.assign(np.full((2, 1), np.nan))
    >>> unsafe_to_save(model)
    'the weights hold NaN or inf (m/dense/kernel)'
    """
    loss = (logs or {}).get("loss")
    if loss is not None and not np.all(np.isfinite(np.asarray(loss, dtype="float64"))):
        return f"the loss is {float(np.asarray(loss)):g}"
    bad = _nonfinite_variables(model)
    if bad:
        more = f", and {len(bad) - 3} more" if len(bad) > 3 else ""
        return f"the weights hold NaN or inf ({', '.join(bad[:3])}{more})"
    return None


class TerminateOnNaN(keras.callbacks.TerminateOnNaN):
    """`keras.callbacks.TerminateOnNaN` that also looks at the weights.

    Keras' callback stops when the logged loss is NaN or inf. A model can
    go bad without that: on TensorFlow a ReLU maps a NaN input to 0, so a
    student whose kernel holds NaN can keep logging a finite loss. This one
    also stops (or raises, with `raise_error=True`) when a trainable weight
    holds NaN or inf, checked every `every` batches with one small
    device-to-host transfer. Use it with `AtomicCheckpoint` or
    `keras_cskd.callbacks.BackupAndRestore`, which then keep the last good
    checkpoint.

    Example:

    >>> from keras_cskd.callbacks import TerminateOnNaN
    >>> TerminateOnNaN(every=10).every
    10
    """

    def __init__(self, raise_error=False, every=1):
        super().__init__(raise_error=raise_error)
        if int(every) < 1:
            raise ValueError(f"every must be >= 1, got {every}.")
        self.every = int(every)

    def on_batch_end(self, batch, logs=None):
        super().on_batch_end(batch, logs)
        if self.model.stop_training or (batch + 1) % self.every:
            return
        weights = [w for w in self.model.trainable_weights if keras.backend.is_float_dtype(w.dtype)]
        if not weights:
            return
        finite = keras.ops.all(
            keras.ops.stack([keras.ops.all(keras.ops.isfinite(w)) for w in weights])
        )
        if bool(keras.ops.convert_to_numpy(finite)):
            return
        message = f"Batch {batch}: the weights hold NaN or inf"
        if self.raise_error:
            raise RuntimeError(message + ". Terminating training immediately.")
        print(message + ", terminating training")
        self.model.stop_training = True


def _refusal(callback, where, problem):
    """Warns (once per `fit`) that `callback` did not write `where`."""
    if callback._refused is None:
        warnings.warn(
            f"{type(callback).__name__}: not saving {where}: {problem}. The last good "
            "checkpoint is kept. Find the cause (a learning rate too high, bad data) "
            "before training on from it.",
            stacklevel=3,
        )
    callback._refused = problem


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore` that survives kills and NaN, and
    resumes mid-epoch exactly.

    Same arguments as the Keras callback. Three differences:

    - Every backup is written atomically (a temporary file, `fsync`, then a
      rename; the epoch and batch it was made at are stored inside the
      weights file): a process killed at any moment, even mid-write, leaves
      the previous backup or the new one, never a truncated file. Keras'
      callback writes `latest.weights.h5` in place, and a kill during that
      write leaves a backup that no rerun can open.
    - A backup is never replaced by a model gone bad: when the logged loss
      or any weight is NaN/inf (see `unsafe_to_save`), the backup is not
      written and, at the end of training, not deleted (a warning says so).
      Pair it with `keras_cskd.callbacks.TerminateOnNaN`.
    - With an integer `save_freq`, Keras 3 backs up every `save_freq`
      batches, but after an interruption it restarts the interrupted epoch
      from its first batch *with the weights saved mid-epoch*: the batches
      before the backup are trained on twice, and a backup made after a
      resume records epoch 0. This subclass replays those batches (their
      updates are discarded), then reloads the backup, so training continues
      from the batch after the backup with exactly the saved weights,
      optimizer state and mixup generator. With a data order that depends
      only on the epoch (`shuffle=False`, or a seeded dataset) and no other
      unsaved randomness (Keras saves no Dropout/augmentation random
      state), the resumed run ends with the same weights as a run that
      never stopped. The epoch's logged metrics include the replayed
      batches.

    A backup that cannot be read back raises `CorruptBackupError`, naming
    the file and the fix. `double_checkpoint=True` also keeps the previous
    backup (`latest.weights.h5.bkp`), used when the latest cannot be read.

    Example:

    >>> import tempfile
    >>> from keras_cskd.callbacks import BackupAndRestore
    >>> backup = BackupAndRestore(tempfile.mkdtemp(), save_freq=50)
    >>> backup.save_freq
    50
    """

    # Where the epoch and batch of a backup are stored inside its weights
    # file (an HDF5 attribute), so that they are replaced with it at once.
    _METADATA_ATTRIBUTE = "keras_cskd_training_metadata"

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
        self._logs = None
        self._refused = None

    # ----------------------------------------------------------- restoring
    def on_train_begin(self, logs=None):
        self._logs, self._refused = None, None
        for name in (self._weights_path, self._training_metadata_path):
            partial = partial_path(name)
            if os.path.exists(partial):  # left by a process killed mid-write
                os.remove(partial)
        try:
            self._load_model()
            return
        except (OSError, ValueError, KeyError) as error:
            if not self.model.built:
                raise
            failure = error
        if os.path.exists(self._prev_weights_path):
            copy_atomically(self._prev_weights_path, self._weights_path)
            try:
                self._load_model()
                return
            except (OSError, ValueError, KeyError):
                pass
        first_line = (str(failure).splitlines() or [""])[0][:200]
        raise CorruptBackupError(
            f"BackupAndRestore cannot resume from {self._weights_path} "
            f"({type(failure).__name__}: {first_line}): the file is cut short or damaged, "
            "or was written for another model. Delete the folder "
            f"{self.backup_dir} to train from the start, or put back a good copy of it."
        ) from failure

    def _load_model(self):
        self._resume_after_batch = None
        if not self.model.built or not os.path.exists(self._weights_path):
            if not self.model.built:
                super()._load_model()  # Keras' error for an unbuilt model
            return  # nothing backed up yet
        metadata = self._read_metadata()
        super()._load_model()
        if metadata is None:
            return
        self.model._initial_epoch = int(metadata["epoch"])
        if self.save_freq != "epoch":
            self._current_epoch = int(metadata["epoch"])
            self._resume_after_batch = int(metadata.get("batch", 0))

    def _read_metadata(self):
        """The backup's epoch and batch: from inside the weights file, else
        (a backup written by Keras' callback) from its JSON file."""
        import h5py

        with h5py.File(self._weights_path, "r") as handle:
            stored = handle.attrs.get(self._METADATA_ATTRIBUTE)
        if stored is not None:
            return json.loads(stored)
        if os.path.exists(self._training_metadata_path):
            with open(self._training_metadata_path) as handle:
                return json.load(handle)
        return None

    # ------------------------------------------------------------- backing up
    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        self._logs = logs
        super().on_epoch_end(epoch, logs)

    def on_train_batch_end(self, batch, logs=None):
        if self._resume_after_batch is not None:
            if batch < self._resume_after_batch:
                return  # replaying a batch the backup already includes
            self.model.load_weights(self._weights_path)
            self._resume_after_batch = None
            self._last_batch_seen = batch
            self._batches_seen_since_last_saving = 0
            return
        self._logs = logs
        super().on_train_batch_end(batch, logs)

    def _save_model(self):
        problem = unsafe_to_save(self.model, self._logs)
        if problem is not None:
            _refusal(self, f"a backup to {self.backup_dir}", problem)
            return
        os.makedirs(self.backup_dir, exist_ok=True)
        metadata = json.dumps({"epoch": self._current_epoch, "batch": self._last_batch_seen})
        if self.double_checkpoint and os.path.exists(self._weights_path):
            copy_atomically(self._weights_path, self._prev_weights_path)
            if os.path.exists(self._training_metadata_path):
                copy_atomically(self._training_metadata_path, self._prev_training_metadata_path)

        def write(path):
            import h5py

            self.model.save_weights(path, overwrite=True)
            with h5py.File(path, "a") as handle:
                handle.attrs[self._METADATA_ATTRIBUTE] = metadata

        write_atomically(self._weights_path, write)
        # For Keras' callback and for people; this class reads the copy
        # inside the weights file.
        write_text_atomically(self._training_metadata_path, metadata)

    def on_train_end(self, logs=None):
        problem = self._refused or unsafe_to_save(self.model, self._logs)
        if problem is not None:
            if os.path.exists(self._weights_path):
                warnings.warn(
                    f"BackupAndRestore: training ended with a model gone bad ({problem}); "
                    f"the last good backup in {self.backup_dir} is kept, and the next fit "
                    "with this callback resumes from it.",
                    stacklevel=2,
                )
            return
        super().on_train_end(logs)


class AtomicCheckpoint(keras.callbacks.Callback):
    """Saves the model at the end of every epoch to `filepath`, safely:

    - atomically: written to a temporary file, flushed to disk (`fsync`)
      and renamed, so an interruption (Ctrl-C, SIGKILL, a lost machine)
      leaves the previous checkpoint or the new one, never a truncated
      file (`keras.callbacks.ModelCheckpoint` writes in place);
    - never over a good checkpoint with a model gone bad: when the epoch's
      loss or any weight is NaN/inf (see `unsafe_to_save`) the file is left
      as it is and a warning says so. Pair it with
      `keras_cskd.callbacks.TerminateOnNaN`.

    A `.keras` file of a `Distiller` holds its optimizer state: load it
    with `keras.saving.load_model` and call `fit` to train on.

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
        self._refused = None

    def on_train_begin(self, logs=None):
        self._refused = None
        if os.path.exists(partial_path(self.filepath)):  # left by a process killed mid-write
            os.remove(partial_path(self.filepath))

    def on_epoch_end(self, epoch, logs=None):
        problem = unsafe_to_save(self.model, logs)
        if problem is not None:
            _refusal(self, f"epoch {epoch + 1} to {self.filepath}", problem)
            return
        os.makedirs(os.path.dirname(os.path.abspath(self.filepath)), exist_ok=True)
        write_atomically(self.filepath, self.model.save)
