"""Helpers for the numeric tests (imported by the test modules; conftest.py
holds only fixtures, so that pytest-xdist's controller process, which runs
no test, never imports Keras).

The library is backend-agnostic; these helpers may not be: `value_and_grad`
differentiates a function of the student logits under whichever backend
Keras runs on (`jax.grad`, `tf.GradientTape` or `torch.autograd`).

`LOSS_CASES` pairs every keras-cskd loss (with a few settings each) with its
float64 NumPy reference from `tests/reference.py`.
"""

import keras
import numpy as np
import reference

from keras_cskd import losses
from keras_cskd.layers import CosineSimilarityWeightedTemperature

BACKEND = keras.backend.backend()


def as_numpy_dtype(x, dtype):
    """A NumPy array of `x` in `dtype` (bfloat16 through ml_dtypes)."""
    if dtype == "bfloat16":
        import ml_dtypes

        return np.asarray(x, dtype=np.float32).astype(ml_dtypes.bfloat16)
    return np.asarray(x, dtype=dtype)


def rounded(x, dtype):
    """`x` rounded to `dtype` and back to float64: what a loss fed `dtype`
    inputs actually sees."""
    return np.asarray(as_numpy_dtype(x, dtype), dtype=np.float64)


def as_tensor(x, dtype="float32"):
    return keras.ops.convert_to_tensor(as_numpy_dtype(x, dtype), dtype=dtype)


def to_numpy(x):
    """Any backend tensor (or number) as a float64 NumPy array."""
    return np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(x, "float32")), np.float64)


def value_and_grad(fn, teacher, student, dtype="float32"):
    """`(fn(t, s), d fn / d s)` as float64 NumPy, under the active backend.

    `fn(teacher_tensor, student_tensor)` must return a scalar tensor; both
    inputs are given as tensors of `dtype`, and the gradient is taken with
    respect to the student logits only.
    """
    t = as_numpy_dtype(teacher, dtype)
    s = as_numpy_dtype(student, dtype)
    if BACKEND == "jax":
        import jax
        import jax.numpy as jnp

        t_tensor = jnp.asarray(t)
        value, grad = jax.value_and_grad(lambda x: fn(t_tensor, x))(jnp.asarray(s))
    elif BACKEND == "tensorflow":
        import tensorflow as tf

        t_tensor = tf.convert_to_tensor(t)
        s_tensor = tf.convert_to_tensor(s)
        with tf.GradientTape() as tape:
            tape.watch(s_tensor)
            value = fn(t_tensor, s_tensor)
        grad = tape.gradient(value, s_tensor)
        if grad is None:  # no dependence on the student at all
            grad = tf.zeros_like(s_tensor)
    elif BACKEND == "torch":
        import torch

        t_tensor = keras.ops.convert_to_tensor(t, dtype=dtype)
        s_tensor = keras.ops.convert_to_tensor(s, dtype=dtype).detach().clone()
        s_tensor.requires_grad_(True)
        value = fn(t_tensor, s_tensor)
        grad = None
        if value.requires_grad:  # else: no dependence on the student at all
            (grad,) = torch.autograd.grad(value, s_tensor, allow_unused=True)
        if grad is None:
            grad = torch.zeros_like(s_tensor)
        value = value.detach()
    else:  # pragma: no cover
        raise NotImplementedError(f"No gradient helper for backend {BACKEND!r}.")
    return float(to_numpy(value)), to_numpy(grad)


def reusable_value_and_grad(fn):
    """`value_and_grad` for a function `fn(t, s, *args)` evaluated on many
    inputs (property tests): under JAX it is compiled once per input
    shape/dtype with `jax.jit` (op-by-op JAX recompiles every primitive
    for every new shape); other backends run it eagerly.

    Returns `run(teacher, student, *args, dtype="float32") -> (value, grad)`.
    """
    if BACKEND == "jax":
        import jax
        import jax.numpy as jnp

        compiled = jax.jit(jax.value_and_grad(fn, argnums=1))

        def run(teacher, student, *args, dtype="float32"):
            value, grad = compiled(
                jnp.asarray(as_numpy_dtype(teacher, dtype)),
                jnp.asarray(as_numpy_dtype(student, dtype)),
                *args,
            )
            return float(to_numpy(value)), to_numpy(grad)

        return run

    def run(teacher, student, *args, dtype="float32"):
        return value_and_grad(lambda t, s: fn(t, s, *args), teacher, student, dtype)

    return run


