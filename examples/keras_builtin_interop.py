"""
Title: keras-cskd losses inside keras.distillation.Distiller
Author: keras-cskd contributors
Date created: 2026/11/23
Last modified: 2026/11/23
Description: keras-cskd's losses in Keras' own Distiller, and why its default KL loss is off.
Accelerator: None
"""

"""
## Introduction

Keras 3.12+ ships `keras.distillation.Distiller`. Every keras-cskd loss is
also a `keras.distillation.DistillationLoss`, so it plugs into Keras'
`Distiller` unchanged:

```python
keras.distillation.Distiller(
    teacher=teacher,
    student=student,
    distillation_losses=keras_cskd.losses.CosineSimilarityDistillation(),
)
```

This example does that, and first shows, with numbers, why we do **not**
recommend the built-in `keras.distillation.LogitsDistillation(temperature)`
with its default `loss="kl_divergence"` (Keras 3.15): the string resolves to
the *function* `keras.losses.kl_divergence`, while `LogitsDistillation`
checks for the `keras.losses.KLDivergence` *class* before applying the
softmax and the `tau^2` factor. The default therefore computes a KL
divergence of raw, temperature-divided logits (clipped to `[1e-7, 1]`), with
neither softmax nor `tau^2`.
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

from keras_cskd import losses
from keras_cskd.data import load_digits
from keras_cskd.models import mlp

FAST = os.environ.get("KERAS_CSKD_FAST") == "1"  # fewer epochs, for tests
EPOCHS = 2 if FAST else 30
OUT = Path(
    sys.argv[1]
    if len(sys.argv) > 1
    else os.environ.get("KERAS_CSKD_OUT") or tempfile.mkdtemp(prefix="keras_cskd_")
)
OUT.mkdir(parents=True, exist_ok=True)

(x_train, y_train), (x_test, y_test) = load_digits()
if FAST:  # a subset that is a multiple of the batch size: one compiled step shape
    x_train, y_train = x_train[:512], y_train[:512]
keras.utils.set_random_seed(0)
teacher = mlp((8, 8, 1), 10, hidden=(256, 256), name="teacher")
teacher.compile(
    "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
)
teacher.fit(x_train, y_train, epochs=EPOCHS, batch_size=64, verbose=0)
teacher_accuracy = np.mean(keras.ops.convert_to_numpy(teacher(x_test)).argmax(1) == y_test)
print(f"Teacher test accuracy: {teacher_accuracy:.4f}")

"""
## The numbers: textbook KD vs `LogitsDistillation` defaults

The textbook (Hinton et al.) loss is
`tau^2 * mean_i KL(softmax(t_i / tau) || softmax(s_i / tau))`. We compute it
in plain NumPy, with keras-cskd's `KLDivergenceDistillation`, with
`LogitsDistillation(loss=keras.losses.KLDivergence())` (the class path,
which is correct), and with the default `LogitsDistillation(temperature)`,
on one batch of teacher logits and an untrained student's logits.
"""


def textbook_kd(t, s, tau):
    def log_softmax(z):
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    log_p_t, log_p_s = log_softmax(t / tau), log_softmax(s / tau)
    return tau**2 * np.mean(np.sum(np.exp(log_p_t) * (log_p_t - log_p_s), axis=1))


student_untrained = mlp((8, 8, 1), 10, hidden=(16,), name="untrained")
t = keras.ops.convert_to_numpy(teacher(x_test[:64])).astype("float64")
s = keras.ops.convert_to_numpy(student_untrained(x_test[:64])).astype("float64")

default_loss = keras.distillation.LogitsDistillation(temperature=4.0)
print(f"LogitsDistillation() resolves 'kl_divergence' to: {default_loss.loss!r}")
print(
    f"  {'tau':>5} {'NumPy':>9} {'keras_cskd':>11} {'KLDivergence()':>15} {'default':>9} "
    f"{'default/NumPy':>14}"
)
ratios = {}
for tau in (1.0, 4.0, 20.0):
    reference = textbook_kd(t, s, tau)
    ours = float(losses.KLDivergenceDistillation(tau)(t, s))
    keras_class = float(
        keras.distillation.LogitsDistillation(tau, loss=keras.losses.KLDivergence()).compute_loss(
            t, s
        )
    )
    keras_default = float(keras.distillation.LogitsDistillation(tau).compute_loss(t, s))
    ratios[tau] = keras_default / reference
    print(
        f"  {tau:>5g} {reference:>9.4f} {ours:>11.4f} {keras_class:>15.4f} "
        f"{keras_default:>9.4f} {ratios[tau]:>14.2f}x"
    )
assert np.isclose(
    float(losses.KLDivergenceDistillation(4.0)(t, s)), textbook_kd(t, s, 4.0), rtol=1e-4
)
print(
    "keras.distillation default LogitsDistillation is off by "
    f"{min(ratios.values()):.2f}x to {max(ratios.values()):.2f}x from the textbook value"
)

"""
keras-cskd and the `KLDivergence()` class path agree with NumPy. The
default path does not, and its error changes with the temperature and the
logits' scale, so it cannot be fixed by a loss weight. Its gradient pushes
the raw logits rather than the softened distribution.

