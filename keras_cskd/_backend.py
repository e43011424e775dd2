"""The only backend-specific code in keras-cskd, and the one place of every
workaround of a Keras behaviour, each piece naming the behaviour it works
around: telling a concrete tensor (whose values can be checked eagerly)
from a symbolic or traced one; reading a tensor's Keras mask (no public
getter); `tf.distribute` replica scaling and gathering; restoring the
variables JAX's `fit` empties when a step fails; compiling each of a run's
identical JAX programs once; moving the epoch a resumed `fit` starts at;
loading a saved optimizer under another backend than it was saved with;
a gradient taken inside the forward computation (the chunked token losses:
`keras.ops` has no `grad`); gradients PyTorch's `zero_grad` leaves behind."""

import contextlib
import shutil
import tempfile

import keras
import numpy as np


def is_concrete(x):
    """True when `x` holds values that can be read now (eager execution),
    False inside `tf.function`, `jax.jit` or a symbolic Keras build."""
    if isinstance(x, (np.ndarray, np.generic, float, int)):
        return True
    if isinstance(x, keras.KerasTensor):
        return False
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.executing_eagerly() and hasattr(x, "numpy")
    if backend == "jax":
        import jax

        return not isinstance(x, jax.core.Tracer)
    if backend == "torch":
        import torch

        if hasattr(torch, "compiler") and torch.compiler.is_compiling():
            return False
        return x.device.type != "meta"
    return True


def keras_mask(x):
    """The Keras mask of a model output (e.g. from `Embedding(mask_zero=True)`
    upstream), or None. Keras 3 keeps masks as a `_keras_mask` attribute,
    or, for tensors that refuse attributes (JAX arrays), in a table keyed by
    the tensor; only its private `keras.src.backend.get_keras_mask` reads
    both, and Keras exports no public getter."""
    try:
        from keras.src.backend import get_keras_mask
    except ImportError:  # pragma: no cover - a Keras that moved it
        return getattr(x, "_keras_mask", None)
    return get_keras_mask(x)


def _tf_replica_context():
    """The `tf.distribute` replica context when this code runs as one of
    several replicas (MirroredStrategy, MultiWorkerMirroredStrategy,
    TPUStrategy inside `strategy.run`), else None."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    if not tf.distribute.has_strategy():
        return None
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync <= 1:
        return None
    return context


def num_replicas_in_sync():
    """How many replicas each compute a shard of the batch and sum their
    gradients: > 1 only inside a multi-replica `tf.distribute` step.

    JAX's `keras.distribution` (DataParallel, ModelParallel) is not counted:
    there the step is one program over global (sharded) arrays, so a batch
    reduction already spans the global batch.
    """
    context = _tf_replica_context()
    return 1 if context is None else context.num_replicas_in_sync


def divide_by_replicas(value):
    """`value / num_replicas_in_sync()`: the share of one replica in a
    loss that Keras sums over the replicas' gradients, as Keras' own
    `scale_loss_for_distribution` does for compiled losses."""
    replicas = num_replicas_in_sync()
    return value if replicas == 1 else value / replicas


def times_replicas(value):
    """Undoes `divide_by_replicas` (for logging a Keras-scaled loss)."""
    replicas = num_replicas_in_sync()
    return value if replicas == 1 else value * replicas


def mean_over_replicas(value):
    """The mean of a replica's `value` over the `tf.distribute` replicas; the
    value itself outside a multi-replica step. For a normaliser that must be
    the global batch's, such as a count of kept tokens: each replica sees
    only its shard, and shards of padded sequences keep different counts."""
    context = _tf_replica_context()
    if context is None:
        return value
    import tensorflow as tf

    return context.all_reduce(tf.distribute.ReduceOp.MEAN, value)


def gather_replicas(structure):
    """Concatenates each replica's tensors along the batch axis (axis 0), in
    replica order, so every replica sees the global batch; the identity
    outside a multi-replica `tf.distribute` step. `None` leaves stay `None`.

    Differentiable: TensorFlow's `ReplicaContext.all_gather` sums the
    upstream gradients over the replicas and hands each its own slice, so a
    loss `L(global batch) / num_replicas` computed on every replica gives,
    after the optimizer's cross-replica sum, the gradient of `L` itself.
    """
    context = _tf_replica_context()
    if context is None:
        return structure

    replicas = context.num_replicas_in_sync

    def gather(x):
        if x is None:
            return None
        gathered = context.all_gather(x, axis=0)
        # all_gather loses the static shape; the losses read the class count.
        if x.shape.rank is not None:
            batch = None if x.shape[0] is None else x.shape[0] * replicas
            gathered.set_shape([batch, *x.shape[1:]])
        return gathered

    return keras.tree.map_structure(gather, structure, none_is_leaf=True)


def unscale_loss_for_distribution(value, reduction="sum_over_batch_size"):
    """Undoes the `1 / num_replicas` that Keras' loss reduction applies under
    `tf.distribute` (`keras.src.losses.loss.scale_loss_for_distribution`,
    called by `Loss.__call__` for the "sum_over_batch_size"/"mean"
    reductions): keras-cskd's losses return the value of the batch they are
    given on every replica, like the batch-wise losses, and the `Distiller`
    divides its distillation term by the replica count once. The identity
    outside a multi-replica `tf.distribute` strategy."""
    if keras.backend.backend() != "tensorflow" or reduction not in (
        "sum_over_batch_size",
        "mean",
        "mean_with_sample_weight",
    ):
        return value
    import tensorflow as tf

    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if replicas > 1:
        value = value * keras.ops.cast(replicas, value.dtype)
    return value


class KeepStateForFirstStep(keras.callbacks.Callback):
    """Snapshot, at the start of training, of the variables JAX's `fit`
    empties during a step; `restore()` refills the ones left empty.

    Works around Keras' JAX trainer: `fit` sets `variable._value = None` on
    the model's, optimizer's and metrics' variables while its stateless
    compiled step runs (`JAXTrainer._purge_model_variables`) and refills
    them in `jax_state_sync()` afterwards; an error raised while the first
    step is traced (e.g. a batch of one sample for CSKD) skips the refill
    and leaves a model whose variables have no value."""

    def __init__(self):
        super().__init__()
        self._saved = []

    def on_train_begin(self, logs=None):
        model = self.model
        variables = [
            *model.trainable_variables,
            *model.non_trainable_variables,
            *model.metrics_variables,
        ]
        if getattr(model, "optimizer", None) is not None:
            variables += list(model.optimizer.variables)
        self._saved = [(variable, variable.value) for variable in variables]

    def restore(self):
        for variable, value in self._saved:
            if getattr(variable, "_value", 0) is None:  # emptied, never refilled
                variable.assign(value)
        self._saved = []


def fit_keeping_state(fit, arguments):
    """Calls `fit(**arguments)`; under JAX, puts back the variables a failed
    first step left empty (see `KeepStateForFirstStep`) before re-raising.
    `arguments` are `keras.Model.fit`'s, by name."""
    callbacks = arguments.get("callbacks")
    if keras.backend.backend() != "jax" or isinstance(callbacks, keras.callbacks.CallbackList):
        return fit(**arguments)
    guard = KeepStateForFirstStep()
    arguments = {**arguments, "callbacks": [*(callbacks or []), guard]}
    try:
        return fit(**arguments)
    except BaseException:
        guard.restore()
        raise


