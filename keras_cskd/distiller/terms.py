"""The distillation term of a training step: the Distiller's losses with their
weights, computed on a `Step` against each teacher target, and the
statistics its metrics log."""

from keras import ops

from keras_cskd import interop
from keras_cskd import losses as kd_losses
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