A related trap: `keras.distillation.Distiller.compile(loss=
"sparse_categorical_crossentropy")` resolves to the function with
`from_logits=False`, so it reads the student's logits as probabilities. Pass
`keras.losses.SparseCategoricalCrossentropy(from_logits=True)` (keras-cskd's
own `Distiller` resolves the string with `from_logits=True`).
"""

"""
## Training with Keras' `Distiller` and keras-cskd losses

Keras' `Distiller` weighs the terms as
`w * student_loss + (1 - w) * sum(distillation losses)`, with
`student_loss_weight = w` in `[0, 1]`. Each run starts from the same student
weights. The default `LogitsDistillation` is trained once for comparison.
"""


def train(distillation_loss, student_loss_weight):
    keras.utils.set_random_seed(1)
    student = mlp((8, 8, 1), 10, hidden=(16,), name="student")
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if distillation_loss is None:
        model = student
        model.compile(keras.optimizers.Adam(0.01), ce)
    else:
        model = keras.distillation.Distiller(
            teacher=teacher,
            student=student,
            distillation_losses=distillation_loss,
            student_loss_weight=student_loss_weight,
        )
        model.compile(keras.optimizers.Adam(0.01), loss=ce)
    history = model.fit(x_train, y_train, epochs=EPOCHS, batch_size=64, verbose=0)
    accuracy = float(np.mean(keras.ops.convert_to_numpy(student(x_test)).argmax(1) == y_test))
    return accuracy, history.history["loss"]


runs = {
    "CE only (no teacher)": train(None, 1.0),
    "keras_cskd KLDivergenceDistillation(4)": train(losses.KLDivergenceDistillation(4.0), 0.1),
    "keras_cskd CosineSimilarityDistillation(4)": train(
        losses.CosineSimilarityDistillation(4.0), 0.5
    ),
    "LogitsDistillation(4) default (for comparison)": train(
        keras.distillation.LogitsDistillation(4.0), 0.1
    ),
}
print(f"Student test accuracy after {EPOCHS} epochs with keras.distillation.Distiller:")
for name, (accuracy, _) in runs.items():
    print(f"  {name:<48} {accuracy:.4f}")

"""
With keras-cskd's losses the student trains normally; with the default
`LogitsDistillation` it usually ends below the student trained on
cross-entropy alone. Things `keras.distillation.Distiller` still does not do,
which `keras_cskd.Distiller` handles: it ignores the student's
regularization losses and `sample_weight`, and does not pass labels to
losses (so `DecoupledKDDistillation`, which needs them, refuses to run
there).
"""

figure, axis = plt.subplots(figsize=(7, 4), constrained_layout=True)
for name, (accuracy, curve) in runs.items():
    axis.plot(curve, label=f"{name} ({accuracy:.3f})")
axis.set_yscale("log")
axis.set_xlabel("epoch")
axis.set_ylabel("training loss (each run's own scale)")
axis.legend(fontsize=8)
plot_path = OUT / "keras_builtin_interop.png"
figure.savefig(plot_path, dpi=100)
plt.close(figure)
print(f"Saved {plot_path}")
