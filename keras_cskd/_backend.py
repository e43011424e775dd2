"""The only backend-specific code in keras-cskd: telling a concrete tensor
(whose values can be checked eagerly) from a symbolic or traced one."""

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
