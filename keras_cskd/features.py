"""Feature distillation (FitNets): matching intermediate layers by name.

`FeatureDistillation(teacher_layer_name=..., student_layer_name=...)` is a
distillation loss that compares the outputs of two named layers instead of
the logits. Pass it to `keras_cskd.Distiller` alone or next to logit losses:

```python
distiller = keras_cskd.Distiller(
    student,
    teacher,
    [("cskd", 1.0), (keras_cskd.FeatureDistillation("mse", "t_hidden", "s_hidden"), 0.5)],
)
```

When the two layers differ in width, a learned linear projection of the
student's features (FitNets' regressor: a `Dense` on the last axis, i.e. a
1x1 convolution on channels-last feature maps) maps them to the teacher's
width. The `Distiller` trains it with the student and leaves it out of
`distiller.student` and `export_student`.

The `Distiller` reads the features with `FeatureTaps`: a functional model
over the student's (teacher's) own layers that returns the logits and the
named layers' outputs in one forward pass. A layer inside a nested
functional model (a backbone used as a layer) is named by its path,
`"backbone/layer_0"`; the taps then run a copy of the model's graph over
the same layers (`keras.models.clone_model` sharing every layer), since a
nested model's own `.output` is not connected to the outer model's inputs.

(Over 400 lines: the loss, its projection and the taps that read named
layers, nested paths included, are one feature; most of the length is
docstrings and the messages that name the layers a user can choose.)
"""

import dataclasses

import keras
from keras import ops

from keras_cskd import losses as kd_losses


