"""The teachers of a `Distiller`: one object that owns what only teachers
need. One teacher is the one-element case of many.

- They run in inference mode (BatchNorm statistics and Dropout fixed), and
  their outputs carry no gradient.
- They are never trained by the Distiller that holds them: their weights
  are left out of its trainable weights (`variable_ids`), and their own
  `trainable` flag is never touched, so a model that was one Distiller's
  teacher can be another's student (a teacher -> assistant -> student
  chain).
- Their logits may come from a cache: `x = {"x": inputs, "teacher_logits":
  logits}` (one array, or one per teacher, from `cache_teacher_logits`), or
  `x = {"x": inputs, "teacher_top_k": {"ids", "log_probs", "tail"}}` (one
  dict, or one per teacher, from `TopKCache`), completed to dense logits
  by `keras_cskd.ops.top_k_logits` in the step.
- Several teachers are combined for each distillation loss
  (`ensemble`):
    - `"mean_probs"` (default; Hinton et al.'s ensemble): the weighted mean
      of the teachers' softened distributions at the loss's temperature,
      given to the loss as the logits `tau * log(sum_i w_i softmax(z_i /
      tau))`, whose softmax at `tau` is that mean. CSWT's losses combine at
      temperature 1 (their adaptive temperatures then soften the mean);
      logit MSE compares raw logits, which a mean of distributions does
      not have: refused.
    - `"mean_logits"`: the weighted mean of the logits (a geometric mean of
      the distributions).
    - `"per_teacher"`: each teacher is distilled on its own and the losses
      are summed with `teacher_weights`. For the batch-wise losses (CSKD,
      DIST, STKD) each teacher's columns are compared with the student's.
  DKD's labels are the batch's labels in every mode. `teacher_weights`
  (default equal) are normalised to sum to 1.
"""

import numpy as np
from keras import ops

from keras_cskd.checks import models as model_checks
from keras_cskd.checks.tensors import check_single_output

ENSEMBLES = ("mean_probs", "mean_logits", "per_teacher")
TEACHER_LOGITS_KEY = "teacher_logits"
TEACHER_TOP_K_KEY = "teacher_top_k"
INPUTS_KEY = "x"


