"""The `Distiller`'s chunked training step (`Distiller(..., chunk_size=n)`):
the student's and the teacher's final hidden states and output heads in
place of their logits, and the loss computed `n` tokens at a time
(`keras_cskd.ops.chunked`), so that the step never holds a `(tokens,
vocabulary)` tensor of logits (nor their gradient).

What is supported is checked when the Distiller is built or compiled,
before any weight moves: one live keras-hub `CausalLM` teacher and student
(or models exposing `.backbone` and `.backbone.token_embedding`), the token
divergences (`CHUNKED_LOSSES`) and fixed-temperature CSKD, no mixup, and a
sparse cross-entropy (or no supervised loss). The value is the unchunked
step's: the same weights `a`, `b` and `w_k`, the same positions (padding,
`sample_weight`, `-100` labels) and each token term the weighted mean over
the kept tokens."""

import functools
import typing

from keras import ops

from keras_cskd import _backend
from keras_cskd import losses as kd_losses
from keras_cskd import ops as kd_ops
from keras_cskd.distiller.step import position_weights
from keras_cskd.ops._common import to_positions


class ChunkedHeads(typing.NamedTuple):
    """What a chunked step carries from `call` to `compute_loss`: the final
    hidden states `(batch, tokens, d)` and the output heads (kernel
    `(d, vocabulary)`, bias or None); the teacher's without gradient."""

    student_hidden: typing.Any
    student_kernel: typing.Any
    student_bias: typing.Any
    teacher_hidden: typing.Any
    teacher_kernel: typing.Any
    teacher_bias: typing.Any


def _divergence(loss):
    """The `divergence=` of `chunked_distillation_and_cross_entropy` for a
    token loss, at its own temperature (and beta / alpha)."""
    if isinstance(loss, kd_losses.KLDivergenceDistillation):
        return "kl"
    if isinstance(loss, kd_losses.ReverseKLDistillation):
        return "reverse_kl"
    if isinstance(loss, kd_losses.JensenShannonDistillation):
        return functools.partial(kd_ops.jensen_shannon_divergence, beta=loss.beta)
    if isinstance(loss, kd_losses.SkewKLDistillation):
        return functools.partial(kd_ops.skew_kl_divergence, alpha=loss.alpha, reverse=loss.reverse)
    if isinstance(loss, kd_losses.TotalVariationDistillation):
        return "tv"
    return None


SUPPORTED = (
    "KLDivergenceDistillation ('kd'), ReverseKLDistillation, JensenShannonDistillation, "
    "SkewKLDistillation, TotalVariationDistillation and CosineSimilarityDistillation "
    "without cswt ('cskd')"
)


def _is_cskd(loss):
    return isinstance(loss, kd_losses.CosineSimilarityDistillation) and loss.cswt is None


def check_chunk_size(chunk_size):
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(
            f"Distiller(chunk_size={chunk_size!r}): give a positive integer (tokens a chunk) "
            "or None."
        )
    return chunk_size


def check_setup(distiller):
    """Refuses, with one line naming the fix, what a chunked step cannot do."""
    owner = f"Distiller(chunk_size={distiller.chunk_size})"
    for loss in distiller.terms.losses:
        if _divergence(loss) is None and not _is_cskd(loss):
            raise ValueError(
                f"{owner} cannot chunk {type(loss).__name__}: it supports {SUPPORTED}; "
                "use chunk_size=None for the other losses."
            )
    if not distiller.teachers.models or not distiller.teachers.live:
        raise ValueError(
            f"{owner} needs the live teacher model (it reads its hidden states): cached "
            "teacher logits (teacher=None) are not supported; use chunk_size=None."
        )
    if len(distiller.teachers.models) > 1:
        raise ValueError(
            f"{owner} distils one teacher: several teachers are not supported; use chunk_size=None."
        )
    if distiller.mixup is not None:
        raise ValueError(f"{owner} does not support mixup: pass mixup_alpha=None.")
    for role, model in (("student", distiller.student), ("teacher", distiller.teachers.live[0])):
        check_model(model, role, owner)


def check_model(model, role, owner):
    backbone = getattr(model, "backbone", None)
    if backbone is None or getattr(backbone, "token_embedding", None) is None:
        raise ValueError(
            f"{owner} needs the {role}'s final hidden states and output head: pass a "
            "keras-hub CausalLM (or a model with .backbone and .backbone.token_embedding); "
            f"{type(model).__name__} has none."
        )
    if backbone.token_embedding.built:
        kd_losses.output_head(model)  # refuses a soft-capped or unreadable head


def check_student_loss(distiller, loss_fn):
    """A sparse cross-entropy on the student's logits, or None."""
    if loss_fn is None:
        return
    if isinstance(loss_fn, kd_losses.StudentCrossEntropy) and loss_fn.kind in ("auto", "sparse"):
        return
    raise ValueError(
        f"Distiller(chunk_size={distiller.chunk_size}) computes the student's loss as a sparse "
        f"cross-entropy from logits in the chunked pass: compile with loss='auto' (or "
        f"'sparse_categorical_crossentropy', or None), not {loss_fn!r}."
    )


def forward(distiller, x, training=True):
    """`ChunkedHeads` of a training step on `x` (no logits computed)."""
    student, teacher = distiller.student, distiller.teachers.live[0]
    student_hidden = student.backbone(x, training=training)
    teacher_hidden = ops.stop_gradient(teacher.backbone(x, training=False))
    student_kernel, student_bias = kd_losses.output_head(student)
    teacher_kernel, teacher_bias = kd_losses.output_head(teacher)
    teacher_kernel = ops.stop_gradient(ops.convert_to_tensor(teacher_kernel))
    if teacher_bias is not None:
        teacher_bias = ops.stop_gradient(ops.convert_to_tensor(teacher_bias))
    if student_bias is not None:
        student_bias = ops.convert_to_tensor(student_bias)
    return ChunkedHeads(
        student_hidden,
        ops.convert_to_tensor(student_kernel),
        student_bias,
        teacher_hidden,
        teacher_kernel,
        teacher_bias,
    )


