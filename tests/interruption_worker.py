"""Training run shared by `test_interruption.py` and its worker processes.

`train()` distils a small teacher into a student on the first 320 embedded
digits, deterministically (initial weights from Python's `random.seed`,
a seeded mixup generator, `shuffle=False`), and returns the student's final
weights. Run as a script it writes them to an `.npz` file:

    python interruption_worker.py OUT.npz [--backup DIR] [--save-freq N|epoch]
        [--callback keras|keras_cskd] [--kill-at STEP] [--loss NAME]

`--kill-at STEP` kills the process with SIGKILL (no cleanup, like a lost
machine) at the end of global training step STEP; the same command without
it resumes from the backup.
"""

import argparse
import os
import random
import signal
import sys

import keras
import numpy as np

STEPS_PER_EPOCH = 10
BATCH_SIZE = 32
EPOCHS = 3
TOTAL_STEPS = STEPS_PER_EPOCH * EPOCHS


class KillAtStep(keras.callbacks.Callback):
    """SIGKILLs this process at the end of global training step `step`."""

    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)) == self.step:
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)


class Interrupt(Exception):
    """Raised by `RaiseAtStep` (an in-process interruption)."""


class RaiseAtStep(keras.callbacks.Callback):
    """Raises `Interrupt` at the end of global training step `step`."""

    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)) == self.step:
            raise Interrupt(f"interrupted after step {self.step}")


def data():
    from keras_cskd.data import load_digits

    (x, y), _ = load_digits()
    n = STEPS_PER_EPOCH * BATCH_SIZE
    return x[:n], y[:n]


def build(loss="stkd"):
    import keras_cskd
    from keras_cskd.models import mlp

    random.seed(0)  # Keras draws the seeds of unseeded initializers from it
    teacher = mlp((8, 8, 1), 10, hidden=(32,), name="teacher")
    student = mlp((8, 8, 1), 10, hidden=(16,), name="student")
    distiller = keras_cskd.Distiller(student, teacher, loss, seed=7)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2), metrics=["accuracy"])
    return distiller


def backup_callback(kind, backup_dir, save_freq):
    import keras_cskd

    factory = (
        keras.callbacks.BackupAndRestore
        if kind == "keras"
        else keras_cskd.callbacks.BackupAndRestore
    )
    return factory(backup_dir, save_freq=save_freq)


def train(loss="stkd", callbacks=(), epochs=EPOCHS):
    """Trains a fresh distiller; returns it (student weights, optimizer)."""
    x, y = data()
    distiller = build(loss)
    distiller.fit(
        x,
        y,
        batch_size=BATCH_SIZE,
        epochs=epochs,
        shuffle=False,
        verbose=0,
        callbacks=list(callbacks),
    )
    return distiller


def student_weights(distiller):
    return [np.asarray(keras.ops.convert_to_numpy(w)) for w in distiller.student.weights]


def iterations(distiller):
    return int(keras.ops.convert_to_numpy(distiller.optimizer.iterations))


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--backup")
    parser.add_argument("--save-freq", default="4")
    parser.add_argument("--callback", choices=("keras", "keras_cskd"), default="keras_cskd")
    parser.add_argument("--kill-at", type=int)
    parser.add_argument("--loss", default="stkd")
    args = parser.parse_args(argv)

    callbacks = []
    if args.backup:
        save_freq = args.save_freq if args.save_freq == "epoch" else int(args.save_freq)
        callbacks.append(backup_callback(args.callback, args.backup, save_freq))
    if args.kill_at:
        callbacks.append(KillAtStep(args.kill_at))
    distiller = train(args.loss, callbacks)
    np.savez(args.out, *student_weights(distiller), iterations=iterations(distiller))


if __name__ == "__main__":
    main()
