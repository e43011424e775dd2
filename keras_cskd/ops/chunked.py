"""Token distillation at any vocabulary size: the output heads and the loss
computed one chunk of tokens at a time, so that memory does not grow with
tokens x vocabulary.

A language-model distillation step usually holds the student's and the
teacher's logits `(tokens, vocabulary)`, their softmaxes and the logits'
gradient: at 8,192 tokens and a 128k vocabulary each such float32 tensor is
4.2 GB. Here the inputs are the models' final hidden states `(tokens, d)`
and their output projections (a Dense kernel `(d, vocabulary)` and bias, or
a tied embedding matrix transposed); each chunk of `chunk_size` tokens gets
its logits, its loss and, at once, the gradient of that loss with respect
to the student's hidden states, kernel and bias, and only those gradients
(`(tokens, d)` and the kernel's shape) are kept: the peak holds one chunk's
logits, and nothing is recomputed in the backward pass (the approach of
Liger-Kernel's fused linear losses). The value and the gradients are those
of the unchunked loss, up to float32 rounding.

The teacher gets no gradient (its hidden states and kernel are constants).
Gradients are computed with the backend's autodiff inside the forward
computation (`keras_cskd._backend.value_and_grad`) and handed to the outer
gradient through a surrogate term that is 0 in value, so the functions work
inside any compiled step (`jax.jit`, `tf.function`) and in eager PyTorch.
"""

import functools

from keras import ops

from keras_cskd import _backend
from keras_cskd.ops._common import as_float32
from keras_cskd.ops.divergences import (
    jensen_shannon_divergence,
    kl_divergence_distillation,
    reverse_kl_divergence,
    skew_kl_divergence,
    total_variation_distance,
)

#: The divergences `divergence=` names, each `(teacher_logits, student_logits,
#: temperature=...)` -> one value per token.
DIVERGENCES = {
    "kl": kl_divergence_distillation,
    "kd": kl_divergence_distillation,
    "forward_kl": kl_divergence_distillation,
    "reverse_kl": reverse_kl_divergence,
    "jsd": jensen_shannon_divergence,
    "jensen_shannon": jensen_shannon_divergence,
    "skew_kl": skew_kl_divergence,
    "tv": total_variation_distance,
    "total_variation": total_variation_distance,
}


