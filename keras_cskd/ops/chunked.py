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
from keras_cskd.ops._common import TINY, as_float32
from keras_cskd.ops.divergences import (
    jensen_shannon_divergence,
    kl_divergence_distillation,
    reverse_kl_divergence,
    skew_kl_divergence,
    total_variation_distance,
)

_NO_ENTRY = -1e30  # the log-weight of a dropped token: below any log-probability

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
    c = _prepare(
        student_hidden, student_kernel, teacher_hidden, teacher_kernel, mask, labels,
        chunk_size, student_bias, teacher_bias,
    )  # fmt: skip
    total_weight = ops.sum(c.w)
    scale = ops.where(total_weight > 0, 1.0 / ops.maximum(total_weight, 1e-30), 0.0)
    weights = (
        ops.stop_gradient(as_float32(distillation_weight)),
        ops.stop_gradient(as_float32(cross_entropy_weight)),
    )

    def objective(h_chunk, t_chunk, w_chunk, y_chunk, *params):
        s32 = as_float32(_logits(h_chunk, *params))
        t = _logits(t_chunk, *c.teacher_params)
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
        h_chunk, t_chunk, w_chunk, *rest = (ops.take(x, index, axis=0) for x in c.xs)
        y_chunk = rest[0] if rest else None

        def chunk_objective(h_chunk, *params):
            return objective(h_chunk, t_chunk, w_chunk, y_chunk, *params)

        (total, parts), chunk_grads = _backend.value_and_grad(chunk_objective, (h_chunk, *c.params))
        sums = (sums[0] + total, sums[1] + parts[0], sums[2] + parts[1])
        grads = tuple(g + as_float32(d) for g, d in zip(grads, chunk_grads[1:]))
        return sums, grads, _write_chunk(hidden_grads, index, chunk_grads[0])

    zero = ops.zeros((), "float32")
    init = ((zero, zero, zero), c.zero_param_grads(), c.zero_hidden_grads())
    sums, param_grads, hidden_grads = ops.fori_loop(0, c.chunks, step, init)
    total = c.with_gradients(sums[0], hidden_grads, param_grads)
    return total, ops.stop_gradient(sums[1]), ops.stop_gradient(sums[2])