def metric_logits(heads):
    """The student's logits without gradient (for `metrics=` only)."""
    logits = ops.matmul(
        ops.stop_gradient(heads.student_hidden), ops.stop_gradient(heads.student_kernel)
    )
    if heads.student_bias is not None:
        logits = logits + ops.stop_gradient(heads.student_bias)
    return logits


def loss(distiller, y, step, sample_weight):
    """`(total, student_loss, distillation_loss, counted, statistics)` of a
    chunked step: `a * CE + b * sum_k w_k L_k`, each token term the weighted
    mean over the kept tokens, as the unchunked step computes it; with CSKD,
    the logged `cosine_similarity` (`1 - L / tau^2`) and `temperature`."""
    heads = step.chunked
    hidden = heads.student_hidden
    leading = ops.shape(hidden)[:-1]
    weights = position_weights(step.mask, sample_weight, hidden, y)
    if weights is None and sample_weight is not None:
        weights = ops.reshape(ops.cast(to_positions(sample_weight, hidden), "float32"), leading)
    if weights is None:
        weights = ops.ones(leading, "float32")
    weights = ops.stop_gradient(ops.cast(weights, "float32"))
    kept = ops.cast(weights > 0, "float32")
    # The unchunked terms are `sum(w * l) / kept tokens` (Keras' mean over
    # positions, rescaled to the kept ones); the chunked ones are
    # `sum(w * l) / sum(w)`: equal for 0/1 weights, rescaled here otherwise.
    # Under tf.distribute the kept tokens are the global batch's (their mean
    # over the replicas, as each replica's share is divided by their count).
    kept_tokens = _backend.mean_over_replicas(ops.sum(kept))
    ratio = ops.divide_no_nan(ops.sum(ops.where(weights > 0, weights, 0.0)), kept_tokens)
    ratio = ops.stop_gradient(ratio)
    labels = None
    if distiller.student_loss_fn is not None and y is not None:
        y = ops.convert_to_tensor(y)
        if len(y.shape) == len(hidden.shape) and y.shape[-1] != 1:
            raise ValueError(
                f"Distiller(chunk_size={distiller.chunk_size}) takes integer token labels "
                f"(batch, tokens), not one-hot or soft labels {tuple(y.shape)}."
            )
        labels = ops.reshape(ops.cast(y, "int32"), leading)
    a = ops.cast(distiller.student_loss_weight, "float32")
    b = ops.cast(distiller.distillation_loss_weight, "float32")
    arrays = (hidden, heads.student_kernel, heads.teacher_hidden, heads.teacher_kernel)
    shared = dict(
        mask=weights,
        chunk_size=distiller.chunk_size,
        student_bias=heads.student_bias,
        teacher_bias=heads.teacher_bias,
    )
    # CSKD compares the tokens of the global batch: under tf.distribute every
    # replica gathers the hidden states (`gather_replicas`, as the unchunked
    # step gathers logits), only for CSKD; the token weights always (the
    # step counts when the global batch keeps a token). Identities elsewhere.
    weights_global = _backend.gather_replicas(weights)
    global_arrays = arrays
    if any(_divergence(loss_object) is None for loss_object, _ in distiller.terms.pairs):
        student_global, teacher_global = _backend.gather_replicas((hidden, heads.teacher_hidden))
        global_arrays = (student_global, heads.student_kernel, teacher_global, arrays[3])
    global_shared = dict(shared, mask=weights_global)
    total = ops.zeros((), "float32")
    distillation = ops.zeros((), "float32")
    student_loss = ops.zeros((), "float32")
    statistics = None
    for loss_object, weight in distiller.terms.pairs:
        divergence = _divergence(loss_object)
        if divergence is None:  # CSKD: batch-wise over the tokens, its own passes
            value = kd_ops.chunked_cosine_similarity_distillation(
                *global_arrays, temperature=loss_object.temperature, **global_shared
            )
            total = total + (b * weight) * value
            if loss_object is distiller.terms.statistics_loss:
                tau = loss_object.temperature
                statistics = {
                    "cosine_similarity": 1.0 - ops.stop_gradient(value) / tau**2,
                    "temperature": ops.convert_to_tensor(tau, "float32"),
                }
            distillation = distillation + weight * ops.stop_gradient(value)
            continue
        part_total, part, cross_entropy = kd_ops.chunked_distillation_and_cross_entropy(
            *arrays,
            labels=labels,
            divergence=divergence,
            temperature=loss_object.temperature,
            distillation_weight=ratio * b * weight,
            cross_entropy_weight=ratio * a,
            **shared,
        )
        total = total + part_total
        distillation = distillation + weight * ratio * part
        if labels is not None:
            student_loss = ratio * cross_entropy
        labels = None  # the cross-entropy is computed once
    if labels is not None:  # CSKD alone: one more pass for the cross-entropy
        part_total, _, cross_entropy = kd_ops.chunked_distillation_and_cross_entropy(
            *arrays,
            labels=labels,
            distillation_weight=0.0,
            cross_entropy_weight=ratio * a,
            **shared,
        )
        total = total + part_total
        student_loss = ratio * cross_entropy
    counted = distiller.terms.counted(hidden, None, weights_global)
    # Each replica's share of a loss whose gradients the replicas sum.
    total = _backend.divide_by_replicas(total)
    return total, student_loss, distillation, counted, statistics
