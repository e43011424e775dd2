"""SIGKILL at random moments never costs a checkpoint (issue "Faults lose
nothing").

A worker process (`kill_worker.py`) trains with every checkpoint callback
of keras-cskd writing as often as it can (a `BackupAndRestore` backup after
every batch and one after every epoch, an `AtomicCheckpoint` after every
epoch); it is killed with SIGKILL at a random moment, `KILLS` times in a
row, each new process resuming from the backups the last one left. After
every kill, every checkpoint on disk must resume here: its weights finite
and consistent with the epoch/batch it records. Finally the run is finished
here, from the backups, and must end with exactly the weights of a run that
never stopped. Each kill that left a temporary `.partial` file
behind was a kill in the middle of a write; the test prints how many.

The command line's checkpoints (its teacher cache, its run record, the
students' backups) are killed the same way in `test_cli_resume.py`.

What random kills test is the checkpoint files: keras-cskd's atomic writes
(`keras_cskd/_files.py`) of Keras' weight files, the same code on every
backend. So the test runs once, in the pass that runs the
backend-independent tests (`scripts/test.sh`). That every backend's
training resumes after a SIGKILL with exactly the weights of a run that
never stopped is `test_interruption.py`'s, on every backend.
"""

import os
import random
import shutil
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest
from subprocess_env import subprocess_env

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import interruption_worker as worker  # noqa: E402
import kill_worker  # noqa: E402

from keras_cskd.callbacks import BackupAndRestore  # noqa: E402

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kill_worker.py")
KILLS = 5
# The kill runs never end by themselves; the last run stops after the epoch
# the backups have reached, plus one.
ENDLESS = 10_000

# Rows of the "Faults" table of docs/reliability.md (rendered by
# test_faults.py); what they state is what the tests below assert.
ROWS = [
    (
        f"SIGKILL at {KILLS} random moments in a row during training with "
        "`keras_cskd.callbacks.BackupAndRestore(save_freq=1)` (a backup after every batch), "
        "`BackupAndRestore()` (every epoch) and `AtomicCheckpoint` (every epoch), each "
        "process resuming from the last one's backups (`tests/test_kill.py`, once; "
        "`tests/test_interruption.py` resumes after a SIGKILL on every backend)",
        f"Every kill resumable, {KILLS} of {KILLS}: after each kill every checkpoint loads, "
        "with finite weights that match the epoch and batch it records; the uninterrupted "
        "finish ends with exactly the weights of a run that never stopped.",
        "The last complete backup of each callback (a temporary `.partial` file from a "
        "write cut short is removed by the next `fit`).",
    ),
]


def _start(folder, epochs):
    return subprocess.Popen(
        [sys.executable, WORKER, str(folder), str(epochs)],
        env=subprocess_env(keras.backend.backend(), PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _partial_files(folder):
    return [name for _, _, names in os.walk(folder) for name in names if ".partial" in name]


def _restored(folder, save_freq, tmp):
    """Restores a copy of a backup folder into a fresh distiller; returns
    (iterations, student weights, recorded epoch, recorded batch)."""
    copy = tmp / f"copy_{os.path.basename(folder)}"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(folder, copy)
    callback = BackupAndRestore(str(copy), save_freq=save_freq)
    seen = {}

    class Probe(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen["iterations"] = worker.iterations(self.model)
            seen["weights"] = worker.student_weights(self.model)
            seen["epoch"] = self.model._initial_epoch

    x, y = worker.data()
    # epochs=0: restores (on_train_begin), trains nothing.
    worker.build().fit(x, y, batch_size=worker.BATCH_SIZE, epochs=0, callbacks=[callback, Probe()])
    return seen, callback


def _check_resumable(folder, tmp):
    """Every checkpoint in `folder` resumes: returns the epoch reached."""
    reached = 0
    steps = worker.STEPS_PER_EPOCH
    for name, save_freq in (("batch", 1), ("epoch", "epoch")):
        path = folder / name
        if not (path / "latest.weights.h5").exists():
            continue  # killed before its first backup: training starts over
        seen, callback = _restored(path, save_freq, tmp)
        assert all(np.all(np.isfinite(w)) for w in seen["weights"])
        if save_freq == 1:
            batch = callback._resume_after_batch
            assert seen["iterations"] == callback._current_epoch * steps + batch + 1
            reached = max(reached, callback._current_epoch + 1)
        else:
            assert seen["iterations"] == seen["epoch"] * steps
            reached = max(reached, seen["epoch"])
    if (folder / "last.keras").exists():
        loaded = keras.saving.load_model(folder / "last.keras")
        assert worker.iterations(loaded) % steps == 0
        assert worker.iterations(loaded) > 0
        assert all(np.all(np.isfinite(w)) for w in worker.student_weights(loaded))
    return reached


@pytest.mark.slow
@pytest.mark.backend_independent
def test_sigkill_at_random_moments_every_checkpoint_resumes(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    rng = random.Random(os.environ.get("KERAS_CSKD_KILL_SEED", 0))
    killed, mid_write, reached = 0, 0, 0
    for _ in range(KILLS):
        process = _start(folder, ENDLESS)
        started = process.stdout.readline()
        assert started.startswith("started"), process.communicate(timeout=60)[1][-3000:]
        try:
            process.wait(timeout=rng.uniform(0.0, 1.0))
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
        assert process.returncode == -signal.SIGKILL, process.returncode
        killed += 1
        mid_write += bool(_partial_files(folder))
        reached = _check_resumable(folder, tmp_path)

    # The finish, here (a new process would do the same: the same fit call).
    epochs = max(reached + 1, 2)
    distiller = worker.train(callbacks=kill_worker.callbacks(str(folder)), epochs=epochs)
    assert worker.iterations(distiller) == epochs * worker.STEPS_PER_EPOCH
    reference = worker.student_weights(worker.train(epochs=epochs))
    for final, expected in zip(worker.student_weights(distiller), reference, strict=True):
        np.testing.assert_allclose(final, expected, rtol=1e-6, atol=1e-7)
    assert not (folder / "batch").exists() and not (folder / "epoch").exists()
    print(
        f"\n{keras.backend.backend()}: {killed} kills, {killed} resumable, "
        f"{mid_write} left a partial write behind; finished after {epochs} epochs"
    )
