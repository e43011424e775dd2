"""Whole `keras-cskd distill` runs, as a user runs them (subprocesses): the
README's main job verbatim (once), and, under every backend, a short main
job and Ctrl-C, as smoke tests that the whole command works there.
"""

import importlib.util
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
from cli_helpers import BACKEND, ROOT, mlp, once, run_cli, save_model, start_cli
from scipy import stats
from subprocess_env import subprocess_env


def _check_results(out, stdout, methods, seeds):
    """What every main job writes: results.json consistent with itself (means,
    stds, paired differences with CE only), the table, the plot, a student."""
    summary = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in summary["results"]] == ["ce", *methods]
    assert summary["backend"] == BACKEND
    assert summary["seeds"] == seeds and summary["labels"] == 50
    for row in summary["results"]:
        assert len(row["accuracies"]) == seeds
        assert all(0.0 <= a <= 1.0 for a in row["accuracies"])
        np.testing.assert_allclose(row["accuracy"], np.mean(row["accuracies"]))
        np.testing.assert_allclose(row["std"], np.std(row["accuracies"], ddof=1))
    ce = np.asarray(summary["results"][0]["accuracies"])
    for row in summary["results"][1:]:
        differences = np.asarray(row["accuracies"]) - ce
        np.testing.assert_allclose(row["difference"], differences.mean(), atol=1e-12)
        np.testing.assert_allclose(row["difference_std"], differences.std(ddof=1), atol=1e-12)
        half = stats.t.ppf(0.975, seeds - 1) * differences.std(ddof=1) / np.sqrt(seeds)
        np.testing.assert_allclose(
            row["difference_interval"], differences.mean() + np.array([-half, half]), atol=1e-5
        )
        assert row["beyond_noise"] == bool(abs(differences.mean()) > half)
    assert "| CE only |" in stdout and "| CSKD at CSWT temps (1 term) |" in stdout
    assert (out / "results.png").stat().st_size > 1000
    student = keras.saving.load_model(out / "student.keras")
    assert student.output_shape == (None, 10)
    return summary


# Where the README's main job runs (the pass of the backend-independent
# tests), it checks all this on the whole job; elsewhere this short job does.
@pytest.mark.slow
@pytest.mark.covered_by_backend_independent
def test_main_job_short(tmp_path):
    result = run_cli(
        [
            "distill",
            *("--epochs", "2", "--teacher-epochs", "2", "--seeds", "2"),
            *("--method", "kd,cskd_cswt", "--quiet", "--out", str(tmp_path / "out")),
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    _check_results(tmp_path / "out", result.stdout, ["kd", "cskd_cswt"], seeds=2)


def _readme_main_job():
    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1]
    first_block = re.search(r"```bash\n(.+?)\n```", quick_start, re.S).group(1)
    install, _, main_job = first_block.partition("&&")
    assert install.strip().startswith("pip install"), first_block
    return shlex.split(main_job.strip())


@once
@pytest.mark.slow
def test_readme_quick_start_main_job_verbatim(tmp_path):
    """The README's main job as written (installation is CI's job): one
    progress bar per model plus the table, and distillation visibly helps."""
    command = _readme_main_job()
    assert command[0] == "keras-cskd"
    result = run_cli(command[1:], cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    methods = ["kd", "mse", "cskd", "cskd_cswt"]
    summary = _check_results(tmp_path / "cskd-out", result.stdout, methods, seeds=5)
    assert summary["teacher_accuracy"] > 0.9
    # What the main job is for: with 50 labels, a distilled student beats
    # CE only beyond the seed-to-seed noise (its paired 95 % interval > 0).
    ce = np.asarray(summary["results"][0]["accuracies"])
    gains = [np.asarray(r["accuracies"]) - ce for r in summary["results"][1:]]
    t = stats.t.ppf(0.975, 4)
    assert any(g.mean() > t * g.std(ddof=1) / np.sqrt(len(g)) for g in gains), gains
    assert "Better than CE only beyond seed noise:" in result.stdout
    # Output to a pipe (not a terminal): a title line per model (teacher + 5
    # students), one plain line per finished fit (the teacher, 5 seeds per
    # student) -- no progress bar's carriage returns or colour codes, no
    # per-epoch logs -- then the table, its conclusion and how to use the
    # student.
    lines = result.stdout.split("\n")
    assert "\r" not in result.stdout and "\x1b" not in result.stdout, result.stdout[-3000:]
    titles = [line for line in lines if line.endswith("student parameters, 5 seeds)")]
    assert len(titles) == 1 + len(methods), result.stdout[-3000:]
    fits = [
        line for line in lines if re.fullmatch(r"  \d+/\d+ epochs - loss: \S+ - [\d.]+ s", line)
    ]
    assert len(fits) == 1 + 5 * (1 + len(methods)), result.stdout[-3000:]
    assert len(lines) < 70, result.stdout[-3000:]
    assert "| CE only |" in result.stdout and "± " in result.stdout
    assert f"KERAS_BACKEND={BACKEND}" in result.stdout and "keras.ops.softmax" in result.stdout
    if BACKEND == "jax":  # the README's table is the JAX run's
        _check_readme_table(result.stdout)


def _check_readme_table(stdout):
    """The README's table is what the main job prints: each method's mean
    accuracy within 0.5 pt (other CPUs may round differently along 26 fits;
    a change of the library's results moves them by more)."""

    def means(text):
        rows = re.findall(r"^\| ([^|]+?) \| ([0-9.]+) (?:± [0-9.]+ )?% \|", text, re.M)
        return {name: float(mean) for name, mean in rows}

    readme = (ROOT / "README.md").read_text().split("## Quick start", 1)[1]
    documented, printed = means(readme.split("```text", 1)[1].split("```", 1)[0]), means(stdout)
    assert documented.keys() == printed.keys(), (documented, printed)
    for name, mean in printed.items():
        assert abs(mean - documented[name]) <= 0.5, (
            f"README's quick-start table is stale: {name} prints {mean} %, the README says "
            f"{documented[name]} %: update it from this run's table:\n{stdout[-2500:]}"
        )


@once
@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is None, reason="TensorFlow is not installed"
)
def test_no_tensorflow_start_up_logs_before_the_first_line(tmp_path):
    """TensorFlow 2.21 writes its C++ start-up logs (oneDNN, CUDA drivers,
    CPU instructions) whatever TF_CPP_MIN_LOG_LEVEL says: the command line
    imports it with them held back, and silences its retracing warnings.
    TF_CPP_MIN_LOG_LEVEL is left unset here, as a user's shell has it."""
    env = subprocess_env("tensorflow", PYTHONUNBUFFERED="1")
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-m", "keras_cskd", "distill", "--backend", "tensorflow", "--quiet"]
        + ["--limit", "200", "--epochs", "1", "--teacher-epochs", "1", "--seeds", "2"]
        + ["--method", "kd", "--out", "out"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("keras-cskd "), result.stdout[:1000]
    for noise in ("oneDNN", "cuda", "absl", "retracing", "WARNING"):
        assert noise not in result.stderr, result.stderr[-3000:]


@pytest.mark.slow
def test_ctrl_c_keeps_the_last_checkpoint(tmp_path):
    teacher = save_model(mlp((8, 8, 1), 10), tmp_path / "teacher.keras")
    process = start_cli(
        ["distill", "--teacher", teacher, "--epochs", "100000", "--quiet", "--out", "out"],
        tmp_path,
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
