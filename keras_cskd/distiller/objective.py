"""The objective of a training step, from its `Step` record: the student's
supervised term, the distillation term (the Distiller's losses with their
weights against each teacher target, on the global batch) with the
statistics its metrics log, and which steps count."""

import keras
from keras import ops

from keras_cskd import _backend, interop
from keras_cskd import losses as kd_losses
from keras_cskd import ops as kd_ops
from keras_cskd.distiller.mixup import Mixup
from keras_cskd.features import FeatureDistillation


def resolve_pairs(items):
    """`[(loss, weight), ...]` from `(loss or name, weight)` items: names
    through `keras_cskd.losses.get`, `keras.distillation` losses through
    `keras_cskd.interop`."""
    if not items:
        raise ValueError(
            "Distiller needs a distillation loss, e.g. "
            "keras_cskd.losses.CosineSimilarityDistillation() or 'cskd'."
        )
    pairs = []
    for loss, weight in items:
        converted = interop.from_keras_loss(loss)
        if not isinstance(converted, (str, dict, kd_losses.DistillationLoss)):
            raise ValueError(
                f"Unknown distillation loss {loss!r}: use a keras_cskd.losses loss, one of "
                f"the names {sorted([*kd_losses.METHODS, *kd_losses.ALIASES])}, or a "
                "keras.distillation.LogitsDistillation / FeatureDistillation."
            )
        loss = kd_losses.get(converted)
        if getattr(loss, "reduction", "sum_over_batch_size") in (None, "none"):
            raise ValueError(
                f"{type(loss).__name__}(reduction={loss.reduction!r}) returns one "
                "value per sample; the Distiller needs a scalar loss. Use the "
                "default reduction."
            )
        try:
            weight = float(weight)
        except (TypeError, ValueError):
            raise ValueError(
                f"The weight of {type(loss).__name__} is {weight!r}: give a number."
            ) from None
        if not weight >= 0 or weight == float("inf"):
            raise ValueError(
                f"The weight of {type(loss).__name__} must be a finite number >= 0, got {weight}."
            )
        pairs.append((loss, weight))
    return pairs


class DistillationTerms:
    """`sum_k w_k L_k(target, student)` over the Distiller's losses and each
    loss's teacher targets (`Teachers.targets`), with the statistics of
    the first CSKD loss (an adaptive one first) for the logs."""

    def __init__(self, pairs):
        self.pairs = list(pairs)
        self.losses = [loss for loss, _ in self.pairs]
        self.feature_losses = [l for l in self.losses if isinstance(l, FeatureDistillation)]
        self.batchwise = any(loss.batchwise for loss in self.losses)
        self.requires_labels = any(loss.requires_labels for loss in self.losses)
        reporting = [
            l for l in self.losses if isinstance(l, kd_losses.CosineSimilarityDistillation)
        ]
        adaptive = [l for l in reporting if l.cswt is not None]
        chosen = adaptive or reporting
        self.statistics_loss = chosen[0] if chosen else None

    def __call__(self, step, teachers, labels=None, sample_weight=None, mask=None):
        """`(value, statistics)` of the step; statistics is None without a
        CSKD loss."""
        masking = {} if mask is None else {"mask": mask}
        features = list(zip(step.teacher_features, step.student_features))
        total = ops.zeros((), "float32")
        statistics = None
        for loss, weight in self.pairs:
            if isinstance(loss, FeatureDistillation):
                teacher_features, student_features = features.pop(0)
                value = loss.compute(teacher_features, student_features, sample_weight)
                total = total + weight * ops.cast(value, "float32")
                continue
            for target, share in teachers.targets(step.teacher_logits, loss):
                if loss is self.statistics_loss:
                    value, found = loss.compute_with_statistics(
                        target, step.student_logits, sample_weight, labels=labels, **masking
                    )
                    statistics = _accumulate(statistics, found, share)
                else:
                    value = loss.compute(
                        target, step.student_logits, sample_weight, labels=labels, **masking
                    )
                total = total + (weight * share) * ops.cast(value, "float32")
        return total, statistics

    def counted(self, student_logits, sample_weight=None, mask=None):
        """Whether a step's distillation term counts: at least one kept
        position (two for the batch-wise losses, which compare positions);
        a float 0/1 scalar. Steps that do not count give 0 and are left
        out of the logged means."""
        needed = 2.0 if self.batchwise else 1.0
        weights = None
        if mask is not None:
            weights = ops.cast(mask, "float32")
        if sample_weight is not None:
            per_sample = ops.cast(sample_weight, "float32")
            while len(per_sample.shape) < len(student_logits.shape) - 1:
                per_sample = ops.expand_dims(per_sample, -1)
            per_sample = ops.broadcast_to(per_sample, ops.shape(student_logits)[:-1])
            weights = per_sample if weights is None else weights * per_sample
        if weights is None:
            positions = ops.shape(student_logits)[:-1]
            kept = ops.cast(ops.prod(ops.convert_to_tensor(positions)), "float32")
        else:
            kept = ops.sum(ops.cast(weights > 0, "float32"))
        return ops.cast(kept >= needed, "float32")


