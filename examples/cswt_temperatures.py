"""
Title: How CSWT picks distillation temperatures
Author: keras-cskd contributors
Date created: 2026/11/23
Last modified: 2026/11/23
Description: CSWT temperatures per sample and per class, recorded and plotted over training.
Accelerator: None
"""

"""
## Introduction

Knowledge distillation softens logits with a temperature `T` before comparing
teacher and student. CSWT (Ham et al. 2023) adapts `T` to how well the student
already agrees with the teacher:

- the agreement `sim` is a cosine similarity of softmax outputs at `T = 1`;
- within a batch, with `m = min(sim)` and `M = max(sim)`,
  `T = low + (M - sim) / (M - m) * (high - low)`: the best-agreeing entry gets
  `low` (sharp targets), the worst gets `high` (soft targets, more "dark
  knowledge" about the other classes). The defaults are `low=2`, `high=6`.

keras-cskd offers two granularities in
`keras_cskd.layers.CosineSimilarityWeightedTemperature`:

- `granularity="sample"` (the authors' code): one temperature per sample,
  from the cosine of the sample's two rows of class probabilities;
- `granularity="class"` (a keras-cskd extension, experimental): one
  temperature per class, from the cosine of the class's two columns across
  the batch (the CSKD similarity), mapped without the min-max stretch,
  `T_c = low + (1 - cos_c) * (high - low)`, and rounded to 9 levels.

This example computes both on a hand-made batch, then trains students with
each and records how the temperatures evolve, with
`keras_cskd.callbacks.TemperatureRecorder` (per class) and a small probe
callback (per sample).
"""

"""
## Setup
"""

import os
import sys
import tempfile
from pathlib import Path

import keras
import matplotlib.pyplot as plt
import numpy as np

import keras_cskd
from keras_cskd import ops as kd_ops
from keras_cskd.callbacks import TemperatureRecorder
from keras_cskd.data import load_digits
from keras_cskd.layers import CosineSimilarityWeightedTemperature
from keras_cskd.losses import CosineSimilarityDistillation
from keras_cskd.models import mlp

FAST = os.environ.get("KERAS_CSKD_FAST") == "1"  # fewer epochs, for tests
TEACHER_EPOCHS = 2 if FAST else 20
STUDENT_EPOCHS = 2 if FAST else 25
OUT = Path(
    sys.argv[1]
    if len(sys.argv) > 1
    else os.environ.get("KERAS_CSKD_OUT") or tempfile.mkdtemp(prefix="keras_cskd_")
)
OUT.mkdir(parents=True, exist_ok=True)
keras.utils.set_random_seed(0)

"""
## CSWT on a hand-made batch

Four samples, three classes. The student agrees with the teacher on sample 0,
is unsure on sample 1, confidently wrong on sample 2 and half right on
sample 3.
"""

teacher_logits = np.array(
    [[4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 4.0], [2.0, 2.0, 0.0]], "float32"
)
student_logits = np.array(
    [[4.0, 0.0, 0.0], [1.0, 1.5, 1.0], [4.0, 0.0, 0.0], [2.0, 0.0, 0.0]], "float32"
)

per_sample = CosineSimilarityWeightedTemperature(low=2.0, high=6.0, granularity="sample")
per_class = CosineSimilarityWeightedTemperature(low=2.0, high=6.0, granularity="class")
p_t = kd_ops.softened_probabilities(teacher_logits)
p_s = kd_ops.softened_probabilities(student_logits)
sample_sim = keras.ops.convert_to_numpy(kd_ops.sample_cosine_similarity(p_t, p_s))
class_sim = keras.ops.convert_to_numpy(kd_ops.class_cosine_similarity(p_t, p_s))
sample_t = keras.ops.convert_to_numpy(per_sample(teacher_logits, student_logits)).ravel()
class_t = keras.ops.convert_to_numpy(per_class(teacher_logits, student_logits)).ravel()

