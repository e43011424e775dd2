"""The `keras-cskd` command line, run as a user would (subprocesses).

The command line's own logic (argument checks, teacher reuse, the table and
its verdict, the output) does not depend on the backend: those tests run
once (`once`: the `backend_independent` marker, see conftest.py). The short
main job and Ctrl-C run under every backend, as smoke tests that the whole
command works there.
"""

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
# scripts/test.sh runs backend-independent tests in its first backend's pass only.
once = pytest.mark.backend_independent


def _env():
    env = dict(os.environ, KERAS_BACKEND=BACKEND, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _run(args, cwd, timeout=600):
    result = subprocess.run(
        [sys.executable, "-m", "keras_cskd", *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        timeout=timeout,
    )
    # Decoded by hand: text=True would turn the progress bars' "\r" into "\n".
    result.stdout = result.stdout.decode("utf-8", "replace")
    result.stderr = result.stderr.decode("utf-8", "replace")
    return result


def _save(model, path):
    model.save(path)
    return str(path)


def _mlp(input_shape, classes, softmax=False):
    inputs = keras.Input(input_shape)
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(16, activation="relu")(x)
    outputs = keras.layers.Dense(classes, activation="softmax" if softmax else None)(x)
    return keras.Model(inputs, outputs)


@pytest.mark.slow
def test_main_job_short(tmp_path):
    result = _run(
        [
            "distill",
            "--epochs",
            "2",
            "--teacher-epochs",
            "2",
            "--seeds",
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
    assert summary["seeds"] == 2 and summary["labels"] == 50
    for row in summary["results"]:
        assert len(row["accuracies"]) == 2
        assert all(0.0 <= a <= 1.0 for a in row["accuracies"])
        np.testing.assert_allclose(row["accuracy"], np.mean(row["accuracies"]))
        np.testing.assert_allclose(row["std"], np.std(row["accuracies"], ddof=1))
    ce = np.asarray(summary["results"][0]["accuracies"])
    for row in summary["results"][1:]:
        differences = np.asarray(row["accuracies"]) - ce
        np.testing.assert_allclose(row["difference"], differences.mean(), atol=1e-12)
        np.testing.assert_allclose(row["difference_std"], differences.std(ddof=1), atol=1e-12)
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


@once
@pytest.mark.slow
def test_readme_quick_start_main_job_verbatim(tmp_path):
    """The README's main job as written (installation is CI's job): one
    progress bar per model plus the table, and distillation visibly helps."""
    command = _readme_main_job()
    assert command[0] == "keras-cskd"
    result = _run(command[1:], cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "cskd-out" / "student.keras").exists()
    summary = json.loads((tmp_path / "cskd-out" / "results.json").read_text())
    methods = ["ce", "kd", "mse", "cskd", "cskd_cswt"]
    assert [r["method"] for r in summary["results"]] == methods
    assert summary["teacher_accuracy"] > 0.9
    assert summary["seeds"] >= 3 and all(
        len(r["accuracies"]) == summary["seeds"] for r in summary["results"]
    )
    # What the main job is for: with 50 labels, a distilled student beats
    # CE only by more than the seed-to-seed noise (2 standard errors).
    ce = np.asarray(summary["results"][0]["accuracies"])
    gains = [np.asarray(r["accuracies"]) - ce for r in summary["results"][1:]]
    assert any(g.mean() > 2 * g.std(ddof=1) / np.sqrt(len(g)) for g in gains), gains
    assert "Better than CE only beyond seed noise:" in result.stdout
    # Output: a line per model title, one progress bar per model (teacher +
    # 5 students), the table and its conclusion -- not per-epoch logs.
    lines = result.stdout.split("\n")  # a progress bar redraws its line with "\r"
    assert sum("━" in line for line in lines) == 1 + len(methods), result.stdout[-3000:]
    assert len(lines) < 40, result.stdout[-3000:]
    assert "| CE only |" in result.stdout and "± " in result.stdout


@once
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


@once
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
        (["--batch-size", "0"], "--batch-size must be at least 2"),
        (["--epochs", "0"], "--epochs must be at least 1, got 0"),
        (["--epochs", "-3"], "--epochs must be at least 1, got -3"),
        (["--teacher-epochs", "0"], "--teacher-epochs must be at least 1"),
        (["--seeds", "0"], "--seeds must be at least 1"),
        (["--seed", "-1"], "--seed must be 0 or more"),
        (["--temperature", "0"], "--temperature must be positive"),
        (["--temperature", "nan"], "--temperature must be positive, got nan"),
        (["--temperature", "inf"], "--temperature must be positive, got inf"),
        (["--learning-rate", "-0.1"], "--learning-rate must be positive"),
        (["--label-noise", "1"], "--label-noise must be in [0, 1), got 1"),
        (["--label-noise", "-0.1"], "--label-noise must be in [0, 1)"),
        (["--limit", "0"], "--limit must be at least 2"),
        (["--labels", "0"], "--labels must be at least 1"),
        (["--labels", "5"], "fewer than the 10 classes"),
        (["--labels", "100000"], "more than the 1348 training samples"),
        (["--image-size", "0"], "--image-size must be at least 1"),
        (["--method", "dkd"], "dkd needs the label of every training sample"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, bad_models, args, message):
    args = [a.format(**bad_models) for a in args]
    result = _run(["distill", "--epochs", "1", "--quiet", "--out", "out", *args], cwd=tmp_path)
    assert result.returncode == 2, (result.stdout[-1000:], result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("keras-cskd: error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]


@pytest.mark.slow
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


@once
def test_help_shows_the_defaults():
    result = _run(["distill", "--help"], cwd=ROOT)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())  # argparse wraps lines
    for expected in (
        "(default: 64)",  # --batch-size
        "(default: 4.0)",  # --temperature
        "(default: cskd-out)",  # --out
        "(default: kd,mse,cskd,cskd_cswt)",  # --method
        "(default: 15 on digits, 10 otherwise)",  # --epochs
        "(default: 5 on digits, 1 otherwise)",  # --seeds
        "(default: 50 on digits, all otherwise)",  # --labels
    ):
        assert expected in text, expected
    assert "(default: None)" not in text


@once
def test_teacher_is_reused_only_when_its_settings_match(tmp_path):
    common = [
        "distill",
        "--method",
        "kd",
        "--epochs",
        "1",
        "--seeds",
        "1",
        "--quiet",
        "--out",
        "out",
    ]
    teacher = tmp_path / "out" / "teacher.keras"

    first = _run([*common, "--teacher-epochs", "1"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "training teacher\n" in first.stdout
    trained = teacher.read_bytes()

    same = _run([*common, "--teacher-epochs", "1"], cwd=tmp_path)
    assert same.returncode == 0, same.stderr[-2000:]
    assert f"reusing teacher {Path('out') / 'teacher.keras'}" in same.stdout
    assert teacher.read_bytes() == trained  # not retrained

    # Settings that only the students use do not retrain the teacher.
    student_side = _run([*common, "--teacher-epochs", "1", "--temperature", "2"], cwd=tmp_path)
    assert "reusing teacher" in student_side.stdout, student_side.stdout

    for change, reason in (
        (["--teacher-epochs", "2"], "epochs 1 -> 2"),
        (["--teacher-epochs", "1", "--seed", "1"], "seed 0 -> 1"),
        (["--teacher-epochs", "1", "--limit", "500"], "data_sha256"),
    ):
        changed = _run([*common, *change], cwd=tmp_path)
        assert changed.returncode == 0, changed.stderr[-2000:]
        assert "training teacher (settings changed:" in changed.stdout, changed.stdout
        assert reason in changed.stdout, changed.stdout
        assert teacher.read_bytes() != trained


@once
def test_best_can_be_ce_only_and_says_so(tmp_path):
    """A teacher that always predicts class 0: distilling it only hurts, so
    "best" is the CE-only student and no method beats it."""
    inputs = keras.Input((8, 8, 1))
    logits = keras.layers.Dense(
        10,
        kernel_initializer="zeros",
        bias_initializer=keras.initializers.Constant([8.0] + [0.0] * 9),
    )(keras.layers.Flatten()(inputs))
    teacher = _save(keras.Model(inputs, logits), tmp_path / "zero.keras")
    result = _run(
        [
            "distill",
            "--teacher",
            teacher,
            "--method",
            "mse",
            "--epochs",
            "3",
            "--seeds",
            "2",
            "--quiet",
            "--out",
            "out",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "results.json").read_text())
    ce, mse = summary["results"]
    assert np.mean(ce["accuracies"]) > np.mean(mse["accuracies"])  # the premise
    assert summary["best"] == "ce"
    assert "best (highest mean): CE only" in result.stdout
    assert "No method beats CE only beyond seed noise." in result.stdout


@once
@pytest.mark.parametrize(
    "ce, other, beyond",
    [
        ([0.80, 0.82, 0.84], [0.90, 0.93, 0.93], True),  # +9.7 pt, std 1.5: clear
        ([0.80, 0.82, 0.84], [0.81, 0.81, 0.85], False),  # +0.3 pt, std 1.2: noise
        ([0.80, 0.82, 0.84], [0.70, 0.73, 0.72], True),  # clearly worse
    ],
)
def test_seed_noise_rule(ce, other, beyond):
    """Beyond noise = |mean paired difference| > 2 standard errors, checked
    against the hand-computed values above."""
    from keras_cskd.cli import _compare_with_ce

    results = [{"method": "ce", "accuracies": ce}, {"method": "kd", "accuracies": other}]
    _compare_with_ce(results)
    differences = np.subtract(other, ce)
    standard_error = differences.std(ddof=1) / np.sqrt(3)
    assert (abs(differences.mean()) > 2 * standard_error) == beyond  # the hand labels
    assert results[1]["beyond_noise"] is beyond


@once
def test_plot_has_error_bars_an_axis_from_zero_and_a_labelled_teacher():
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from keras_cskd.cli import _compare_with_ce, _figure

    results = [
        {"method": "ce", "accuracies": [0.84, 0.86, 0.85]},
        {"method": "kd", "accuracies": [0.93, 0.95, 0.94]},
    ]
    for row in results:
        row["accuracy"] = float(np.mean(row["accuracies"]))
        row["std"] = float(np.std(row["accuracies"], ddof=1))
    _compare_with_ce(results)
    figure = _figure(results, 0.97, seeds=3)
    try:
        accuracies, differences = figure.axes
        assert accuracies.get_xlim() == (0.0, 100.0)
        from matplotlib.container import ErrorbarContainer

        errorbars = [c for c in accuracies.containers if isinstance(c, ErrorbarContainer)]
        assert len(errorbars) == 1
        # The error bars span mean ± std, in percent.
        segments = errorbars[0].lines[2][0].get_segments()
        np.testing.assert_allclose(
            [sorted(s[:, 0]) for s in segments],
            [[85.0 - 1.0, 85.0 + 1.0], [94.0 - 1.0, 94.0 + 1.0]],
        )
        labels = [text.get_text() for text in accuracies.get_legend().get_texts()]
        assert labels == ["teacher (97.0 %)"]
        assert differences.get_xlim()[0] <= 0.0 <= differences.get_xlim()[1]
    finally:
        plt.close(figure)


@once
def test_labelled_cross_entropy_averages_over_labelled_samples_only():
    """The students' supervised loss with --labels: label -1 = unlabelled;
    Keras' mean over the batch of the returned values must equal the NumPy
    cross-entropy averaged over the labelled samples."""
    from keras_cskd.cli import _labelled_cross_entropy

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 4)).astype("float32")
    labels = np.array([2, -1, 0, -1, -1, 3])
    # Keras' reduction of a function loss: the mean of its values over the batch.
    value = float(np.mean(keras.ops.convert_to_numpy(_labelled_cross_entropy(labels, logits))))
    z = logits.astype("float64")
    log_p = z - z.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    labelled = labels >= 0
    expected = -np.mean(log_p[labelled, labels[labelled]])
    np.testing.assert_allclose(value, expected, rtol=1e-5)


def _main_in_process(monkeypatch, capsys, failure, *flags):
    """`keras-cskd distill` in this process with `run_distill` replaced by
    one that raises `failure`: returns (exit code, stderr)."""
    from keras_cskd import cli

    def run_distill(args):
        raise failure

    monkeypatch.setattr(cli, "run_distill", run_distill)
    code = cli.main(["distill", "--backend", BACKEND, *flags])
    return code, capsys.readouterr().err


@once
def test_a_bug_is_one_line_and_exit_1_and_debug_shows_the_traceback(monkeypatch, capsys):
    code, err = _main_in_process(monkeypatch, capsys, KeyError("surprise"))
    assert code == 1
    assert err.splitlines() == [
        "keras-cskd: internal error: KeyError: 'surprise' (--debug shows the traceback; "
        "please report it)"
    ]
    with pytest.raises(KeyError, match="surprise"):
        _main_in_process(monkeypatch, capsys, KeyError("surprise"), "--debug")


@once
def test_an_unforeseen_value_error_is_bad_input_on_one_line(monkeypatch, capsys):
    """Keras' and keras-cskd's checks raise ValueError: exit 2, one line even
    for a message that spans several."""
    code, err = _main_in_process(monkeypatch, capsys, ValueError("first\n  second line"))
    assert code == 2
    assert err.splitlines() == [
        "keras-cskd: error: ValueError: first second line (--debug shows the traceback)"
    ]


# Rows of the "Faults" table of docs/reliability.md (rendered by
# test_faults.py); what they state is what the tests below assert.
FAULT_ROWS = [
    (
        "`keras-cskd distill` killed with SIGKILL at 5 random moments in a row (teacher "
        "training and its cache, students and their checkpoints, the run record), the same "
        "command run again each time",
        "Every rerun prints `resuming the interrupted run in out (finished: ...)` and "
        "continues from the last finished epoch, 5 of 5; the last one finishes the run.",
        "The teacher cache, the students and the results; the per-epoch backups are removed "
        "once the run has finished.",
    ),
    (
        "Ctrl-C before a student's first epoch ended",
        "Exit 130 and `interrupted during ce (seed 0): no epoch of it had finished, so there "
        "is no checkpoint of it yet; run the same command again (or add --resume) to continue "
        "from there`",
        "The run record; the rerun resumes it.",
    ),
    (
        "A rerun with other options while `--out` holds an interrupted run",
        "Exit 2, one line: `keras-cskd: error: out holds an interrupted run with other settings "
        "(...): rerun with its options to resume it, add --overwrite to discard it, or choose "
        "another --out`",
        "The interrupted run, untouched (`--overwrite` discards it).",
    ),
    (
        "A `run.json` that is not a run record",
        "Exit 2, one line: `keras-cskd: error: out/run.json cannot be read (JSONDecodeError): "
        "it is not a keras-cskd run record; rerun with --overwrite to start over`",
        "Untouched.",
    ),
    (
        "A teacher cache (`out/teacher.keras`) cut short",
        "Retrained, and said: `training teacher (out/teacher.keras does not match the checksum "
        "in out/teacher.json: it was cut short or replaced)`",
        "A new, complete teacher cache.",
    ),
]

_RESUME_ARGS = [
    "distill",
    "--method",
    "kd",
    "--seeds",
    "1",
    "--limit",
    "300",
    "--teacher-epochs",
    "3",
    "--quiet",
    "--out",
    "out",
]
CLI_KILLS = 5


@once
@pytest.mark.slow
def test_sigkill_at_random_moments_then_rerun_resumes(tmp_path):
    """The command killed with SIGKILL CLI_KILLS times in a row, each time at
    a random moment after one of the lines it prints as it goes (teacher
    training and its cache, the CE student, the KD student: their backups,
    checkpoints and the run record being written); each rerun of the same
    command resumes, and the last one finishes the run. Once, not per
    backend: the writes that the kills cut (`_files.write_atomically`, the
    checkpoint callbacks) are killed on every backend in test_kill.py."""
    import random

    rng = random.Random(0)
    args = [a for a in _RESUME_ARGS if a != "--quiet"] + ["--epochs", "30"]
    record = tmp_path / "out" / "run.json"
    # Kill k happens at a random moment after this output of its process.
    after = ["training teacher", "teacher:", "CE only (", "KD (", "KD ("]
    resumed, phases = 0, []
    for kill in range(CLI_KILLS):
        process = subprocess.Popen(
            [sys.executable, "-m", "keras_cskd", *args],
            cwd=tmp_path,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines = []
        while not lines or after[kill] not in lines[-1]:
            lines.append(process.stdout.readline())
            assert lines[-1], ("".join(lines), process.communicate(timeout=60)[1][-3000:])
        time.sleep(rng.uniform(0.0, 2.0))
        process.send_signal(signal.SIGKILL)
        stdout, stderr = process.communicate(timeout=60)
        stdout = "".join(lines) + stdout
        assert process.returncode == -signal.SIGKILL, (process.returncode, stderr[-2000:])
        if kill:
            assert "resuming the interrupted run in out" in stdout, (stdout, stderr[-2000:])
            resumed += 1
        phases.append(sorted(json.loads(record.read_text())["done"]))
    final = _run(args, cwd=tmp_path)
    assert final.returncode == 0, final.stderr[-3000:]
    assert "resuming the interrupted run in out" in final.stdout
    resumed += 1
    assert resumed == CLI_KILLS
    summary = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [row["method"] for row in summary["results"]] == ["ce", "kd"]
    assert json.loads(record.read_text())["finished"] is True
    assert not (tmp_path / "out" / "backup").exists()
    for name in ("teacher.keras", "student_kd.keras", "student.keras"):
        keras.saving.load_model(tmp_path / "out" / name)
    print(f"\nCLI: {CLI_KILLS} kills, {resumed} resumed; finished students at each kill: {phases}")


@once
@pytest.mark.slow
def test_an_interrupted_run_is_resumed_or_kept(tmp_path):
    """A run record left by an interrupted run: the same options resume it,
    other options are refused (exit 2, one line) rather than deleting it,
    --overwrite discards it, --resume with nothing to resume is refused."""
    out = tmp_path / "out"
    out.mkdir()
    backup = out / "backup" / "kd-seed0"
    backup.mkdir(parents=True)
    (backup / "latest.weights.h5").write_bytes(b"a backup")
    record = out / "run.json"
    record.write_text(
        json.dumps(
            {"settings": {"epochs": 7}, "settings_sha256": "0", "done": {}, "finished": False}
        )
    )
    refused = _run([*_RESUME_ARGS, "--epochs", "1"], cwd=tmp_path)
    assert refused.returncode == 2, refused.stderr[-2000:]
    errors = [line for line in refused.stderr.splitlines() if line.startswith("keras-cskd:")]
    assert len(errors) == 1 and "holds an interrupted run with other settings" in errors[0]
    assert "--overwrite" in errors[0] and "Traceback" not in refused.stderr
    assert (backup / "latest.weights.h5").read_bytes() == b"a backup"  # kept

    resume = _run([*_RESUME_ARGS, "--epochs", "1", "--resume"], cwd=tmp_path)
    assert resume.returncode == 2 and "--resume: no interrupted run" in resume.stderr

    overwrite = _run([*_RESUME_ARGS, "--epochs", "1", "--overwrite"], cwd=tmp_path)
    assert overwrite.returncode == 0, overwrite.stderr[-2000:]
    assert json.loads(record.read_text())["finished"] is True
    assert not (out / "backup").exists()

    nothing = _run([*_RESUME_ARGS, "--epochs", "1", "--resume"], cwd=tmp_path)
    assert nothing.returncode == 2 and "(it finished)" in nothing.stderr

    record.write_text("{not json")
    corrupt = _run([*_RESUME_ARGS, "--epochs", "1"], cwd=tmp_path)
    assert corrupt.returncode == 2
    assert f"{Path('out') / 'run.json'} cannot be read" in corrupt.stderr

    # A teacher cache cut short (a kill while it was copied): retrained, said so.
    teacher = out / "teacher.keras"
    record.unlink()
    teacher.write_bytes(teacher.read_bytes()[:1000])
    cut = _run([*_RESUME_ARGS, "--epochs", "1"], cwd=tmp_path)
    assert cut.returncode == 0, cut.stderr[-2000:]
    assert "does not match the checksum in" in cut.stdout and "cut short" in cut.stdout
    keras.saving.load_model(teacher)


@once
@pytest.mark.slow
def test_ctrl_c_before_the_first_epoch_says_so_and_the_rerun_resumes(tmp_path):
    teacher = _save(_mlp((8, 8, 1), 10), tmp_path / "teacher.keras")
    args = [*_RESUME_ARGS, "--teacher", teacher, "--epochs", "2"]
    process = subprocess.Popen(
        [sys.executable, "-m", "keras_cskd", *args],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    while not process.stdout.readline().startswith("teacher:"):
        assert process.poll() is None, process.communicate()[1][-3000:]
    time.sleep(0.5)  # inside the first student's first epoch (its step compiles)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert (
        "interrupted during ce (seed 0): no epoch of it had finished, so there is no "
        "checkpoint of it yet; run the same command again (or add --resume) to continue"
    ) in stderr
    assert not (tmp_path / "out" / "checkpoint_ce.keras").exists()
    rerun = _run([*args, "--resume"], cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "resuming the interrupted run in out (finished: no student yet)" in rerun.stdout