def chunked_distillation_loss(
    student_hidden,
    student_kernel,
    teacher_hidden,
    teacher_kernel,
    divergence="kl",
    mask=None,
    chunk_size=1024,
    temperature=None,
    student_bias=None,
    teacher_bias=None,
):
    """The masked mean over tokens of a divergence between the teacher's and
    the student's token distributions, with the logits
    `hidden @ kernel + bias` computed `chunk_size` tokens at a time.

    Equal (to float32 rounding, values and gradients) to

        t = teacher_hidden @ teacher_kernel + teacher_bias
        s = student_hidden @ student_kernel + student_bias
        sum(w * divergence(t, s)) / sum(w)

    without ever holding a `(tokens, vocabulary)` tensor. 0, with a zero
    gradient, when every token is masked.

    Args:
        student_hidden: the student's final hidden states `(..., d_s)`
            (e.g. `(batch, tokens, d_s)`); every leading axis is a token.
        student_kernel: the student's output projection `(d_s, vocabulary)`
            (a `Dense` kernel; for a tied embedding `(vocabulary, d_s)`,
            e.g. keras-hub's `ReversibleEmbedding`, pass its transpose).
        teacher_hidden, teacher_kernel: the teacher's, `(..., d_t)` with the
            same leading shape and `(d_t, vocabulary)`. No gradient.
        divergence: `"kl"` (alias `"kd"`, `"forward_kl"`: Hinton's KD,
            `tau^2 KL(p_t || p_s)`), `"reverse_kl"`, `"jsd"` (the symmetric
            generalized JSD, beta = 0.5), `"skew_kl"`, `"tv"`, or a callable
            `(teacher_logits, student_logits) -> (chunk,)` values, pure
            `keras.ops` (e.g. `functools.partial(jensen_shannon_divergence,
            beta=0.1)`); see `keras_cskd.ops.divergences`.
        mask: per-token weights `>= 0` of the leading shape (booleans or
            numbers; 0 drops a token), or None (every token counts).
        chunk_size: tokens per chunk (any positive integer; the last chunk
            is padded with tokens of weight 0).
        temperature: the divergence's `tau` (default 1.0, language models'
            usual value); for a callable, passed as `temperature=` only
            when given.
        student_bias, teacher_bias: `(vocabulary,)` biases, or None.

    Returns:
        The scalar loss, differentiable with respect to `student_hidden`,
        `student_kernel` and `student_bias`.

    Example:

    >>> import keras, numpy as np
    >>> from keras_cskd import ops as kd_ops
    >>> rng = np.random.default_rng(0)
    >>> h_s, w_s = rng.normal(size=(2, 5, 4)), rng.normal(size=(4, 11))
    >>> h_t, w_t = rng.normal(size=(2, 5, 6)), rng.normal(size=(6, 11))
    >>> h_s, w_s, h_t, w_t = (a.astype("float32") for a in (h_s, w_s, h_t, w_t))
    >>> chunked = kd_ops.chunked_distillation_loss(h_s, w_s, h_t, w_t, chunk_size=3)
    >>> full = kd_ops.kl_divergence_distillation(h_t @ w_t, h_s @ w_s, temperature=1.0)
    >>> full = np.mean(keras.ops.convert_to_numpy(full))
    >>> bool(np.isclose(float(chunked), float(full), rtol=1e-5))
    True
    """
    loss, _, _ = chunked_distillation_and_cross_entropy(
        student_hidden,
        student_kernel,
        teacher_hidden,
        teacher_kernel,
        labels=None,
        divergence=divergence,
        mask=mask,
        chunk_size=chunk_size,
        temperature=temperature,
        student_bias=student_bias,
        teacher_bias=teacher_bias,
    )
    return loss