print("Per-sample CSWT (the authors'): one temperature per row")
for i, (sim, temp) in enumerate(zip(sample_sim, sample_t, strict=True)):
    print(f"  sample {i}: cosine {sim:.3f} -> T = {temp:.2f}")
print("Per-class CSWT (keras-cskd extension): one temperature per column")
for c, (sim, temp) in enumerate(zip(class_sim, class_t, strict=True)):
    print(f"  class {c}: cosine {sim:.3f} -> T = {temp:.2f}")

"""
Per sample, the best-agreeing entry always gets exactly `low` and the worst
exactly `high`: the authors' CSWT ranks the batch, it does not measure
absolute agreement. When all similarities are equal (for example a batch of
one sample) keras-cskd returns the midpoint `(low + high) / 2`; the authors'
formula divides by zero there. Per class, the temperature follows the
cosine itself: a perfectly matched class gets `low`, an orthogonal one
`high`, and small differences stay small.

In the loss, CSKD uses `softmax(s / T)` and `softmax(t / T)` with the
per-sample temperatures broadcast over rows; per class, class `c`'s column
is taken from `softmax(z / T_c)` over all classes (one temperature inside
one softmax keeps the ranking of the classes). It scales by `mean(T)^2`
instead of `tau^2`.
"""

"""
## A teacher on the digits data

scikit-learn's 8x8 digits ship with scikit-learn, so this runs offline.
"""

(x_train, y_train), (x_test, y_test) = load_digits()
if FAST:  # a subset that is a multiple of the batch size: one compiled step shape
    x_train, y_train = x_train[:512], y_train[:512]
teacher = mlp((8, 8, 1), 10, hidden=(256, 256), name="teacher")
teacher.compile(
    "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
)
teacher.fit(x_train, y_train, epochs=TEACHER_EPOCHS, batch_size=64, verbose=0)


def accuracy(model):
    """Test accuracy from one direct call on the 450 test images."""
    return float(np.mean(keras.ops.convert_to_numpy(model(x_test)).argmax(-1) == y_test))


print(f"Teacher test accuracy: {accuracy(teacher):.4f}")

"""
## Per-class temperatures over training

`TemperatureRecorder` reads the per-class cosine similarity and temperature
that the `Distiller` averages over each epoch, and `plot` draws both as
heatmaps (epochs x classes).
"""


def distil(granularity, callbacks):
    keras.utils.set_random_seed(1)  # the same student initialisation for both runs
    student = mlp((8, 8, 1), 10, hidden=(16,), name=f"student_{granularity}")
    loss = CosineSimilarityDistillation(
        cswt=CosineSimilarityWeightedTemperature(low=2.0, high=6.0, granularity=granularity)
    )
    distiller = keras_cskd.Distiller(student, teacher, loss)
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    distiller.fit(
        x_train, y_train, epochs=STUDENT_EPOCHS, batch_size=64, verbose=0, callbacks=callbacks
    )
    return distiller, accuracy(student)


class_recorder = TemperatureRecorder()
_, class_accuracy = distil("class", [class_recorder])
class_plot = class_recorder.plot(OUT / "cswt_per_class.png")
print(f"Student (per-class CSWT) test accuracy: {class_accuracy:.4f}")
print("Per-class temperatures, first -> last epoch:")
for c in range(10):
    print(
        f"  class {c}: cosine {class_recorder.cosine_similarity[0, c]:.3f} -> "
        f"{class_recorder.cosine_similarity[-1, c]:.3f}, "
        f"T {class_recorder.temperature[0, c]:.2f} -> {class_recorder.temperature[-1, c]:.2f}"
    )
print(f"Saved {class_plot}")

"""
Classes the student finds hard (low cosine) get higher temperatures; as a
class's cosine rises, its temperature drops towards `low`. The numbers are
epoch means of per-batch values.
"""

"""
## Per-sample temperatures over training

The authors' CSWT gives every sample its own temperature. A small callback
applies the same layer to a fixed probe batch of test images at the end of
each epoch and keeps the similarities and temperatures.
`TemperatureRecorder` works here too: it averages the per-sample
temperatures over the samples the teacher assigns to each class.
"""


