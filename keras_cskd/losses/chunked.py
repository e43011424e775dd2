"""Chunked token distillation from hidden states and output heads: the loss
object over `keras_cskd.ops.chunked` (any vocabulary size; memory does not
grow with tokens x vocabulary), and `output_head`, the kernel and bias of
a model's output projection (a `Dense` layer, or keras-hub's tied
`ReversibleEmbedding` used in reverse)."""

import keras
from keras import ops

from keras_cskd import ops as kd_ops
from keras_cskd.checks import tensors as tensor_checks


def output_head(head):
    """`(kernel, bias)` of an output projection, the kernel `(d, vocabulary)`
    and the bias `(vocabulary,)` or None, differentiable with respect to
    the layer's weights:

    - a `keras.layers.Dense` (its kernel and bias; no activation);
    - a `keras.layers.ReversibleEmbedding` (keras-hub's too) used in
      reverse, `logits = hidden @ embeddings.T` (tied) or `hidden @
      reverse_embeddings` (untied); one with `logit_soft_cap` is refused;
    - a keras-hub `CausalLM` (its `backbone.token_embedding`) or `Backbone`
      (its `token_embedding`);
    - a `(kernel, bias)` pair or a kernel tensor, returned as they are.

    Example:

    >>> import keras
    >>> from keras_cskd.losses import output_head
    >>> dense = keras.layers.Dense(11)
    >>> dense.build((None, 4))
    >>> kernel, bias = output_head(dense)
    >>> tuple(kernel.shape), tuple(bias.shape)
    ((4, 11), (11,))
    """
    if isinstance(head, (tuple, list)):
        kernel, bias = head
        return kernel, bias
    backbone = getattr(head, "backbone", head)
    layer = getattr(backbone, "token_embedding", backbone)
    if isinstance(layer, keras.layers.ReversibleEmbedding):
        if getattr(layer, "logit_soft_cap", None) is not None:
            raise ValueError(
                "The output embedding soft-caps its logits (logit_soft_cap): chunked "
                "distillation computes plain `hidden @ kernel` logits."
            )
        if layer.tie_weights:
            return ops.transpose(layer.embeddings), None
        return layer.reverse_embeddings, None
    if isinstance(layer, keras.layers.Dense):
        if layer.activation not in (None, keras.activations.linear):
            raise ValueError("The output Dense layer must have no activation (logits).")
        return layer.kernel, layer.bias if layer.use_bias else None
    if isinstance(layer, keras.layers.Layer):
        raise ValueError(
            f"Cannot read an output projection from {type(head).__name__}: pass a Dense "
            "layer, a ReversibleEmbedding, a keras-hub CausalLM, or (kernel, bias)."
        )
    return head, None


