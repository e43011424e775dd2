"""Caching the teacher's logits: run a frozen teacher once over a fixed data
set, so that distillation costs what training the student alone costs."""

import numpy as np

from keras_cskd.checks import models as models_checks
from keras_cskd.checks import tensors as tensors_checks


def cache_teacher_logits(teacher, x, batch_size=256, verbose=0):
    """Runs the teacher once over `x` and returns its logits (NumPy); for a
    list of teachers, a list with each teacher's logits.

    For a fixed data set (no random augmentation) this makes distillation
    as cheap as training the student: pass the result with the inputs,

    ```python
    logits = keras_cskd.cache_teacher_logits(teacher, x_train)
    distiller.fit({"x": x_train, "teacher_logits": logits}, y_train)
    ```

    Several teachers are cached each on its own (not combined): the
    `Distiller` combines them in the step, per loss, at the loss's
    temperature (`ensemble=`), so one cache serves every loss and mode; an
    ensemble of ten teachers then costs one student step per batch.

    `x` is anything `teacher.predict` accepts (arrays, a `tf.data.Dataset`
    or `PyDataset` yielding inputs in a fixed order). The logits are checked
    (finite, not probabilities).

    Example:

    >>> import keras, numpy as np
    >>> from keras_cskd import cache_teacher_logits
    >>> teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> cache_teacher_logits(teacher, np.zeros((5, 4), "float32")).shape
    (5, 3)
    >>> [a.shape for a in cache_teacher_logits([teacher, teacher], np.zeros((5, 4), "float32"))]
    [(5, 3), (5, 3)]
    """
    if isinstance(teacher, (list, tuple)):
        return [cache_teacher_logits(t, x, batch_size, verbose) for t in teacher]
    models_checks.check_no_softmax_head(teacher, "teacher")
    logits = teacher.predict(x, batch_size=batch_size, verbose=verbose)
    if isinstance(logits, (list, tuple, dict)):
        raise ValueError("The teacher returns several outputs; cache one logits tensor.")
    logits = np.asarray(logits, dtype="float32")
    tensors_checks.check_values(logits, "teacher logits", "cache_teacher_logits")
    return logits