class SampleTemperatureProbe(keras.callbacks.Callback):
    """Per-sample CSWT cosine and temperature on a fixed batch, each epoch."""

    def __init__(self, x_probe, teacher, cswt):
        super().__init__()
        self.x_probe = x_probe
        self.teacher_logits = keras.ops.convert_to_numpy(teacher(x_probe))
        self.cswt = cswt
        self.similarity, self.temperature = [], []

    def on_epoch_end(self, epoch, logs=None):
        student_logits = keras.ops.convert_to_numpy(self.model.student(self.x_probe))
        p_t = kd_ops.softened_probabilities(self.teacher_logits)
        p_s = kd_ops.softened_probabilities(student_logits)
        sim = kd_ops.sample_cosine_similarity(p_t, p_s)
        temp = self.cswt(self.teacher_logits, student_logits)
        self.similarity.append(keras.ops.convert_to_numpy(sim))
        self.temperature.append(keras.ops.convert_to_numpy(temp).ravel())


probe = SampleTemperatureProbe(
    x_test[:64], teacher, CosineSimilarityWeightedTemperature(granularity="sample")
)
sample_recorder = TemperatureRecorder()
_, sample_accuracy = distil("sample", [probe, sample_recorder])
similarity = np.array(probe.similarity)  # (epochs, 64)
temperature = np.array(probe.temperature)  # (epochs, 64)
print(f"Student (per-sample CSWT) test accuracy: {sample_accuracy:.4f}")
print(
    f"Probe batch: mean cosine {similarity[0].mean():.3f} -> {similarity[-1].mean():.3f}, "
    f"mean T {temperature[0].mean():.2f} -> {temperature[-1].mean():.2f}, "
    f"T range in the last epoch [{temperature[-1].min():.2f}, {temperature[-1].max():.2f}]"
)

figure, axes = plt.subplots(1, 3, figsize=(15, 4), constrained_layout=True)
for epoch, marker in ((0, "x"), (len(similarity) - 1, "o")):
    axes[0].scatter(
        similarity[epoch], temperature[epoch], marker=marker, label=f"epoch {epoch + 1}"
    )
axes[0].set_xlabel("sample cosine similarity (T = 1)")
axes[0].set_ylabel("CSWT temperature")
axes[0].set_title("one probe batch: T is a min-max map of cosine")
axes[0].legend()
epochs = np.arange(1, len(temperature) + 1)
axes[1].plot(epochs, temperature, color="tab:gray", alpha=0.25, linewidth=0.8)
axes[1].plot(epochs, temperature.mean(axis=1), color="tab:red", linewidth=2, label="mean")
axes[1].set_xlabel("epoch")
axes[1].set_ylabel("per-sample temperature")
axes[1].set_title("64 probe samples over training")
axes[1].legend()
image = axes[2].imshow(sample_recorder.temperature.T, aspect="auto", origin="lower", cmap="magma")
axes[2].set_xlabel("epoch")
axes[2].set_ylabel("class (teacher's prediction)")
axes[2].set_title("per-sample T averaged per class")
figure.colorbar(image, ax=axes[2])
sample_plot = OUT / "cswt_per_sample.png"
figure.savefig(sample_plot, dpi=100)
plt.close(figure)
print(f"Saved {sample_plot}")

"""
## Take-aways

- Per sample, temperatures always span `[low, high]` inside a batch: as the
  student improves, the *ranking* changes, not the range. Per class they
  follow the cosines, and drop towards `low` as the student catches up.
- Per-sample CSWT softens the targets of the samples the student gets most
  wrong; per-class CSWT softens the classes it gets most wrong.
- Use `"cskd_cswt"` (per sample, the authors') or `"cskd_cswt_class"` as a
  `Distiller` loss name, or `keras_cskd.losses.cskd_paper_objective()` for the
  paper's two-term objective (fixed-temperature CSKD + CSWT CSKD).
"""