def chunked_cosine_similarity_distillation(
    student_hidden,
    student_kernel,
    teacher_hidden,
    teacher_kernel,
    mask=None,
    chunk_size=1024,
    temperature=4.0,
    student_bias=None,
    teacher_bias=None,
):
    """CSKD over tokens (`cosine_similarity_distillation` on the logits
    `hidden @ kernel + bias`, every token a row of the class columns) with
    the logits computed `chunk_size` tokens at a time: the value and the
    gradients equal the unchunked CSKD's to float32 rounding, without a
    `(tokens, vocabulary)` tensor. `temperature` is one number (CSWT's
    adaptive temperatures are not chunked); `mask` weighs the tokens as
    CSKD's (0 drops one; fewer than two kept tokens give 0 and a zero
    gradient). The teacher gets no gradient. Other arguments:
    `chunked_distillation_loss`.

    CSKD compares each vocabulary item's column across all the tokens, so
    it takes two passes: the first accumulates, per column, the largest
    log-probability and the sums of squares and products (rescaled as the
    maximum grows, so that nothing underflows at any vocabulary size); the
    second recomputes each chunk's logits and takes its contribution to the
    loss (half the squared distance of the unit columns, exact near a
    cosine of 1) and its gradient. Six `(chunk, d) x (d, vocabulary)`
    products a chunk against the unchunked step's four.

    Example:

    >>> import keras, numpy as np
    >>> from keras_cskd import ops as kd_ops
    >>> rng = np.random.default_rng(0)
    >>> h_s, w_s = rng.normal(size=(2, 5, 4)), rng.normal(size=(4, 11))
    >>> h_t, w_t = rng.normal(size=(2, 5, 6)), rng.normal(size=(6, 11))
    >>> h_s, w_s, h_t, w_t = (a.astype("float32") for a in (h_s, w_s, h_t, w_t))
    >>> chunked = kd_ops.chunked_cosine_similarity_distillation(h_s, w_s, h_t, w_t, chunk_size=3)
    >>> full = kd_ops.cosine_similarity_distillation(h_t @ w_t, h_s @ w_s, temperature=4.0)
    >>> full = keras.ops.convert_to_numpy(full)
    >>> bool(np.isclose(float(chunked), float(full), rtol=1e-5))
    True
    """
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise ValueError(f"`temperature` must be a number for chunked CSKD, got {temperature!r}.")
    if not temperature > 0:
        raise ValueError(f"`temperature` must be > 0, got {temperature!r}.")
    temperature = float(temperature)
    c = _prepare(
        student_hidden, student_kernel, teacher_hidden, teacher_kernel, mask, None,
        chunk_size, student_bias, teacher_bias,
    )  # fmt: skip
    vocabulary = c.params[0].shape[-1]

    def log_columns(index):
        """The chunk's log-probabilities (masked tokens' set far below any
        other), `sqrt(w)` `(chunk, 1)`, and the student's log-probabilities."""
        h_chunk, t_chunk, w_chunk = (ops.take(x, index, axis=0) for x in c.xs)
        s = as_float32(_logits(h_chunk, *c.params)) / temperature
        t = as_float32(_logits(t_chunk, *c.teacher_params)) / temperature
        log_p_s = s - ops.logsumexp(s, axis=-1, keepdims=True)
        log_p_t = t - ops.logsumexp(t, axis=-1, keepdims=True)
        kept = ops.expand_dims(w_chunk > 0, -1)
        # The weights multiply the probabilities outside the exponential:
        # `log p + log w` would round at the precision of `log p`.
        root_w = ops.expand_dims(ops.sqrt(w_chunk), -1)
        dropped = ops.full((), _NO_ENTRY, "float32")
        return (
            ops.where(kept, log_p_t, dropped),
            ops.where(kept, log_p_s, dropped),
            root_w,
            log_p_s,
            h_chunk,
        )

    # Pass 1: per column, the running maximum of the log-probabilities and
    # the weighted sums of squares and of products, relative to exp(maximum).
    def statistics(index, carry):
        top_t, top_s, sum_tt, sum_ss, sum_ts = carry
        x_t, x_s, root_w, _, _ = log_columns(index)
        new_t = ops.maximum(top_t, ops.max(x_t, axis=0))
        new_s = ops.maximum(top_s, ops.max(x_s, axis=0))
        e_t, e_s = root_w * ops.exp(x_t - new_t), root_w * ops.exp(x_s - new_s)
        shift_t, shift_s = ops.exp(top_t - new_t), ops.exp(top_s - new_s)
        sum_tt = sum_tt * ops.square(shift_t) + ops.sum(ops.square(e_t), axis=0)
        sum_ss = sum_ss * ops.square(shift_s) + ops.sum(ops.square(e_s), axis=0)
        sum_ts = sum_ts * shift_t * shift_s + ops.sum(e_t * e_s, axis=0)
        return new_t, new_s, sum_tt, sum_ss, sum_ts

    lowest = ops.full((vocabulary,), 2.0 * _NO_ENTRY, "float32")
    zeros = ops.zeros((vocabulary,), "float32")
    top_t, top_s, sum_tt, sum_ss, sum_ts = ops.fori_loop(
        0, c.chunks, statistics, (lowest, lowest, zeros, zeros, zeros)
    )
    # Each column's norm is exp(top) * sqrt(sum); the two factors are kept
    # apart (`top + log(sqrt(sum))` would round at the precision of `top`,
    # a large negative number for a rare vocabulary item).
    inverse_norm_t = 1.0 / ops.sqrt(ops.maximum(sum_tt, TINY))
    inverse_norm_s = 1.0 / ops.sqrt(ops.maximum(sum_ss, TINY))
    one_minus_cosine = 1.0 - sum_ts * inverse_norm_t * inverse_norm_s
    kept = ops.sum(ops.cast(c.w > 0, "float32"))
    factor = ops.where(kept >= 2.0, temperature**2 / vocabulary, 0.0)

    # Pass 2: each chunk's share of the distances and its gradient. With
    # unit columns u_t, u_s and L = T^2 mean_c (1 - <u_t, u_s>_c):
    # dL / d log p_s = -(T^2 / C) u_s (u_t - u_s + (1 - cos) u_s).
    def contributions(index, carry):
        distance, grads, hidden_grads = carry
        x_t, x_s, root_w, log_p_s, h_chunk = log_columns(index)
        u_t = root_w * ops.exp(x_t - top_t) * inverse_norm_t
        u_s = root_w * ops.exp(x_s - top_s) * inverse_norm_s
        difference = u_t - u_s
        distance = distance + 0.5 * ops.sum(ops.square(difference), axis=0)
        g = -factor * u_s * (difference + one_minus_cosine * u_s)
        # Through the log-softmax and the temperature to the logits.
        dz = (g - ops.exp(log_p_s) * ops.sum(g, axis=-1, keepdims=True)) / temperature
        d_kernel = ops.matmul(ops.transpose(as_float32(h_chunk)), dz)
        grads = (grads[0] + d_kernel, *(b + ops.sum(dz, axis=0) for b in grads[1:]))
        d_hidden = ops.matmul(dz, ops.transpose(as_float32(c.params[0])))
        return distance, grads, _write_chunk(hidden_grads, index, d_hidden)

    init = (zeros, c.zero_param_grads(), c.zero_hidden_grads())
    distance, param_grads, hidden_grads = ops.fori_loop(0, c.chunks, contributions, init)
    value = factor * ops.sum(distance)
    return c.with_gradients(value, hidden_grads, param_grads)