def chunked_distillation_and_cross_entropy(
    student_hidden,
    student_kernel,
    teacher_hidden,
    teacher_kernel,
    labels=None,
    divergence="kl",
    mask=None,
    chunk_size=1024,
    temperature=None,
    student_bias=None,
    teacher_bias=None,
    distillation_weight=1.0,
    cross_entropy_weight=1.0,
):
    """`(total, distillation, cross_entropy)` in one chunked pass: the
    distillation loss of `chunked_distillation_loss` and the student's
    cross-entropy on integer `labels` (the leading shape; both masked means
    over the same tokens), with
    `total = distillation_weight * distillation + cross_entropy_weight *
    cross_entropy`. Only `total` carries a gradient (the two terms are for
    logging); its gradient costs what the distillation's alone does (one
    gradient of the logits per chunk). Labels at masked tokens are ignored
    (e.g. -100); at kept tokens they must lie in `[0, vocabulary)`.
    Without `labels`, `cross_entropy` is 0 and `total` the weighted
    distillation loss. The weights may be tensors (e.g. `keras.Variable`s
    a schedule changes). Other arguments: `chunked_distillation_loss`.

    Example:

    >>> import numpy as np
    >>> from keras_cskd import ops as kd_ops
    >>> h, w = np.ones((3, 2), "float32"), np.zeros((2, 4), "float32")
    >>> total, kd, ce = kd_ops.chunked_distillation_and_cross_entropy(
    ...     h, w, h, w, labels=np.array([0, 1, 2]), chunk_size=2)
    >>> [round(float(v), 4) for v in (total, kd, ce)]  # uniform: CE = log 4
    [1.3863, 0.0, 1.3863]
    """
    per_token = _divergence(divergence, temperature)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"`chunk_size` must be a positive integer, got {chunk_size!r}.")
    student_hidden = ops.convert_to_tensor(student_hidden)
    teacher_hidden = ops.convert_to_tensor(teacher_hidden)
    student_kernel = ops.convert_to_tensor(student_kernel)
    teacher_kernel = ops.convert_to_tensor(teacher_kernel)
    if student_bias is not None:
        student_bias = ops.convert_to_tensor(student_bias)
    if teacher_bias is not None:
        teacher_bias = ops.convert_to_tensor(teacher_bias)
    _check_shapes(student_hidden, student_kernel, teacher_hidden, teacher_kernel)

    # Tokens as rows; masked tokens' hidden states replaced by zeros, so
    # that nothing they hold (NaN padding) reaches a value or a gradient.
    h = ops.reshape(student_hidden, (-1, student_hidden.shape[-1]))
    h_t = ops.reshape(ops.stop_gradient(teacher_hidden), (-1, teacher_hidden.shape[-1]))
    if mask is None:
        w = ops.ones(ops.shape(h)[:1], "float32")
    else:
        w = ops.reshape(as_float32(mask), (-1,))
    keep = w > 0
    w = ops.where(keep, w, 0.0)
    h = ops.where(ops.expand_dims(keep, -1), h, ops.zeros_like(h))
    h_t = ops.where(ops.expand_dims(keep, -1), h_t, ops.zeros_like(h_t))
    y = None
    if labels is not None:
        y = ops.reshape(ops.convert_to_tensor(labels), (-1,))
        y = ops.where(keep, ops.cast(y, "int32"), 0)
        y = ops.clip(y, 0, student_kernel.shape[-1] - 1)
    total_weight = ops.sum(w)
    inverse = ops.where(total_weight > 0, 1.0 / ops.maximum(total_weight, 1e-30), 0.0)

    # Pad to whole chunks (weight 0) and cut into (chunks, chunk_size, ...).
    tokens = h.shape[0]
    chunk = chunk_size if tokens is None else max(1, min(chunk_size, tokens))
    count = ops.shape(h)[0]
    padding = (chunk - count % chunk) % chunk
    xs = [_pad_rows(h, padding), _pad_rows(h_t, padding), _pad_rows(w, padding)]
    if y is not None:
        xs.append(_pad_rows(y, padding))
    xs = tuple(ops.reshape(x, (-1, chunk, *x.shape[1:])) for x in xs)
    xs = tuple(ops.stop_gradient(x) for x in xs)

    kernel = ops.stop_gradient(student_kernel)
    t_kernel = ops.stop_gradient(teacher_kernel)
    bias = None if student_bias is None else ops.stop_gradient(student_bias)
    t_bias = None if teacher_bias is None else ops.stop_gradient(teacher_bias)
    params = (kernel,) if bias is None else (kernel, bias)
    scale = ops.stop_gradient(as_float32(inverse))
    weights = (
        ops.stop_gradient(as_float32(distillation_weight)),
        ops.stop_gradient(as_float32(cross_entropy_weight)),
    )

    def objective(h_chunk, t_chunk, w_chunk, y_chunk, *params):
        s = ops.matmul(h_chunk, params[0])
        if len(params) > 1:
            s = s + params[1]
        t = ops.matmul(t_chunk, t_kernel)
        if t_bias is not None:
            t = t + t_bias
        s32 = as_float32(s)
        kept = w_chunk > 0
        values = ops.where(kept, as_float32(per_token(t, s32)), 0.0)
        distillation = ops.sum(w_chunk * values) * scale
        total = weights[0] * distillation
        cross_entropy = ops.zeros((), "float32")
        if y_chunk is not None:
            target = ops.take_along_axis(s32, ops.expand_dims(y_chunk, -1), axis=-1)[:, 0]
            nll = ops.where(kept, ops.logsumexp(s32, axis=-1) - target, 0.0)
            cross_entropy = ops.sum(w_chunk * nll) * scale
            total = total + weights[1] * cross_entropy
        return total, (distillation, cross_entropy)

    def step(index, carry):
        sums, grads, hidden_grads = carry
        h_chunk, t_chunk, w_chunk, *rest = (ops.take(x, index, axis=0) for x in xs)
        y_chunk = rest[0] if rest else None

        def chunk_objective(h_chunk, *params):
            return objective(h_chunk, t_chunk, w_chunk, y_chunk, *params)

        (total, parts), chunk_grads = _backend.value_and_grad(chunk_objective, (h_chunk, *params))
        sums = (sums[0] + total, sums[1] + parts[0], sums[2] + parts[1])
        grads = tuple(g + as_float32(c) for g, c in zip(grads, chunk_grads[1:]))
        # Keras' `ops.scan` under TensorFlow requires each step's output to
        # have the carry's shape (JAX's and PyTorch's do not), so the hidden
        # states' gradients are written into a carried buffer instead.
        update = ops.expand_dims(as_float32(chunk_grads[0]), 0)
        hidden_grads = ops.slice_update(hidden_grads, (index, 0, 0), update)
        return sums, grads, hidden_grads

    zero = ops.zeros((), "float32")
    init = (
        (zero, zero, zero),
        tuple(ops.zeros(p.shape, "float32") for p in params),
        ops.zeros(ops.shape(xs[0]), "float32"),
    )
    sums, param_grads, hidden_grads = ops.fori_loop(0, ops.shape(xs[0])[0], step, init)
    hidden_grads = ops.reshape(hidden_grads, (-1, h.shape[-1]))[:count]

    # The gradients, handed to the outer autodiff: `surrogate` is linear in
    # the differentiable inputs with the gradients as (constant)
    # coefficients, and `surrogate - stop_gradient(surrogate)` is 0.
    differentiable = [(h, hidden_grads), (student_kernel, param_grads[0])]
    if student_bias is not None:
        differentiable.append((student_bias, param_grads[1]))
    surrogate = zero
    for x, g in differentiable:
        surrogate = surrogate + ops.sum(as_float32(x) * ops.stop_gradient(as_float32(g)))
    total = ops.stop_gradient(sums[0]) + (surrogate - ops.stop_gradient(surrogate))
    return total, ops.stop_gradient(sums[1]), ops.stop_gradient(sums[2])


