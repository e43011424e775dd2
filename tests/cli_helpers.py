"""Helpers of the command-line tests (`test_cli*.py`): `keras-cskd` run as a
user runs it (a subprocess) or, for the command line's own logic, in this
process."""

import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest
from subprocess_env import subprocess_env

ROOT = Path(__file__).resolve().parents[1]
BACKEND = keras.backend.backend()
# scripts/test.sh runs backend-independent tests in its first backend's pass only.
once = pytest.mark.backend_independent


def cli_env():
    env = subprocess_env(BACKEND, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def run_cli(args, cwd, timeout=600):
    """`python -m keras_cskd *args` in a subprocess; stdout and stderr as text."""
    result = subprocess.run(
        [sys.executable, "-m", "keras_cskd", *args],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        timeout=timeout,
    )
    # Decoded by hand: text=True would turn the progress bars' "\r" into "\n".
    result.stdout = result.stdout.decode("utf-8", "replace")
    result.stderr = result.stderr.decode("utf-8", "replace")
    return result


def start_cli(args, cwd):
    """`python -m keras_cskd *args` started in a subprocess (to be signalled
    or killed): its stdout and stderr are text pipes."""
    return subprocess.Popen(
        [sys.executable, "-m", "keras_cskd", *args],
        cwd=cwd,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def main_in_process(args, cwd, monkeypatch, capsys):
    """`keras-cskd *args` in this process (`cli.main`, what the console
    script calls): `(exit code, stdout, stderr)`. No interpreter start-up
    and no import of Keras per call."""
    from keras_cskd import cli

    monkeypatch.chdir(cwd)
    code = cli.main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def save_model(model, path):
    model.save(path)
    return str(path)


def mlp(input_shape, classes, softmax=False):
    inputs = keras.Input(input_shape)
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(16, activation="relu")(x)
    outputs = keras.layers.Dense(classes, activation="softmax" if softmax else None)(x)
    return keras.Model(inputs, outputs)
