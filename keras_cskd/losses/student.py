"""The student's supervised loss: cross-entropy on its logits, and the
resolution of `Distiller.compile(loss=...)` so that no name of a
cross-entropy reads logits as probabilities."""

import keras
from keras import ops

from keras_cskd.losses.base import register


@register
class StudentCrossEntropy(keras.losses.Loss):
    """Cross-entropy on the student's logits, sparse or one-hot labels.

    Picks sparse or categorical cross-entropy from the labels' shape:
    integer labels `(B,)`/`(B, 1)` or one-hot/soft labels `(B, C)`; for
    per-position logits `(B, ..., C)`, labels `(B, ...)` or `(B, ..., C)`
    (a Keras mask on the logits, e.g. from `Embedding(mask_zero=True)`,
    drops padded positions, as in any Keras loss). Always
    `from_logits=True`: `Distiller` students output logits. The `Distiller`'s
    default supervised loss (`compile(loss="auto")`).

    Example:

    >>> import numpy as np
    >>> from keras_cskd.losses import StudentCrossEntropy
    >>> logits = np.log(np.array([[0.5, 0.25, 0.25]], "float32"))
    >>> round(float(StudentCrossEntropy()(np.array([0]), logits)), 4)
    0.6931
    """

    def __init__(self, kind="auto", name="student_cross_entropy", **kwargs):
        super().__init__(name=name, **kwargs)
        if kind not in ("auto", "sparse", "categorical"):
            raise ValueError(f"kind must be 'auto', 'sparse' or 'categorical', got {kind!r}.")
        self.kind = kind

    def call(self, y_true, y_pred):
        y_pred = ops.cast(y_pred, "float32")
        kind = self.kind
        if kind == "auto":
            one_hot = (
                len(y_true.shape) == len(y_pred.shape)
                and y_true.shape[-1] == y_pred.shape[-1]
                and y_pred.shape[-1] != 1
            )
            kind = "categorical" if one_hot else "sparse"
        if kind == "categorical":
            return keras.losses.categorical_crossentropy(
                ops.cast(y_true, "float32"), y_pred, from_logits=True
            )
        y_true = ops.reshape(ops.cast(y_true, "int32"), ops.shape(y_pred)[:-1])
        return keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)

    def get_config(self):
        return {**super().get_config(), "kind": self.kind}


_CROSS_ENTROPY_NAMES = {
    "sparse_categorical_crossentropy": "sparse",
    "sparsecategoricalcrossentropy": "sparse",
    "categorical_crossentropy": "categorical",
    "categoricalcrossentropy": "categorical",
    "crossentropy": "auto",
    "auto": "auto",
}
_CROSS_ENTROPY_FUNCTIONS = {
    keras.losses.sparse_categorical_crossentropy: "sparse",
    keras.losses.categorical_crossentropy: "categorical",
}
# Keras losses that read probabilities unless built with from_logits=True.
_PROBABILITY_LOSSES = {
    keras.losses.SparseCategoricalCrossentropy: keras.losses.sparse_categorical_crossentropy,
    keras.losses.CategoricalCrossentropy: keras.losses.categorical_crossentropy,
    keras.losses.CategoricalFocalCrossentropy: keras.losses.categorical_focal_crossentropy,
    keras.losses.BinaryCrossentropy: keras.losses.binary_crossentropy,
    keras.losses.BinaryFocalCrossentropy: keras.losses.binary_focal_crossentropy,
}


def student_loss(identifier):
    """Resolves the `Distiller`'s `compile(loss=...)`, so that no way of
    naming a cross-entropy reads the student's logits as probabilities.

    The names of the categorical cross-entropies (`"auto"`,
    `"sparse_categorical_crossentropy"`, `"SparseCategoricalCrossentropy"`,
    `"categorical_crossentropy"`, `"CategoricalCrossentropy"`) and the
    functions `keras.losses.sparse_categorical_crossentropy` /
    `categorical_crossentropy` (whose default is `from_logits=False`) become a
    `StudentCrossEntropy` (`from_logits=True`). A Keras cross-entropy that
    would read probabilities -- an instance built with `from_logits=False`,
    or the name or function of the binary and focal cross-entropies -- is
    refused with the fix. Other losses go to `keras.losses.get` unchanged.

    Example:

    >>> import keras
    >>> from keras_cskd.losses import student_loss
    >>> student_loss("sparse_categorical_crossentropy").kind
    'sparse'
    >>> student_loss(keras.losses.categorical_crossentropy).kind
    'categorical'
    >>> student_loss("binary_crossentropy")
    Traceback (most recent call last):
    ...
    ValueError: compile(loss='binary_crossentropy') would read the student's logits as
    probabilities (from_logits=False). ...
    """
    if identifier is None:
        return None
    if isinstance(identifier, str) and identifier.lower() in _CROSS_ENTROPY_NAMES:
        return StudentCrossEntropy(_CROSS_ENTROPY_NAMES[identifier.lower()])
    if callable(identifier) and identifier in _CROSS_ENTROPY_FUNCTIONS:
        return StudentCrossEntropy(_CROSS_ENTROPY_FUNCTIONS[identifier])
    loss = keras.losses.get(identifier) if isinstance(identifier, (str, dict)) else identifier
    probability_functions = {function: cls for cls, function in _PROBABILITY_LOSSES.items()}
    if isinstance(loss, tuple(_PROBABILITY_LOSSES)):
        reads_probabilities = not getattr(loss, "from_logits", True)
        cls = next(c for c in _PROBABILITY_LOSSES if isinstance(loss, c))
        named = f"{type(loss).__name__}(from_logits=False)"
    elif callable(loss) and loss in probability_functions:
        reads_probabilities = True
        cls = probability_functions[loss]
        named = f"keras.losses.{loss.__name__}"
    else:
        return loss
    if not reads_probabilities:
        return loss
    named = repr(identifier) if isinstance(identifier, str) else named
    fix = (
        "'sparse_categorical_crossentropy' (resolved with from_logits=True)"
        if cls in (keras.losses.SparseCategoricalCrossentropy, keras.losses.CategoricalCrossentropy)
        else f"keras.losses.{cls.__name__}(from_logits=True)"
    )
    why = "" if "from_logits=False" in named else " (from_logits=False)"
    raise ValueError(
        f"compile(loss={named}) would read the student's logits as probabilities{why}. "
        f"Distiller students output logits: pass `from_logits=True`, e.g. {fix}."
    )


@register
class FunctionLoss(keras.losses.Loss):
    """A function `f(y_true, y_pred)` of per-sample values as a
    `keras.losses.Loss` (Keras' reduction and `sample_weight`), so that the
    `Distiller` calls every supervised loss the same way.

    Example:

    >>> import numpy as np
    >>> from keras_cskd.losses.student import FunctionLoss
    >>> loss = FunctionLoss(lambda y, p: (y - p) ** 2)
    >>> float(loss(np.array([1.0, 3.0]), np.array([0.0, 1.0])))
    2.5
    """

    def __init__(self, fn, name=None, reduction="sum_over_batch_size", dtype=None):
        if isinstance(fn, (str, dict)):
            fn = keras.saving.deserialize_keras_object(fn)
        super().__init__(
            name=name or getattr(fn, "__name__", "loss"), reduction=reduction, dtype=dtype
        )
        self.fn = fn

    def call(self, y_true, y_pred):
        return self.fn(y_true, y_pred)

    def get_config(self):
        return {**super().get_config(), "fn": keras.saving.serialize_keras_object(self.fn)}