@keras.saving.register_keras_serializable(package="keras_cskd")
class ChunkedTokenDistillation:
    """Token-level distillation from final hidden states and output heads,
    computed a chunk of tokens at a time (`keras_cskd.ops.chunked`): the
    value and gradients of `sum(w * divergence(t, s)) / sum(w)` with
    `s = student_hidden @ student kernel (+ bias)` and the teacher's alike,
    without a `(tokens, vocabulary)` tensor. The teacher gets no gradient.

    Called as `loss(student_hidden, student_head, teacher_hidden,
    teacher_head, mask=None)`; heads are anything `output_head` reads
    (a `Dense`, a `ReversibleEmbedding`, a keras-hub `CausalLM`, or
    `(kernel, bias)`). `compute(..., labels=...)` adds the student's
    cross-entropy in the same pass and returns `(total, distillation,
    cross_entropy)` (see `chunked_distillation_and_cross_entropy`).

    Args:
        divergence: `"kl"` (KD), `"reverse_kl"`, `"jsd"`, `"skew_kl"`, `"tv"`,
            or `"cskd"` (batch-wise over the tokens, two passes; its usual
            temperature is 4, pass it).
        temperature: the divergence's `tau` (KD is `tau^2`-scaled).
        chunk_size: tokens a chunk; the peak memory holds about four
            `(chunk_size, vocabulary)` float32 tensors.

    Example:

    >>> import keras, numpy as np
    >>> from keras_cskd.losses import ChunkedTokenDistillation
    >>> student_head, teacher_head = keras.layers.Dense(11), keras.layers.Dense(11)
    >>> student_head.build((None, 4)); teacher_head.build((None, 6))
    >>> loss = ChunkedTokenDistillation("reverse_kl", chunk_size=2)
    >>> h_s, h_t = np.ones((3, 5, 4), "float32"), np.ones((3, 5, 6), "float32")
    >>> value = loss(h_s, student_head, h_t, teacher_head)
    >>> float(keras.ops.convert_to_numpy(value)) >= 0.0
    True
    >>> ChunkedTokenDistillation.from_config(loss.get_config()).divergence
    'reverse_kl'
    """

    def __init__(self, divergence="kl", temperature=1.0, chunk_size=1024):
        names = sorted([*kd_ops.chunked.DIVERGENCES, "cskd"])
        if not isinstance(divergence, str) or divergence.lower() not in names:
            raise ValueError(
                f"Unknown divergence {divergence!r}: use one of {names} (or call "
                "keras_cskd.ops.chunked_distillation_loss with a callable)."
            )
        tensor_checks.check_positive("temperature", temperature)
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"`chunk_size` must be a positive integer, got {chunk_size!r}.")
        self.divergence = divergence.lower()
        self.temperature = float(temperature)
        self.chunk_size = chunk_size

    def __call__(self, student_hidden, student_head, teacher_hidden, teacher_head, mask=None):
        total, _, _ = self.compute(
            student_hidden, student_head, teacher_hidden, teacher_head, mask=mask
        )
        return total

    def compute(
        self,
        student_hidden,
        student_head,
        teacher_hidden,
        teacher_head,
        mask=None,
        labels=None,
        distillation_weight=1.0,
        cross_entropy_weight=1.0,
    ):
        """`(total, distillation, cross_entropy)`; only `total` carries a
        gradient (see `keras_cskd.ops.chunked_distillation_and_cross_entropy`)."""
        student_kernel, student_bias = output_head(student_head)
        teacher_kernel, teacher_bias = output_head(teacher_head)
        teacher_kernel = ops.stop_gradient(ops.convert_to_tensor(teacher_kernel))
        if teacher_bias is not None:
            teacher_bias = ops.stop_gradient(ops.convert_to_tensor(teacher_bias))
        heads = (student_hidden, student_kernel, teacher_hidden, teacher_kernel)
        shared = dict(mask=mask, chunk_size=self.chunk_size)
        biases = dict(student_bias=student_bias, teacher_bias=teacher_bias)
        if self.divergence != "cskd":
            return kd_ops.chunked_distillation_and_cross_entropy(
                *heads, labels=labels, divergence=self.divergence, temperature=self.temperature,
                distillation_weight=distillation_weight,
                cross_entropy_weight=cross_entropy_weight, **shared, **biases,
            )  # fmt: skip
        # CSKD compares tokens with each other (two passes of its own); the
        # cross-entropy takes one more pass.
        cskd = kd_ops.chunked_cosine_similarity_distillation(
            *heads, temperature=self.temperature, **shared, **biases
        )
        total = ops.multiply(ops.cast(distillation_weight, "float32"), cskd)
        cross_entropy = ops.zeros((), "float32")
        if labels is not None:
            ce_total, _, cross_entropy = kd_ops.chunked_distillation_and_cross_entropy(
                *heads, labels=labels, distillation_weight=0.0,
                cross_entropy_weight=cross_entropy_weight, **shared, **biases,
            )  # fmt: skip
            total = total + ce_total
        return total, ops.stop_gradient(cskd), cross_entropy

    def get_config(self):
        return {
            "divergence": self.divergence,
            "temperature": self.temperature,
            "chunk_size": self.chunk_size,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