@keras.saving.register_keras_serializable(package="keras_cskd")
class FeatureDistillation(kd_losses.DistillationLoss):
    """Matches an intermediate layer of the student to one of the teacher.

    `L = mean over samples of mean over positions of loss(f_t, P(f_s))`,
    where `f_t`, `f_s` are the outputs of `teacher_layer_name` and
    `student_layer_name` (any rank: `(batch, width)` vectors, `(batch, H, W,
    channels)` maps, `(batch, tokens, width)` sequences) and `P` the
    optional learned projection. The leading axes must agree; only the last
    one (the width) may differ, and then only with a projection.

    It takes the arguments of `keras.distillation.FeatureDistillation`
    (whose instances the `keras_cskd.Distiller` also accepts, without
    projection), plus `projection`.

    Args:
        loss: a `keras.losses` name (`"mse"`, default; `"mae"`,
            `"cosine_similarity"`, ...), a `keras.losses.Loss` instance or a
            function `f(teacher_features, student_features)` returning values
            per position; it is averaged over the positions of each sample.
        teacher_layer_name: name of the teacher layer (one of
            `teacher.layers`, or a nested functional model among them);
            `None` is the teacher's output. A layer inside a nested
            functional or Sequential model is named by its path,
            `"backbone/layer_0"` (any depth).
        student_layer_name: name of the student layer (or its path, as
            for the teacher); `None` is the student's output.
        projection: `"auto"` (default): a learned projection of the student's
            features to the teacher's width when the widths differ, none when
            they match. `True`: always (FitNets' regressor). `False`: never;
            the widths must match (`keras.distillation`'s behaviour). The
            projection is `Dense(teacher_width)` on the last axis, built by
            the `Distiller` (or by the first call) and trained with the student.
            Or a Keras layer of your own (e.g. FitNets' convolutional
            regressor `keras.layers.Conv2D(teacher_channels, 3,
            padding="same")`), used as given: it maps the student's features
            to the teacher's shape.
        name, reduction, dtype: as in `keras.losses.Loss`.

    Example:

    >>> import numpy as np
    >>> import keras_cskd
    >>> t = np.array([[1.0, 2.0], [3.0, 4.0]], "float32")
    >>> float(keras_cskd.FeatureDistillation()(t, t + 2.0))
    4.0
    >>> fitnets = keras_cskd.FeatureDistillation(projection="auto")
    >>> value = fitnets(t, np.ones((2, 5), "float32"))  # widths 2 and 5: a projection 5 -> 2
    >>> tuple(fitnets.projection_layer.kernel.shape)
    (5, 2)
    >>> keras_cskd.FeatureDistillation(projection=False)(t, np.ones((2, 5), "float32"))
    Traceback (most recent call last):
    ...
    ValueError: FeatureDistillation: the teacher's features have width 2 (last axis) but the
    student's 5, and projection=False. ...
    """

    def __init__(
        self,
        loss="mse",
        teacher_layer_name=None,
        student_layer_name=None,
        projection="auto",
        name="feature_distillation",
        reduction="sum_over_batch_size",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if isinstance(projection, dict):  # from a saved config
            projection = keras.saving.deserialize_keras_object(projection)
        if not (isinstance(projection, (bool, keras.layers.Layer)) or str(projection) == "auto"):
            raise ValueError(
                f"FeatureDistillation(projection={projection!r}): use 'auto' (a learned "
                "projection when the widths differ), True (always), False (never) or a "
                "keras.layers.Layer."
            )
        self.loss = loss
        self._values = _per_position_values(loss)
        self.teacher_layer_name = teacher_layer_name
        self.student_layer_name = student_layer_name
        self.projection = projection
        self.projection_layer = projection if isinstance(projection, keras.layers.Layer) else None
        self.built = False

    def build(self, teacher_shape, student_shape):
        """Checks the two feature shapes (batch axis first) and creates the
        projection if one is needed. Raises a `ValueError` naming the layers
        when they cannot be compared."""
        teacher_shape, student_shape = tuple(teacher_shape), tuple(student_shape)
        where = self._describe_layers()
        if isinstance(self.projection, keras.layers.Layer):
            self._build_own_projection(teacher_shape, student_shape, where)
            return
        if len(teacher_shape) != len(student_shape) or len(teacher_shape) < 2:
            raise ValueError(
                f"FeatureDistillation{where}: the teacher's features have shape "
                f"{teacher_shape} and the student's {student_shape}; they need the same "
                "rank (>= 2, batch first). Pick layers at the same stage of the two "
                "models, or pool/reshape one of them first."
            )
        mismatched = [
            (t, s)
            for t, s in zip(teacher_shape[1:-1], student_shape[1:-1])
            if t is not None and s is not None and t != s
        ]
        if mismatched:
            raise ValueError(
                f"FeatureDistillation{where}: the teacher's features have shape "
                f"{teacher_shape} and the student's {student_shape}. Only the last axis "
                "(the width) may differ (a projection maps it); pick layers with the same "
                "positions (e.g. the same spatial resolution)."
            )
        t_width, s_width = teacher_shape[-1], student_shape[-1]
        if t_width is None or s_width is None:
            raise ValueError(
                f"FeatureDistillation{where}: the feature width (last axis) must be "
                f"known; got teacher {teacher_shape}, student {student_shape}."
            )
        if t_width != s_width and self.projection is False:
            raise ValueError(
                f"FeatureDistillation{where}: the teacher's features have width {t_width} "
                f"(last axis) but the student's {s_width}, and projection=False. Pass "
                "keras_cskd.FeatureDistillation(..., projection='auto') to learn a "
                "projection (FitNets), or choose layers of the same width."
            )
        if self.projection is True or t_width != s_width:
            layer = self.projection_layer
            if layer is None or tuple(layer.kernel.shape) != (s_width, t_width):
                layer = keras.layers.Dense(t_width, name=f"{self.name}_projection")
                layer.build(student_shape)
            self.projection_layer = layer
        else:
            self.projection_layer = None
        self.built = True

    def _build_own_projection(self, teacher_shape, student_shape, where):
        layer = self.projection
        if not layer.built:
            layer.build(student_shape)
        projected = tuple(layer.compute_output_shape(student_shape))
        if len(projected) != len(teacher_shape) or any(
            p is not None and t is not None and p != t
            for p, t in zip(projected[1:], teacher_shape[1:])
        ):
            raise ValueError(
                f"FeatureDistillation{where}: the projection {layer.name!r} maps the "
                f"student's features {student_shape} to {projected}, but the teacher's are "
                f"{teacher_shape}. Give the projection the teacher's shape (e.g. "
                f"{teacher_shape[-1]} output channels, and strides that match)."
            )
        self.built = True

    def _describe_layers(self):
        if self.teacher_layer_name is None and self.student_layer_name is None:
            return ""
        return (
            f" (teacher layer {self.teacher_layer_name!r}, "
            f"student layer {self.student_layer_name!r})"
        )

    def needs_projection(self, teacher_shape, student_shape):
        """Whether this loss learns a projection for these feature shapes."""
        if isinstance(self.projection, keras.layers.Layer):
            return True
        return self.projection is True or (
            self.projection == "auto" and tuple(teacher_shape)[-1] != tuple(student_shape)[-1]
        )

    # `call` averages the features over their positions itself: one value
    # per sample, no mask.
    per_position = False

    # The features are not logits: the checks of the logit losses do not apply.
    def check_inputs(self, teacher_features, student_features, labels=None):
        self.validate_outputs(teacher_features, student_features)
        if not self.built:
            self.build(teacher_features.shape, student_features.shape)

    def call(self, y_true, y_pred):
        if self.projection_layer is not None:
            y_pred = self.projection_layer(y_pred)
        values = self._values(y_true, y_pred)
        rank = len(values.shape)
        if rank > 1:
            values = ops.mean(values, axis=tuple(range(1, rank)))
        return values

    def validate_outputs(self, teacher_outputs, student_outputs):
        for role, outputs in (("teacher", teacher_outputs), ("student", student_outputs)):
            if isinstance(outputs, (list, tuple, dict)):
                raise ValueError(
                    f"FeatureDistillation{self._describe_layers()}: the {role} layer returns "
                    f"{type(outputs).__name__} of tensors; pick a layer with one output."
                )

    # keras.distillation.Distiller: it extracts the features by the same
    # attribute names, but does not train a projection.
    def validate_model_compatibility(self, teacher, student):
        teacher_features = FeatureTaps.layer_output(teacher, self.teacher_layer_name, "teacher")
        student_features = FeatureTaps.layer_output(student, self.student_layer_name, "student")
        if self.needs_projection(teacher_features.shape, student_features.shape):
            raise ValueError(
                f"FeatureDistillation{self._describe_layers()} learns a projection, which "
                "keras.distillation.Distiller would not train. Use keras_cskd.Distiller, "
                "or layers of the same width with projection=False."
            )
        self.build(teacher_features.shape, student_features.shape)

    def get_config(self):
        loss = self.loss if isinstance(self.loss, str) else keras.losses.serialize(self.loss)
        return {
            **super().get_config(),
            "loss": loss,
            "teacher_layer_name": self.teacher_layer_name,
            "student_layer_name": self.student_layer_name,
            "projection": (
                keras.saving.serialize_keras_object(self.projection)
                if isinstance(self.projection, keras.layers.Layer)
                else self.projection
            ),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("loss"), dict):
            config["loss"] = keras.losses.deserialize(config["loss"])
        return cls(**config)

    @classmethod
    def from_keras(cls, keras_loss):
        """The equivalent of a `keras.distillation.FeatureDistillation`: same
        layers and loss, no projection (Keras has none)."""
        if isinstance(keras_loss.loss, (list, tuple, dict)):
            raise ValueError(
                "keras_cskd.Distiller takes a keras.distillation.FeatureDistillation with "
                f"one loss, got the structure {keras_loss.loss!r}. Use one "
                "keras_cskd.FeatureDistillation per pair of layers."
            )
        return cls(
            loss=keras_loss.loss,
            teacher_layer_name=keras_loss.teacher_layer_name,
            student_layer_name=keras_loss.student_layer_name,
            projection=False,
        )


def _per_position_values(loss):
    """A function `f(teacher_features, student_features)` returning the
    unreduced values of `loss` (a `keras.losses` name, instance or function)."""
    try:
        resolved = keras.losses.get(loss) if isinstance(loss, str) else loss
    except ValueError:  # Keras: "Could not interpret loss identifier: ..."
        resolved = None
    if resolved is None or not callable(resolved):
        unknown = "unknown loss name; " if isinstance(loss, str) else ""
        raise ValueError(
            f"FeatureDistillation(loss={loss!r}): {unknown}use a keras.losses name such as "
            "'mse', 'mae' or 'cosine_similarity', a keras.losses.Loss or a function "
            "f(teacher_features, student_features)."
        )
    if isinstance(resolved, keras.losses.Loss):
        return resolved.call  # the values before the Loss's own reduction
    return resolved


@dataclasses.dataclass(eq=False)
class FeatureTaps:
    """What the `Distiller` runs to get logits and features together.

    `student` and `teacher` are functional models over the models' own
    layers (no new weights) returning `[logits, features_1, ...]`, one
    features tensor per `FeatureDistillation` in `losses`, in order.
    A plain object, not a Keras layer: the `Distiller` does not track it,
    so it adds nothing to the weights or the saved file.
    """

    losses: list
    student: keras.Model
    teacher: keras.Model

    @classmethod
    def connect(cls, losses, student, teacher):
        """Looks the named layers up, builds the projections and the two
        tap models; `None` when `losses` has no `FeatureDistillation`."""
        feature_losses = [loss for loss in losses if isinstance(loss, FeatureDistillation)]
        if not feature_losses:
            return None
        if teacher is None:
            raise ValueError(
                "FeatureDistillation needs the live teacher (its intermediate layers), "
                "but this Distiller has teacher=None (cached logits). Pass the teacher."
            )
        taps = {}
        for role, model in (("student", student), ("teacher", teacher)):
            name_of = "student_layer_name" if role == "student" else "teacher_layer_name"
            names = [getattr(loss, name_of) for loss in feature_losses]
            taps[role] = cls.tap_model(model, names, role)
        for loss, t, s in zip(
            feature_losses, taps["teacher"].outputs[1:], taps["student"].outputs[1:]
        ):
            loss.build(t.shape, s.shape)
        return cls(feature_losses, taps["student"], taps["teacher"])

    @classmethod
    def tap_model(cls, model, layer_names, role):
        """A functional model over `model`'s own layers (no new weights)
        returning `[logits, features_1, ...]`, the outputs of `layer_names`
        (`None`: the model's output; `"outer/inner"`: the layer `inner` of
        the nested model `outer`)."""
        inputs = cls.model_inputs(model, role)
        name = f"{model.name}_feature_taps"
        if not any(cls._inside_nested_model(model, layer_name) for layer_name in layer_names):
            features = [cls.layer_output(model, layer_name, role) for layer_name in layer_names]
            return keras.Model(inputs, [model.outputs[0], *features], name=name)
        # A nested functional model's `.output` belongs to its own graph,
        # not to `model`'s: run `model`'s graph again over the same layers
        # and take the outputs where the named layers are called.
        paths = [None if n is None else n.split("/") for n in layer_names]
        for layer_name in layer_names:
            if layer_name is not None:
                cls._resolve(model, layer_name.split("/"), role, layer_name)
        copy, features = cls._copy_with_taps(model, [p for p in paths if p], role)
        features = iter(features)
        outputs = [copy.outputs[0] if p is None else next(features) for p in paths]
        copy_inputs = copy.inputs[0] if len(copy.inputs) == 1 else copy.input
        return keras.Model(copy_inputs, [copy.outputs[0], *outputs], name=name)

    @staticmethod
    def _is_graph_model(layer):
        """Whether `layer` is a Functional or Sequential model with symbolic
        inputs, whose layers can be named by path."""
        return isinstance(layer, keras.Model) and bool(getattr(layer, "inputs", None))

    @classmethod
    def _inside_nested_model(cls, model, layer_name):
        """Whether `layer_name` is a path (`"outer/inner"`) or names a nested
        functional model, whose output only a copy of the graph reaches."""
        if layer_name is None:
            return False
        if "/" in layer_name:
            return True
        layers = {layer.name: layer for layer in model.layers}
        return layer_name in layers and cls._is_graph_model(layers[layer_name])

    @classmethod
    def _resolve(cls, model, path, role, full_name, prefix=""):
        """Checks that `path` names a layer of `model` (through nested
        functional models); a `ValueError` naming the layers otherwise."""
        layers = {layer.name: layer for layer in model.layers}
        head, rest = path[0], path[1:]
        if head not in layers:
            nested = [n for n, layer in layers.items() if cls._is_graph_model(layer)]
            hint = (
                f" Layers inside a nested model are named by path, e.g. "
                f"'{prefix}{nested[0]}/{_layer_names(layers[nested[0]])[0]}'."
                if nested
                else ""
            )
            if prefix:
                raise ValueError(
                    f"FeatureDistillation: the {role}'s nested model {prefix.rstrip('/')!r} "
                    f"has no layer named {head!r} ({role}_layer_name={full_name!r}). Its "
                    f"layers are {list(layers)}; pass {role}_layer_name='{prefix}<one of "
                    f"them>'.{hint}"
                )
            raise ValueError(
                f"FeatureDistillation: the {role} {model.name!r} has no layer named "
                f"{head!r}. Its layers are {list(layers)}; pass {role}_layer_name= one "
                f"of them (`{role}.summary()` lists them).{hint}"
            )
        if not rest:
            return
        layer = layers[head]
        if not cls._is_graph_model(layer):
            raise ValueError(
                f"FeatureDistillation: the {role}'s layer {prefix + head!r} is a "
                f"{type(layer).__name__}, not a functional or Sequential model, so "
                f"{role}_layer_name={full_name!r} cannot name a layer inside it. Name "
                f"{prefix + head!r} itself (its output), or build it with keras.Input(...) "
                "so that its layers can be named by path."
            )
        cls._resolve(layer, rest, role, full_name, f"{prefix}{head}/")

    @classmethod
    def _copy_with_taps(cls, model, paths, role, prefix=""):
        """`model`'s graph built again over the same layers (a functional
        copy sharing every weight) and the symbolic outputs of the layers at
        `paths` (lists of names, checked by `_resolve`) in that copy."""
        found = [None] * len(paths)
        calls = {}

        def call(layer, *args, **kwargs):
            mine = [(i, path[1:]) for i, path in enumerate(paths) if path[0] == layer.name]
            if not mine:
                return layer(*args, **kwargs)
            calls[layer.name] = calls.get(layer.name, 0) + 1
            if calls[layer.name] > 1:
                raise ValueError(
                    f"FeatureDistillation: the {role}'s layer {prefix + layer.name!r} is "
                    "called more than once, so it has no single output to read. Pick a "
                    f"layer that is called once in the {role}."
                )
            deeper = [(i, rest) for i, rest in mine if rest]
            if deeper:
                inner, features = cls._copy_with_taps(
                    layer, [rest for _, rest in deeper], role, f"{prefix}{layer.name}/"
                )
                inner_inputs = inner.inputs[0] if len(inner.inputs) == 1 else inner.input
                tapped = keras.Model(inner_inputs, [inner.output, *features])
                output, *features = tapped(*args, **kwargs)
                for (i, _), feature in zip(deeper, features):
                    found[i] = feature
            else:
                output = layer(*args, **kwargs)
            for i, rest in mine:
                if not rest:
                    found[i] = output
            return output

        functional = model
        if isinstance(model, keras.Sequential):  # clone_model calls layers of Functionals only
            functional = keras.Model(model.inputs, model.outputs, name=model.name)
        copy = keras.models.clone_model(
            functional, clone_function=lambda layer: layer, call_function=call
        )
        # Input layers are not called: their outputs are the copy's inputs.
        originals = [id(tensor) for tensor in functional.inputs]
        for i, path in enumerate(paths):
            if found[i] is None and len(path) == 1:
                tensor = functional.get_layer(path[0]).output
                if id(tensor) in originals:
                    found[i] = copy.inputs[originals.index(id(tensor))]
        return copy, found

    @staticmethod
    def model_inputs(model, role):
        """The symbolic inputs of a Functional or Sequential `model`, in its
        own structure; a clear error for a subclassed one."""
        try:
            inputs = model.inputs
        except (AttributeError, ValueError):
            inputs = None
        if not inputs:
            raise ValueError(
                f"FeatureDistillation reads the {role}'s layers by name, which needs a "
                f"Functional or Sequential {role} with a known input shape; "
                f"{model.name!r} has no symbolic inputs (a subclassed or unbuilt model). "
                f"Build it with keras.Input(...), or distil logits only."
            )
        return inputs[0] if len(inputs) == 1 else model.input

    @classmethod
    def layer_output(cls, model, layer_name, role):
        """The symbolic output of `model`'s layer `layer_name` (`None`: the
        model's output), with errors that name the layers available."""
        cls.model_inputs(model, role)
        if layer_name is None:
            return model.outputs[0]
        if cls._inside_nested_model(model, layer_name):
            cls._resolve(model, layer_name.split("/"), role, layer_name)
            raise ValueError(
                f"FeatureDistillation: {role}_layer_name={layer_name!r} is inside a nested "
                "model (or is one), which keras.distillation.Distiller cannot read "
                "(model.get_layer(name).output is in the nested model's own graph). Use "
                "keras_cskd.Distiller, which reads it."
            )
        cls._resolve(model, [layer_name], role, layer_name)
        try:
            return model.get_layer(layer_name).output
        except (AttributeError, ValueError) as error:
            raise ValueError(
                f"FeatureDistillation: the {role}'s layer {layer_name!r} has no single "
                f"output to read ({error}). Pick a layer that is called once in the "
                f"{role} and returns one tensor."
            ) from error

    def run(self, x, training):
        """`(student_logits, student_features, teacher_logits,
        teacher_features)`; the teacher in inference mode."""
        student_logits, *student_features = self.student(x, training=training)
        teacher_logits, *teacher_features = self.teacher(x, training=False)
        return student_logits, student_features, teacher_logits, teacher_features


def _layer_names(model):
    """The names of `model`'s layers, its input layers last."""
    layers = model.layers
    return [layer.name for layer in layers if not isinstance(layer, keras.layers.InputLayer)] + [
        layer.name for layer in layers if isinstance(layer, keras.layers.InputLayer)
    ]
