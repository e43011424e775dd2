"""Code written for `keras.distillation` or the keras.io tutorial, accepted by
`keras_cskd.Distiller` with its intended meaning.

- Keras' keywords: `teacher=`, `student=`, `distillation_losses=`,
  `distillation_loss_weights=`, `student_loss_weight=`.
- Keras' losses: `keras.distillation.LogitsDistillation` (each of its `loss`
  forms) becomes `keras_cskd.losses.KLDivergenceDistillation` at the same
  temperature: KL of the softened distributions, `tau^2`-scaled, which is
  what every form intends (Keras 3.15 applies the softmax and `tau^2` only
  for a `keras.losses.KLDivergence()` instance; its default string
  `"kl_divergence"` and the cross-entropy forms compare raw scaled logits);
  `keras.distillation.FeatureDistillation` becomes
  `keras_cskd.FeatureDistillation` without projection.
- The keras.io tutorial's `compile(student_loss_fn=..., distillation_loss_fn=
  keras.losses.KLDivergence(), alpha=..., temperature=...)`: KD at
  `temperature`, `alpha * student loss + (1 - alpha) * KD`.

How the terms are weighed, whatever keyword spelled the losses (one rule,
`loss_weights`):

| given | supervised weight | distillation weight |
| --- | --- | --- |
| neither | 0.5 | 0.5 (Keras' default: the mean of the two terms) |
| `student_loss_weight=a` | a | 1 - a (Keras' meaning; a in [0, 1]) |
| `distillation_loss_weight=b` | 1 | b (`CE + b * distillation`) |
| both | a | b |

and each distillation loss its own weight (`distillation_loss_weights=`, or
`(loss, weight)` pairs; 1 by default).
"""

import warnings

import keras

_KERAS_DISTILLATION = getattr(keras, "distillation", None)


def resolve_models(student, teacher, kwargs):
    """`(student, teacher, teacher_by_position)`, popping `student=`/
    `teacher=` from `kwargs` (the constructor's positional parameters are
    positional-only, so the two forms can be told apart)."""
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
    return student, teacher, teacher_by_position


def loss_weights(student_loss_weight=None, distillation_loss_weight=None):
    """`(supervised weight, distillation weight)` by the one rule of the
    module docstring.

    Example:

    >>> from keras_cskd.interop import loss_weights
    >>> loss_weights(), loss_weights(0.1), loss_weights(None, 2.0), loss_weights(0.5, 3.0)
    ((0.5, 0.5), (0.1, 0.9), (1.0, 2.0), (0.5, 3.0))
    """
    if student_loss_weight is None and distillation_loss_weight is None:
        student_loss_weight = 0.5  # keras.distillation.Distiller's default
    if student_loss_weight is not None and distillation_loss_weight is None:
        alpha = float(student_loss_weight)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(
                "student_loss_weight alone means keras.distillation's weighting, "
                "student_loss_weight * CE + (1 - student_loss_weight) * distillation, so "
                f"it must be in [0, 1]; got {student_loss_weight!r}. To weigh the two "
                "terms freely, pass distillation_loss_weight= too."
            )
        return alpha, 1.0 - alpha
    a = 1.0 if student_loss_weight is None else float(student_loss_weight)
    b = 1.0 if distillation_loss_weight is None else float(distillation_loss_weight)
    return a, b