def _accumulate(statistics, found, share):
    if statistics is None:
        return {key: share * value for key, value in found.items() if key != "temperatures"}
    return {key: statistics[key] + share * found[key] for key in statistics}


def check_features_with_cache(terms, cached):
    """Feature distillation needs the live teacher's layers."""
    if terms.feature_losses and cached is not None:
        raise ValueError(
            "FeatureDistillation needs the live teacher's layers; cached teacher "
            "logits cannot replace them. Pass x without 'teacher_logits'."
        )


def supervised_loss(loss_fn, y, step, sample_weight, weights):
    """The student's supervised loss on a step (mixed labels under mixup);
    over positions with `weights`, the weighted mean over the positions
    that count, where nothing the masked positions hold (their logits, a
    `-100` label) reaches the value or the gradient."""
    if loss_fn is None or y is None:
        return ops.zeros((), "float32")
    logits = step.student_logits
    positional = weights is not None and len(logits.shape) > 2
    if positional:
        # The mask's own zeros drop positions: Keras' mask on the logits (if
        # any) is replaced by the weights, which hold it.
        logits = kd_ops.mask_logits(logits, weights)
        y = _masked_labels(y, weights, logits)
        sample_weight = weights
    if step.mixup is None:
        loss = loss_fn(y, logits, sample_weight)
    else:
        loss = Mixup.supervised_loss(loss_fn, y, logits, sample_weight, step.mixup)
    loss = ops.cast(loss, "float32")
    if positional:
        # Keras averages over every position: the mean over the kept ones,
        # the global batch's under tf.distribute (Keras divides this loss by
        # the replica count, and each replica's shard keeps its own count).
        kept = _backend.mean_over_replicas(ops.sum(ops.cast(weights > 0, "float32")))
        loss = loss * ops.divide_no_nan(ops.cast(ops.size(weights), "float32"), kept)
    return loss


def _masked_labels(y, weights, logits):
    """Integer labels `(batch, ...)` with the dropped positions' labels set to
    0 (a `-100` there would reach the loss's one-hot); other labels as given."""
    if keras.tree.is_nested(y):
        return y
    y = ops.convert_to_tensor(y)
    dtype = keras.backend.standardize_dtype(y.dtype)
    if len(y.shape) == len(logits.shape) and y.shape[-1] == logits.shape[-1]:
        return y  # one-hot or soft: multiplied by a weight of 0
    keep = ops.reshape(weights > 0, ops.shape(y)) if "int" in dtype or "float" in dtype else None
    return y if keep is None else ops.where(keep, y, ops.zeros_like(y))


def distillation_term(terms, teachers, y, step, sample_weight, weights):
    """`(value, statistics, counted)` of the distillation term, on the
    global batch under tf.distribute (the replicas' tensors all-gathered;
    a no-op elsewhere)."""
    if step.mixup is not None:
        sample_weight = Mixup.mixed_weights(sample_weight, step.mixup)
    if weights is not None and len(step.student_logits.shape) > 2:
        mask, sample_weight = weights, None
    else:
        mask = step.mask
    gathered = _backend.gather_replicas(
        (step.teacher_logits, step.student_logits, sample_weight, y, mask)
    )
    teacher_logits, student_logits, sample_weight, labels, mask = gathered
    features = _backend.gather_replicas(
        (tuple(step.teacher_features), tuple(step.student_features))
    )
    global_step = step._replace(
        teacher_logits=tuple(teacher_logits),
        student_logits=student_logits,
        teacher_features=tuple(features[0]),
        student_features=tuple(features[1]),
    )
    value, statistics = terms(
        global_step, teachers, labels=labels, sample_weight=sample_weight, mask=mask
    )
    return value, statistics, terms.counted(student_logits, sample_weight, mask)


def regularization(losses):
    """The sum of a model's `losses` (its regularizers), each divided by the
    tf.distribute replica count as Keras divides its compiled loss."""
    total = ops.zeros((), "float32")
    for extra in losses:
        total = total + _backend.divide_by_replicas(ops.cast(ops.sum(extra), "float32"))
    return total