def is_tf_dataset(data):
    """True for a `tf.data.Dataset` (without importing TensorFlow when the
    program has not)."""
    import sys

    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(data, tf.data.Dataset)


def check_tf_dataset_batches(dataset, checks):
    """`dataset.map` that hands each batch's labels and sample weights (not
    `x`) to `checks` on the host (`tf.numpy_function`) before the batch goes
    on, for `(x, y)` and `(x, y, sample_weight)` elements of plain tensors;
    other datasets are returned unchanged. TensorFlow-specific because
    Keras' TensorFlow trainer reads tf.data batches inside its compiled step
    (`tf.function`), where a Python check cannot run; in the pipeline it
    runs before the step that uses the batch, on every backend. An error
    surfaces as a `tf.errors.InvalidArgumentError` carrying the message
    (`Distiller.fit` re-raises it as the `ValueError`)."""
    import tensorflow as tf

    spec = dataset.element_spec
    if (
        not isinstance(spec, tuple)
        or len(spec) not in (2, 3)
        or any(not isinstance(s, tf.TensorSpec) for s in spec[1:])
    ):
        return dataset

    def check_on_host(index, *values):
        checks((None, *values), int(index))
        return np.zeros((), "int32")

    def check(index, batch):
        x, rest = batch[0], batch[1:]
        done = tf.numpy_function(check_on_host, [index, *rest], tf.int32, stateful=True)
        with tf.control_dependencies([done]):
            rest = [tf.identity(value) for value in rest]
        return (x, *rest)

    return dataset.enumerate().map(check)


@contextlib.contextmanager
def compile_identical_programs_once():
    """Within the block, under JAX, a program that compiles to the same XLA
    computation as one compiled before in the block is loaded, not compiled.

    Keras traces and compiles a new `jax.jit` train, test and predict
    function for every model, so a run that trains one architecture over
    several seeds and methods (`keras-cskd distill`: 26 fits) compiles the
    same program again and again (XLA compilation was 23 s of the main
    job's 56 s). JAX's persistent compilation cache keys a program by its
    computation without names or source locations, so it finds these
    repeats. It is used here with a temporary folder that is removed at
    the end of the block: nothing is kept between runs. A cache folder the
    user configured (`JAX_COMPILATION_CACHE_DIR`) is left as it is; other
    backends are unaffected.

    Example:

    >>> from keras_cskd import _backend
    >>> with _backend.compile_identical_programs_once():
    ...     pass
    """
    if keras.backend.backend() != "jax":
        yield
        return
    settings = {
        "jax_compilation_cache_dir": None,
        "jax_persistent_cache_min_compile_time_secs": 0.0,
        "jax_persistent_cache_min_entry_size_bytes": 0,
    }
    try:
        import jax
        from jax.experimental.compilation_cache import compilation_cache

        previous = {name: getattr(jax.config, name) for name in settings}
        configured = previous["jax_compilation_cache_dir"]
        enabled = jax.config.jax_enable_compilation_cache
    except (ImportError, AttributeError):  # a JAX without these settings
        yield
        return
    if configured or not enabled:
        yield
        return
    folder = tempfile.mkdtemp(prefix="keras-cskd-xla-")
    settings["jax_compilation_cache_dir"] = folder
    for name, value in settings.items():
        jax.config.update(name, value)
    compilation_cache.reset_cache()  # JAX reads the settings at its next compile
    try:
        yield
    finally:
        for name, value in previous.items():
            jax.config.update(name, value)
        compilation_cache.reset_cache()
        shutil.rmtree(folder, ignore_errors=True)


