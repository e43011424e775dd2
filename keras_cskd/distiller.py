"""The `Distiller`: knowledge distillation with `model.fit` on every backend.

The training step is customised the backend-agnostic way Keras 3 supports:
`call(training=True)` runs the student, the frozen teacher (in inference
mode) and, for STKD, mixup; `compute_loss` combines the student's
supervised loss with the distillation losses; `compute_metrics` logs them.
No `train_step` is overridden, so the same code runs under TensorFlow
(`tf.function` + XLA), JAX (`jax.jit`) and PyTorch.
"""

import inspect
import warnings

import keras
import numpy as np
from keras import ops

from keras_cskd import _backend, validation
from keras_cskd import losses as kd_losses
from keras_cskd import ops as kd_ops

TEACHER_LOGITS_KEY = "teacher_logits"
INPUTS_KEY = "x"

_CROSS_ENTROPY_NAMES = {
    "sparse_categorical_crossentropy": "sparse",
    "categorical_crossentropy": "categorical",
    "crossentropy": "auto",
    "auto": "auto",
}


@keras.saving.register_keras_serializable(package="keras_cskd")
class StudentCrossEntropy(keras.losses.Loss):
    """Cross-entropy on the student's logits, sparse or one-hot labels.

    Picks sparse or categorical cross-entropy from the labels' shape:
    integer labels `(B,)`/`(B, 1)` or one-hot/soft labels `(B, C)`. Always
    `from_logits=True`: `Distiller` students output logits.

    Example:

    >>> import numpy as np
    >>> from keras_cskd.distiller import StudentCrossEntropy
    >>> logits = np.log(np.array([[0.5, 0.25, 0.25]], "float32"))
    >>> round(float(StudentCrossEntropy()(np.array([0]), logits)), 4)
    0.6931
    """

    def __init__(self, kind="auto", name="student_cross_entropy", **kwargs):
        super().__init__(name=name, **kwargs)
        if kind not in ("auto", "sparse", "categorical"):
            raise ValueError(f"kind must be 'auto', 'sparse' or 'categorical', got {kind!r}.")
        self.kind = kind

    def call(self, y_true, y_pred):
        y_pred = ops.cast(y_pred, "float32")
        kind = self.kind
        if kind == "auto":
            one_hot = len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == y_pred.shape[-1] and y_pred.shape[-1] != 1
            kind = "categorical" if one_hot else "sparse"
        if kind == "categorical":
            return keras.losses.categorical_crossentropy(
                ops.cast(y_true, "float32"), y_pred, from_logits=True
            )
        y_true = ops.reshape(ops.cast(y_true, "int32"), ops.shape(y_pred)[:-1])
        return keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)

    def get_config(self):
        return {**super().get_config(), "kind": self.kind}


def _student_loss_from(loss):
    """Resolves `compile(loss=...)`, refusing losses that would read the
    student's logits as probabilities (the `keras.distillation` trap)."""
    if loss is None:
        return None
    if isinstance(loss, str):
        key = loss.lower()
        if key in _CROSS_ENTROPY_NAMES:
            return StudentCrossEntropy(_CROSS_ENTROPY_NAMES[key])
        resolved = keras.losses.get(loss)
        return resolved
    if getattr(loss, "from_logits", True) is False and isinstance(
        loss,
        (
            keras.losses.SparseCategoricalCrossentropy,
            keras.losses.CategoricalCrossentropy,
            keras.losses.BinaryCrossentropy,
        ),
    ):
        raise ValueError(
            f"compile(loss={type(loss).__name__}(from_logits=False)) would "
            "read the student's logits as probabilities. Distiller students "
            "output logits: pass `from_logits=True`, or the string "
            "'sparse_categorical_crossentropy' (resolved with from_logits=True)."
        )
    return loss


def _normalise_distillation_losses(distillation_loss):
    if distillation_loss is None:
        raise ValueError(
            "Distiller needs a distillation loss, e.g. "
            "keras_cskd.losses.CosineSimilarityDistillation() or 'cskd'."
        )
    items = distillation_loss if isinstance(distillation_loss, (list, tuple)) else [distillation_loss]
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
        loss = kd_losses.get(loss)
        pairs.append((loss, float(weight)))
    return pairs