class Teachers:
    """The teacher models (a list, possibly empty when every batch carries
    cached logits), their weights and how they are combined.

    Example:

    >>> import keras, numpy as np
    >>> from keras_cskd.distiller.teachers import Teachers
    >>> from keras_cskd.losses import KLDivergenceDistillation
    >>> teachers = Teachers([None, None], ensemble="mean_logits")  # cached logits only
    >>> z1, z2 = np.zeros((1, 2), "float32"), np.array([[2.0, 0.0]], "float32")
    >>> [(target, weight)] = teachers.targets((z1, z2), KLDivergenceDistillation())
    >>> np.asarray(target).tolist(), weight
    ([[1.0, 0.0]], 1.0)
    """

    def __init__(self, models, teacher_weights=None, ensemble="mean_probs"):
        self.models = list(models)
        if ensemble not in ENSEMBLES:
            raise ValueError(f"ensemble must be one of {ENSEMBLES}, got {ensemble!r}.")
        self.ensemble = ensemble
        self.given_weights = None if teacher_weights is None else list(teacher_weights)
        if self.given_weights is not None:
            values = np.asarray(self.given_weights, dtype="float64")
            if values.ndim != 1 or not np.all(np.isfinite(values)) or np.any(values < 0):
                raise ValueError(
                    f"teacher_weights must be finite numbers >= 0, one per teacher; got "
                    f"{teacher_weights!r}."
                )
            if values.sum() <= 0:
                raise ValueError("teacher_weights sum to 0: give at least one teacher a weight.")
            if self.models and len(values) != len(self.models):
                raise ValueError(
                    f"teacher_weights has {len(values)} entries for {len(self.models)} "
                    "teachers: give one weight per teacher."
                )

    @classmethod
    def of(cls, teacher, teacher_weights=None, ensemble="mean_probs"):
        """From the `Distiller`'s `teacher` argument: a model, a list of
        models, or None (cached logits)."""
        if teacher is None:
            models = []
        elif isinstance(teacher, (list, tuple)):
            models = list(teacher)
            if not models:
                raise ValueError("teacher=[] holds no teacher: pass at least one model.")
        else:
            models = [teacher]
        return cls(models, teacher_weights, ensemble)

    # ----------------------------------------------------------- the models
    @property
    def live(self):
        """The teacher models (empty when every batch carries cached logits)."""
        return [model for model in self.models if model is not None]

    def weights_for(self, count):
        """The normalised weights of `count` teachers (equal by default)."""
        if self.given_weights is None:
            return [1.0 / count] * count
        if len(self.given_weights) != count:
            raise ValueError(
                f"teacher_weights has {len(self.given_weights)} entries but the batch "
                f"carries logits of {count} teacher(s): give one weight per teacher."
            )
        total = float(sum(self.given_weights))
        return [float(w) / total for w in self.given_weights]

    def variable_ids(self):
        """`id`s of the teachers' variables: the Distiller never trains them."""
        return {id(v) for model in self.live for v in model.variables}

    def check(self, student, losses):
        """The checks of `Distiller(student, teacher, ...)` for every
        teacher (named by index and name), and the combinations of
        ensemble and losses that make no sense."""
        for index, teacher in enumerate(self.live):
            label = "teacher" if len(self.live) == 1 else f"teacher {index} ({teacher.name!r})"
            model_checks.check_models(student, teacher, teacher_role=label)
        if len(self.models) < 2:
            return
        from keras_cskd.features import FeatureDistillation

        if any(isinstance(loss, FeatureDistillation) for loss, _ in losses):
            raise ValueError(
                "FeatureDistillation with several teachers: it matches one teacher's layer. "
                "Distil the features of one teacher (a Distiller with that teacher), or "
                "distil the logits of the ensemble."
            )
        if self.ensemble == "mean_probs":
            raw = [type(loss).__name__ for loss, _ in losses if loss.temperature_of_target is None]
            if raw:
                raise ValueError(
                    f"ensemble='mean_probs' with {', '.join(raw)}: that loss compares raw "
                    "logits, which a mean of the teachers' distributions does not have. Use "
                    "ensemble='mean_logits' or 'per_teacher'."
                )

    # -------------------------------------------------------------- the step
    @staticmethod
    def split_inputs(inputs):
        """`(inputs, cached teacher logits as a tuple, or None)` of a
        batch's `x`."""
        key = None
        if isinstance(inputs, dict):
            key = next((k for k in (TEACHER_LOGITS_KEY, TEACHER_TOP_K_KEY) if k in inputs), None)
        if key is not None:
            if INPUTS_KEY not in inputs:
                raise ValueError(
                    "With cached teacher logits pass x as "
                    f"{{'x': inputs, '{key}': ...}}; the 'x' key is missing."
                )
            cached = inputs[key]
            cached = tuple(cached) if isinstance(cached, (list, tuple)) else (cached,)
            return inputs[INPUTS_KEY], cached
        return inputs, None

    def logits(self, x, cached=None, vocabulary_size=None):
        """The teachers' logits on `x` as a tuple (one per teacher), from
        the cache when the batch carries it (top-k outputs completed to
        `vocabulary_size` classes); without gradient."""
        if cached is not None:
            return tuple(ops.stop_gradient(cached_logits(c, vocabulary_size)) for c in cached)
        if not self.live:
            raise ValueError(
                "This Distiller has no teacher: every batch must carry cached "
                "logits, x={'x': inputs, 'teacher_logits': logits}."
            )
        outputs = []
        for index, teacher in enumerate(self.live):
            logits = teacher(x, training=False)
            label = "teacher" if len(self.live) == 1 else f"teacher {index}"
            check_single_output(logits, label, "Distiller")
            outputs.append(ops.stop_gradient(logits))
        return tuple(outputs)

    def targets(self, logits, loss):
        """The `(teacher logits, weight)` pairs that `loss` is computed on:
        one combined target, or one per teacher (`per_teacher`)."""
        if len(logits) == 1:
            return [(logits[0], 1.0)]
        weights = self.weights_for(len(logits))
        if self.ensemble == "per_teacher":
            return list(zip(logits, weights))
        if self.ensemble == "mean_logits":
            combined = sum(w * ops.cast(z, "float32") for z, w in zip(logits, weights))
            return [(combined, 1.0)]
        temperature = (
            1.0 if loss.temperature_of_target == "one" else float(getattr(loss, "temperature", 1.0))
        )
        return [(mean_probabilities_logits(logits, weights, temperature), 1.0)]


def cached_logits(entry, vocabulary_size):
    """Cached teacher logits as a tensor: the logits themselves, or a stored
    top-k distribution (`{"ids", "log_probs", "tail"}`) completed to dense
    logits over `vocabulary_size` classes (`keras_cskd.ops.top_k_logits`)."""
    if isinstance(entry, dict):
        missing = {"ids", "log_probs"} - set(entry)
        if missing:
            raise ValueError(
                f"Cached top-k teacher outputs need the keys 'ids' and 'log_probs' (and "
                f"optionally 'tail'); {sorted(missing)} missing. TopKCache.dataset yields them."
            )
        from keras_cskd.ops.top_k import top_k_logits

        return top_k_logits(entry["ids"], entry["log_probs"], vocabulary_size, entry.get("tail"))
    return ops.convert_to_tensor(entry)


def mean_probabilities_logits(logits, weights, temperature):
    """`tau * log(sum_i w_i softmax(z_i / tau))`: logits whose softmax at
    `tau` is the weighted mean of the teachers' softened distributions.

    Example:

    >>> import keras, numpy as np
    >>> from keras_cskd.distiller.teachers import mean_probabilities_logits
    >>> z1, z2 = np.array([[3.0, 0.0]], "float32"), np.array([[0.0, 3.0]], "float32")
    >>> target = mean_probabilities_logits((z1, z2), [0.5, 0.5], 2.0)
    >>> np.round(np.asarray(keras.ops.softmax(target / 2.0)), 4).tolist()
    [[0.5, 0.5]]
    """
    log_probs = [
        ops.log_softmax(ops.cast(z, "float32") / temperature, axis=-1) + float(np.log(w))
        for z, w in zip(logits, weights)
        if w > 0
    ]
    return temperature * ops.logsumexp(ops.stack(log_probs, axis=0), axis=0)
