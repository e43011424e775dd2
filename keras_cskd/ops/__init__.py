"""The math of keras-cskd: small pure functions of `keras.ops`.

This package is the one place to check a formula against the papers, one
module a family: `divergences` (KD, logit MSE, DKD, and the language-model
divergences: reverse KL, generalized JSD, skew KL, total variation), `cskd` (CSKD and its
CSWT temperatures), `stkd`, `dist`, `similarity` (the cosines and
correlations they share), `mixup`, `top_k` (a teacher stored as its top-k
classes and log-probabilities), `chunked` (the output heads and a token
divergence computed a chunk of tokens at a time, from hidden states, for
any vocabulary size). Every function takes teacher and student
*logits* of shape `(batch, classes)`, or `(batch, ..., classes)` where every
leading axis is a position (tokens of a sequence, pixels of an image), and
computes in float32 whatever the input dtype (float16/bfloat16 logits are
upcast before the softmax), so the same code is used under mixed precision,
on every backend, inside or outside a compiled step.

Notation used in the docstrings: `t`, `s` are teacher and student logits,
`B` the batch size, `C` the number of classes, `p = softmax(z / tau)` over
classes. "Columns" are the `C` vectors of length `B` (one per class, across
the batch); "rows" are the `B` vectors of length `C` (one per sample).

Positions: per-sample functions (KD, logit MSE, DKD) return one value per
position, shape `(batch, ...)`. Batch-wise functions (CSKD, STKD, DIST,
CSWT) first flatten all leading axes into `N` rows (`flatten_positions`),
so a class column holds the class's probability at every position of the
batch. Their `mask` (shape `(batch, ...)`: booleans, or weights >= 0 where
0 drops a position) drops positions: the result equals the function on the
kept rows alone, whatever the masked logits hold (they are replaced by
zeros with `where` before any softmax, so NaN or huge padding values cannot
reach the result or the gradient).

Numerics: every cosine and correlation is exact in float32 at any class
count and batch size (`similarity`: vectors are scaled by their largest
entry, from log-probabilities, before they are normalised; no epsilon).

Example:

>>> import numpy as np
>>> from keras_cskd import ops as kd_ops
>>> t = np.array([[2.0, 0.5, -1.0], [0.1, 1.5, 0.3]], "float32")
>>> float(kd_ops.cosine_similarity_distillation(t, t, temperature=4.0))
0.0
"""

from keras_cskd.ops._common import (
    flatten_positions,
    mask_logits,
    softened_probabilities,
    to_positions,
)
from keras_cskd.ops.chunked import (
    chunked_cosine_similarity_distillation,
    chunked_distillation_and_cross_entropy,
    chunked_distillation_loss,
)
from keras_cskd.ops.cskd import (
    class_temperatures,
    cosine_similarity_distillation,
    cosine_similarity_distillation_with_statistics,
    cswt_levels,
    cswt_temperatures,
    min_max_temperatures,
)
from keras_cskd.ops.dist import dist_distillation
from keras_cskd.ops.divergences import (
    decoupled_kd,
    jensen_shannon_divergence,
    kl_divergence_distillation,
    logit_mse,
    reverse_kl_divergence,
    skew_kl_divergence,
    total_variation_distance,
)
from keras_cskd.ops.mixup import sample_beta
from keras_cskd.ops.similarity import (
    class_cosine_similarity,
    cosine_similarity,
    pearson_correlation,
    sample_cosine_similarity,
)
from keras_cskd.ops.stkd import similarity_transfer_distillation
from keras_cskd.ops.top_k import (
    tail_log_mass,
    teacher_top_k,
    top_k_kl_divergence,
    top_k_logits,
)

__all__ = [
    "chunked_cosine_similarity_distillation",
    "chunked_distillation_and_cross_entropy",
    "chunked_distillation_loss",
    "class_cosine_similarity",
    "class_temperatures",
    "cosine_similarity",
    "cosine_similarity_distillation",
    "cosine_similarity_distillation_with_statistics",
    "cswt_levels",
    "cswt_temperatures",
    "decoupled_kd",
    "dist_distillation",
    "flatten_positions",
    "jensen_shannon_divergence",
    "kl_divergence_distillation",
    "logit_mse",
    "mask_logits",
    "min_max_temperatures",
    "pearson_correlation",
    "reverse_kl_divergence",
    "sample_beta",
    "sample_cosine_similarity",
    "similarity_transfer_distillation",
    "skew_kl_divergence",
    "softened_probabilities",
    "tail_log_mass",
    "teacher_top_k",
    "to_positions",
    "top_k_kl_divergence",
    "top_k_logits",
    "total_variation_distance",
]