def distillation_items(distillation_loss, distillation_losses, distillation_loss_weights):
    """The distillation loss(es) as one list of `(loss, weight)` pairs (not
    yet resolved), from keras-cskd's `distillation_loss=` or Keras'
    `distillation_losses=` + `distillation_loss_weights=`; None when
    neither is given."""
    if distillation_losses is not None:
        if distillation_loss is not None:
            raise TypeError(
                "Pass keras.distillation's distillation_losses= (+ distillation_loss_weights=) "
                "or keras-cskd's distillation_loss=, not both."
            )
        items = (
            list(distillation_losses)
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
        return list(zip(items, weights))
    if distillation_loss_weights is not None:
        raise TypeError(
            "distillation_loss_weights= goes with distillation_losses= (keras.distillation's "
            "form); with distillation_loss= pass (loss, weight) pairs."
        )
    if distillation_loss is None:
        return None
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
            pairs.append((item[0], item[1]))
        else:
            pairs.append((item, 1.0))
    return pairs


def from_keras_loss(loss):
    """A `keras.distillation` loss as the keras-cskd loss with its intended
    meaning (see the module docstring); any other object unchanged."""
    if _KERAS_DISTILLATION is None:
        return loss
    if isinstance(loss, getattr(_KERAS_DISTILLATION, "FeatureDistillation", ())):
        from keras_cskd.features import FeatureDistillation

        return FeatureDistillation.from_keras(loss)
    if isinstance(loss, getattr(_KERAS_DISTILLATION, "LogitsDistillation", ())):
        return _from_logits_distillation(loss)
    return loss


def _from_logits_distillation(loss):
    from keras_cskd.losses import KLDivergenceDistillation

    forms = keras.tree.flatten(loss.loss)
    used = [form for form in forms if form is not None]
    if len(forms) != 1 or len(used) != 1:
        raise ValueError(
            "keras.distillation.LogitsDistillation with one loss per output of a "
            "multi-output model: keras_cskd.Distiller distils one logits tensor. Give "
            "it a model that returns the logits to distil, with "
            "keras_cskd.losses.KLDivergenceDistillation(temperature=...)."
        )
    form = used[0]
    if not _is_kl_or_cross_entropy(form):
        raise ValueError(
            f"keras.distillation.LogitsDistillation(loss={form!r}) has no keras-cskd "
            "equivalent: use keras_cskd.losses.KLDivergenceDistillation (KL of the "
            "softened distributions) or another keras_cskd.losses loss."
        )
    _warn_once(
        "keras_cskd.Distiller reads keras.distillation.LogitsDistillation("
        f"temperature={loss.temperature}) as Hinton's KD: KL of the softmaxes at that "
        "temperature, scaled by temperature^2 (keras_cskd.losses.KLDivergenceDistillation). "
        "Keras' own class does that only for loss=keras.losses.KLDivergence(); its default "
        "'kl_divergence' string and the cross-entropy forms skip the softmax or the "
        "temperature^2. Pass KLDivergenceDistillation yourself to silence this."
    )
    return KLDivergenceDistillation(temperature=float(loss.temperature))


def _is_kl_or_cross_entropy(form):
    kinds = (
        keras.losses.KLDivergence,
        keras.losses.CategoricalCrossentropy,
        keras.losses.kl_divergence,
        keras.losses.categorical_crossentropy,
    )
    if isinstance(form, str):
        return form.lower().replace("_", "") in (
            "kldivergence",
            "kld",
            "kullbackleiblerdivergence",
            "categoricalcrossentropy",
        )
    return any(form is kind for kind in kinds[2:]) or isinstance(form, kinds[:2])


def _warn_once(message):
    """A `UserWarning` (shown once per place by Python's default filter)."""
    warnings.warn(message, UserWarning, stacklevel=5)


def tutorial_compile_arguments(kwargs):
    """The keras.io tutorial's `compile` keywords, popped from `kwargs`:
    `(student_loss, distillation pairs or None, student_loss_weight or None,
    distillation_loss_weight or None)`. `student_loss_fn` is the supervised
    loss; `distillation_loss_fn` a KL divergence (the tutorial's
    `keras.losses.KLDivergence()`) becomes KD at `temperature` (default 3,
    the tutorial's); `alpha` is the supervised weight, `1 - alpha` the
    distillation weight.

    Example:

    >>> import keras
    >>> from keras_cskd.interop import tutorial_compile_arguments
    >>> kwargs = {"distillation_loss_fn": keras.losses.KLDivergence(), "alpha": 0.1,
    ...           "temperature": 10}
    >>> _, pairs, a, b = tutorial_compile_arguments(kwargs)
    >>> type(pairs[0][0]).__name__, pairs[0][0].temperature, a, b
    ('KLDivergenceDistillation', 10.0, 0.1, 0.9)
    """
    names = ("student_loss_fn", "distillation_loss_fn", "alpha", "temperature")
    if not any(name in kwargs for name in names):
        return None, None, None, None
    from keras_cskd.losses import KLDivergenceDistillation

    student_loss = kwargs.pop("student_loss_fn", None)
    form = kwargs.pop("distillation_loss_fn", None)
    alpha = kwargs.pop("alpha", None)
    temperature = kwargs.pop("temperature", None)
    pairs = None
    if form is not None or temperature is not None:
        if form is not None and not _is_kl_or_cross_entropy(form):
            raise ValueError(
                f"compile(distillation_loss_fn={form!r}): keras_cskd.Distiller reads the "
                "keras.io tutorial's keywords for its KL divergence (KD). For another loss "
                "pass a keras_cskd.losses loss as Distiller(..., distillation_loss=...)."
            )
        pairs = [(KLDivergenceDistillation(3.0 if temperature is None else temperature), 1.0)]
    weights = (None, None) if alpha is None else (float(alpha), 1.0 - float(alpha))
    return student_loss, pairs, weights[0], weights[1]
