"""Checks of the batches of any input pipeline, before the step that uses
them: the first batch is read ahead (and, for a Python generator, put
back) so that the models can be run on it (`checks.models.
check_first_batch`); the labels and sample weights of every batch are
checked as it leaves the pipeline (a min/max over a batch's labels on the
host; nothing is added to the compiled step).

What cannot be checked before a step: a bad label or a one-sample batch
that only a later batch of a stream holds is refused (or, for a
one-sample batch, left out of the distillation term and warned about)
when that batch is read, after the earlier batches trained.
"""

import types

import keras
import numpy as np
from keras import ops

from keras_cskd import _backend
from keras_cskd.checks.arrays import check_class_labels, check_sample_weight
from keras_cskd.checks.models import label_spec
from keras_cskd.checks.tensors import check_hard_labels


def first_batch(arguments, size=64):
    """`(x, batch)`: the data to train on (a generator is re-chained after
    its first batch is read) and its first batch `(x, y, sample_weight)`
    (at most `size` samples; None for data that cannot be read twice, or
    no data), for the checks that need the models' outputs.

    Example:

    >>> import numpy as np
    >>> from keras_cskd.checks.batches import first_batch
    >>> x, batch = first_batch({"x": np.zeros((100, 3)), "y": np.arange(100)})
    >>> batch[0].shape, batch[1][:3].tolist()
    ((64, 3), [0, 1, 2])
    """
    x = arguments.get("x")
    if x is None:
        return x, None
    leaves = keras.tree.flatten(x)
    if all(isinstance(leaf, np.ndarray) or keras.ops.is_tensor(leaf) for leaf in leaves):
        if not leaves or len(leaves[0]) == 0:
            return x, None

        def take(value):
            if value is None:
                return None
            return keras.tree.map_structure(lambda leaf: leaf[:size], value)

        return x, (take(x), take(arguments.get("y")), take(arguments.get("sample_weight")))
    try:
        if isinstance(x, keras.utils.PyDataset):
            if x.num_batches == 0:
                return x, None
            batch = x[0]
        elif isinstance(x, types.GeneratorType):
            try:
                batch = next(x)
            except StopIteration:
                return _chained(), None
            x = _chained(batch, x)
        elif _backend.is_tf_dataset(x):
            batch = next(iter(x.take(1)), None)
            if batch is None:
                return x, None
        elif hasattr(x, "__iter__") and hasattr(x, "__len__"):  # e.g. a torch DataLoader
            batch = next(iter(x), None)
            if batch is None:
                return x, None
        else:
            return x, None
    except NotImplementedError:  # a PyDataset of unknown length
        return x, None
    if not isinstance(batch, tuple):
        batch = (batch,)
    batch = keras.utils.unpack_x_y_sample_weight(batch)
    return x, tuple(
        None if value is None else keras.tree.map_structure(lambda leaf: leaf[:size], value)
        for value in batch
    )


def _chained(*batches):
    """A generator of `batches` (the first one read ahead, then the rest)."""
    if batches:
        yield batches[0]
        yield from batches[1]


class BatchChecks:
    """Checks the labels (class indices in `[0, num_classes)`, whole numbers,
    or one-hot rows of width `num_classes`; hard ones for the losses named
    in `hard_labels_for`) and sample weights (finite, non-negative) of each
    batch `(x, y)` / `(x, y, sample_weight)` it is called with; returns the
    batch. `message` keeps the last error, so that `Distiller.fit` can
    report it as it was raised when a pipeline (tf.data) wraps it.

    Example:

    >>> import numpy as np
    >>> from keras_cskd.checks.batches import BatchChecks
    >>> checks = BatchChecks(num_classes=3)
    >>> x = np.zeros((4, 2), "float32")
    >>> _ = checks((x, np.array([0, 1, 2, 0])))
    >>> checks((x, np.array([0, 1, 2, 3])))
    Traceback (most recent call last):
    ...
    ValueError: Distiller.fit (batch 1 of the data): the labels `y` must be class indices in
    [0, 3) (the student predicts 3 classes), but 1 label(s) lie outside (min 0, max 3). ...
    """

    def __init__(
        self,
        num_classes,
        hard_labels_for=(),
        owner="Distiller.fit",
        position_axes=0,
        positions=None,
        kind="auto",
    ):
        self.num_classes = num_classes
        self.hard_labels_for = tuple(hard_labels_for)
        self.owner = owner
        self.position_axes = position_axes  # of per-position logits (batch, ..., classes)
        self.positions = positions  # their sizes, where known
        self.kind = kind  # the supervised loss's labels: "sparse", "categorical" or "auto"
        self.batches_read = 0
        self.message = None

    @classmethod
    def of(cls, distiller):
        """The checks of the batches given to `distiller.fit`: labels only
        when they are class labels (see `Distiller.labels_are_classes`)."""
        spec = label_spec(distiller)
        return cls(
            distiller.num_classes if distiller.labels_are_classes() else None,
            [type(l).__name__ for l in distiller.terms.losses if l.requires_labels],
            position_axes=spec["position_axes"],
            positions=spec["positions"],
            kind=spec["kind"],
        )

    def __call__(self, batch, index=None):
        index = self.batches_read if index is None else index
        self.batches_read += 1
        if not isinstance(batch, tuple):
            return batch
        _, y, sample_weight = keras.utils.unpack_x_y_sample_weight(batch)
        owner = f"{self.owner} (batch {index} of the data)"
        try:
            if y is not None and self.num_classes is not None and not keras.tree.is_nested(y):
                labels = _on_host(y)
                check_class_labels(
                    labels,
                    self.num_classes,
                    owner,
                    position_axes=self.position_axes,
                    positions=self.positions,
                    kind=self.kind,
                )
                for name in self.hard_labels_for:
                    check_hard_labels(
                        labels,
                        f"{owner}: {name}",
                        "labels `y`",
                        logits_rank=2 + self.position_axes,
                    )
            if sample_weight is not None and not keras.tree.is_nested(sample_weight):
                leading = None if self.positions is None else (None, *self.positions)
                check_sample_weight(_on_host(sample_weight), owner, leading=leading)
        except ValueError as error:
            self.message = str(error)
            raise
        return batch


