"""The `keras-cskd` command line, run as a user would (subprocesses)."""

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BACKEND = keras.backend.backend()
# The CLI's own code is backend-independent (the Distiller it drives is
# tested on every backend): scripts/test.sh runs this module once.
pytestmark = [pytest.mark.backend_independent, pytest.mark.slow]


def _env():
    env = dict(os.environ, KERAS_BACKEND=BACKEND, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _run(args, cwd, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "keras_cskd", *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _save(model, path):
    model.save(path)
    return str(path)


def _mlp(input_shape, classes, softmax=False):
    inputs = keras.Input(input_shape)
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(16, activation="relu")(x)
    outputs = keras.layers.Dense(classes, activation="softmax" if softmax else None)(x)
    return keras.Model(inputs, outputs)


def test_main_job_short(tmp_path):
    result = _run(
        [
            "distill",
            "--epochs",
            "2",
            "--teacher-epochs",
            "2",
            "--method",
            "kd,cskd_cswt",
            "--quiet",
            "--out",
            str(tmp_path / "out"),
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [r["method"] for r in summary["results"]] == ["ce", "kd", "cskd_cswt"]
    assert summary["backend"] == BACKEND
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in summary["results"])
    assert "| CSKD + CSWT |" in result.stdout
    assert (tmp_path / "out" / "results.png").stat().st_size > 1000
    student = keras.saving.load_model(tmp_path / "out" / "student.keras")
    assert student.output_shape == (None, 10)


def _readme_main_job():
    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1]
    first_block = re.search(r"```bash\n(.+?)\n```", quick_start, re.S).group(1)
    install, _, main_job = first_block.partition("&&")
    assert install.strip().startswith("pip install"), first_block
    return shlex.split(main_job.strip())


def test_readme_quick_start_main_job_verbatim(tmp_path):
    """The README's main job as written (installation is CI's job)."""
    command = _readme_main_job()
    assert command[0] == "keras-cskd"
    result = _run(command[1:], cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "cskd-out" / "student.keras").exists()
    summary = json.loads((tmp_path / "cskd-out" / "results.json").read_text())
    assert [r["method"] for r in summary["results"]] == ["ce", "kd", "mse", "cskd", "cskd_cswt"]
    assert summary["teacher_accuracy"] > 0.9


def test_user_models_and_npz_data(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((120, 6)).astype("float32")
    y = (x[:, 0] > 0.5).astype("int32") + 2 * (x[:, 1] > 0.5).astype("int32")
    np.savez(tmp_path / "data.npz", x=x, y=y)
    teacher = _save(_mlp((6,), 4), tmp_path / "teacher.keras")
    (tmp_path / "mymodels.py").write_text(
        "import keras\n"
        "def student():\n"
        "    inputs = keras.Input((6,))\n"
        "    return keras.Model(inputs, keras.layers.Dense(4)(inputs))\n"
    )
    result = _run(
        [
            "distill",
            "--data",
            "data.npz",
            "--teacher",
            teacher,
            "--student",
            "mymodels:student",
            "--method",
            "mse",
            "--epochs",
            "1",
            "--quiet",
            "--out",
            "out",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "data data.npz: 96 train / 24 test" in result.stdout


@pytest.fixture(scope="module")
def bad_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    (folder / "garbage.keras").write_text("not a model")
    return {
        "softmax": _save(_mlp((8, 8, 1), 10, softmax=True), folder / "softmax.keras"),
        "five_classes": _save(_mlp((8, 8, 1), 5), folder / "five.keras"),
        "wrong_shape": _save(_mlp((28, 28, 1), 10), folder / "mnist.keras"),
        "garbage": str(folder / "garbage.keras"),
    }


@pytest.mark.parametrize(
    "args, message",
    [
        (["--teacher", "missing.keras"], "no such file"),
        (["--teacher", "{softmax}"], "probabilities"),
        (["--teacher", "{five_classes}"], "predicts 5 classes but the data has 10"),
        (["--teacher", "{wrong_shape}"], "expects inputs of shape (28, 28, 1)"),
        (["--teacher", "{garbage}"], "not a loadable Keras model"),
        (["--data", "nowhere.npz"], "no such file"),
        (["--method", "kd,bogus"], "unknown method"),
        (["--batch-size", "1"], "at least 2"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, bad_models, args, message):
    args = [a.format(**bad_models) for a in args]
    result = _run(["distill", "--epochs", "1", "--quiet", "--out", "out", *args], cwd=tmp_path)
    assert result.returncode == 2, (result.stdout[-1000:], result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("keras-cskd: error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]


def test_ctrl_c_keeps_the_last_checkpoint(tmp_path):
    teacher = _save(_mlp((8, 8, 1), 10), tmp_path / "teacher.keras")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "keras_cskd",
            "distill",
            "--teacher",
            teacher,
            "--epochs",
            "100000",
            "--quiet",
            "--out",
            "out",
        ],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    checkpoint = tmp_path / "out" / "checkpoint_ce.keras"
    deadline = time.time() + 300
    while not checkpoint.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.5)
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert str(Path("out") / "checkpoint_ce.keras") in stderr
    assert "Traceback" not in stderr
    model = keras.saving.load_model(checkpoint)
    assert model.output_shape == (None, 10)
