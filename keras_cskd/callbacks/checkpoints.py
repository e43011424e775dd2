"""Checkpoints that survive kills and NaN: atomic writes, never a good
checkpoint replaced by a model gone bad, exact mid-epoch resume. Built on
Keras' public callback API (the one workaround, where `fit` starts after a
resume, lives in `keras_cskd._backend`)."""

import json
import os
import shutil
import warnings

import keras
import numpy as np

from keras_cskd import _backend
from keras_cskd._files import copy_atomically, partial_path, write_atomically, write_text_atomically


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


class BackupAndRestore(keras.callbacks.Callback):
    """`keras.callbacks.BackupAndRestore`'s job, surviving kills and NaN, and
    resuming mid-epoch exactly.

    Same arguments and files as the Keras callback (a backup written by
    either resumes with either), written on Keras' public callback API.
    Three differences:

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
        super().__init__()
        if not backup_dir:
            raise ValueError("Empty `backup_dir` argument passed")
        if save_freq != "epoch" and (isinstance(save_freq, bool) or not isinstance(save_freq, int)):
            raise ValueError(
                "Invalid value for argument `save_freq`. "
                f"Received: save_freq={save_freq}. "
                "Expected either 'epoch' or an integer value."
            )
        self.backup_dir = str(backup_dir)
        self.save_freq = save_freq
        self.double_checkpoint = double_checkpoint
        self.delete_checkpoint = delete_checkpoint
        # Keras' file names, so that either callback resumes the other's backup.
        self._weights_path = os.path.join(self.backup_dir, "latest.weights.h5")
        self._training_metadata_path = os.path.join(self.backup_dir, "training_metadata.json")
        self._prev_weights_path = self._weights_path + ".bkp"
        self._prev_training_metadata_path = self._training_metadata_path + ".bkp"
        self._current_epoch = 0
        self._last_batch_seen = 0
        self._batches_since_backup = 0
        self._resume_after_batch = None
        self._logs = None
        self._refused = None

    # ----------------------------------------------------------- restoring
    def on_train_begin(self, logs=None):
        self._logs, self._refused = None, None
        self._current_epoch, self._last_batch_seen, self._batches_since_backup = 0, 0, 0
        for name in (self._weights_path, self._training_metadata_path):
            partial = partial_path(name)
            if os.path.exists(partial):  # left by a process killed mid-write
                os.remove(partial)
        if not self.model.built:
            raise ValueError(
                "To use the BackupAndRestore callback, your model must be built before "
                f"you call `fit()`. Model {self.model.name!r} is unbuilt: build it "
                "beforehand by calling it on a batch of data."
            )
        try:
            self._load_model()
            return
        except (OSError, ValueError, KeyError) as error:
            failure = error
        if os.path.exists(self._prev_weights_path):
            copy_atomically(self._prev_weights_path, self._weights_path)
            if os.path.exists(self._prev_training_metadata_path):
                copy_atomically(self._prev_training_metadata_path, self._training_metadata_path)
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
        if not os.path.exists(self._weights_path):
            return  # nothing backed up yet
        metadata = self._read_metadata()
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None and not optimizer.built:
            optimizer.build(self.model.trainable_variables)  # its state is in the file
        self.model.load_weights(self._weights_path)
        if metadata is None:
            return
        epoch = int(metadata["epoch"])
        _backend.start_fit_at_epoch(self.model, epoch)
        if self.save_freq != "epoch":
            self._current_epoch = epoch
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
        self._current_epoch = epoch + 1
        self._last_batch_seen = 0
        if self.save_freq == "epoch":
            self._save_model()

    def on_train_batch_end(self, batch, logs=None):
        if self._resume_after_batch is not None:
            if batch < self._resume_after_batch:
                return  # replaying a batch the backup already includes
            self.model.load_weights(self._weights_path)
            self._resume_after_batch = None
            self._last_batch_seen = batch
            self._batches_since_backup = 0
            return
        self._logs = logs
        if self.save_freq == "epoch":
            return
        # As Keras counts them: batches are zero-indexed, a new epoch
        # restarts the count (also with steps_per_execution > 1).
        if batch <= self._last_batch_seen:
            self._batches_since_backup += batch + 1
        else:
            self._batches_since_backup += batch - self._last_batch_seen
        self._last_batch_seen = batch
        if self._batches_since_backup >= self.save_freq:
            self._batches_since_backup = 0
            self._save_model()

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
        if self.delete_checkpoint and os.path.exists(self.backup_dir):
            shutil.rmtree(self.backup_dir)


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