def _on_host(value):
    return value if isinstance(value, np.ndarray) else np.asarray(ops.convert_to_numpy(value))


class _CheckedPyDataset(keras.utils.PyDataset):
    """A `PyDataset` whose batches pass through `checks` as they are read."""

    def __init__(self, dataset, checks):
        super().__init__(
            workers=dataset.workers,
            use_multiprocessing=dataset.use_multiprocessing,
            max_queue_size=dataset.max_queue_size,
        )
        self.dataset, self.checks = dataset, checks

    @property
    def num_batches(self):
        return self.dataset.num_batches

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return self.checks(self.dataset[index], index)

    def on_epoch_begin(self):
        self.dataset.on_epoch_begin()

    def on_epoch_end(self):
        self.dataset.on_epoch_end()


def check_each_batch(data, checks):
    """`data` (a `PyDataset`, a Python generator or a `tf.data.Dataset`)
    wrapped so that `checks` sees each batch as it is read; other data
    (arrays, checked ahead; a torch `DataLoader`) is returned unchanged.

    Example:

    >>> import itertools
    >>> import numpy as np
    >>> from keras_cskd.checks.batches import BatchChecks, check_each_batch
    >>> batches = ((np.zeros((2, 4)), np.array([0, k])) for k in (1, 2, 5))
    >>> checked = check_each_batch(batches, BatchChecks(num_classes=3))
    >>> [int(y.max()) for _, y in itertools.islice(checked, 2)]
    [1, 2]
    >>> next(checked)
    Traceback (most recent call last):
    ...
    ValueError: Distiller.fit (batch 2 of the data): the labels `y` must be class indices ...
    """
    if isinstance(data, keras.utils.PyDataset):
        return _CheckedPyDataset(data, checks)
    if isinstance(data, types.GeneratorType):
        return (checks(batch) for batch in data)
    if _backend.is_tf_dataset(data):
        return _backend.check_tf_dataset_batches(data, checks)
    return data


def prepare_fit(distiller, arguments):
    """`(arguments, checks)` for `Distiller.fit`: the checks of the arrays
    (`checks.arrays`), the first batch of any pipeline run through the models
    (`checks.models.check_first_batch`), every later batch's labels and
    sample weights checked as it is read (`checks`: a `BatchChecks`), and the
    callbacks that warn once per epoch (steps with nothing to distil; a loss
    scaler that skips steps). `arguments` are `keras.Model.fit`'s, by name."""
    from keras_cskd.callbacks import SkippedStepWarning, UncountedStepWarning
    from keras_cskd.checks.arrays import check_fit_arguments, check_labels_of_arrays
    from keras_cskd.checks.models import check_first_batch

    check_fit_arguments(distiller, arguments)
    distiller._mark_built()
    arguments["x"], first = first_batch(arguments)
    if first is not None:
        classes = check_first_batch(distiller, first)
        if distiller.num_classes is None and distiller.labels_are_classes():
            # A subclassed student: its class count is known only now.
            check_labels_of_arrays(arguments, classes)
    checks = BatchChecks.of(distiller)
    arguments["x"] = check_each_batch(arguments.get("x"), checks)
    callbacks = arguments.get("callbacks")
    if isinstance(getattr(distiller, "optimizer", None), keras.optimizers.LossScaleOptimizer):
        callbacks = SkippedStepWarning.add_to(callbacks)
    arguments["callbacks"] = UncountedStepWarning.add_to(callbacks)
    return arguments, checks
