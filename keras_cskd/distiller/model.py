"""The `Distiller`: knowledge distillation with `model.fit` on every backend.

The training step is customised the backend-agnostic way Keras 3 supports:
`call(training=True)` runs the student, the teachers (in inference mode)
and, for STKD, mixup, and returns a `Step`; `compute_loss` combines the
student's supervised loss with the distillation term (`DistillationTerms`);
`compute_metrics` logs them. No `train_step` is overridden, so the same
code runs under TensorFlow (`tf.function` + XLA), JAX (`jax.jit`) and
PyTorch.

(Over 400 lines: 180 of them are docstrings, `help(keras_cskd.Distiller)`
being the reference of the class; the rest, comments and blank lines
included, is about 430 lines for the one class with its two training-step
paths, the chunked one's work kept in `chunked.py`.)
"""

import inspect

import keras
import numpy as np
from keras import ops

from keras_cskd import _backend, interop
from keras_cskd import losses as kd_losses
from keras_cskd.checks import batches as batch_checks
from keras_cskd.checks import models as model_checks
from keras_cskd.checks import tensors as tensor_checks
from keras_cskd.distiller import chunked, config
from keras_cskd.distiller.mixup import Mixup
from keras_cskd.distiller.objective import (
    DistillationTerms,
    check_features_with_cache,
    distillation_term,
    regularization,
    resolve_pairs,
    supervised_loss,
)
from keras_cskd.distiller.step import Step, input_mask, position_weights, with_position_mask
from keras_cskd.distiller.teachers import Teachers
from keras_cskd.features import FeatureTaps
from keras_cskd.metrics import ClassStatistics