class _Chunks:
    """The inputs cut into chunks of tokens, and what every chunked loss
    shares: the (constant) parameters, the gradient buffers and the
    surrogate that hands the gradients to the outer autodiff."""

    def __init__(
        self, student_hidden, student_kernel, teacher_hidden, teacher_kernel, mask, labels,
        chunk_size, student_bias, teacher_bias,
    ):  # fmt: skip
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
        self.w = ops.stop_gradient(ops.where(keep, w, 0.0))
        self.h = ops.where(ops.expand_dims(keep, -1), h, ops.zeros_like(h))
        h_t = ops.where(ops.expand_dims(keep, -1), h_t, ops.zeros_like(h_t))
        y = None
        if labels is not None:
            y = ops.reshape(ops.convert_to_tensor(labels), (-1,))
            y = ops.where(keep, ops.cast(y, "int32"), 0)
            y = ops.clip(y, 0, student_kernel.shape[-1] - 1)

        # Pad to whole chunks (weight 0) and cut into (chunks, chunk_size, ...).
        tokens = h.shape[0]
        chunk = chunk_size if tokens is None else max(1, min(chunk_size, tokens))
        self.count = ops.shape(h)[0]
        padding = (chunk - self.count % chunk) % chunk
        xs = [_pad_rows(self.h, padding), _pad_rows(h_t, padding), _pad_rows(self.w, padding)]
        if y is not None:
            xs.append(_pad_rows(y, padding))
        xs = tuple(ops.reshape(x, (-1, chunk, *x.shape[1:])) for x in xs)
        self.xs = tuple(ops.stop_gradient(x) for x in xs)
        self.chunks = ops.shape(self.xs[0])[0]

        self.student_kernel, self.student_bias = student_kernel, student_bias
        kernel = ops.stop_gradient(student_kernel)
        self.params = (
            (kernel,) if student_bias is None else (kernel, ops.stop_gradient(student_bias))
        )
        t_kernel = ops.stop_gradient(teacher_kernel)
        self.teacher_params = (
            (t_kernel,) if teacher_bias is None else (t_kernel, ops.stop_gradient(teacher_bias))
        )

    def zero_param_grads(self):
        return tuple(ops.zeros(p.shape, "float32") for p in self.params)

    def zero_hidden_grads(self):
        return ops.zeros(ops.shape(self.xs[0]), "float32")

    def with_gradients(self, value, hidden_grads, param_grads):
        """`value` (no gradient of its own) whose gradients with respect to
        the student's hidden states, kernel and bias are the given ones:
        `surrogate` is linear in those inputs with the gradients as
        (constant) coefficients, and `surrogate - stop_gradient(surrogate)`
        is 0."""
        hidden_grads = ops.reshape(hidden_grads, (-1, self.h.shape[-1]))[: self.count]
        pairs = [(self.h, hidden_grads), (self.student_kernel, param_grads[0])]
        if self.student_bias is not None:
            pairs.append((self.student_bias, param_grads[1]))
        surrogate = ops.zeros((), "float32")
        for x, g in pairs:
            surrogate = surrogate + ops.sum(as_float32(x) * ops.stop_gradient(as_float32(g)))
        return ops.stop_gradient(value) + (surrogate - ops.stop_gradient(surrogate))


_prepare = _Chunks


def _logits(hidden, kernel, bias=None):
    logits = ops.matmul(hidden, kernel)
    return logits if bias is None else logits + bias


def _write_chunk(buffer, index, values):
    """`buffer[index] = values`. Keras' `ops.scan` under TensorFlow requires
    each step's output to have the carry's shape (JAX's and PyTorch's do
    not), so per-chunk outputs are written into a carried buffer with
    `fori_loop` instead."""
    return ops.slice_update(buffer, (index, 0, 0), ops.expand_dims(as_float32(values), 0))


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
