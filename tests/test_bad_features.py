"""Bad input to feature distillation (`keras_cskd.FeatureDistillation`,
`keras.distillation.FeatureDistillation`): layer names, widths, losses. One
case per row of docs/reliability.md's table; the harness is
`bad_inputs.py`."""

import keras
import pytest
from bad_inputs import Cases

from keras_cskd import Distiller, FeatureDistillation

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


@pytest.mark.parametrize("key", list(cases))
def test_bad_input(key, tmp_path_factory):
    cases.check(key, tmp_path_factory)


def test_reliability_table_is_current(tmp_path_factory):
    cases.check_page(tmp_path_factory, __name__)
