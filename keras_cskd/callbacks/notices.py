"""Callbacks that say, once an epoch, when training learnt less than it
seems: steps a loss scaler skipped, steps with nothing to distil."""

import warnings

import keras


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
    >>> [type(callback).__name__ for callback in UncountedStepWarning.add_to(None)]
    ['UncountedStepWarning']
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
