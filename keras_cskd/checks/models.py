"""What a Distiller needs to know about its models: their output classes
and rank, a softmax head, shared weights, trainable weights."""

import keras


def has_softmax_head(model):
    """True when the model's last layer is a softmax (a `Softmax` layer or a
    layer with `activation="softmax"`): it outputs probabilities.

    Example:

    >>> import keras
    >>> from keras_cskd.checks.models import has_softmax_head
    >>> has_softmax_head(keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, "softmax")]))
    True
    """
    layers = getattr(model, "layers", None)
    if not layers:
        return False
    last = layers[-1]
    if isinstance(last, keras.layers.Softmax):
        return True
    activation = getattr(last, "activation", None)
    return (
        activation is keras.activations.softmax or getattr(activation, "__name__", "") == "softmax"
    )


def check_no_softmax_head(model, role):
    """Raises when `model` (the `role`: "teacher" or "student") ends with a
    softmax; distillation needs logits. The one place of this check."""
    if model is not None and has_softmax_head(model):
        raise ValueError(
            f"The {role} ends with a softmax, so it outputs "
            "probabilities; distillation needs logits. Rebuild it "
            "without the final activation (e.g. Dense(n)) or cut the "
            f"softmax: keras.Model({role}.inputs, {role}.layers[-2].output) "
            "if the softmax is a separate layer."
        )


def output_classes(model, role):
    """The class count of a model with one `(batch, classes)` (or
    per-position `(batch, ..., classes)`) output; None when unknown (a
    subclassed model not yet called). Raises for several outputs or rank 1."""
    outputs = getattr(model, "outputs", None)
    if not outputs:
        return None
    if len(outputs) != 1:
        raise ValueError(
            f"The {role} has {len(outputs)} outputs; Distiller distils one "
            f"logits tensor. Build a model that returns only the {role}'s "
            f"class logits, e.g. keras.Model({role}.inputs, {role}.outputs[0])."
        )
    shape = outputs[0].shape
    if len(shape) < 2:
        raise ValueError(
            f"The {role} outputs shape {tuple(shape)}; Distiller expects "
            "logits of shape (batch, classes), or (batch, ..., classes) with "
            "one row of logits per position."
        )
    return shape[-1]


def output_rank(model):
    """The rank of a model's one output (2 for `(batch, classes)`), or None
    when unknown (a subclassed model not yet called)."""
    outputs = getattr(model, "outputs", None)
    if not outputs or len(outputs) != 1:
        return None
    return len(outputs[0].shape)


def check_models(student, teacher):
    """The checks of `Distiller(student, teacher)`: Keras models, not the
    same one, no shared weights, logits (no softmax head), one output each
    with the same class count."""
    if not isinstance(student, keras.Model):
        raise ValueError(f"student must be a keras.Model, got {type(student).__name__}.")
    if teacher is not None and not isinstance(teacher, keras.Model):
        raise ValueError(
            f"teacher must be a keras.Model (or None with cached teacher "
            f"logits), got {type(teacher).__name__}."
        )
    if teacher is student:
        raise ValueError(
            "The teacher and the student are the same model. Distil into "
            "a fresh student, e.g. keras.models.clone_model(teacher)."
        )
    for role, model in (("student", student), ("teacher", teacher)):
        check_no_softmax_head(model, role)
    if teacher is None:
        return
    student_weights = {id(w) for w in student.weights}
    shared = [w.path for w in teacher.weights if id(w) in student_weights]
    if shared:
        raise ValueError(
            f"The teacher and the student share {len(shared)} weight(s) "
            f"(e.g. {shared[0]}): training the student would change the "
            "teacher. Build the student from fresh layers."
        )
    t_classes = output_classes(teacher, "teacher")
    s_classes = output_classes(student, "student")
    if t_classes is not None and s_classes is not None and t_classes != s_classes:
        raise ValueError(
            f"The teacher predicts {t_classes} classes but the student "
            f"{s_classes}. Give the student a {t_classes}-unit output layer."
        )
    t_rank, s_rank = output_rank(teacher), output_rank(student)
    if t_rank is not None and s_rank is not None and t_rank != s_rank:
        raise ValueError(
            f"The teacher outputs shape {tuple(teacher.outputs[0].shape)} but the "
            f"student {tuple(student.outputs[0].shape)}: both must predict one row "
            "of logits per sample (batch, classes), or per position "
            "(batch, ..., classes) with the same position axes."
        )


def check_trainable_student(student, owner):
    """Raises when the student has no trainable weights (e.g. it was the
    teacher of an earlier `Distiller`, which froze it): `fit` would train
    nothing.

    Example:

    >>> import keras
    >>> from keras_cskd.checks.models import check_trainable_student
    >>> student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> check_trainable_student(student, "Distiller.fit")
    >>> student.trainable = False
    >>> check_trainable_student(student, "Distiller.fit")
    Traceback (most recent call last):
    ...
    ValueError: Distiller.fit: the student has no trainable weights (student.trainable is
    False), so training would change nothing. ...
    """
    if not student.built or student.trainable_weights or not student.weights:
        return
    raise ValueError(
        f"{owner}: the student has no trainable weights (student.trainable is "
        f"{student.trainable}), so training would change nothing. A Distiller freezes "
        "its teacher: if this model was the teacher of another Distiller (a "
        "teacher-assistant chain), set `student.trainable = True` and compile this "
        "Distiller again before fit."
    )


def check_roles_by_size(student, teachers, owner, hint=None):
    """Raises when a teacher has fewer parameters than the student: most
    likely the two were swapped (`keras.distillation.Distiller` takes
    `(teacher, student)`, `keras_cskd.Distiller` `(student, teacher)`), and
    training would overwrite the trained model. Models not yet built are
    not compared.

    Example:

    >>> import keras
    >>> from keras_cskd.checks.models import check_roles_by_size
    >>> big = keras.Sequential([keras.Input((4,)), keras.layers.Dense(64), keras.layers.Dense(3)])
    >>> small = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> check_roles_by_size(small, [big], "Distiller")
    >>> check_roles_by_size(big, [small], "Distiller")
    Traceback (most recent call last):
    ...
    ValueError: Distiller: the teacher ... has 15 parameters, fewer than the student ...
    """
    if not student.built:
        return
    student_size = student.count_params()
    for index, teacher in enumerate(teachers):
        if teacher is None or not teacher.built:
            continue
        size = teacher.count_params()
        if size < student_size:
            which = "" if len(teachers) == 1 else f" {index}"
            raise ValueError(
                f"{owner}: the teacher{which} {teacher.name!r} has {size:,} parameters, fewer "
                f"than the student {student.name!r} ({student_size:,}): the roles look "
                "swapped, and training would change the model given as the student. "
                "keras_cskd.Distiller takes (student, teacher), keras.distillation.Distiller "
                "(teacher, student): pass them by keyword, Distiller(student=..., "
                "teacher=...). "
                + (
                    hint
                    or "For a deliberately smaller teacher use keras_cskd.Distiller(..., "
                    "check_roles=False)."
                )
            )
