"""The `keras-cskd` command line: its own logic (argument checks, teacher
reuse, the table and its verdict, errors), which does not depend on the
backend, so these tests run once (`once`: the `backend_independent` marker,
see conftest.py). Most call `cli.main` in this process; the help and two bad
inputs run the console script. Whole runs are in test_cli_runs.py, kills,
Ctrl-C and resuming in test_cli_resume.py.
"""

import json
import os
from pathlib import Path

import keras
import numpy as np
import pytest
from cli_helpers import BACKEND, main_in_process, mlp, once, run_cli, save_model


@once
def test_user_models_and_npz_data(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(0)
    x = rng.random((120, 6)).astype("float32")
    y = (x[:, 0] > 0.5).astype("int32") + 2 * (x[:, 1] > 0.5).astype("int32")
    np.savez(tmp_path / "data.npz", x=x, y=y)
    teacher = save_model(mlp((6,), 4), tmp_path / "teacher.keras")
    (tmp_path / "mymodels.py").write_text(
        "import keras\n"
        "def student():\n"
        "    inputs = keras.Input((6,))\n"
        "    return keras.Model(inputs, keras.layers.Dense(4)(inputs))\n"
    )
    code, out, err = main_in_process(
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
        tmp_path,
        monkeypatch,
        capsys,
    )
    assert code == 0, err[-2000:]
    assert "data data.npz: 96 train / 24 test" in out


@pytest.fixture(scope="module")
def bad_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    (folder / "garbage.keras").write_text("not a model")
    return {
        "softmax": save_model(mlp((8, 8, 1), 10, softmax=True), folder / "softmax.keras"),
        "five_classes": save_model(mlp((8, 8, 1), 5), folder / "five.keras"),
        "wrong_shape": save_model(mlp((28, 28, 1), 10), folder / "mnist.keras"),
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
        (["--teachers", "0"], "--teachers must be at least 1, got 0"),
        (["--generations", "0"], "--generations must be at least 1, got 0"),
        (["--chain", "64,x"], "--chain must be the hidden widths of the students"),
        (["--chain", "64,0"], "--chain must be the hidden widths of the students"),
        (["--teacher", ","], "--teacher names no model"),
        (["--teacher", "{five_classes}", "--teachers", "2"], "--teacher gives the teachers"),
        (["--ensemble", "mean_logits"], "--ensemble combines several teachers"),
        (["--chain", "64,16", "--generations", "2"], "use one"),
        (["--chain", "64,16", "--student", "{five_classes}"], "--chain builds MLP students"),
        (["--teachers", "2", "--chain", "64,16"], "--chain distils each generation from one"),
        (["--teachers", "3", "--generations", "2"], "this run has 3 teachers"),
        (["--teachers", "2", "--method", "kd,mse"], "--method mse with --ensemble mean_probs"),
        (["--teacher", "{softmax},{five_classes}"], "probabilities"),
        (["--teacher", "{wrong_shape},{five_classes}"], "expects inputs of shape (28, 28, 1)"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, bad_models, args, message):
    """In this process (`cli.main`, what the console script calls): the
    checks run before anything trains, so a subprocess per case would only
    add its start-up; `test_bad_input_from_the_console_script` runs two of
    them as a user would."""
    from keras_cskd import cli

    monkeypatch.chdir(tmp_path)
    args = [a.format(**bad_models) for a in args]
    code = cli.main(["distill", "--epochs", "1", "--quiet", "--out", "out", *args])
    captured = capsys.readouterr()
    assert code == 2, (captured.out[-1000:], captured.err[-2000:])
    assert "Traceback" not in captured.err
    errors = [line for line in captured.err.splitlines() if line.startswith("keras-cskd: error:")]
    assert len(errors) == 1 and message in errors[0], captured.err[-2000:]
    # Nothing written, so nothing in --out blocks the corrected command.
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@once
@pytest.mark.parametrize(
    "args, message",
    [
        (["--teacher", "{softmax}"], "probabilities"),
        (["--temperature", "nan"], "--temperature must be positive, got nan"),
    ],
)
def test_bad_input_from_the_console_script(tmp_path, bad_models, args, message):
    args = [a.format(**bad_models) for a in args]
    result = run_cli(["distill", "--epochs", "1", "--quiet", "--out", "out", *args], cwd=tmp_path)
    assert result.returncode == 2, (result.stdout[-1000:], result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("keras-cskd: error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]


@once
def test_version(capsys):
    import keras_cskd
    from keras_cskd import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"keras-cskd {keras_cskd.__version__}\n"


@once
@pytest.mark.parametrize("backend", ["jax", "tensorflow", "torch", None])
def test_a_missing_backend_says_how_to_install_it(monkeypatch, backend):
    """The hint works before keras-cskd is on PyPI: the backend's own CPU
    package, or the extra from a clone."""
    from keras_cskd import _backend_choice, cli

    monkeypatch.setattr(_backend_choice, "installed", lambda name: False)
    monkeypatch.setattr(_backend_choice, "installed_backend", lambda: None)
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    with pytest.raises(cli.UsageError) as error:
        cli._choose_backend(backend)
    message = str(error.value)
    assert "keras-cskd[" not in message
    expected = {
        "jax": ["pip install jax", 'pip install ".[jax]"'],
        "tensorflow": ["pip install tensorflow-cpu", 'pip install ".[tensorflow]"'],
        "torch": [
            "pip install torch --index-url https://download.pytorch.org/whl/cpu",
            'pip install ".[torch]"',
        ],
        None: ["pip install jax", "pip install tensorflow-cpu", "download.pytorch.org/whl/cpu"],
    }[backend]
    for words in expected:
        assert words in message, message


@once
def test_keras_backend_naming_a_missing_backend(tmp_path):
    """KERAS_BACKEND=tensorflow on a machine without TensorFlow (hidden, see
    subprocess_env.py): one line saying how to install it or which
    installed backend to choose, exit 2, no ImportError traceback from
    Keras; with that --backend, the command runs (here: to its check of
    --epochs)."""
    import subprocess
    import sys

    from cli_helpers import ROOT
    from subprocess_env import subprocess_env

    env = subprocess_env("jax")  # TensorFlow hidden
    env["KERAS_BACKEND"] = "tensorflow"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env["PYTHONPATH"]])
    expected = {
        "": "KERAS_BACKEND=tensorflow, but tensorflow is not installed: pip install "
        'tensorflow-cpu (or, in a clone of keras-cskd, pip install ".[tensorflow]"), or use '
        "an installed backend: --backend ",
        "jax": "--epochs must be at least 1, got 0",
    }
    for backend, message in expected.items():
        result = subprocess.run(
            [sys.executable, "-m", "keras_cskd", "distill", "--epochs", "0"]
            + (["--backend", backend] if backend else []),
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 2, result.stderr[-3000:]
        [line] = result.stderr.splitlines()
        assert line.startswith(f"keras-cskd: error: {message}"), line
    assert not (tmp_path / "cskd-out").exists()


@once
@pytest.mark.parametrize("terminal", [True, False])
def test_progress_is_a_bar_on_a_terminal_and_lines_in_a_log(monkeypatch, terminal):
    """On a terminal, Keras' progress bar; redirected to a file, one plain
    line per finished fit (no carriage returns, no colour codes)."""
    import argparse
    import io
    import sys

    from keras_cskd.cli.fitting import _progress_bar

    stream = io.StringIO()
    stream.isatty = lambda: terminal
    monkeypatch.setattr(sys, "stdout", stream)
    model = mlp((8, 8, 1), 10)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = np.zeros((8, 8, 8, 1), "float32"), np.zeros(8, "int32")
    callbacks = _progress_bar(argparse.Namespace(quiet=False), "title", 4)
    for _ in range(2):  # two seeds of one model
        model.fit(x, y, epochs=2, verbose=0, callbacks=callbacks)
    text = stream.getvalue()
    assert text.startswith("title\n")
    if terminal:
        assert "\r" in text and "━" in text and "4/4" in text
    else:
        assert "\r" not in text and "\x1b" not in text and "━" not in text
        lines = text.splitlines()[1:]
        assert [line.split(" - ")[0] for line in lines] == ["  2/4 epochs", "  4/4 epochs"]
        assert all(line.startswith("  ") and line.endswith(" s") for line in lines)


@once
def test_help_shows_the_defaults(capsys):
    from keras_cskd import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(["distill", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for expected in (
        "(default: 64)",  # --batch-size
        "(default: 4.0)",  # --temperature
        "(default: cskd-out)",  # --out
        "(default: kd,mse,cskd,cskd_cswt)",  # --method
        "(default: 15 on digits, 10 otherwise)",  # --epochs
        "(default: 5 on digits, 1 otherwise)",  # --seeds
        "(default: 50 on digits, all otherwise)",  # --labels
        "(default: mean_probs)",  # --ensemble
        "(default: 1)",  # --teachers, --generations
    ):
        assert expected in text, expected
    assert "(default: None)" not in text


@once
def test_teacher_is_reused_only_when_its_settings_match(tmp_path, monkeypatch, capsys):
    common = [
        "distill",
        "--method",
        "kd",
        "--epochs",
        "1",
        "--seeds",
        "1",
        "--limit",
        "400",
        "--quiet",
        "--out",
        "out",
    ]
    teacher = tmp_path / "out" / "teacher.keras"

    def run(*extra):
        code, out, err = main_in_process([*common, *extra], tmp_path, monkeypatch, capsys)
        assert code == 0, err[-2000:]
        return out

    assert "training teacher\n" in run("--teacher-epochs", "1")
    trained = teacher.read_bytes()

    same = run("--teacher-epochs", "1")
    assert f"reusing teacher {Path('out') / 'teacher.keras'}" in same
    assert teacher.read_bytes() == trained  # not retrained

    # Settings that only the students use do not retrain the teacher.
    assert "reusing teacher" in run("--teacher-epochs", "1", "--temperature", "2")

    for change, reason in (
        (["--teacher-epochs", "2"], "epochs 1 -> 2"),
        (["--teacher-epochs", "1", "--seed", "1"], "seed 0 -> 1"),
        (["--teacher-epochs", "1", "--limit", "300"], "data_sha256"),
    ):
        changed = run(*change)
        assert "training teacher (settings changed:" in changed, changed
        assert reason in changed, changed
        assert teacher.read_bytes() != trained


@once
def test_best_can_be_ce_only_and_says_so(tmp_path, monkeypatch, capsys):
    """A teacher that always predicts class 0: distilling it only hurts, so
    "best" is the CE-only student and no method beats it."""
    inputs = keras.Input((8, 8, 1))
    logits = keras.layers.Dense(
        10,
        kernel_initializer="zeros",
        bias_initializer=keras.initializers.Constant([8.0] + [0.0] * 9),
    )(keras.layers.Flatten()(inputs))
    teacher = save_model(keras.Model(inputs, logits), tmp_path / "zero.keras")
    code, out, err = main_in_process(
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
        tmp_path,
        monkeypatch,
        capsys,
    )
    assert code == 0, err[-2000:]
    summary = json.loads((tmp_path / "out" / "results.json").read_text())
    ce, mse = summary["results"]
    assert np.mean(ce["accuracies"]) > np.mean(mse["accuracies"])  # the premise
    assert summary["best"] == "ce"
    assert "best (highest mean): CE only" in out
    assert "No method beats CE only beyond seed noise." in out


@once
@pytest.mark.parametrize(
    "ce, other, beyond",
    [
        ([0.80, 0.82, 0.84], [0.90, 0.93, 0.93], True),  # +9.7 pt, std 1.5: clear
        ([0.80, 0.82, 0.84], [0.81, 0.81, 0.85], False),  # +0.3 pt, std 1.2: noise
        ([0.80, 0.82, 0.84], [0.70, 0.73, 0.72], True),  # clearly worse
        # +1.0 pt, std 1.0 over 5 seeds: the mean is 2.24 standard errors from
        # 0, beyond "2 standard errors" but inside the 95 % t-interval (2.78).
        ([0.80, 0.82, 0.84, 0.86, 0.88], [0.82, 0.82, 0.85, 0.88, 0.88], False),
        ([0.80, 0.82, 0.84, 0.86, 0.88], [0.83, 0.84, 0.86, 0.89, 0.90], True),
    ],
)
def test_seed_noise_rule(ce, other, beyond):
    """Beyond noise = the paired difference's 95 % t-interval excludes 0,
    against SciPy's t quantile and the hand labels above."""
    from scipy import stats

    from keras_cskd.cli.report import _compare_with_ce

    results = [{"method": "ce", "accuracies": ce}, {"method": "kd", "accuracies": other}]
    _compare_with_ce(results)
    differences = np.subtract(other, ce)
    n = len(differences)
    half = stats.t.ppf(0.975, n - 1) * differences.std(ddof=1) / np.sqrt(n)
    np.testing.assert_allclose(
        results[1]["difference_interval"],
        [differences.mean() - half, differences.mean() + half],
        atol=1e-5,
    )
    assert (abs(differences.mean()) > half) == beyond  # the hand labels
    assert results[1]["beyond_noise"] is beyond


@once
def test_plot_has_error_bars_an_axis_from_zero_and_a_labelled_teacher():
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from keras_cskd.cli.report import _compare_with_ce, _figure

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
    from keras_cskd.cli.job import labelled_cross_entropy

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 4)).astype("float32")
    labels = np.array([2, -1, 0, -1, -1, 3])
    # Keras' reduction of a function loss: the mean of its values over the batch.
    value = float(np.mean(keras.ops.convert_to_numpy(labelled_cross_entropy(labels, logits))))
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