@keras.saving.register_keras_serializable(package="keras_cskd")
class Distiller(keras.Model):
    """Distils one or several frozen teachers into a student inside `model.fit`.

    The loss of a training step is

        a * CE(y, s) + b * sum_k w_k * L_k(t, s) + the student's regularization losses

    where `s` is the student's logits and `t` the teachers' on the same
    batch (combined per `ensemble`). Only the student is trained: the
    teachers run in inference mode (BatchNorm statistics and Dropout fixed)
    and their weights are left out of the Distiller's trainable weights,
    whatever their own `trainable` flag (which the Distiller never
    changes: a model can be one Distiller's teacher and another's student).
    `evaluate` and `predict` use the student alone: `val_loss` is the
    student's supervised loss. `distiller.student` is the model to keep;
    `export_student(path)` saves it alone.

    Weighing the terms, whatever keyword spelled the losses
    (`keras_cskd.interop.loss_weights`):

    | given | `a` (supervised) | `b` (distillation) |
    | --- | --- | --- |
    | neither | 0.5 | 0.5 (Keras' default) |
    | `student_loss_weight=a` | a | 1 - a (Keras' meaning, a in [0, 1]) |
    | `distillation_loss_weight=b` | 1 | b (`CE + b * distillation`) |
    | both | a | b |

    and each loss `L_k` its weight `w_k` (`(loss, weight)` pairs, or
    Keras' `distillation_loss_weights=`; 1 by default). Both `a` and `b`
    are `keras.Variable`s afterwards, so callbacks can schedule them.

    Logits may be per position, `(batch, ..., classes)` (tokens, pixels):
    the losses then run over positions, labels have the leading shape, and
    the positions that count are, in this order of precedence, those of the
    student's Keras mask (e.g. `Embedding(mask_zero=True)`) or of a
    `padding_mask` entry of dict inputs (keras-hub), times a per-position
    `sample_weight` (keras-hub's preprocessors mark the positions with a
    label so). Every term is then the mean over those positions.

    Args:
        student: a `keras.Model` returning class logits (no softmax).
        teacher: a trained `keras.Model` returning logits for the same
            classes, a list of them (an ensemble: see `ensemble`), or `None`
            when every batch carries cached teacher logits
            (`cache_teacher_logits`: `x={"x": inputs, "teacher_logits":
            logits}`, one array or one per teacher).
        distillation_loss: a `keras_cskd.losses` loss or its name (`"kd"`,
            `"mse"`, `"cskd"`, `"cskd_cswt"`, `"stkd"`, `"dist"`, `"dkd"`), a
            `keras.distillation` loss, or a list of losses or `(loss,
            weight)` pairs. Default `"kd"` (KD at tau = 4; with the default
            weights `0.5 * CE + 0.5 * KD`, the configuration that validation
            chose for KD on MNIST, docs/results.md; 0.1 defaulted to CSKD,
            which no table there showed better than KD). A
            `keras_cskd.FeatureDistillation` in the list matches
            intermediate layers (FitNets); its projection is trained with the
            student and not part of `distiller.student`.
        student_loss_weight, distillation_loss_weight: `a` and `b` above.
        distillation_losses, distillation_loss_weights: the keywords of
            `keras.distillation.Distiller` (a loss or a list, one weight
            each); `teacher=` and `student=` are accepted as keywords too,
            so code written for Keras' distiller ports by changing the import.
        ensemble: how several teachers are combined: `"mean_probs"`
            (default), `"mean_logits"` or `"per_teacher"` (see
            `keras_cskd.distiller.teachers`).
        teacher_weights: one weight per teacher (normalised; equal by default).
        mixup_alpha: Beta parameter of mixup; teacher and student then see the
            same mixed batch and the supervised loss uses the mixed labels
            (STKD). `"auto"` takes the loss's own `mixup_alpha` (STKD: 1.0)
            and no mixup for the other losses; `None` turns mixup off.
        num_classes: number of classes, only needed for a subclassed student
            whose output shape is unknown (enables per-class statistics).
        seed: seed of the mixup random draws (otherwise Keras' global seed).
        check_roles: refuse, before any weight moves, a pair whose roles
            look swapped: a positional teacher smaller than the student, or
            a student that already predicts the labels far better than the
            teacher on the first batch. `False` for a deliberately weak
            teacher.
        chunk_size: None (default), or tokens a chunk: the training step
            then never holds the `(tokens, vocabulary)` logits of either
            model. `call(training=True)` takes the final hidden states
            (`model.backbone(x)`) and the output heads
            (`keras_cskd.losses.output_head`), and `compute_loss` computes
            the cross-entropy and the distillation term a chunk of tokens at
            a time (`keras_cskd.ops.chunked_distillation_and_cross_entropy`,
            `chunked_cosine_similarity_distillation`), with the same weights
            and the same tokens (padding, `sample_weight`, `-100` labels) as
            the unchunked step, to float32 rounding. Supported: one live
            teacher and a student that are keras-hub `CausalLM`s (or models
            with `.backbone` and `.backbone.token_embedding`); the losses
            KD, reverse KL, JSD, skew KL, TV and CSKD without CSWT; a sparse
            cross-entropy (`loss="auto"`) or `loss=None`. Refused when the
            Distiller is built or compiled: other losses (CSWT, DKD, DIST,
            STKD, MSE, `FeatureDistillation`), several teachers, cached
            teacher logits, mixup. `metrics=` are computed from the
            student's full logits without gradient (one `(tokens,
            vocabulary)` tensor, no softmax or gradient of it); leave them
            out to keep the step's memory flat. The first batch is checked
            on 2 samples (no check of the roles by accuracy). `evaluate`
            and `predict` run the student alone, as without chunks.

    Positional order is `(student, teacher)`, like the keras.io tutorial
    (Keras' built-in distiller takes `(teacher, student)`).

    Example:

    >>> import keras, numpy as np
    >>> import keras_cskd
    >>> teacher = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    >>> student = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    >>> distiller = keras_cskd.Distiller(student, teacher, "cskd", check_roles=False)
    >>> distiller.compile(optimizer="adam", metrics=["accuracy"])
    >>> x = np.random.rand(32, 8).astype("float32")
    >>> y = np.random.randint(0, 3, 32)
    >>> history = distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    >>> sorted(history.history)  # doctest: +NORMALIZE_WHITESPACE
    ['accuracy', 'cosine_similarity', 'distillation_loss', 'loss', 'student_loss',
     'temperature', 'total_loss']
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
        ensemble="mean_probs",
        teacher_weights=None,
        mixup_alpha="auto",
        num_classes=None,
        seed=None,
        check_roles=True,
        chunk_size=None,
        name="distiller",
        **kwargs,
    ):
        student, teacher, teacher_by_position = interop.resolve_models(student, teacher, kwargs)
        items = interop.distillation_items(
            distillation_loss, distillation_losses, distillation_loss_weights
        )
        super().__init__(name=name, **kwargs)
        student = config.deserialized(student)
        if isinstance(teacher, (list, tuple)):
            teacher = [config.deserialized(t) for t in teacher]
        else:
            teacher = config.deserialized(teacher)
        self.student = student
        self.teacher = teacher  # a model, a list of models, or None (tracked)
        self.check_roles = bool(check_roles)
        self.chunk_size = chunked.check_chunk_size(chunk_size)
        self._teacher_by_position = teacher_by_position
        object.__setattr__(self, "teachers", Teachers.of(teacher, teacher_weights, ensemble))
        self._weights_config = (student_loss_weight, distillation_loss_weight)
        a, b = interop.loss_weights(student_loss_weight, distillation_loss_weight)
        for label, value in (("student_loss_weight", a), ("distillation_loss_weight", b)):
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"`{label}` must be a finite number >= 0, got {value!r}.")
        self.student_loss_weight = keras.Variable(
            a, trainable=False, name="student_loss_weight", dtype="float32"
        )
        self.distillation_loss_weight = keras.Variable(
            b, trainable=False, name="distillation_loss_weight", dtype="float32"
        )
        self.num_classes = num_classes or model_checks.output_classes(student, "student")
        self._mixup_alpha_config = mixup_alpha
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.student_loss_fn = None  # set by compile
        self.student_loss_tracker = keras.metrics.Mean(name="student_loss")
        self.distillation_loss_tracker = keras.metrics.Mean(name="distillation_loss")
        self.total_loss_tracker = keras.metrics.Mean(name="total_loss")
        # Steps of the epoch whose distillation term had nothing to count
        # (every position masked): read by `UncountedStepWarning`, kept out
        # of the logs.
        self.uncounted_steps = keras.metrics.Sum(name="uncounted_steps")
        self._use_losses(items if items is not None else [("kd", 1.0)])
        if self.chunk_size is not None:
            chunked.check_setup(self)
        if teacher_by_position and self.check_roles:
            model_checks.check_roles_by_size(student, self.teachers.live, "Distiller")
        self._mark_built()

    @property
    def configured_loss_weights(self):
        """`(a, b)`: the weights of the supervised and distillation terms as
        configured (the `keras.Variable`s may be scheduled away from them,
        e.g. by `callbacks.DistillationWeightWarmup`)."""
        return interop.loss_weights(*self._weights_config)

    def _use_losses(self, items):
        """Sets the distillation losses (from `__init__`, or from the keras.io
        tutorial's `compile` keywords) and what depends on them."""
        pairs = resolve_pairs(items)
        self.teachers.check(self.student, pairs)
        self.distillation_losses = pairs
        object.__setattr__(self, "terms", DistillationTerms(pairs))
        object.__setattr__(
            self,
            "_feature_taps",
            FeatureTaps.connect(self.terms.losses, self.student, (self.teachers.live or [None])[0]),
        )
        self.feature_projections = [
            l.projection_layer for l in self.terms.feature_losses if l.projection_layer is not None
        ]
        alpha = config.mixup_alpha(self._mixup_alpha_config, self.terms.losses)
        if alpha is not None and self.terms.requires_labels:
            names = [type(l).__name__ for l in self.terms.losses if l.requires_labels]
            raise ValueError(
                f"{', '.join(names)} needs hard labels, but mixup mixes them. "
                "Use mixup_alpha=None with this loss."
            )
        self.mixup_alpha = alpha
        object.__setattr__(
            self, "mixup", None if alpha is None else Mixup(alpha, self.seed_generator)
        )
        self.class_statistics = None
        if self.terms.statistics_loss is not None:
            self.cosine_tracker = keras.metrics.Mean(name="cosine_similarity")
            self.temperature_tracker = keras.metrics.Mean(name="temperature")
            if self.num_classes is not None and self.chunk_size is None:
                self.class_statistics = ClassStatistics(self.num_classes)

    def _mark_built(self):
        # All the Distiller's own state exists once its models are built, so
        # it counts as built (TensorFlow's fit does not build a model before
        # a backup callback restores it).
        if self.student.built and all(t.built for t in self.teachers.live):
            self.built = True

    # ------------------------------------------------- what the step trains
    # The teachers' weights are state of the Distiller (saved with it, fed
    # to JAX's stateless step) but never trained by it.
    @property
    def trainable_weights(self):
        frozen = self.teachers.variable_ids()
        return [v for v in super().trainable_weights if id(v) not in frozen]

    @property
    def trainable_variables(self):
        frozen = self.teachers.variable_ids()
        return [v for v in super().trainable_variables if id(v) not in frozen]

    @property
    def non_trainable_weights(self):
        return _with_teachers(super().non_trainable_weights, super().trainable_weights, self)

    @property
    def non_trainable_variables(self):
        return _with_teachers(super().non_trainable_variables, super().trainable_variables, self)

    def zero_grad(self, *args, **kwargs):
        """PyTorch: what Keras' torch trainer calls before each step; also
        clears the gradients torch's own `zero_grad` misses
        (`_backend.clear_gradients`). Unused by the other backends."""
        parent = getattr(super(), "zero_grad", None)
        if parent is not None:
            parent(*args, **kwargs)
        _backend.clear_gradients(self.trainable_weights)

    # ------------------------------------------------------------ compile
    def compile(self, optimizer="adam", loss="auto", metrics=None, **kwargs):
        """Configures training; `loss` is the student's supervised loss.

        `"auto"` (default) is cross-entropy on the student's logits with
        sparse or one-hot labels; the strings `"sparse_categorical_crossentropy"`
        and `"categorical_crossentropy"` are resolved with `from_logits=True`
        (the student outputs logits); a cross-entropy instance with
        `from_logits=False` is refused. `loss=None` trains on the
        distillation loss alone (Kim et al.'s MSE recipe). The keras.io
        tutorial's keywords (`student_loss_fn=`, `distillation_loss_fn=`,
        `alpha=`, `temperature=`) are accepted with their meaning
        (`keras_cskd.interop.tutorial_compile_arguments`).
        """
        student_loss, pairs, a, b = interop.tutorial_compile_arguments(kwargs)
        if student_loss is not None:
            loss = student_loss
        if pairs is not None:
            self._use_losses(pairs)
            if self.chunk_size is not None:
                chunked.check_setup(self)
        if a is not None:
            self.student_loss_weight.assign(a)
            self.distillation_loss_weight.assign(b)
            self._weights_config = (a, b)
        if kwargs.get("loss_weights") is not None:
            raise ValueError(
                "Distiller.compile(loss_weights=...): the student has one output; weigh the "
                "supervised term with Distiller(..., student_loss_weight=...)."
            )
        # The student's supervised loss is called by `compute_loss` itself
        # (not compiled into Keras' CompileLoss), so Keras compiles no loss.
        self.student_loss_fn = config.as_loss(kd_losses.student_loss(loss))
        if self.chunk_size is not None:
            chunked.check_student_loss(self, self.student_loss_fn)
        # Whether `compute_metrics` needs the student's logits (chunked steps).
        self._metrics_given = bool(metrics) or bool(kwargs.get("weighted_metrics"))
        super().compile(optimizer=optimizer, loss=None, metrics=metrics, **kwargs)
        self.loss = self.student_loss_fn

    def get_compile_config(self):
        config = super().get_compile_config()
        if config:
            config["loss"] = keras.saving.serialize_keras_object(self.student_loss_fn)
        return config

    def compile_from_config(self, config):
        # Keras skips compile on load for models that override `compile`;
        # without this a loaded Distiller has no optimizer (state) to resume.
        config = keras.saving.deserialize_keras_object(_backend.portable_compile_config(config))
        self.compile(**config)
        if getattr(self, "optimizer", None) is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    # ---------------------------------------------------------------- fit
    def fit(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.fit`, after checks that fail fast, before any weight
        is updated, with a message naming the problem and the fix.

        NumPy inputs are checked whole: not empty, no NaN/inf, labels that
        are class indices in `[0, classes)` (or one-hot of width `classes`),
        no batch of one sample for batch-wise losses; `sample_weight` is
        finite and >= 0; the student has trainable weights. Whatever the
        input pipeline, the first batch is run through the models eagerly:
        one logits tensor each, not probabilities (a softmax in `call()`
        included), the same classes, and, with `check_roles`, a student that
        does not already predict the labels far better than its teacher.
        Datasets, generators and `PyDataset`s are not read ahead: the labels
        and sample weights of every later batch are checked as it is read,
        before the step that would train on it. A warning, once per epoch,
        says how many steps had nothing to distil (every position masked).
        With a `LossScaleOptimizer`, a `callbacks.SkippedStepWarning` is
        added.
        """
        arguments = inspect.signature(keras.Model.fit).bind(self, x, y, *args, **kwargs).arguments
        arguments = {k: v for k, v in arguments.items() if k != "self"}
        arguments, checks = batch_checks.prepare_fit(self, arguments)
        try:
            return _backend.fit_keeping_state(super().fit, arguments)
        except Exception as error:
            # A batch refused inside a tf.data pipeline arrives wrapped in a
            # TensorFlow error: give the user the check's own message.
            if checks.message is not None and not isinstance(error, ValueError):
                raise ValueError(checks.message) from None
            raise

    def labels_are_classes(self):
        """Whether the labels given to `fit` are class labels (a
        cross-entropy student loss, or a loss that reads the labels)."""
        if self.terms.requires_labels:
            return True
        return self.loss is None or isinstance(
            self.loss,
            (
                kd_losses.StudentCrossEntropy,
                keras.losses.SparseCategoricalCrossentropy,
                keras.losses.CategoricalCrossentropy,
            ),
        )

    @staticmethod
    def split_inputs(inputs):
        """`(inputs, cached teacher logits as a tuple, or None)` of a batch's `x`."""
        return Teachers.split_inputs(inputs)

    # -------------------------------------------------------------- forward
    def call(self, inputs, training=False):
        x, cached = Teachers.split_inputs(inputs)
        if not training:
            for teacher in self.teachers.live:
                if not teacher.built:
                    # Build an unbuilt (subclassed) teacher here, in Keras'
                    # symbolic build, not inside the compiled training step
                    # (JAX cannot create variables there).
                    teacher(x, training=False)
            return self.student(x, training=False)
        draw = None
        if self.mixup is not None:
            if cached is not None:
                raise ValueError(
                    "Cached teacher logits cannot be used with mixup: the "
                    "teacher must see the mixed inputs. Use the live teacher "
                    "or set mixup_alpha=None."
                )
            x, draw = self.mixup.draw(x)
        check_features_with_cache(self.terms, cached)
        if self.chunk_size is not None:
            return self._chunked_step(x, cached)
        if self._feature_taps is not None:
            student_logits, student_features, teacher_logits, teacher_features = (
                self._feature_taps.run(x, training=True)
            )
            teacher_logits = (ops.stop_gradient(teacher_logits),)
            teacher_features = tuple(ops.stop_gradient(f) for f in teacher_features)
        else:
            student_logits = self.student(x, training=True)
            teacher_logits = self.teachers.logits(x, cached, student_logits.shape[-1])
            student_features = teacher_features = ()
        tensor_checks.check_single_output(student_logits, "student", "Distiller")
        return Step(
            student_logits=student_logits,
            teacher_logits=teacher_logits,
            mask=input_mask(x, student_logits),
            mixup=draw,
            student_features=tuple(student_features),
            teacher_features=teacher_features,
        )

    def _chunked_step(self, x, cached):
        if cached is not None:
            raise ValueError(
                f"Distiller(chunk_size={self.chunk_size}) reads the live teacher's hidden "
                "states: the batch carries cached teacher logits; use chunk_size=None."
            )
        heads = chunked.forward(self, x, training=True)
        logits = None
        if getattr(self, "_metrics_given", False):
            logits = chunked.metric_logits(heads)
        return Step(
            student_logits=logits,
            teacher_logits=(),
            mask=input_mask(x, heads.student_hidden),
            chunked=heads,
        )

    # ----------------------------------------------------------------- loss
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if not isinstance(y_pred, Step):  # evaluate(): the student alone
            return self._evaluation_loss(x, y, y_pred, sample_weight, training)
        step = y_pred
        if step.chunked is not None:
            return self._chunked_loss(y, step, sample_weight)
        for loss in self.terms.losses:  # static shape checks: free per step
            for teacher_logits in step.teacher_logits:
                tensor_checks.check_logits(
                    teacher_logits, step.student_logits, type(loss).__name__, values=False
                )
        weights = position_weights(step.mask, sample_weight, step.student_logits, y)
        student_loss = supervised_loss(self.student_loss_fn, y, step, sample_weight, weights)
        distillation_loss, statistics, counted = distillation_term(
            self.terms, self.teachers, y, step, sample_weight, weights
        )
        # Keras divides its compiled (student) loss by the tf.distribute
        # replica count; the other terms are divided here, so that the
        # replicas' summed gradients are those of the global-batch loss.
        total = (
            self.student_loss_weight * student_loss
            + _backend.divide_by_replicas(self.distillation_loss_weight * distillation_loss)
            + regularization(self.losses)
        )
        self.student_loss_tracker.update_state(_backend.times_replicas(student_loss))
        self.distillation_loss_tracker.update_state(distillation_loss, sample_weight=counted)
        self.total_loss_tracker.update_state(_backend.times_replicas(total))
        self.uncounted_steps.update_state(1.0 - counted)
        if statistics is not None:
            self.cosine_tracker.update_state(statistics["cosine_similarity"], counted)
            self.temperature_tracker.update_state(statistics["temperature"], counted)
            if self.class_statistics is not None:
                self.class_statistics.update_state(
                    statistics["class_cosine_similarity"], statistics["class_temperature"], counted
                )
        return total

    def _chunked_loss(self, y, step, sample_weight):
        total, student_loss, distillation_loss, counted, statistics = chunked.loss(
            self, y, step, sample_weight
        )
        total = total + regularization(self.losses)
        self.student_loss_tracker.update_state(student_loss)
        self.distillation_loss_tracker.update_state(distillation_loss, sample_weight=counted)
        self.total_loss_tracker.update_state(_backend.times_replicas(total))
        self.uncounted_steps.update_state(1.0 - counted)
        if statistics is not None:
            self.cosine_tracker.update_state(statistics["cosine_similarity"], counted)
            self.temperature_tracker.update_state(statistics["temperature"], counted)
        return total

    def _evaluation_loss(self, x, y, y_pred, sample_weight, training):
        """`evaluate()` and `validation_data`: the student's supervised loss
        (over positions, on the positions that count, as in training) and
        its regularization losses."""
        inputs, _ = Teachers.split_inputs(x) if x is not None else (None, None)
        step = Step(student_logits=y_pred, teacher_logits=(), mask=input_mask(inputs, y_pred))
        weights = position_weights(step.mask, sample_weight, y_pred, y)
        student_loss = supervised_loss(self.student_loss_fn, y, step, sample_weight, weights)
        if self.student_loss_fn is not None and y is not None:
            self.student_loss_tracker.update_state(_backend.times_replicas(student_loss))
        total = student_loss + regularization(self.losses)
        self.total_loss_tracker.update_state(_backend.times_replicas(total))
        return total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        distilling = isinstance(y_pred, Step)
        if distilling:
            if y_pred.mixup is not None and y is not None:
                # Metrics compare with the dominant label of each mixed sample.
                y = Mixup.dominant_labels(y, y_pred.mixup)
            step = y_pred
            if step.chunked is not None and step.student_logits is None:
                # No `metrics=` compiled: the loss trackers alone.
                logs = super().compute_metrics(x, y, None, sample_weight)
                for key in ("class_cosine_similarity", "class_temperature", "uncounted_steps"):
                    logs.pop(key, None)
                return logs
        else:
            inputs, _ = Teachers.split_inputs(x) if x is not None else (None, None)
            step = Step(student_logits=y_pred, teacher_logits=(), mask=input_mask(inputs, y_pred))
        weights = position_weights(step.mask, sample_weight, step.student_logits, y)
        y_pred = step.student_logits
        if weights is not None and len(y_pred.shape) > 2:
            # Padding never counts, in `metrics=` (no sample weight) included.
            sample_weight = weights
            y_pred = with_position_mask(y_pred, weights)
        logs = super().compute_metrics(x, y, y_pred, sample_weight)
        for key in ("class_cosine_similarity", "class_temperature", "uncounted_steps"):
            logs.pop(key, None)
        if not distilling:
            for key in ("distillation_loss", "cosine_similarity", "temperature"):
                logs.pop(key, None)
        return logs

    # ------------------------------------------------------------ utilities
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
        return {**super().get_config(), **config.arguments_of(self)}

    @classmethod
    def from_config(cls, config_dict):
        return cls(**config.from_arguments(config_dict))


def _with_teachers(non_trainable, trainable, distiller):
    """`non_trainable` plus the teachers' trainable variables (state the
    Distiller holds but never trains)."""
    frozen = distiller.teachers.variable_ids()
    seen = {id(v) for v in non_trainable}
    return non_trainable + [v for v in trainable if id(v) in frozen and id(v) not in seen]
