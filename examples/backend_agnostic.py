"""
Title: One distillation experiment on TensorFlow, JAX and PyTorch
Author: keras-cskd contributors
Date created: 2026/11/23
Last modified: 2026/11/23
Description: The same keras-cskd experiment under each Keras backend, results compared.
Accelerator: None
"""

"""
## Introduction

keras-cskd is written against `keras.ops` only: the losses, the CSWT layer
and the `Distiller` (which customises `compute_loss`, not `train_step`) run
unchanged on TensorFlow, JAX and PyTorch. The backend is chosen by the
`KERAS_BACKEND` environment variable *before* Keras is imported, so this
script runs itself once per backend in a subprocess and prints a table.

To make the runs comparable, each one starts from the same NumPy-generated
weights and sees the batches in the same order (`shuffle=False`): the loss
values at initialisation agree to float32 precision, and the trained
students end up close (kernels differ in summation order, so small
differences grow over training).
"""

"""
## Setup
"""

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FAST = os.environ.get("KERAS_CSKD_FAST") == "1"  # fewer epochs, for tests
TEACHER_EPOCHS = 2 if FAST else 15
STUDENT_EPOCHS = 2 if FAST else 20
BACKENDS = ("tensorflow", "jax", "torch")
WORKER = "--worker" in sys.argv
ARGS = [arg for arg in sys.argv[1:] if not arg.startswith("--")]
OUT = Path(
    ARGS[0] if ARGS else os.environ.get("KERAS_CSKD_OUT") or tempfile.mkdtemp(prefix="keras_cskd_")
)

"""
## The experiment (runs inside each subprocess)

A 2x128 MLP teacher and a 16-unit student on the digits, the paper's
two-term CSKD objective (`cskd_paper_objective`: CSKD at `tau=4` plus CSKD
with per-sample CSWT temperatures). The weights come from a NumPy random
generator, so they are identical on every backend.
"""


def numpy_init(model, seed):
    import numpy as np

    rng = np.random.default_rng(seed)
    values = []
    for weight in model.weights:
        shape = tuple(weight.shape)
        if len(shape) == 2:  # Glorot uniform kernels
            limit = np.sqrt(6.0 / (shape[0] + shape[1]))
            values.append(rng.uniform(-limit, limit, shape).astype("float32"))
        else:
            values.append(np.zeros(shape, "float32"))
    model.set_weights(values)


def experiment():
    import keras
    import numpy as np

    import keras_cskd
    from keras_cskd.data import load_digits
    from keras_cskd.models import mlp

    start = time.time()
    (x_train, y_train), (x_test, y_test) = load_digits()
    if FAST:
        x_train, y_train = x_train[:512], y_train[:512]
    keras.utils.set_random_seed(0)

    # A pure formula check: no training, no randomness.
    rng = np.random.default_rng(0)
    t_fixed = rng.normal(size=(32, 10)).astype("float32") * 3
    s_fixed = rng.normal(size=(32, 10)).astype("float32") * 3
    formula = float(keras_cskd.losses.CosineSimilarityDistillation(4.0)(t_fixed, s_fixed))

    teacher = mlp((8, 8, 1), 10, hidden=(128, 128), name="teacher")
    numpy_init(teacher, seed=1)
    teacher.compile(
        keras.optimizers.Adam(0.001),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    teacher.fit(x_train, y_train, epochs=TEACHER_EPOCHS, batch_size=64, shuffle=False, verbose=0)
    teacher_accuracy = teacher.evaluate(x_test, y_test, verbose=0)[1]

    student = mlp((8, 8, 1), 10, hidden=(16,), name="student")
    numpy_init(student, seed=2)
    objective = keras_cskd.losses.cskd_paper_objective()
    t_logits = teacher.predict(x_test[:64], verbose=0)
    s_logits = student.predict(x_test[:64], verbose=0)
    initial_loss = sum(w * float(loss(t_logits, s_logits)) for loss, w in objective)

    distiller = keras_cskd.Distiller(student, teacher, objective)
    distiller.compile(keras.optimizers.Adam(0.01), metrics=["accuracy"])
    history = distiller.fit(
        x_train, y_train, epochs=STUDENT_EPOCHS, batch_size=64, shuffle=False, verbose=0
    )
    student_accuracy = distiller.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"]
    return {
        "backend": keras.backend.backend(),
        "formula": formula,
        "teacher_accuracy": float(teacher_accuracy),
        "initial_loss": float(initial_loss),
        "student_accuracy": float(student_accuracy),
        "distillation_loss": [float(v) for v in history.history["distillation_loss"]],
        "seconds": time.time() - start,
    }


"""
## The driver: one subprocess per backend
"""


def run_backend(backend):
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[backend]
    if importlib.util.find_spec(module) is None:
        return {"backend": backend, "error": f"{module} is not installed"}
    env = dict(os.environ, KERAS_BACKEND=backend)
    process = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    for line in process.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    return {
        "backend": backend,
        "error": f"exit code {process.returncode}: {process.stderr.strip()[-2000:]}",
    }


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    results = []
    for backend in BACKENDS:
        print(f"Running under KERAS_BACKEND={backend} ...", flush=True)
        results.append(run_backend(backend))

    print(
        f"\n{'backend':<11} {'CSKD formula':>13} {'initial loss':>13} "
        f"{'teacher acc':>12} {'student acc':>12} {'seconds':>8}"
    )
    finished = [r for r in results if "error" not in r]
    for r in results:
        if "error" in r:
            print(f"{r['backend']:<11} FAILED: {r['error']}")
            continue
        print(
            f"{r['backend']:<11} {r['formula']:>13.6f} {r['initial_loss']:>13.6f} "
            f"{r['teacher_accuracy']:>12.4f} {r['student_accuracy']:>12.4f} {r['seconds']:>8.1f}"
        )
    if len(finished) >= 2:
        formulas = [r["formula"] for r in finished]
        initial = [r["initial_loss"] for r in finished]
        accuracies = [r["student_accuracy"] for r in finished]
        print(
            f"Across {len(finished)} backends: "
            f"CSKD formula spread {max(formulas) - min(formulas):.2e}, "
            f"initial loss spread {max(initial) - min(initial):.2e}, "
            f"student accuracy spread {max(accuracies) - min(accuracies):.4f}"
        )

    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for r in finished:
        axes[0].plot(r["distillation_loss"], label=r["backend"])
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("distillation loss")
    axes[0].legend()
    axes[1].bar([r["backend"] for r in finished], [r["student_accuracy"] for r in finished])
    axes[1].set_ylim(0, 1)
    axes[1].set_ylabel("student test accuracy")
    plot_path = OUT / "backend_agnostic.png"
    figure.savefig(plot_path, dpi=100)
    plt.close(figure)
    print(f"Saved {plot_path}")
    return 0 if len(finished) == len(results) else 1


"""
## Run
"""

if WORKER:
    print("RESULT " + json.dumps(experiment()), flush=True)
elif __name__ == "__main__":
    sys.exit(main())

"""
## Reading the table

- *CSKD formula*: the loss on fixed random logits. It agrees across
  backends to float32 rounding: the formula is the same code.
- *initial loss*: the paper objective on the untrained student. Equal
  weights in, equal loss out.
- *accuracies*: after training. Close, not bit-identical: each backend's
  kernels sum in their own order and the differences grow over the steps.
"""
