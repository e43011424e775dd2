"""The process `test_kill.py` kills with SIGKILL at random moments.

    python kill_worker.py DIR EPOCHS

Trains `interruption_worker`'s distiller with every checkpoint callback of
keras-cskd writing into DIR, as often as it can so that a random kill
mostly lands inside a write:

- `BackupAndRestore(DIR/batch, save_freq=1)`: a backup after every batch
  (the one this process resumes from, so each kill is resumed by the next
  process);
- `BackupAndRestore(DIR/epoch)`: a backup after every epoch;
- `AtomicCheckpoint(DIR/last.keras)`: the whole Distiller after every epoch.

It prints `started ITERATIONS` after its first batch.
"""

import os
import sys

import keras

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import interruption_worker as worker  # noqa: E402


def callbacks(folder):
    from keras_cskd.callbacks import AtomicCheckpoint, BackupAndRestore

    return [
        BackupAndRestore(os.path.join(folder, "epoch")),
        # Restores after the per-epoch backup, so its (newer) state wins.
        BackupAndRestore(os.path.join(folder, "batch"), save_freq=1),
        AtomicCheckpoint(os.path.join(folder, "last.keras")),
    ]


class SayStarted(keras.callbacks.Callback):
    """Prints `started` after the first batch of this process (the compiled
    step is ready: from then on the time goes to training and writing)."""

    def on_train_begin(self, logs=None):
        self.said = False

    def on_train_batch_end(self, batch, logs=None):
        if not self.said:
            print(f"started {worker.iterations(self.model)}", flush=True)
            self.said = True


def main(folder, epochs):
    worker.train(callbacks=[*callbacks(folder), SayStarted()], epochs=epochs)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
