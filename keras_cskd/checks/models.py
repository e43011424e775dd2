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
        last = model.layers[-1]
        if isinstance(last, keras.layers.Softmax):
            fix = (
                f"cut the separate softmax layer: keras.Model({role}.inputs, "
                f"{role}.layers[-2].output)"
            )
        else:
            fix = (
                f"set its last layer's activation to linear: {role}.layers[-1].activation "
                "= keras.activations.linear (the weights stay as they are)"
            )
        raise ValueError(
            f"The {role} ends with a softmax, so it outputs probabilities; distillation "
            f"needs logits: {fix}."
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


def check_models(student, teacher, teacher_role="teacher"):
    """The checks of `Distiller(student, teacher)`: Keras models, not the
    same one, no shared weights, logits (no softmax head), one output each
    with the same class count. `teacher_role` names the teacher in the
    messages (e.g. "teacher 1 ('resnet')" among several)."""
    if not isinstance(student, keras.Model):
        raise ValueError(f"student must be a keras.Model, got {type(student).__name__}.")
    if teacher is not None and not isinstance(teacher, keras.Model):
        raise ValueError(
            f"{teacher_role} must be a keras.Model (or None with cached teacher "
            f"logits), got {type(teacher).__name__}."
        )
    if teacher is student:
        raise ValueError(
            f"The {teacher_role} and the student are the same model. Distil into "
            "a fresh student, e.g. keras.models.clone_model(teacher)."
        )
    check_no_softmax_head(student, "student")
    check_no_softmax_head(teacher, teacher_role)
    if teacher is None:
        return
    student_weights = {id(w) for w in student.weights}
    shared = [w.path for w in teacher.weights if id(w) in student_weights]
    if shared:
        raise ValueError(
            f"The {teacher_role} and the student share {len(shared)} weight(s) "
            f"(e.g. {shared[0]}): training the student would change the "
            "teacher. Build the student from fresh layers."
        )
    t_classes = output_classes(teacher, teacher_role)
    s_classes = output_classes(student, "student")
    if t_classes is not None and s_classes is not None and t_classes != s_classes:
        raise ValueError(
            f"The {teacher_role} predicts {t_classes} classes but the student "
            f"{s_classes}. Give the student a {t_classes}-unit output layer."
        )
    t_rank, s_rank = output_rank(teacher), output_rank(student)
    if t_rank is not None and s_rank is not None and t_rank != s_rank:
        raise ValueError(
            f"The {teacher_role} outputs shape {tuple(teacher.outputs[0].shape)} but the "
            f"student {tuple(student.outputs[0].shape)}: both must predict one row "
            "of logits per sample (batch, classes), or per position "
            "(batch, ..., classes) with the same position axes."
        )


def check_trainable_student(student, owner):
    """Raises when the student has no trainable weights (it was frozen,
    `student.trainable = False`): `fit` would train nothing.

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
        f"{student.trainable}), so training would change nothing. Set "
        "`student.trainable = True` and compile this Distiller again before fit."
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


def check_first_batch(distiller, batch, owner="Distiller.fit"):
    """Runs the student and the teachers eagerly on the first batch (a few
    samples), whatever the input pipeline, before any weight moves: one
    logits tensor each, the same classes and positions, finite, not
    probabilities (a softmax or sigmoid in `call()` included), at least 2
    samples for a batch-wise loss; and, with `distiller.check_roles`, a
    student that does not already predict the labels far better than its
    teacher (the two swapped). Returns the student's class count."""
    import numpy as np

    from keras_cskd import _backend
    from keras_cskd.checks.tensors import check_logits, check_single_output

    x, y, _ = batch
    inputs, cached = distiller.split_inputs(x)
    if isinstance(inputs, dict) and "padding_mask" in inputs:
        from keras_cskd.checks.tensors import check_weights

        check_weights(inputs["padding_mask"], "padding_mask input", owner)
    # Checked (and counted in messages) on 8 samples; a chunked Distiller
    # exists for logits too large to hold: 2 samples, no check by accuracy.
    chunked = getattr(distiller, "chunk_size", None) is not None
    few = slice(0, 2 if chunked else 8)
    take = lambda value: keras.tree.map_structure(lambda leaf: leaf[few], value)  # noqa: E731
    student_logits = distiller.student(take(inputs), training=False)
    check_single_output(student_logits, "student", owner)
    mask = _backend.keras_mask(student_logits)
    if cached is not None:
        from keras_cskd.distiller.teachers import cached_logits

        vocabulary = student_logits.shape[-1]
        teacher_outputs = [
            cached_logits(keras.tree.map_structure(lambda a: np.asarray(a)[few], c), vocabulary)
            for c in cached
        ]
        labels = ["cached teacher logits"] * len(cached)
    else:
        teacher_outputs, labels = [], []
        live = distiller.teachers.live
        for index, teacher in enumerate(live):
            label = "teacher" if len(live) == 1 else f"teacher {index} ({teacher.name!r})"
            outputs = teacher(take(inputs), training=False)
            check_single_output(outputs, label, owner)
            teacher_outputs.append(outputs)
            labels.append(label)
    for label, teacher_logits in zip(labels, teacher_outputs):
        where = owner if len(teacher_outputs) == 1 else f"{owner} ({label})"
        check_logits(teacher_logits, student_logits, where, mask=mask)
    for label, logits in [("student", student_logits), *zip(labels, teacher_outputs)]:
        _check_not_sigmoid(logits, label, owner)
    if distiller.terms.batchwise and len(student_logits.shape) == 2:
        if len(keras.tree.flatten(inputs)[0]) < 2:
            names = ", ".join(type(l).__name__ for l in distiller.terms.losses if l.batchwise)
            raise ValueError(
                f"{owner}: the first batch holds one sample, but {names} compare(s) each "
                "class across the batch and need(s) at least 2 samples per batch. Batch "
                "the data in twos or more (e.g. `dataset.batch(32)`)."
            )
    if (
        not chunked
        and _never_trained(distiller)
        and cached is None
        and teacher_outputs
        and y is not None
    ):
        # On the whole first batch (up to 64 samples): accuracies on 8 are noise.
        student_logits = distiller.student(inputs, training=False)
        teacher_outputs = [t(inputs, training=False) for t in distiller.teachers.live]
        mask = _backend.keras_mask(student_logits)
        _check_roles_by_accuracy(student_logits, teacher_outputs, labels, y, mask, owner)
    return int(student_logits.shape[-1])


def _never_trained(distiller):
    """Whether the roles check applies: asked for, and before this
    Distiller's first step (a student it trained may well beat a weak
    teacher by then)."""
    if not distiller.check_roles:
        return False
    optimizer = getattr(distiller, "optimizer", None)
    if optimizer is None or not optimizer.built:
        return True
    return int(keras.ops.convert_to_numpy(optimizer.iterations)) == 0


def _check_roles_by_accuracy(student_logits, teacher_outputs, labels, y, mask, owner):
    """Refuses when the student is already skilled and the teacher is not:
    skill is the balanced accuracy above chance, `(a - 1/K) / (1 - 1/K)`
    over the K classes the batch holds (a model that predicts one class
    everywhere, as untrained ones often do, has skill 0). Needs 16
    labelled positions and two classes."""
    student_skill = _skill(student_logits, y, mask)
    if student_skill is None or student_skill < 0.5:
        return
    for label, teacher_logits in zip(labels, teacher_outputs):
        teacher_skill = _skill(teacher_logits, y, mask)
        if teacher_skill is None or teacher_skill > student_skill - 0.4:
            continue
        raise ValueError(
            f"{owner}: on the first batch the student already predicts the labels "
            f"(skill {student_skill:.0%} above chance) and the {label} does not "
            f"({teacher_skill:.0%}): the roles look swapped, and training would change "
            "the trained model given as the student. keras_cskd.Distiller takes "
            "(student, teacher), keras.distillation.Distiller (teacher, student): pass "
            "them by keyword, Distiller(student=..., teacher=...). For a deliberately "
            "weaker teacher use Distiller(..., check_roles=False)."
        )


def _check_not_sigmoid(logits, role, owner):
    """Every output in [0, 1] over a batch (at least 16 values): a sigmoid
    (or softmax) applied inside the model."""
    import numpy as np
    from keras import ops

    values = np.asarray(ops.convert_to_numpy(ops.cast(logits, "float32")))
    if values.size >= 16 and values.min() >= 0.0 and values.max() <= 1.0:
        raise ValueError(
            f"{owner}: the {role}'s outputs on the first batch all lie in [0, 1]: they look "
            "like probabilities (a softmax or sigmoid at the end, or in call()), but "
            "distillation needs logits. Set the last layer's activation to None (e.g. "
            "`model.layers[-1].activation = keras.activations.linear`), or return the "
            "values before the softmax/sigmoid from call()."
        )


def _skill(logits, y, mask=None):
    """Balanced accuracy (the mean recall of the classes the labels hold)
    above chance, `(a - 1/K) / (1 - 1/K)`, of `logits` on class labels `y`;
    None for other labels, fewer than 16 labelled positions or one class."""
    import numpy as np
    from keras import ops

    if keras.tree.is_nested(y):
        return None
    labels = np.asarray(ops.convert_to_numpy(y))
    predictions = np.argmax(np.asarray(ops.convert_to_numpy(ops.cast(logits, "float32"))), -1)
    if labels.shape == predictions.shape + (1,):
        labels = labels[..., 0]
    if labels.ndim == predictions.ndim + 1:  # one-hot
        labels = np.argmax(labels, -1)
    if labels.shape != predictions.shape or not np.issubdtype(labels.dtype, np.number):
        return None
    keep = labels != -100
    if mask is not None:
        keep &= np.asarray(ops.convert_to_numpy(mask)).astype(bool).reshape(labels.shape)
    labels, predictions = labels[keep], predictions[keep]
    classes = np.unique(labels)
    if len(labels) < 16 or len(classes) < 2:
        return None
    balanced = np.mean([np.mean(predictions[labels == c] == c) for c in classes])
    chance = 1.0 / len(classes)
    return float((balanced - chance) / (1.0 - chance))


def label_spec(distiller):
    """What the labels and sample weights given to `distiller.fit` must
    look like: `{"position_axes", "positions", "kind", "leading"}` (the
    student's position axes and their sizes where known, the supervised
    loss's label kind: `"sparse"`, `"categorical"` or `"auto"`, and the
    logits' leading shape `(n, ...)`)."""
    rank = output_rank(distiller.student) or 2
    positions = None
    outputs = getattr(distiller.student, "outputs", None)
    if outputs and len(outputs) == 1:
        positions = tuple(outputs[0].shape[1:-1])
    loss = getattr(distiller, "loss", None)
    kind = getattr(loss, "kind", "auto")
    if isinstance(loss, keras.losses.SparseCategoricalCrossentropy):
        kind = "sparse"
    elif isinstance(loss, keras.losses.CategoricalCrossentropy):
        kind = "categorical"
    return {
        "position_axes": max(rank - 2, 0),
        "positions": positions,
        "kind": kind,
        "leading": None if positions is None else (None, *positions),
    }
