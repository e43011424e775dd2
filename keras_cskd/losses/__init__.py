"""Distillation losses: thin `keras.losses.Loss` wrappers over `keras_cskd.ops`,
one module a method (`kd`, `mse`, `cskd`, `stkd`, `dist`, `dkd`; `language`:
the divergences of language-model distillation; `chunked`: token
distillation from hidden states and output heads, a chunk of tokens at a
time, for any vocabulary size), the base
classes (`base`), the student's cross-entropy (`student`) and the registry
of named methods (`registry`).

Every loss is called as `loss(teacher_logits, student_logits)` (the teacher
in the `y_true` slot) and returns a scalar. Logits are `(batch, classes)`,
or `(batch, ..., classes)` where every leading axis is a position (tokens,
pixels); `mask=` (the leading shape: booleans, or weights >= 0 where 0
drops a position; by default the student logits' Keras mask, if any)
drops positions, so the loss equals the loss on the kept positions alone
whatever padding holds (see `keras_cskd.losses.base` for the one semantics
of masks and sample weights). Each one is also a
`keras.distillation.DistillationLoss`, so it plugs into Keras' own
`keras.distillation.Distiller` unchanged:

```python
distiller = keras.distillation.Distiller(
    teacher=teacher,
    student=student,
    distillation_losses=keras_cskd.losses.CosineSimilarityDistillation(),
)
```

The formulas live in `keras_cskd.ops`; the classes here add the input checks
and Keras' reduction. Per-sample losses (KD, MSE, DKD) follow Keras'
`Loss` contract: `call` returns one value per sample and `reduction`
(`"sum_over_batch_size"`, `"sum"`, `"none"`, ...) and `sample_weight` work as
in `keras.losses`; over positions, `call` returns one value per position
and the reduction averages over the (kept) positions. Batch-wise losses
(CSKD, STKD, DIST) compare each class across the batch (over positions:
across all positions of the batch), so there is no per-sample value to
reduce: they reduce themselves and weight samples inside the batch
statistics.

`get(name)` builds a loss from the one registry of named methods
(`METHODS`), which the `Distiller` and the command line use too.
"""

from keras_cskd.losses.base import BatchwiseLoss, DistillationLoss
from keras_cskd.losses.chunked import ChunkedTokenDistillation, output_head
from keras_cskd.losses.cskd import CosineSimilarityDistillation, cskd_paper_objective
from keras_cskd.losses.dist import DISTDistillation
from keras_cskd.losses.dkd import DecoupledKDDistillation
from keras_cskd.losses.kd import KLDivergenceDistillation
from keras_cskd.losses.language import (
    JensenShannonDistillation,
    ReverseKLDistillation,
    SkewKLDistillation,
    TotalVariationDistillation,
)
from keras_cskd.losses.mse import LogitMSEDistillation
from keras_cskd.losses.registry import ALIASES, METHODS, Method, get
from keras_cskd.losses.stkd import SimilarityTransferDistillation
from keras_cskd.losses.student import StudentCrossEntropy, student_loss

__all__ = [
    "ALIASES",
    "BatchwiseLoss",
    "ChunkedTokenDistillation",
    "CosineSimilarityDistillation",
    "DISTDistillation",
    "DecoupledKDDistillation",
    "DistillationLoss",
    "JensenShannonDistillation",
    "KLDivergenceDistillation",
    "LogitMSEDistillation",
    "METHODS",
    "Method",
    "ReverseKLDistillation",
    "SimilarityTransferDistillation",
    "SkewKLDistillation",
    "StudentCrossEntropy",
    "TotalVariationDistillation",
    "cskd_paper_objective",
    "get",
    "output_head",
    "student_loss",
]
