"""
Title: Distil your own saved teacher into a fresh student
Author: keras-cskd contributors
Date created: 2026/11/23
Last modified: 2026/11/23
Description: Distil a saved .keras teacher into a new student; save, reload and evaluate it.
Accelerator: None
"""

"""
## Introduction

The usual situation: you already have a trained model saved as a `.keras`
file, and you want a smaller one. This example

1. creates such a "user" teacher on Fashion-MNIST (stand-in for yours:
   replace `TEACHER_PATH` with your file), ending in a softmax as many
   classifiers do;
2. loads it and turns it into a logits model (distillation needs logits);
3. builds a fresh, much smaller student and distils with
   `keras_cskd.Distiller`;
4. saves the student alone with `export_student`, reloads it with plain
   `keras.saving.load_model` (no keras-cskd needed at inference time) and
   evaluates it.

Data: the Fashion-MNIST IDX files in `$KERAS_CSKD_DATA/fashion-mnist` (or
`../shared/data/fashion-mnist` next to the repository); if they are not
there, the example falls back to scikit-learn's digits so it still runs
offline.
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
from keras_cskd import data

FAST = os.environ.get("KERAS_CSKD_FAST") == "1"  # fewer samples and epochs, for tests
EPOCHS = 2 if FAST else 10
OUT = Path(
    sys.argv[1]
    if len(sys.argv) > 1
    else os.environ.get("KERAS_CSKD_OUT") or tempfile.mkdtemp(prefix="keras_cskd_")
)
OUT.mkdir(parents=True, exist_ok=True)
keras.utils.set_random_seed(0)

"""
## Data
"""

folder = data.shared_data_folder("fashion-mnist")
try:
    (x_train, y_train), (x_test, y_test) = data.load_idx_folder(
        folder, limit=1024 if FAST else 15000
    )
    dataset = "Fashion-MNIST"
    class_names = [
        "T-shirt",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Boot",
    ]
except data.DataError as error:
    print(f"Fashion-MNIST not available ({error}); using scikit-learn's digits.")
    (x_train, y_train), (x_test, y_test) = data.load_digits()
    dataset = "digits"
    class_names = [str(i) for i in range(10)]
input_shape = x_train.shape[1:]
print(f"{dataset}: {len(x_train)} training and {len(x_test)} test images of shape {input_shape}")

"""
## Your teacher, saved as `.keras`

A typical classifier: it ends with a softmax and was trained on
probabilities. (If you have your own file, point `TEACHER_PATH` at it and
skip the training.)
"""

TEACHER_PATH = OUT / "my_teacher.keras"
users_model = keras.Sequential(
    [
        keras.Input(input_shape),
        keras.layers.Flatten(),
        keras.layers.Dense(512, activation="relu"),
        keras.layers.Dense(256, activation="relu"),
        keras.layers.Dense(10),
        keras.layers.Softmax(),
    ],
    name="my_teacher",
)
users_model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
users_model.fit(x_train, y_train, epochs=EPOCHS, batch_size=128, verbose=0)
users_model.save(TEACHER_PATH)

"""
## Load it and get logits

The `Distiller` refuses a model that ends in a softmax, and says how to fix
it: distillation losses soften *logits* with a temperature.
"""

loaded = keras.saving.load_model(TEACHER_PATH)
student = keras.Sequential(
    [
        keras.Input(input_shape),
        keras.layers.Flatten(),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(10),
    ],
    name="student",
)
try:
    keras_cskd.Distiller(student, loaded, "cskd")
except ValueError as error:
    print(f"Distiller refused the softmax teacher: {str(error).split('.')[0]}.")

# The layer before the softmax outputs the logits.
teacher = keras.Model(loaded.inputs[0], loaded.layers[-2].output, name="teacher_logits")
teacher_accuracy = float(np.mean(teacher.predict(x_test, verbose=0).argmax(1) == y_test))
print(f"Teacher test accuracy: {teacher_accuracy:.4f} ({teacher.count_params():,} parameters)")

"""
## Distil

The student has about 20x fewer parameters. We use the authors' CSKD with
per-sample CSWT temperatures (`"cskd_cswt"`); the teacher is frozen.

For a fixed data set (no random augmentation) you can also run the teacher
once, `logits = keras_cskd.cache_teacher_logits(teacher, x_train)`, and fit
on `{"x": x_train, "teacher_logits": logits}` with `teacher=None`.
"""

distiller = keras_cskd.Distiller(student, teacher, "cskd_cswt")
distiller.compile(optimizer=keras.optimizers.Adam(0.003), metrics=["accuracy"])
history = distiller.fit(
    x_train,
    y_train,
    epochs=EPOCHS,
    batch_size=128,
    validation_data=(x_test, y_test),
    verbose=0,
)
student_accuracy = distiller.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"]
print(f"Student test accuracy: {student_accuracy:.4f} ({student.count_params():,} parameters)")

"""
## Save the student alone, reload it, evaluate

`export_student` writes only the student (a `.keras` file here, or a
SavedModel folder for serving). The file contains plain Keras layers, so
loading it does not need keras-cskd. It outputs logits; add a softmax for
probabilities.
"""

student_path = distiller.export_student(OUT / "student.keras")
reloaded = keras.saving.load_model(student_path)
reloaded.compile(
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
)
_, reloaded_accuracy = reloaded.evaluate(x_test, y_test, verbose=0)
same = np.allclose(
    reloaded.predict(x_test[:256], verbose=0), student.predict(x_test[:256], verbose=0), atol=1e-5
)
print(
    f"Reloaded student test accuracy: {reloaded_accuracy:.4f} "
    f"(same predictions as before saving: {same})"
)
probabilities = keras.ops.softmax(reloaded.predict(x_test[:8], verbose=0))

"""
## Plot
"""

figure = plt.figure(figsize=(12, 4), constrained_layout=True)
grid = figure.add_gridspec(2, 7)
curves = figure.add_subplot(grid[:, :3])
curves.plot(history.history["accuracy"], label="train accuracy")
curves.plot(history.history["val_accuracy"], label="test accuracy")
curves.axhline(teacher_accuracy, color="black", linestyle="--", label="teacher")
curves.set_xlabel("epoch")
curves.legend()
predicted = keras.ops.convert_to_numpy(probabilities).argmax(1)
for i in range(8):
    axis = figure.add_subplot(grid[i // 4, 3 + i % 4])
    axis.imshow(x_test[i, ..., 0], cmap="gray")
    axis.set_title(
        class_names[predicted[i]], color="green" if predicted[i] == y_test[i] else "red", fontsize=9
    )
    axis.axis("off")
plot_path = OUT / "bring_your_own_models.png"
figure.savefig(plot_path, dpi=100)
plt.close(figure)
print(f"Saved {plot_path}")