def reusable(fn, static_argnames=()):
    """`fn` compiled with `jax.jit` under JAX (once per input shape/dtype and
    static arguments), unchanged elsewhere: for property tests that evaluate
    one function on many random shapes."""
    if BACKEND == "jax":
        import jax

        return jax.jit(fn, static_argnames=static_argnames)
    return fn


class LossCase:
    """A keras-cskd loss with fixed settings and its reference."""

    def __init__(self, name, make, ref, batchwise, needs_labels=False, scale=1.0, cswt=None):
        self.name = name
        self.make = make  # () -> DistillationLoss
        self.ref = ref  # (t, s, labels, sample_weight) -> float
        self.batchwise = batchwise
        self.needs_labels = needs_labels
        # Natural size of the loss (tau^2 for tau^2-scaled losses): the
        # absolute tolerance of float32 results is relative to it.
        self.scale = scale
        # (low, high, granularity) for CSWT losses, else None.
        self.cswt = cswt

    def __call__(self, loss, t, s, labels=None, sample_weight=None, mask=None):
        kwargs = {"sample_weight": sample_weight}
        if self.needs_labels:
            kwargs["labels"] = labels
        if mask is not None:
            kwargs["mask"] = mask
        return loss(t, s, **kwargs)

    def __repr__(self):
        return self.name


def _cswt_case(granularity, low, high):
    return LossCase(
        f"cskd_cswt_{granularity}_{low:g}_{high:g}",
        lambda: losses.CosineSimilarityDistillation(
            cswt=CosineSimilarityWeightedTemperature(low=low, high=high, granularity=granularity)
        ),
        lambda t, s, y, w: reference.cskd_cswt_loss(t, s, low, high, granularity, w),
        batchwise=True,
        scale=high**2,
        cswt=(low, high, granularity),
    )


LOSS_CASES = [
    LossCase(
        "kd_tau4",
        lambda: losses.KLDivergenceDistillation(temperature=4.0),
        lambda t, s, y, w: reference.kd_loss(t, s, 4.0, w),
        batchwise=False,
        scale=16.0,
    ),
    LossCase(
        "kd_tau1",
        lambda: losses.KLDivergenceDistillation(temperature=1.0),
        lambda t, s, y, w: reference.kd_loss(t, s, 1.0, w),
        batchwise=False,
    ),
    LossCase(
        "mse",
        lambda: losses.LogitMSEDistillation(),
        lambda t, s, y, w: reference.mse_loss(t, s, w),
        batchwise=False,
    ),
    LossCase(
        "cskd_tau4",
        lambda: losses.CosineSimilarityDistillation(temperature=4.0),
        lambda t, s, y, w: reference.cskd_loss(t, s, 4.0, w),
        batchwise=True,
        scale=16.0,
    ),
    LossCase(
        "cskd_tau1",
        lambda: losses.CosineSimilarityDistillation(temperature=1.0),
        lambda t, s, y, w: reference.cskd_loss(t, s, 1.0, w),
        batchwise=True,
    ),
    _cswt_case("sample", 2.0, 6.0),
    _cswt_case("class", 2.0, 6.0),
    _cswt_case("sample", 1.0, 3.0),
    _cswt_case("class", 0.5, 4.0),
    LossCase(
        "stkd_tau4",
        lambda: losses.SimilarityTransferDistillation(temperature=4.0),
        lambda t, s, y, w: reference.stkd_loss(t, s, 4.0, 1.0, 1.0, w),
        batchwise=True,
        scale=16.0,
    ),
    LossCase(
        "stkd_tau2_weighted",
        lambda: losses.SimilarityTransferDistillation(
            temperature=2.0, kl_weight=0.5, batch_weight=3.0
        ),
        lambda t, s, y, w: reference.stkd_loss(t, s, 2.0, 0.5, 3.0, w),
        batchwise=True,
        scale=12.0,
    ),
    LossCase(
        "dist_tau4",
        lambda: losses.DISTDistillation(temperature=4.0),
        lambda t, s, y, w: reference.dist_loss(t, s, 4.0, 1.0, 1.0, w),
        batchwise=True,
        scale=16.0,
    ),
    LossCase(
        "dist_tau1_weighted",
        lambda: losses.DISTDistillation(temperature=1.0, inter_weight=2.0, intra_weight=0.5),
        lambda t, s, y, w: reference.dist_loss(t, s, 1.0, 2.0, 0.5, w),
        batchwise=True,
        scale=2.0,
    ),
    LossCase(
        "dkd_tau4",
        lambda: losses.DecoupledKDDistillation(temperature=4.0),
        lambda t, s, y, w: reference.dkd_loss(t, s, y, 4.0, 1.0, 8.0, w),
        batchwise=False,
        needs_labels=True,
        scale=16.0 * 8.0,
    ),
    LossCase(
        "dkd_tau2_weighted",
        lambda: losses.DecoupledKDDistillation(
            temperature=2.0, target_weight=0.5, non_target_weight=2.0
        ),
        lambda t, s, y, w: reference.dkd_loss(t, s, y, 2.0, 0.5, 2.0, w),
        batchwise=False,
        needs_labels=True,
        scale=8.0,
    ),
]

