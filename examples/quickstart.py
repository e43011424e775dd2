"""
Title: Knowledge distillation quick start with CSKD
Author: keras-cskd contributors
Date created: 2026/11/23
Last modified: 2026/11/23
Description: Distil a trained teacher into a small student with `Distiller` and CSKD.
Accelerator: None
"""

"""
## Introduction

Knowledge distillation trains a small *student* network to imitate a large,
trained *teacher*. keras-cskd packages this as `keras_cskd.Distiller`, a
`keras.Model` that you `compile` and `fit` like any other model, on
TensorFlow, JAX or PyTorch.

This quick start uses **CSKD** (cosine similarity knowledge distillation,
Ham et al. 2023): for every class, the student learns how the teacher spreads
that class's probability over the samples of the batch. It runs in well under
a minute on a laptop CPU, on scikit-learn's 8x8 digits (no download).

Run it with any backend, e.g. `KERAS_BACKEND=jax python examples/quickstart.py`.
Set `KERAS_CSKD_FAST=1` for a few-second smoke run.
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

import keras_cskd
from keras_cskd.data import load_digits
from keras_cskd.models import mlp

FAST = os.environ.get("KERAS_CSKD_FAST") == "1"  # fewer epochs, for tests
EPOCHS = 2 if FAST else 30
# Plots go to the folder given as first argument, $KERAS_CSKD_OUT, or a temp dir.
OUT = Path(
    sys.argv[1]
    if len(sys.argv) > 1
    else os.environ.get("KERAS_CSKD_OUT") or tempfile.mkdtemp(prefix="keras_cskd_")
)
OUT.mkdir(parents=True, exist_ok=True)
keras.utils.set_random_seed(0)

"""
## Data and a trained teacher

`load_digits` returns 1,347 training and 450 test images of shape (8, 8, 1),
scaled to [0, 1]. The teacher is a 2x256 MLP trained with cross-entropy.
Models given to the `Distiller` must return **logits** (no final softmax).
"""

(x_train, y_train), (x_test, y_test) = load_digits()
if FAST:  # a subset that is a multiple of the batch size
    x_train, y_train = x_train[:512], y_train[:512]
teacher = mlp((8, 8, 1), 10, hidden=(256, 256), name="teacher")
teacher.compile(
    "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
)
teacher.fit(x_train, y_train, epochs=EPOCHS, batch_size=64, verbose=0)
_, teacher_accuracy = teacher.evaluate(x_test, y_test, verbose=0)

"""
## Distil into a small student

The student has one hidden layer of 16 units (about 70x fewer parameters).
The `Distiller` minimises `CE(y, student) + CSKD(teacher, student)`; only the
student is trained, the teacher is frozen and runs in inference mode.
"""

student = mlp((8, 8, 1), 10, hidden=(16,), name="student")
distiller = keras_cskd.Distiller(
    student, teacher, keras_cskd.losses.CosineSimilarityDistillation(temperature=4.0)
)
distiller.compile(optimizer="adam", metrics=["accuracy"])
history = distiller.fit(
    x_train, y_train, epochs=EPOCHS, batch_size=64, validation_data=(x_test, y_test), verbose=0
)
student_accuracy = history.history["val_accuracy"][-1]  # validation runs the student alone

print(f"Teacher test accuracy: {teacher_accuracy:.4f} ({teacher.count_params():,} parameters)")
print(
    f"Student (CSKD) test accuracy: {student_accuracy:.4f} ({student.count_params():,} parameters)"
)

"""
## Training curves

`fit` logs the supervised loss (`student_loss`), the CSKD term
(`distillation_loss`) and the mean class cosine similarity between student
and teacher (`cosine_similarity`, 1 = same batch predictions).
"""

figure, axes = plt.subplots(1, 2, figsize=(10, 3.5), constrained_layout=True)
axes[0].plot(history.history["student_loss"], label="student_loss (CE)")
axes[0].plot(history.history["distillation_loss"], label="distillation_loss (CSKD)")
axes[1].plot(history.history["cosine_similarity"], label="class cosine similarity")
axes[1].plot(history.history["val_accuracy"], label="test accuracy")
for axis in axes:
    axis.set_xlabel("epoch")
    axis.legend()
figure.savefig(OUT / "quickstart.png", dpi=100)
print(f"Saved {OUT / 'quickstart.png'}")

"""
## What next

- `examples/cswt_temperatures.py`: adaptive temperatures (CSWT).
- `examples/compare_losses.py`: KL vs MSE vs CSKD vs STKD.
- `distiller.export_student("student.keras")` saves the student alone.
"""
