"""Porting from `keras.distillation.Distiller`: its keywords and weighting.

`keras_cskd.Distiller(student, teacher, distillation_loss, ...)` also
accepts Keras' `teacher=`, `student=`, `distillation_losses=`,
`distillation_loss_weights=` and `student_loss_weight=` with Keras' meaning
(`a * CE + (1 - a) * sum_k w_k * L_k`), so porting is an import change.
The table of the mapping is in docs/api.md ("Porting").
"""

import warnings

import keras


def resolve_arguments(
    student,
    teacher,
    kwargs,
    distillation_loss,
    distillation_losses,
    distillation_loss_weights,
    student_loss_weight,
    distillation_loss_weight,
):
    """Returns `(student, teacher, teacher_by_position, distillation_loss,
    student_loss_weight, distillation_loss_weight)` in keras-cskd's form,
    popping `student=`/`teacher=` from `kwargs`."""
    # `student=`/`teacher=` keywords arrive in kwargs (the positional
    # parameters are positional-only, so the two forms can be told apart).
    teacher_by_position = teacher is not None
    for role in ("student", "teacher"):
        if role in kwargs:
            if (student if role == "student" else teacher) is not None:
                raise TypeError(f"Distiller got the {role} both by position and as {role}=.")
            if role == "student":
                student = kwargs.pop("student")
            else:
                teacher = kwargs.pop("teacher")
    if student is None:
        raise TypeError("Distiller needs a student: Distiller(student, teacher, loss).")
    if distillation_losses is not None:  # keras.distillation.Distiller's form and weighting
        if distillation_loss is not None or distillation_loss_weight is not None:
            raise TypeError(
                "Pass keras.distillation's distillation_losses= (+ distillation_loss_weights=, "
                "student_loss_weight=) or keras-cskd's distillation_loss= (+ "
                "distillation_loss_weight=), not both."
            )
        items = (
            distillation_losses
            if isinstance(distillation_losses, (list, tuple))
            else [distillation_losses]
        )
        weights = (
            [1.0] * len(items)
            if distillation_loss_weights is None
            else list(distillation_loss_weights)
        )
        if len(weights) != len(items):
            raise ValueError(
                f"distillation_loss_weights has {len(weights)} entries but "
                f"distillation_losses has {len(items)}: give one weight per loss."
            )
        alpha = 0.5 if student_loss_weight is None else student_loss_weight
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(
                "With distillation_losses= (keras.distillation's form) the loss is "
                "student_loss_weight * CE + (1 - student_loss_weight) * distillation, "
                f"so student_loss_weight must be in [0, 1]; got {alpha!r}."
            )
        distillation_loss = list(zip(items, weights))
        student_loss_weight, distillation_loss_weight = alpha, 1.0 - alpha
    elif distillation_loss_weights is not None:
        raise TypeError(
            "distillation_loss_weights= goes with distillation_losses= (keras.distillation's "
            "form); with distillation_loss= pass (loss, weight) pairs."
        )
    distillation_loss = "cskd" if distillation_loss is None else distillation_loss
    student_loss_weight = 1.0 if student_loss_weight is None else student_loss_weight
    distillation_loss_weight = 1.0 if distillation_loss_weight is None else distillation_loss_weight
    return (
        student,
        teacher,
        teacher_by_position,
        distillation_loss,
        student_loss_weight,
        distillation_loss_weight,
    )


def warn_if_teacher_is_smaller(student, teacher):
    """keras.distillation's positional order is (teacher, student), ours
    (student, teacher): a positional teacher smaller than the student is
    most likely a swapped pair."""
    if teacher.built and student.built:
        t_params, s_params = teacher.count_params(), student.count_params()
        if t_params < s_params:
            warnings.warn(
                f"The teacher has fewer parameters ({t_params:,}) than the student "
                f"({s_params:,}). keras_cskd.Distiller takes (student, teacher), "
                "keras.distillation.Distiller (teacher, student): if they are swapped, "
                "or to silence this for a deliberately small teacher, pass them by "
                "keyword: Distiller(student=..., teacher=..., ...).",
                UserWarning,
                stacklevel=3,
            )


def keras_feature_distillation(loss):
    """A `keras.distillation.FeatureDistillation` as the equivalent
    `keras_cskd.FeatureDistillation` (same layers and loss, no projection);
    any other loss unchanged."""
    keras_class = getattr(getattr(keras, "distillation", None), "FeatureDistillation", None)
    if keras_class is None or not isinstance(loss, keras_class):
        return loss
    from keras_cskd.features import FeatureDistillation  # features imports losses

    return FeatureDistillation.from_keras(loss)


def distillation_loss_pairs(distillation_loss):
    """The Distiller's distillation loss(es) as `[(loss, weight), ...]`: one
    loss, a list of losses, or (loss, weight) pairs; names are resolved with
    `keras_cskd.losses.get`, `keras.distillation.FeatureDistillation`s
    converted."""
    from keras_cskd import losses as kd_losses

    if distillation_loss is None:
        raise ValueError(
            "Distiller needs a distillation loss, e.g. "
            "keras_cskd.losses.CosineSimilarityDistillation() or 'cskd'."
        )
    items = (
        distillation_loss if isinstance(distillation_loss, (list, tuple)) else [distillation_loss]
    )
    pairs = []
    for item in items:
        if isinstance(item, (list, tuple)):
            if len(item) != 2:
                raise ValueError(
                    f"Each entry of a distillation loss list is a loss or a "
                    f"(loss, weight) pair, got {item!r}."
                )
            loss, weight = item
        else:
            loss, weight = item, 1.0
        loss = kd_losses.get(keras_feature_distillation(loss))
        if getattr(loss, "reduction", "sum_over_batch_size") in (None, "none"):
            raise ValueError(
                f"{type(loss).__name__}(reduction={loss.reduction!r}) returns one "
                "value per sample; the Distiller needs a scalar loss. Use the "
                "default reduction."
            )
        pairs.append((loss, float(weight)))
    return pairs