def _has_softmax_head(model):
    layers = getattr(model, "layers", None)
    if not layers:
        return False
    last = layers[-1]
    if isinstance(last, keras.layers.Softmax):
        return True
    activation = getattr(last, "activation", None)
    return activation is keras.activations.softmax or getattr(activation, "__name__", "") == "softmax"


def _output_classes(model, role):
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
    if len(shape) != 2:
        raise ValueError(
            f"The {role} outputs shape {tuple(shape)}; Distiller expects "
            "logits of shape (batch, classes)."
        )
    return shape[-1]


@keras.saving.register_keras_serializable(package="keras_cskd")
class ClassStatistics(keras.metrics.Metric):
    """Per-class means of the CSKD cosine similarity and temperature over an
    epoch (read by `keras_cskd.callbacks.TemperatureRecorder`); kept out of
    the progress bar and history.

    Example:

    >>> import numpy as np
    >>> from keras_cskd.distiller import ClassStatistics
    >>> statistics = ClassStatistics(num_classes=2)
    >>> statistics.update_state(np.array([0.5, 1.0]), np.array([6.0, 2.0]))
    >>> statistics.update_state(np.array([0.7, 1.0]), np.array([4.0, 2.0]))
    >>> {k: np.round(np.asarray(v, "float64"), 3).tolist() for k, v in statistics.result().items()}
    {'class_cosine_similarity': [0.6, 1.0], 'class_temperature': [5.0, 2.0]}
    """

    def __init__(self, num_classes, name="class_statistics", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = int(num_classes)
        self.cosine_sum = self.add_variable((self.num_classes,), "zeros", name="cosine_sum")
        self.temperature_sum = self.add_variable((self.num_classes,), "zeros", name="temperature_sum")
        self.steps = self.add_variable((), "zeros", name="steps")

    def update_state(self, class_cosine, class_temperature):
        self.cosine_sum.assign_add(ops.cast(class_cosine, self.dtype))
        self.temperature_sum.assign_add(ops.cast(class_temperature, self.dtype))
        self.steps.assign_add(ops.ones((), self.dtype))

    def result(self):
        steps = ops.maximum(self.steps, 1.0)
        return {
            "class_cosine_similarity": self.cosine_sum / steps,
            "class_temperature": self.temperature_sum / steps,
        }

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


@keras.saving.register_keras_serializable(package="keras_cskd")
class Distiller(keras.Model):
    """Distils a frozen teacher into a student inside `model.fit`.

    The loss of a training step is
    `student_loss_weight * CE(y, s) + distillation_loss_weight *
    sum_k w_k * L_k(t, s)` plus the student's regularization losses, where
    `s`, `t` are the student's and teacher's logits on the same batch. Only
    the student is trained; the teacher is frozen (`trainable=False`) and
    always runs in inference mode (BatchNorm statistics and Dropout fixed).

    `evaluate` and `predict` use the student alone (the teacher is not run):
    `val_loss` is the student's supervised loss. `distiller.student` is the
    model to keep; `export_student(path)` saves it alone.

    Args:
        student: a `keras.Model` returning class logits (no softmax).
        teacher: a trained `keras.Model` returning logits for the same
            classes. Use `teacher=None` only when every batch carries cached
            teacher logits (see `cache_teacher_logits`).
        distillation_loss: a `keras_cskd.losses` loss or its name (`"kd"`,
            `"mse"`, `"cskd"`, `"cskd_cswt"`, `"stkd"`, `"dist"`, `"dkd"`), or
            a list of losses or `(loss, weight)` pairs. Default `"cskd"`.
        student_loss_weight: weight of the supervised loss (a `keras.Variable`
            afterwards, so callbacks can schedule it). Default 1.0.
        distillation_loss_weight: weight of the distillation term (likewise).
            Default 1.0.
        distillation_losses, distillation_loss_weights: the keywords of
            `keras.distillation.Distiller`, with its meaning: a loss or a list
            of losses, one weight each (default 1.0), and then the loss is
            `a * CE + (1 - a) * sum_k w_k * L_k` with
            `a = student_loss_weight` in `[0, 1]`, default 0.5, as in Keras.
            `teacher=` and `student=` are accepted as keywords too, so code
            written for Keras' distiller ports by changing the import.

    Positional order is `(student, teacher)`, like the keras.io tutorial
    (Keras' built-in distiller takes `(teacher, student)`): a teacher given
    by position with fewer parameters than the student raises a
    `UserWarning`; the keyword form `Distiller(student=s, teacher=t)` is
    unambiguous and never warns.
        mixup_alpha: Beta parameter of mixup; teacher and student then see the
            same mixed batch and the supervised loss uses the mixed labels
            (STKD). `"auto"` takes the loss's own `mixup_alpha` (STKD: 1.0)
            and no mixup for the other losses; `None` turns mixup off.
        num_classes: number of classes, only needed for a subclassed student
            whose output shape is unknown (enables per-class statistics).
        seed: seed of the mixup random draws (otherwise Keras' global seed,
            set with `keras.utils.set_random_seed`).

    Cached teacher logits: pass `x` as `{"x": inputs, "teacher_logits":
    logits}` (logits from `cache_teacher_logits`) and the teacher is not run.

    Example:

    >>> import keras, numpy as np
    >>> import keras_cskd
    >>> teacher = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    >>> student = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    >>> distiller = keras_cskd.Distiller(student, teacher, "cskd")
    >>> distiller.compile(optimizer="adam", metrics=["accuracy"])
    >>> x = np.random.rand(32, 8).astype("float32")
    >>> y = np.random.randint(0, 3, 32)
    >>> history = distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    >>> sorted(history.history)
    ['accuracy', 'cosine_similarity', 'distillation_loss', 'loss', 'student_loss', 'temperature']
    """

    def __init__(
        self,
        student=None,
        teacher=None,
        /,
        distillation_loss=None,
        *,
        distillation_losses=None,
        distillation_loss_weights=None,
        student_loss_weight=None,
        distillation_loss_weight=None,
        mixup_alpha="auto",
        num_classes=None,
        seed=None,
        name="distiller",
        **kwargs,
    ):
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
            items = distillation_losses if isinstance(distillation_losses, (list, tuple)) else [distillation_losses]
            weights = [1.0] * len(items) if distillation_loss_weights is None else list(distillation_loss_weights)
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
        super().__init__(name=name, **kwargs)
        if isinstance(student, dict):
            student = keras.saving.deserialize_keras_object(student)
        if isinstance(teacher, dict):
            teacher = keras.saving.deserialize_keras_object(teacher)
        self._check_models(student, teacher)
        if teacher_by_position and teacher.built and student.built:
            t_params, s_params = teacher.count_params(), student.count_params()
            if t_params < s_params:
                warnings.warn(
                    f"The teacher has fewer parameters ({t_params:,}) than the student "
                    f"({s_params:,}). keras_cskd.Distiller takes (student, teacher), "
                    "keras.distillation.Distiller (teacher, student): if they are swapped, "
                    "or to silence this for a deliberately small teacher, pass them by "
                    "keyword: Distiller(student=..., teacher=..., ...).",
                    UserWarning,
                    stacklevel=2,
                )
        self.student = student
        self.teacher = teacher
        if teacher is not None:
            teacher.trainable = False

        self.distillation_losses = _normalise_distillation_losses(distillation_loss)
        self._student_loss_weight_value = float(student_loss_weight)
        self._distillation_loss_weight_value = float(distillation_loss_weight)
        for label, value in (
            ("student_loss_weight", student_loss_weight),
            ("distillation_loss_weight", distillation_loss_weight),
        ):
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"`{label}` must be a finite number >= 0, got {value!r}.")
        self.student_loss_weight = keras.Variable(
            float(student_loss_weight), trainable=False, name="student_loss_weight", dtype="float32"
        )
        self.distillation_loss_weight = keras.Variable(
            float(distillation_loss_weight),
            trainable=False,
            name="distillation_loss_weight",
            dtype="float32",
        )

        self._mixup_alpha_config = mixup_alpha
        self.mixup_alpha = self._resolve_mixup_alpha(mixup_alpha)
        if self.mixup_alpha is not None:
            needs_labels = [type(l).__name__ for l, _ in self.distillation_losses if l.requires_labels]
            if needs_labels:
                raise ValueError(
                    f"{', '.join(needs_labels)} needs hard labels, but mixup "
                    "mixes them. Use mixup_alpha=None with this loss."
                )
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

        self.student_loss_tracker = keras.metrics.Mean(name="student_loss")
        self.distillation_loss_tracker = keras.metrics.Mean(name="distillation_loss")
        self._statistics_loss = self._pick_statistics_loss()
        self.num_classes = num_classes or _output_classes(student, "student")
        self.class_statistics = None
        if self._statistics_loss is not None:
            self.cosine_tracker = keras.metrics.Mean(name="cosine_similarity")
            self.temperature_tracker = keras.metrics.Mean(name="temperature")
            if self.num_classes is not None:
                self.class_statistics = ClassStatistics(self.num_classes)
        self._distillation_only_metrics = {"distillation_loss", "cosine_similarity", "temperature"}
        self._mark_built()

    def _mark_built(self):
        # All the Distiller's own state exists once its models are built, so
        # it counts as built (TensorFlow's fit does not build a model before
        # BackupAndRestore, which refuses unbuilt models, restores it).
        if self.student.built and (self.teacher is None or self.teacher.built):
            self.built = True

    # ------------------------------------------------------------------ setup
    @staticmethod
    def _check_models(student, teacher):
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
            if model is not None and _has_softmax_head(model):
                raise ValueError(
                    f"The {role} ends with a softmax, so it outputs "
                    "probabilities; distillation needs logits. Rebuild it "
                    "without the final activation (e.g. Dense(n)) or cut the "
                    f"softmax: keras.Model({role}.inputs, {role}.layers[-2].output) "
                    "if the softmax is a separate layer."
                )
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
        t_classes = _output_classes(teacher, "teacher")
        s_classes = _output_classes(student, "student")
        if t_classes is not None and s_classes is not None and t_classes != s_classes:
            raise ValueError(
                f"The teacher predicts {t_classes} classes but the student "
                f"{s_classes}. Give the student a {t_classes}-unit output layer."
            )

    def _resolve_mixup_alpha(self, mixup_alpha):
        if mixup_alpha == "auto":
            alphas = [getattr(l, "mixup_alpha", None) for l, _ in self.distillation_losses]
            alphas = [a for a in alphas if a]
            return alphas[0] if alphas else None
        if mixup_alpha is None or mixup_alpha == 0:
            return None
        validation.check_positive("mixup_alpha", mixup_alpha)
        return float(mixup_alpha)

    def _pick_statistics_loss(self):
        reporting = [l for l, _ in self.distillation_losses if isinstance(l, kd_losses.CosineSimilarityDistillation)]
        adaptive = [l for l in reporting if l.cswt is not None]
        chosen = adaptive or reporting
        return chosen[0] if chosen else None

    def compile(self, optimizer="adam", loss="auto", metrics=None, **kwargs):
        """Configures training; `loss` is the student's supervised loss.

        `"auto"` (default) is cross-entropy on the student's logits with
        sparse or one-hot labels; the strings `"sparse_categorical_crossentropy"`
        and `"categorical_crossentropy"` are resolved with `from_logits=True`
        (the student outputs logits); a cross-entropy instance with
        `from_logits=False` is refused. `loss=None` trains on the
        distillation loss alone (Kim et al.'s MSE recipe).
        """
        super().compile(optimizer=optimizer, loss=_student_loss_from(loss), metrics=metrics, **kwargs)

    def compile_from_config(self, config):
        # Keras skips compile on load for models that override `compile`;
        # without this a loaded Distiller has no optimizer (state) to resume.
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if getattr(self, "optimizer", None) is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    def fit(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.fit`, after checks that fail fast, before any weight
        is updated, with a message naming the problem and the fix.

        The teacher is frozen again if it was made trainable. NumPy array
        inputs are checked once per call: not empty, no NaN/inf, labels are
        class indices in `[0, classes)` (or one-hot of width `classes`), no
        batch of one sample for batch-wise losses, and the models output one
        logits tensor each (not probabilities). Datasets and generators are
        not read ahead: their batches get the static shape checks when the
        training step is traced.
        """
        arguments = inspect.signature(keras.Model.fit).bind(self, x, y, *args, **kwargs).arguments
        self._freeze_teacher()
        self._check_fit_arrays(arguments)
        callbacks = arguments.get("callbacks")
        if keras.backend.backend() != "jax" or isinstance(callbacks, keras.callbacks.CallbackList):
            return super().fit(x, y, *args, **kwargs)
        # JAX empties the model's variables while a compiled step runs and
        # puts them back after it; an error raised while the first step is
        # traced (e.g. a batch of one sample for CSKD) would leave them
        # empty. Keep their values from the start of training to put back.
        guard = _KeepStateForFirstStep()
        arguments = {k: v for k, v in arguments.items() if k != "self"}
        arguments["callbacks"] = [*(callbacks or []), guard]
        try:
            return super().fit(**arguments)
        except BaseException:
            guard.restore()
            raise

    def _freeze_teacher(self):
        if self.teacher is None:
            return
        unfrozen = [v.path for v in self.teacher.weights if v.trainable]
        if self.teacher.trainable or unfrozen:
            warnings.warn(
                "The teacher was made trainable after it was given to the "
                "Distiller; the Distiller only trains the student, so it "
                "froze the teacher again (teacher.trainable = False).",
                stacklevel=3,
            )
            # Toggled: TensorFlow's attribute tracking skips assigning an
            # unchanged value, which would leave an unfrozen layer unfrozen.
            self.teacher.trainable = True
            self.teacher.trainable = False

    def _labels_are_classes(self):
        if any(loss.requires_labels for loss, _ in self.distillation_losses):
            return True
        return self.loss is None or isinstance(
            self.loss,
            (
                StudentCrossEntropy,
                keras.losses.SparseCategoricalCrossentropy,
                keras.losses.CategoricalCrossentropy,
            ),
        )

    def _check_fit_arrays(self, arguments):
        owner = "Distiller.fit"
        x, y = arguments.get("x"), arguments.get("y")
        if isinstance(x, keras.utils.PyDataset):
            try:
                empty = x.num_batches == 0
            except NotImplementedError:
                empty = False
            if empty:
                raise ValueError(
                    f"{owner} received an empty data set (the PyDataset has 0 "
                    "batches). Check its __len__/num_batches and the data it reads."
                )
            return
        leaves = keras.tree.flatten(x) if x is not None else []
        if not leaves or not all(isinstance(leaf, np.ndarray) for leaf in leaves):
            return  # a dataset, generator or backend tensors: not read ahead
        num_samples = len(leaves[0])
        if num_samples == 0:
            raise ValueError(
                f"{owner} received an empty data set (x has 0 samples). "
                "Check the data loading or filtering step that produced it."
            )
        inputs, cached = self._split_inputs(x)
        for path, leaf in _named_leaves(inputs, "x"):
            validation.check_finite_array(leaf, path, owner)
        if cached is not None:
            validation.check_values(np.asarray(cached, "float32"), "cached teacher logits", owner)
        if y is not None and self.num_classes is not None and self._labels_are_classes():
            validation.check_class_labels(y, self.num_classes, owner)
            validation_data = arguments.get("validation_data")
            if isinstance(validation_data, (tuple, list)) and len(validation_data) > 1:
                if isinstance(validation_data[1], np.ndarray):
                    validation.check_class_labels(
                        validation_data[1], self.num_classes, owner, "validation_data[1]"
                    )
        batchwise = [type(loss).__name__ for loss, _ in self.distillation_losses if loss.batchwise]
        if batchwise and arguments.get("steps_per_epoch") is None:
            validation.check_batch_split(
                num_samples,
                arguments.get("batch_size") or 32,
                owner,
                batchwise,
                arguments.get("validation_split") or 0.0,
            )
        # One eager forward pass on a few samples: catches outputs that are
        # probabilities, NaN or several tensors, which the static checks of
        # a compiled step cannot see (a softmax applied in call(), a teacher
        # that diverged).
        probe = keras.tree.map_structure(lambda leaf: leaf[:8], inputs)
        student_logits = self.student(probe, training=False)
        validation.check_single_output(student_logits, "student", owner)
        if cached is not None:
            teacher_logits = ops.convert_to_tensor(np.asarray(cached[:8], "float32"))
        elif self.teacher is not None:
            teacher_logits = self.teacher(probe, training=False)
            validation.check_single_output(teacher_logits, "teacher", owner)
        else:
            return
        validation.check_logits(teacher_logits, student_logits, owner)
        self._mark_built()
        if y is not None and self.num_classes is None and self._labels_are_classes():
            # A subclassed student: its class count is known only now.
            validation.check_class_labels(y, int(student_logits.shape[-1]), owner)

    # --------------------------------------------------------------- forward
    @staticmethod
    def _split_inputs(inputs):
        if isinstance(inputs, dict) and TEACHER_LOGITS_KEY in inputs:
            if INPUTS_KEY not in inputs:
                raise ValueError(
                    "With cached teacher logits pass x as "
                    "{'x': inputs, 'teacher_logits': logits}; the 'x' key is missing."
                )
            return inputs[INPUTS_KEY], inputs[TEACHER_LOGITS_KEY]
        return inputs, None

    def call(self, inputs, training=False):
        x, cached_logits = self._split_inputs(inputs)
        if not training:
            if self.teacher is not None and not self.teacher.built:
                # Build an unbuilt (subclassed) teacher here, in Keras'
                # symbolic build, not inside the compiled training step
                # (JAX cannot create variables there).
                self.teacher(x, training=False)
            return self.student(x, training=False)
        outputs = {}
        if self.mixup_alpha is not None:
            if cached_logits is not None:
                raise ValueError(
                    "Cached teacher logits cannot be used with mixup: the "
                    "teacher must see the mixed inputs. Use the live teacher "
                    "or set mixup_alpha=None."
                )
            x, mix_lambda, mix_index = self._mixup(x)
            outputs["mixup_lambda"] = mix_lambda
            outputs["mixup_index"] = mix_index
        student_logits = self.student(x, training=True)
        if cached_logits is not None:
            teacher_logits = ops.convert_to_tensor(cached_logits)
        elif self.teacher is None:
            raise ValueError(
                "This Distiller has no teacher: every batch must carry cached "
                "logits, x={'x': inputs, 'teacher_logits': logits}."
            )
        else:
            teacher_logits = self.teacher(x, training=False)
        validation.check_single_output(student_logits, "student", "Distiller")
        validation.check_single_output(teacher_logits, "teacher", "Distiller")
        outputs["student_logits"] = student_logits
        outputs["teacher_logits"] = ops.stop_gradient(teacher_logits)
        return outputs

    def _mixup(self, x):
        flat = keras.tree.flatten(x)
        batch_size = ops.shape(flat[0])[0]
        mix_lambda = kd_ops.sample_beta(self.mixup_alpha, self.seed_generator)
        mix_index = ops.argsort(keras.random.uniform((batch_size,), seed=self.seed_generator))

        def mix(value):
            if not keras.backend.is_float_dtype(value.dtype):
                value = ops.cast(value, "float32")
            lam = ops.cast(mix_lambda, value.dtype)
            return lam * value + (1.0 - lam) * ops.take(value, mix_index, axis=0)

        return keras.tree.map_structure(mix, x), mix_lambda, mix_index

    # ------------------------------------------------------------------ loss
    def _student_loss(self, y, student_logits, sample_weight, y_pred):
        if self._compile_loss is None or y is None:
            return ops.zeros((), "float32")
        if "mixup_lambda" not in y_pred:
            return self._compile_loss(y, student_logits, sample_weight)
        lam = y_pred["mixup_lambda"]
        index = y_pred["mixup_index"]
        y_other = keras.tree.map_structure(lambda v: ops.take(v, index, axis=0), y)
        weight_other = None if sample_weight is None else ops.take(sample_weight, index, axis=0)
        return lam * self._compile_loss(y, student_logits, sample_weight) + (
            1.0 - lam
        ) * self._compile_loss(y_other, student_logits, weight_other)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if not isinstance(y_pred, dict):
            # evaluate(): the student alone.
            loss = super().compute_loss(x, y, y_pred, sample_weight, training)
            if self._compile_loss is not None and y is not None:
                # Keras divides compiled losses by the tf.distribute replica
                # count; the tracker logs the unscaled value.
                self.student_loss_tracker.update_state(
                    self._compile_loss(y, y_pred, sample_weight) * _backend.num_replicas_in_sync(),
                    sample_weight=ops.shape(y_pred)[0],
                )
            return loss
        student_logits = y_pred["student_logits"]
        teacher_logits = y_pred["teacher_logits"]
        for loss, _ in self.distillation_losses:
            validation.check_logits(
                teacher_logits,
                student_logits,
                type(loss).__name__,
                min_batch_size=2 if loss.batchwise else 1,
                values=False,  # static checks only: no host sync per step
            )
        distillation_weight = sample_weight
        if sample_weight is not None and "mixup_lambda" in y_pred:
            lam = y_pred["mixup_lambda"]
            distillation_weight = lam * sample_weight + (1.0 - lam) * ops.take(
                sample_weight, y_pred["mixup_index"], axis=0
            )

        student_loss = ops.cast(self._student_loss(y, student_logits, sample_weight, y_pred), "float32")
        batch_size = ops.shape(student_logits)[0]
        # Under tf.distribute each replica holds a shard of the batch: the
        # distillation losses get the global batch (all-gathered logits, a
        # no-op elsewhere; JAX's keras.distribution computes on global arrays
        # already), and terms Keras does not scale are divided by the replica
        # count, as Keras does for its compiled losses, so that the summed
        # gradients are those of the global-batch loss.
        replicas = _backend.num_replicas_in_sync()
        labels = y
        if replicas > 1:
            teacher_logits, student_logits, distillation_weight, labels = _backend.gather_replicas(
                (teacher_logits, student_logits, distillation_weight, y)
            )
        distillation_loss = ops.zeros((), "float32")
        for loss, weight in self.distillation_losses:
            if loss is self._statistics_loss:
                value, statistics = loss.compute_with_statistics(
                    teacher_logits, student_logits, distillation_weight, labels=labels
                )
                self._update_statistics(statistics, teacher_logits)
            else:
                value = loss.compute(teacher_logits, student_logits, distillation_weight, labels=labels)
            distillation_loss = distillation_loss + weight * value

        distillation_term = self.distillation_loss_weight * distillation_loss
        if replicas > 1:
            distillation_term = distillation_term / replicas
        total = self.student_loss_weight * student_loss + distillation_term
        for extra in self.losses:
            extra = ops.cast(ops.sum(extra), "float32")
            total = total + (extra / replicas if replicas > 1 else extra)
        if replicas > 1:
            student_loss = student_loss * replicas  # logged unscaled
        self.student_loss_tracker.update_state(student_loss, sample_weight=batch_size)
        self.distillation_loss_tracker.update_state(distillation_loss, sample_weight=batch_size)
        return total

    def _update_statistics(self, statistics, teacher_logits):
        self.cosine_tracker.update_state(statistics["cosine_similarity"])
        self.temperature_tracker.update_state(statistics["temperature"])
        if self.class_statistics is None:
            return
        temperatures = statistics["temperatures"]
        num_classes = self.num_classes
        if len(temperatures.shape) == 2 and temperatures.shape[0] == 1:
            class_temperature = ops.reshape(temperatures, (num_classes,))
        elif len(temperatures.shape) == 2:
            # One temperature per sample: average it over the samples the
            # teacher assigns to each class.
            assigned = ops.one_hot(ops.argmax(teacher_logits, axis=-1), num_classes, dtype="float32")
            counts = ops.sum(assigned, axis=0)
            per_class = ops.sum(assigned * temperatures, axis=0) / ops.maximum(counts, 1.0)
            class_temperature = ops.where(counts > 0, per_class, ops.mean(temperatures))
        else:
            class_temperature = ops.full((num_classes,), 1.0, "float32") * temperatures
        self.class_statistics.update_state(statistics["class_cosine_similarity"], class_temperature)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        distilling = isinstance(y_pred, dict)
        if distilling:
            if "mixup_lambda" in y_pred and y is not None:
                # Metrics compare with the dominant label of each mixed sample.
                keep = y_pred["mixup_lambda"] >= 0.5
                index = y_pred["mixup_index"]
                y = keras.tree.map_structure(
                    lambda v: ops.where(keep, v, ops.take(v, index, axis=0)), y
                )
            y_pred = y_pred["student_logits"]
        logs = super().compute_metrics(x, y, y_pred, sample_weight)
        logs.pop("class_cosine_similarity", None)
        logs.pop("class_temperature", None)
        if not distilling:
            for key in self._distillation_only_metrics:
                logs.pop(key, None)
        return logs

    # ------------------------------------------------------------- utilities
    def export_student(self, filepath):
        """Saves the student alone (a `.keras` file, or any format that
        `student.export` supports, e.g. a SavedModel folder) and returns the
        path."""
        filepath = str(filepath)
        if filepath.endswith(".keras") or filepath.endswith(".h5"):
            self.student.save(filepath)
        else:
            self.student.export(filepath)
        return filepath

    # Keras saves no random-generator state; the mixup generator's is saved
    # here so that training resumed from a file or backup draws the same
    # mixup lambdas/permutations as a run that never stopped.
    _SEED_STATE_KEY = "seed_generator_state"

    def save_own_variables(self, store):
        super().save_own_variables(store)
        store[self._SEED_STATE_KEY] = self.seed_generator.state

    def load_own_variables(self, store):
        own = {key: store[key] for key in store.keys() if key != self._SEED_STATE_KEY}
        super().load_own_variables(own)
        if self._SEED_STATE_KEY in store.keys():
            self.seed_generator.state.assign(store[self._SEED_STATE_KEY])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "student": keras.saving.serialize_keras_object(self.student),
                "teacher": keras.saving.serialize_keras_object(self.teacher),
                "distillation_loss": [
                    (keras.saving.serialize_keras_object(loss), weight)
                    for loss, weight in self.distillation_losses
                ],
                "student_loss_weight": self._student_loss_weight_value,
                "distillation_loss_weight": self._distillation_loss_weight_value,
                "mixup_alpha": self._mixup_alpha_config,
                "num_classes": self.num_classes,
                "seed": self.seed,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["distillation_loss"] = [
            (keras.saving.deserialize_keras_object(loss), weight)
            for loss, weight in config["distillation_loss"]
        ]
        student = keras.saving.deserialize_keras_object(config.pop("student"))
        teacher = config.pop("teacher")
        teacher = None if teacher is None else keras.saving.deserialize_keras_object(teacher)
        return cls(student=student, teacher=teacher, **config)


class _KeepStateForFirstStep(keras.callbacks.Callback):
    """Snapshot, at the start of training, of the variables JAX's `fit`
    empties during a step; `restore()` refills the ones left empty."""

    def __init__(self):
        super().__init__()
        self._saved = []

    def on_train_begin(self, logs=None):
        model = self.model
        variables = [
            *model.trainable_variables,
            *model.non_trainable_variables,
            *model.metrics_variables,
        ]
        if getattr(model, "optimizer", None) is not None:
            variables += list(model.optimizer.variables)
        self._saved = [(variable, variable.value) for variable in variables]

    def restore(self):
        for variable, value in self._saved:
            if getattr(variable, "_value", 0) is None:  # emptied, never refilled
                variable.assign(value)
        self._saved = []


def _named_leaves(structure, prefix):
    """`(name, leaf)` pairs of a nested input, e.g. `("x['image']", array)`."""
    if isinstance(structure, dict):
        for key, value in structure.items():
            yield from _named_leaves(value, f"{prefix}[{key!r}]")
    elif isinstance(structure, (list, tuple)):
        for index, value in enumerate(structure):
            yield from _named_leaves(value, f"{prefix}[{index}]")
    else:
        yield prefix, structure


def cache_teacher_logits(teacher, x, batch_size=256, verbose=0):
    """Runs the teacher once over `x` and returns its logits (NumPy).

    For a fixed data set (no random augmentation) this makes distillation
    as cheap as training the student: pass the result with the inputs,

    ```python
    logits = keras_cskd.cache_teacher_logits(teacher, x_train)
    distiller.fit({"x": x_train, "teacher_logits": logits}, y_train)
    ```

    `x` is anything `teacher.predict` accepts (arrays, a `tf.data.Dataset`
    or `PyDataset` yielding inputs in a fixed order). The logits are checked
    (finite, not probabilities).

    Example:

    >>> import keras, numpy as np
    >>> from keras_cskd import cache_teacher_logits
    >>> teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> cache_teacher_logits(teacher, np.zeros((5, 4), "float32")).shape
    (5, 3)
    """
    if _has_softmax_head(teacher):
        raise ValueError(
            "The teacher ends with a softmax (it outputs probabilities); "
            "distillation needs its logits. Rebuild it without the final activation."
        )
    logits = teacher.predict(x, batch_size=batch_size, verbose=verbose)
    if isinstance(logits, (list, tuple, dict)):
        raise ValueError("The teacher returns several outputs; cache one logits tensor.")
    logits = np.asarray(logits, dtype="float32")
    validation.check_values(logits, "teacher logits", "cache_teacher_logits")
    return logits
