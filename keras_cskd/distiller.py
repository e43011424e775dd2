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

from keras_cskd import _backend, _porting
from keras_cskd import losses as kd_losses
from keras_cskd import ops as kd_ops
from keras_cskd.caching import cache_teacher_logits  # noqa: F401 (its old import path)
from keras_cskd.callbacks import SkippedStepWarning
from keras_cskd.checks import data as data_checks
from keras_cskd.checks import models as models_checks
from keras_cskd.checks import tensors as tensors_checks
from keras_cskd.features import FeatureDistillation, FeatureTaps
from keras_cskd.losses import StudentCrossEntropy  # (also its old import path)
from keras_cskd.metrics import ClassStatistics

TEACHER_LOGITS_KEY = "teacher_logits"
INPUTS_KEY = "x"

# Old private import paths (the checks moved to `validation`, the student
# loss to `losses`), kept for code written against them.
_has_softmax_head = models_checks.has_softmax_head
_output_classes = models_checks.output_classes
_student_loss_from = kd_losses.student_loss


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

    Logits may be per position, `(batch, ..., classes)` (tokens, pixels):
    the losses then run over positions (see `keras_cskd.losses`), labels
    have the leading shape `(batch, ...)`, and the student's Keras mask
    (e.g. from `Embedding(mask_zero=True)`) drops padded positions from the
    supervised loss, as in Keras, and from every distillation loss.

    Args:
        student: a `keras.Model` returning class logits (no softmax).
        teacher: a trained `keras.Model` returning logits for the same
            classes. Use `teacher=None` only when every batch carries cached
            teacher logits (see `cache_teacher_logits`).
        distillation_loss: a `keras_cskd.losses` loss or its name (`"kd"`,
            `"mse"`, `"cskd"`, `"cskd_cswt"`, `"stkd"`, `"dist"`, `"dkd"`), or
            a list of losses or `(loss, weight)` pairs. Default `"cskd"`.
            A `keras_cskd.FeatureDistillation` in the list matches
            intermediate layers (FitNets); its projection is trained with
            the student and not part of `distiller.student`.
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
        (
            student,
            teacher,
            teacher_by_position,
            distillation_loss,
            student_loss_weight,
            distillation_loss_weight,
        ) = _porting.resolve_arguments(
            student,
            teacher,
            kwargs,
            distillation_loss,
            distillation_losses,
            distillation_loss_weights,
            student_loss_weight,
            distillation_loss_weight,
        )
        super().__init__(name=name, **kwargs)
        if isinstance(student, dict):
            student = keras.saving.deserialize_keras_object(student)
        if isinstance(teacher, dict):
            teacher = keras.saving.deserialize_keras_object(teacher)
        models_checks.check_models(student, teacher)
        if teacher_by_position:
            _porting.warn_if_teacher_is_smaller(student, teacher)
        self.student = student
        self.teacher = teacher
        if teacher is not None:
            teacher.trainable = False

        self.distillation_losses = _porting.distillation_loss_pairs(distillation_loss)
        # Read features of named layers (FeatureDistillation); the taps are
        # not tracked (no weights of their own), the projections are.
        object.__setattr__(
            self,
            "_feature_taps",
            FeatureTaps.connect([l for l, _ in self.distillation_losses], student, teacher),
        )
        self.feature_projections = [
            l.projection_layer
            for l, _ in self.distillation_losses
            if isinstance(l, FeatureDistillation) and l.projection_layer is not None
        ]
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
            needs_labels = [
                type(l).__name__ for l, _ in self.distillation_losses if l.requires_labels
            ]
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
        self.num_classes = num_classes or models_checks.output_classes(student, "student")
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
    def _resolve_mixup_alpha(self, mixup_alpha):
        if mixup_alpha == "auto":
            alphas = [getattr(l, "mixup_alpha", None) for l, _ in self.distillation_losses]
            alphas = [a for a in alphas if a]
            return alphas[0] if alphas else None
        if mixup_alpha is None or mixup_alpha == 0:
            return None
        tensors_checks.check_positive("mixup_alpha", mixup_alpha)
        return float(mixup_alpha)

    def _pick_statistics_loss(self):
        reporting = [
            l
            for l, _ in self.distillation_losses
            if isinstance(l, kd_losses.CosineSimilarityDistillation)
        ]
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
        super().compile(
            optimizer=optimizer, loss=kd_losses.student_loss(loss), metrics=metrics, **kwargs
        )

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
        logits tensor each (not probabilities); `sample_weight` is finite and
        >= 0; the student has trainable weights. Datasets, generators and
        `PyDataset`s are not read ahead: their batches get the static shape
        checks when the training step is traced, and the label and
        sample-weight checks as each batch is read, before the step that
        would train on it. With a `LossScaleOptimizer`, a
        `callbacks.SkippedStepWarning` is added.
        """
        arguments = inspect.signature(keras.Model.fit).bind(self, x, y, *args, **kwargs).arguments
        arguments = {k: v for k, v in arguments.items() if k != "self"}
        self._freeze_teacher()
        data_checks.check_fit_arguments(self, arguments)
        self._mark_built()
        checks = data_checks.BatchChecks.of(self)
        arguments["x"] = data_checks.check_each_batch(arguments.get("x"), checks)
        if isinstance(getattr(self, "optimizer", None), keras.optimizers.LossScaleOptimizer):
            arguments["callbacks"] = SkippedStepWarning.add_to(arguments.get("callbacks"))
        try:
            return _backend.fit_keeping_state(super().fit, arguments)
        except Exception as error:
            # A batch refused inside a tf.data pipeline arrives wrapped in a
            # TensorFlow error: give the user the check's own message.
            if checks.message is not None and not isinstance(error, ValueError):
                raise ValueError(checks.message) from None
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

    def labels_are_classes(self):
        """Whether the labels given to `fit` are class labels (a
        cross-entropy student loss, or a loss that reads the labels)."""
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

    # --------------------------------------------------------------- forward
    @staticmethod
    def split_inputs(inputs):
        """`(inputs, cached teacher logits or None)` of a batch's `x`."""
        if isinstance(inputs, dict) and TEACHER_LOGITS_KEY in inputs:
            if INPUTS_KEY not in inputs:
                raise ValueError(
                    "With cached teacher logits pass x as "
                    "{'x': inputs, 'teacher_logits': logits}; the 'x' key is missing."
                )
            return inputs[INPUTS_KEY], inputs[TEACHER_LOGITS_KEY]
        return inputs, None

    def call(self, inputs, training=False):
        x, cached_logits = self.split_inputs(inputs)
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
        if self._feature_taps is not None:
            return self._call_with_features(x, cached_logits, outputs)
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
        tensors_checks.check_single_output(student_logits, "student", "Distiller")
        tensors_checks.check_single_output(teacher_logits, "teacher", "Distiller")
        outputs["student_logits"] = student_logits
        outputs["teacher_logits"] = ops.stop_gradient(teacher_logits)
        mask = _backend.keras_mask(student_logits)
        if mask is not None:  # e.g. padding, from Embedding(mask_zero=True)
            outputs["mask"] = mask
        return outputs

    def _call_with_features(self, x, cached_logits, outputs):
        """`call(training=True)` with `FeatureDistillation` losses: one
        forward pass of each model returns its logits and features."""
        if cached_logits is not None:
            raise ValueError(
                "FeatureDistillation needs the live teacher's layers; cached teacher "
                "logits cannot replace them. Pass x without 'teacher_logits'."
            )
        student_logits, student_features, teacher_logits, teacher_features = self._feature_taps.run(
            x, training=True
        )
        outputs["student_logits"] = student_logits
        outputs["teacher_logits"] = ops.stop_gradient(teacher_logits)
        outputs["student_features"] = student_features
        outputs["teacher_features"] = [ops.stop_gradient(f) for f in teacher_features]
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
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if not isinstance(y_pred, dict):  # evaluate(): the student alone
            loss = super().compute_loss(x, y, y_pred, sample_weight, training)
            if self._compile_loss is not None and y is not None:
                student_loss = self._compile_loss(y, y_pred, sample_weight)
                self.student_loss_tracker.update_state(
                    _backend.times_replicas(student_loss), sample_weight=ops.shape(y_pred)[0]
                )
            return loss
        student_logits = y_pred["student_logits"]
        for loss, _ in self.distillation_losses:  # static shape checks: free per step
            tensors_checks.check_logits(
                y_pred["teacher_logits"],
                student_logits,
                type(loss).__name__,
                min_batch_size=2 if loss.batchwise else 1,
                values=False,
                mask=y_pred.get("mask"),
            )
        student_loss = self._student_loss(y, student_logits, sample_weight, y_pred)
        distillation_loss = self._distillation_loss(y, y_pred, sample_weight)
        # Keras divides its compiled (student) loss by the tf.distribute
        # replica count; the other terms are divided here, so that the
        # replicas' summed gradients are those of the global-batch loss.
        total = self.student_loss_weight * student_loss + _backend.divide_by_replicas(
            self.distillation_loss_weight * distillation_loss
        )
        for extra in self.losses:
            total = total + _backend.divide_by_replicas(ops.cast(ops.sum(extra), "float32"))
        batch_size = ops.shape(student_logits)[0]
        self.student_loss_tracker.update_state(
            _backend.times_replicas(student_loss), sample_weight=batch_size
        )
        self.distillation_loss_tracker.update_state(distillation_loss, sample_weight=batch_size)
        return total

    def _student_loss(self, y, student_logits, sample_weight, y_pred):
        if self._compile_loss is None or y is None:
            return ops.zeros((), "float32")
        if "mixup_lambda" not in y_pred:
            return ops.cast(self._compile_loss(y, student_logits, sample_weight), "float32")
        lam = y_pred["mixup_lambda"]
        index = y_pred["mixup_index"]
        y_other = keras.tree.map_structure(lambda v: ops.take(v, index, axis=0), y)
        weight_other = None if sample_weight is None else ops.take(sample_weight, index, axis=0)
        loss = lam * self._compile_loss(y, student_logits, sample_weight) + (
            1.0 - lam
        ) * self._compile_loss(y_other, student_logits, weight_other)
        return ops.cast(loss, "float32")

    def _distillation_loss(self, y, y_pred, sample_weight):
        """`sum_k w_k L_k(t, s)`, on the global batch under tf.distribute
        (the replicas' logits all-gathered; a no-op elsewhere: JAX's
        `keras.distribution` computes on global arrays already)."""
        if sample_weight is not None and "mixup_lambda" in y_pred:
            lam = y_pred["mixup_lambda"]
            sample_weight = lam * sample_weight + (1.0 - lam) * ops.take(
                sample_weight, y_pred["mixup_index"], axis=0
            )
        mask = y_pred.get("mask")
        if mask is not None:  # 0/1 floats: gathered across replicas like the logits
            mask = ops.cast(mask, "float32")
        teacher_logits, student_logits, sample_weight, labels, mask = _backend.gather_replicas(
            (y_pred["teacher_logits"], y_pred["student_logits"], sample_weight, y, mask)
        )
        features = _backend.gather_replicas(
            list(zip(y_pred.get("teacher_features", []), y_pred.get("student_features", [])))
        )
        # The student's Keras mask (padding) drops positions from every logit
        # loss; losses are called without `mask` when there is none, so custom
        # losses written before masks existed keep working.
        masking = {} if mask is None else {"mask": mask}
        total = ops.zeros((), "float32")
        for loss, weight in self.distillation_losses:
            if isinstance(loss, FeatureDistillation):
                teacher_features, student_features = features.pop(0)
                value = loss.compute(teacher_features, student_features, sample_weight)
            elif loss is self._statistics_loss:
                value, statistics = loss.compute_with_statistics(
                    teacher_logits, student_logits, sample_weight, labels=labels, **masking
                )
                self._update_statistics(statistics, teacher_logits, mask)
            else:
                value = loss.compute(
                    teacher_logits, student_logits, sample_weight, labels=labels, **masking
                )
            total = total + weight * value
        return total

    def _update_statistics(self, statistics, teacher_logits, mask=None):
        self.cosine_tracker.update_state(statistics["cosine_similarity"])
        self.temperature_tracker.update_state(statistics["temperature"])
        if self.class_statistics is not None:
            self.class_statistics.update_state(
                statistics["class_cosine_similarity"], statistics["class_temperature"]
            )

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
