"""
Title: Several teachers and teacher chains
Author: keras-cskd contributors
Date created: 2026/12/04
Last modified: 2026/12/04
Description: Distil an ensemble into one student; run teacher -> assistant -> student chains.
Accelerator: None
"""

"""
## Introduction

Hinton et al. (2015) introduced distillation to compress an *ensemble* into
one model; teacher-assistant chains (Mirzadeh et al. 2020) and born-again
networks (Furlanello et al. 2018) distil in several steps. Both are plain
`keras_cskd.Distiller` calls:

- **an ensemble**: pass a list of teachers. `ensemble="mean_probs"` (the
  default) distils the weighted mean of their softened distributions,
  `"mean_logits"` the mean of their logits, `"per_teacher"` sums one loss a
  teacher. The teachers run in inference mode inside the compiled step, or
  come from `cache_teacher_logits([t1, t2, t3], x)`.
- **a chain**: a model that was one Distiller's teacher can be another's
  student. A Distiller never trains its teachers (their weights are left out
  of what it trains) and never changes their `trainable` flag.

It runs in about a minute on a laptop CPU, on scikit-learn's 8x8 digits (no
download). Set `KERAS_CSKD_FAST=1` for a few-second smoke run.
"""

"""
## Setup
"""

import os
import sys
import tempfile
from pathlib import Path

import keras
import numpy as np

import keras_cskd
from keras_cskd.data import load_digits
from keras_cskd.models import mlp

FAST = os.environ.get("KERAS_CSKD_FAST") == "1"  # fewer epochs, for tests
EPOCHS = 2 if FAST else 20
OUT = Path(
    sys.argv[1]
    if len(sys.argv) > 1
    else os.environ.get("KERAS_CSKD_OUT") or tempfile.mkdtemp(prefix="keras_cskd_")
)
OUT.mkdir(parents=True, exist_ok=True)
(x_train, y_train), (x_test, y_test) = load_digits()


def accuracy(model):
    return float(np.mean(np.argmax(model.predict(x_test, verbose=0), -1) == y_test))


def train_alone(model, epochs=EPOCHS):
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_train, y_train, epochs=epochs, verbose=0)
    return model


"""
## Three teachers of different sizes and seeds
"""

teachers = []
for seed, width in ((0, 128), (1, 256), (2, 192)):
    keras.utils.set_random_seed(seed)
    teachers.append(train_alone(mlp((8, 8, 1), 10, hidden=(width,), name=f"teacher_{seed}")))
for teacher in teachers:
    print(f"{teacher.name}: test accuracy {accuracy(teacher):.3f}")
probabilities = np.mean([keras.ops.softmax(t.predict(x_test, verbose=0)) for t in teachers], 0)
ensemble_accuracy = np.mean(probabilities.argmax(-1) == y_test)
print(f"ensemble (mean of the softmaxes): test accuracy {ensemble_accuracy:.3f}")

"""
## One student from the ensemble

The teachers' logits are cached once (one array each), so every step costs
what a student step costs; the Distiller combines them at the loss's
temperature.
"""

cached = {"x": x_train, "teacher_logits": keras_cskd.cache_teacher_logits(teachers, x_train)}
keras.utils.set_random_seed(10)
student = mlp((8, 8, 1), 10, hidden=(16,), name="student_from_ensemble")
distiller = keras_cskd.Distiller(
    student, None, keras_cskd.losses.KLDivergenceDistillation(temperature=4.0),
    ensemble="mean_probs", student_loss_weight=0.1, distillation_loss_weight=0.9,
)  # fmt: skip
distiller.compile(optimizer="adam", metrics=["accuracy"])
distiller.fit(cached, y_train, epochs=EPOCHS, verbose=0)
print(f"student distilled from the ensemble: test accuracy {accuracy(student):.3f}")

"""
## A chain: teacher -> assistant -> student

Both Distillers are built up front: the assistant is the first one's student
and the second one's teacher. The second never trains it.
"""

keras.utils.set_random_seed(20)
assistant = mlp((8, 8, 1), 10, hidden=(64,), name="assistant")
small = mlp((8, 8, 1), 10, hidden=(16,), name="student_of_the_chain")
first = keras_cskd.Distiller(student=assistant, teacher=teachers[1], distillation_loss="kd")
second = keras_cskd.Distiller(student=small, teacher=assistant, distillation_loss="kd")
for step in (first, second):
    step.compile(optimizer="adam", metrics=["accuracy"])
first.fit(x_train, y_train, epochs=EPOCHS, verbose=0)
assistant_after_first = [np.array(w) for w in assistant.get_weights()]
second.fit(x_train, y_train, epochs=EPOCHS, verbose=0)
unchanged = all(
    np.array_equal(a, b) for a, b in zip(assistant_after_first, assistant.get_weights())
)
print(f"assistant: test accuracy {accuracy(assistant):.3f}")
print(f"student of the chain: test accuracy {accuracy(small):.3f}")
print(f"the assistant was not trained by the second Distiller: {unchanged}")

"""
## Born-again students

Generations of the same architecture, each distilled from the previous one.
"""

previous = teachers[1]
for generation in (1, 2):
    keras.utils.set_random_seed(30 + generation)
    born_again = mlp((8, 8, 1), 10, hidden=(256,), name=f"born_again_{generation}")
    step = keras_cskd.Distiller(student=born_again, teacher=previous, distillation_loss="kd")
    step.compile(optimizer="adam")
    step.fit(x_train, y_train, epochs=EPOCHS, verbose=0)
    step.export_student(OUT / f"born_again_{generation}.keras")
    print(f"born-again generation {generation}: test accuracy {accuracy(born_again):.3f}")
    previous = born_again

"""
## What this shows, and what it does not

One student can learn from several teachers in one `fit`, and chains are a
loop of Distillers. Whether an ensemble or a chain helps beyond seed noise
is a question for the results page (`docs/results.md`), not for one run on
digits.
"""
