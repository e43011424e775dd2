"""What a `Distiller` is built from: its arguments resolved, and its config
(for `keras.saving`: a Distiller saved with one teacher loads as it was
saved; several teachers are a list)."""

import keras

from keras_cskd.checks import tensors as tensor_checks
from keras_cskd.losses.student import FunctionLoss


def arguments_of(distiller):
    """The constructor arguments of `distiller`, serialized."""
    teacher = distiller.teacher
    if isinstance(teacher, (list, tuple)):
        teacher = [keras.saving.serialize_keras_object(t) for t in teacher]
    else:
        teacher = keras.saving.serialize_keras_object(teacher)
    student_loss_weight, distillation_loss_weight = distiller._weights_config
    return {
        "student": keras.saving.serialize_keras_object(distiller.student),
        "teacher": teacher,
        "distillation_loss": [
            (keras.saving.serialize_keras_object(loss), weight)
            for loss, weight in distiller.distillation_losses
        ],
        "student_loss_weight": student_loss_weight,
        "distillation_loss_weight": distillation_loss_weight,
        "ensemble": distiller.teachers.ensemble,
        "teacher_weights": distiller.teachers.given_weights,
        "mixup_alpha": distiller._mixup_alpha_config,
        "num_classes": distiller.num_classes,
        "seed": distiller.seed,
        "check_roles": distiller.check_roles,
        "chunk_size": distiller.chunk_size,
    }


def from_arguments(config):
    """Keyword arguments of the `Distiller` from a config (this release's,
    or 0.1's, which has no `ensemble`, `teacher_weights` or `check_roles`)."""
    config = dict(config)
    config["distillation_loss"] = [
        (keras.saving.deserialize_keras_object(loss), weight)
        for loss, weight in config["distillation_loss"]
    ]
    config["student"] = deserialized(config.pop("student"))
    teacher = config.pop("teacher")
    if isinstance(teacher, list):
        config["teacher"] = [deserialized(t) for t in teacher]
    else:
        config["teacher"] = deserialized(teacher)
    return config


def as_loss(loss):
    """The student loss as a `keras.losses.Loss` (a plain function wrapped),
    called as `loss(y, logits, sample_weight)`; None stays None."""
    if loss is None or isinstance(loss, keras.losses.Loss):
        return loss
    if callable(loss):
        return FunctionLoss(loss)
    raise ValueError(
        f"Distiller.compile(loss={loss!r}): pass a keras.losses loss, its name, or a "
        "function f(y_true, y_pred) of the student's logits."
    )


def deserialized(model):
    if isinstance(model, dict):
        return keras.saving.deserialize_keras_object(model)
    return model


def mixup_alpha(mixup_alpha, losses):
    if mixup_alpha == "auto":
        alphas = [getattr(l, "mixup_alpha", None) for l in losses]
        alphas = [a for a in alphas if a]
        return alphas[0] if alphas else None
    if mixup_alpha is None or mixup_alpha == 0:
        return None
    tensor_checks.check_positive("mixup_alpha", mixup_alpha)
    return float(mixup_alpha)