def start_fit_at_epoch(model, epoch):
    """Makes the running `fit` continue at `epoch` (a resumed backup).

    Works around the absence of a public way for a callback to move the
    epoch `fit` starts at: Keras' own `keras.callbacks.BackupAndRestore`
    sets the model's private `_initial_epoch`, which `fit` reads after
    `on_train_begin`. A Keras without it is refused loudly (a silent restart
    at epoch 0 would train the restored weights again)."""
    if not hasattr(model, "_initial_epoch"):  # pragma: no cover - a future Keras
        raise RuntimeError(
            "keras_cskd.callbacks.BackupAndRestore cannot resume at epoch "
            f"{epoch}: this Keras ({keras.__version__}) no longer lets a callback set "
            "the epoch fit starts at. Pass fit(initial_epoch=...) yourself, or use "
            "keras.callbacks.BackupAndRestore."
        )
    model._initial_epoch = int(epoch)


def portable_compile_config(config):
    """A saved compile config whose optimizer loads under any backend.

    Works around Keras saving a backend's own optimizer class: a model
    compiled under PyTorch stores `"module":
    "keras.src.backend.torch.optimizers.torch_adam"`, and loading it under
    JAX rebuilds PyTorch's Adam, whose update fails on JAX arrays
    ("expected Tensor ... got jaxlib ArrayImpl"). The public class of the same
    name (`keras.optimizers.Adam`) is used instead; other configs are
    returned unchanged."""
    optimizer = config.get("optimizer") if isinstance(config, dict) else None
    if not isinstance(optimizer, dict):
        return config
    module = str(optimizer.get("module", ""))
    if module.startswith("keras.src.backend.") and ".optimizers" in module:
        optimizer = {**optimizer, "module": "keras.optimizers"}
        config = {**config, "optimizer": optimizer}
    return config


def value_and_grad(fn, args):
    """`(objective, aux), grads`: `fn(*args)` returns `(objective, aux)`, a
    scalar and anything else, and `grads` are the gradients of `objective`
    with respect to each of `args` (a tuple), computed now, in the forward
    computation, with the backend's own autodiff.

    Works around Keras 3 exposing no backend-agnostic gradient: `keras.ops`
    has no `grad`/`vjp` (only `custom_gradient` and `remat`, which act in a
    later backward pass). The chunked token losses
    (`keras_cskd.ops.chunked`) compute each chunk's gradient while its
    logits exist and keep only the gradient, so no chunk is recomputed.
    `args` should be cut from the outer computation (`stop_gradient`); the
    results carry no gradient of their own."""
    backend = keras.backend.backend()
    args = tuple(args)
    if backend == "jax":
        import jax

        (objective, aux), grads = jax.value_and_grad(
            fn, argnums=tuple(range(len(args))), has_aux=True
        )(*args)
        return (objective, aux), tuple(grads)
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(args)
            objective, aux = fn(*args)
        grads = tape.gradient(objective, args, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return (objective, aux), tuple(grads)
    if backend == "torch":
        import torch

        with torch.enable_grad():
            leaves = tuple(a.detach().requires_grad_(True) for a in args)
            objective, aux = fn(*leaves)
            grads = torch.autograd.grad(objective, leaves, allow_unused=True)
        grads = tuple(
            torch.zeros_like(a) if g is None else g.detach() for a, g in zip(leaves, grads)
        )
        aux = keras.tree.map_structure(lambda x: x.detach(), aux)
        return (objective.detach(), aux), grads
    raise NotImplementedError(  # pragma: no cover - numpy/openvino backends
        f"Gradients are not available under the {backend!r} backend."
    )


def clear_gradients(variables):
    """Sets the PyTorch gradient of each of `variables` to None (a no-op
    under the other backends, whose steps hold no gradient between calls).

    Keras' torch trainer clears gradients before each step with
    `torch.nn.Module.zero_grad()`, which reaches the parameters registered
    in the module tree. A model's variables are registered when Keras
    builds or trains that model itself; a keras-hub model (a subclassed
    Task over a functional backbone) used inside another model -- a
    Distiller's student -- has none registered (Keras 3.15), so its
    gradients were added up over the steps: each update used the sum of all
    earlier gradients. Measured in tests/test_hub.py."""
    if keras.backend.backend() != "torch":
        return
    for variable in variables:
        value = variable.value
        if getattr(value, "grad", None) is not None:
            value.grad = None