def _divergence(divergence, temperature):
    if callable(divergence):
        if temperature is None:
            return divergence
        return functools.partial(divergence, temperature=temperature)
    name = str(divergence).lower()
    if name not in DIVERGENCES:
        raise ValueError(
            f"Unknown divergence {divergence!r}: use one of {sorted(DIVERGENCES)} or a callable "
            "(teacher_logits, student_logits) -> per-token values."
        )
    temperature = 1.0 if temperature is None else temperature
    return functools.partial(DIVERGENCES[name], temperature=temperature)


def _check_shapes(student_hidden, student_kernel, teacher_hidden, teacher_kernel):
    for label, hidden, kernel in (
        ("student", student_hidden, student_kernel),
        ("teacher", teacher_hidden, teacher_kernel),
    ):
        if len(kernel.shape) != 2 or len(hidden.shape) < 2:
            raise ValueError(
                f"The {label}'s hidden states must be (..., d) and its kernel (d, vocabulary); "
                f"got {tuple(hidden.shape)} and {tuple(kernel.shape)}."
            )
        if hidden.shape[-1] is not None and kernel.shape[0] != hidden.shape[-1]:
            raise ValueError(
                f"The {label}'s kernel {tuple(kernel.shape)} does not match its hidden size "
                f"{hidden.shape[-1]}: the kernel is (d, vocabulary) (a tied embedding "
                "(vocabulary, d) is passed transposed)."
            )
    if student_kernel.shape[1] != teacher_kernel.shape[1]:
        raise ValueError(
            f"Student and teacher vocabularies differ: {student_kernel.shape[1]} and "
            f"{teacher_kernel.shape[1]}."
        )
    if tuple(student_hidden.shape[:-1]) != tuple(teacher_hidden.shape[:-1]):
        raise ValueError(
            f"Student and teacher hidden states cover different tokens: "
            f"{tuple(student_hidden.shape[:-1])} and {tuple(teacher_hidden.shape[:-1])}."
        )


def _pad_rows(x, padding):
    return ops.pad(x, [[0, padding]] + [[0, 0]] * (len(x.shape) - 1))
