"""Bad input to feature distillation (`keras_cskd.FeatureDistillation`,
`keras.distillation.FeatureDistillation`): layer names, widths, losses. One
case per row of docs/reliability.md's table; the harness is
`bad_inputs.py`."""

import keras
import numpy as np
import pytest
from bad_inputs import CLASSES, Cases, to_numpy

from keras_cskd import Distiller, FeatureDistillation
from keras_cskd.features import FeatureTaps

cases = Cases("Feature distillation")


@cases.bad_input(
    "feature_unknown_layer",
    "`FeatureDistillation` naming a layer the teacher does not have",
    ValueError,
    ["no layer named 'teacher_hidden'", "'teacher_logits'", "teacher_layer_name="],
)
def _(lab):
    teacher, student = lab.model("teacher"), lab.model("student")
    loss = FeatureDistillation("mse", "teacher_hidden", "student_logits")
    return lambda: Distiller(student, teacher, loss)


@cases.bad_input(
    "feature_width_mismatch",
    "`keras.distillation.FeatureDistillation` between layers of different widths",
    ValueError,
    ["width 8", "student's 3", "projection='auto'"],
)
def _(lab):
    teacher, student = lab.model("teacher"), lab.model("student")
    loss = keras.distillation.FeatureDistillation("mse", "teacher_input", "student_logits")
    return lambda: Distiller(student, teacher, loss)


@cases.bad_input(
    "feature_unknown_loss",
    "`FeatureDistillation(loss='nope')`: a loss name Keras does not know",
    ValueError,
    ["FeatureDistillation(loss='nope'): unknown loss name", "'mse'", "keras.losses.Loss"],
)
def _(lab):
    return lambda: FeatureDistillation(loss="nope")


def _nested(lab, name, block, width, inner):
    """`name`: its input, then `block` (a functional model used as a layer:
    `Dense(width)` named `inner`), then `Dense(3)` logits."""
    block_input = keras.Input((8,), name=f"{block}_input")
    features = keras.layers.Dense(width, activation="relu", name=inner)(block_input)
    nested = keras.Model(block_input, features, name=block)
    inputs = keras.Input((8,), name=f"{name}_input")
    outputs = keras.layers.Dense(CLASSES, name=f"{name}_logits")(nested(inputs))
    return lab.keep(keras.Model(inputs, outputs, name=name))


@cases.behaviour(
    "feature_nested_model",
    "`FeatureDistillation` naming a nested functional model (`student_layer_name="
    "'inner_block'`, a `keras.Model` used as a layer) and a layer inside one by its path "
    "(`teacher_layer_name='backbone/layer_0'`)",
)
def _(lab):
    student = _nested(lab, "student", "inner_block", 6, "inner_dense")
    teacher = _nested(lab, "teacher", "backbone", 16, "layer_0")
    loss = FeatureDistillation("mse", "backbone/layer_0", "inner_block")
    distiller = lab.distiller([("kd", 1.0), (loss, 1.0)], student=student, teacher=teacher)
    x = lab.x[:8]
    for model, path, expected in (
        (student, "inner_block", student.get_layer("inner_block")(x)),
        (teacher, "backbone/layer_0", teacher.get_layer("backbone").get_layer("layer_0")(x)),
    ):
        logits, features = FeatureTaps.tap_model(model, [path], model.name)(x)
        np.testing.assert_allclose(to_numpy(logits), to_numpy(model(x)), rtol=1e-6)
        np.testing.assert_allclose(to_numpy(features), to_numpy(expected), rtol=1e-6)
    assert tuple(loss.projection_layer.kernel.shape) == (6, 16)
    before = [to_numpy(w).copy() for w in teacher.weights]
    history = lab.fit(distiller)
    assert np.isfinite(history.history["distillation_loss"][0])
    for a, b in zip(teacher.weights, before, strict=True):
        np.testing.assert_array_equal(to_numpy(a), b)
    return (
        "Works: the features are the nested model's output and the output of the layer at "
        "the path (`'outer/inner'`, through any depth of functional or Sequential models), "
        "read in the same forward pass as the logits.",
        "Trains normally (with a learned projection 6 -> 16); the teacher is unchanged.",
    )


@cases.bad_input(
    "feature_nested_unknown_layer",
    "`FeatureDistillation` naming a layer a nested model does not have "
    "(`student_layer_name='inner_block/hidden'`)",
    ValueError,
    ["nested model 'inner_block' has no layer named 'hidden'", "'inner_dense'", "inner_block/"],
)
def _(lab):
    student = _nested(lab, "student", "inner_block", 6, "inner_dense")
    teacher = _nested(lab, "teacher", "backbone", 16, "layer_0")
    loss = FeatureDistillation("mse", "backbone/layer_0", "inner_block/hidden")
    return lambda: Distiller(student, teacher, [("kd", 1.0), (loss, 1.0)])


@cases.bad_input(
    "feature_path_into_plain_layer",
    "`FeatureDistillation` with a path into a layer that is not a model "
    "(`teacher_layer_name='teacher_logits/kernel'`)",
    ValueError,
    ["'teacher_logits' is a Dense, not a functional or Sequential model", "Name 'teacher_logits'"],
)
def _(lab):
    student = _nested(lab, "student", "inner_block", 6, "inner_dense")
    teacher = _nested(lab, "teacher", "backbone", 16, "layer_0")
    loss = FeatureDistillation("mse", "teacher_logits/kernel", "inner_block")
    return lambda: Distiller(student, teacher, [("kd", 1.0), (loss, 1.0)])


@pytest.mark.parametrize("key", list(cases))
def test_bad_input(key, tmp_path_factory):
    cases.check(key, tmp_path_factory)


def test_reliability_table_is_current(tmp_path_factory):
    cases.check_page(tmp_path_factory, __name__)