# The divergences of language-model distillation.
LOSS_CASES += [
    LossCase(
        "reverse_kl_tau1",
        lambda: losses.ReverseKLDistillation(),
        lambda t, s, y, w: reference.batch_reduce(reference.reverse_kl_per_sample(t, s), w),
        batchwise=False,
    ),
    LossCase(
        "jsd_beta0.3_tau2",
        lambda: losses.JensenShannonDistillation(beta=0.3, temperature=2.0),
        lambda t, s, y, w: reference.batch_reduce(reference.jsd_per_sample(t, s, 0.3, 2.0), w),
        batchwise=False,
        scale=4.0,
    ),
    LossCase(
        "skew_kl",
        lambda: losses.SkewKLDistillation(alpha=0.1),
        lambda t, s, y, w: reference.batch_reduce(reference.skew_kl_per_sample(t, s, 0.1), w),
        batchwise=False,
    ),
    LossCase(
        "skew_reverse_kl",
        lambda: losses.SkewKLDistillation(alpha=0.1, reverse=True),
        lambda t, s, y, w: reference.batch_reduce(
            reference.skew_kl_per_sample(t, s, 0.1, reverse=True), w
        ),
        batchwise=False,
    ),
    LossCase(
        "total_variation",
        lambda: losses.TotalVariationDistillation(),
        lambda t, s, y, w: reference.batch_reduce(reference.tv_per_sample(t, s), w),
        batchwise=False,
    ),
]

LOSS_CASE_IDS = [case.name for case in LOSS_CASES]
# One case per method (the others differ only in settings): for the
# robustness tests, where the settings do not matter.
METHOD_CASES = [
    case
    for case in LOSS_CASES
    if case.name
    in (
        "kd_tau4",
        "mse",
        "cskd_tau4",
        "cskd_cswt_sample_2_6",
        "cskd_cswt_class_2_6",
        "stkd_tau4",
        "dist_tau4",
        "dkd_tau4",
        "reverse_kl_tau1",
        "jsd_beta0.3_tau2",
        "skew_kl",
        "total_variation",
    )
]
METHOD_CASE_IDS = [case.name for case in METHOD_CASES]
BATCHWISE_CASES = [case for case in LOSS_CASES if case.batchwise]


def random_logits(rng, shape, scale=1.0):
    """Teacher and student logits: independent normals times `scale`."""
    return rng.normal(size=shape) * scale, rng.normal(size=shape) * scale


def random_labels(rng, batch, classes):
    return rng.integers(0, classes, size=batch)


def never_trains_its_teachers(distiller):
    """True when none of the Distiller's teachers' weights is among the
    weights it trains (the teachers' own `trainable` flags are left as they
    were: a teacher may be another Distiller's student)."""
    trained = {id(w) for w in distiller.trainable_weights}
    return all(id(w) not in trained for t in distiller.teachers.live for w in t.weights)
