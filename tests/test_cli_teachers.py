"""`keras-cskd distill` with several teachers (`--teacher a,b`, `--teachers
N`, `--ensemble`), chains of students (`--chain`, `--generations`), and
the students it keeps: the best seed of each row, all saved uncompiled.
In this process (`cli.main`), tiny settings; once, not per backend (the
command line's own logic; the Distiller's ensembles are tested per backend
in test_teachers.py).
"""

import json
from pathlib import Path

import keras
import numpy as np
import pytest
from cli_helpers import main_in_process, mlp, once, save_model

_TINY = ["--epochs", "1", "--limit", "300", "--quiet", "--out", "out"]


def _test_split(limit=300):
    """The test split the command line uses with --limit (digits, seed 0)."""
    from keras_cskd.data import load_digits

    _, (x_test, y_test) = load_digits(seed=0)
    return x_test[: limit // 4], y_test[: limit // 4]


def _accuracy(path, x, y):
    model = keras.saving.load_model(path)
    return float(np.mean(np.argmax(model.predict(x, verbose=0), -1) == y))


def _assert_uncompiled(out):
    """Every model the run kept loads without optimizer or compile state."""
    paths = sorted(out.glob("*.keras"))
    assert paths
    for path in paths:
        model = keras.saving.load_model(path)
        assert getattr(model, "optimizer", None) is None, path
        assert not model.compiled, path


def _mean_of(paths, path):
    """One model whose logits are the mean of the models' at `paths`."""
    models = [keras.saving.load_model(p) for p in paths]
    inputs = keras.Input(models[0].input_shape[1:])
    outputs = keras.layers.Average()([model(inputs) for model in models])
    return save_model(keras.Model(inputs, outputs), path)


@once
def test_several_given_teachers(tmp_path, monkeypatch, capsys):
    """--teacher a,b: both teachers scored and named; with --ensemble
    mean_logits the student is the one a single teacher gives whose logits
    are the mean of a's and b's (an independent construction: Keras'
    Average layer over the two models)."""
    teachers = [save_model(mlp((8, 8, 1), 10), tmp_path / name) for name in ("a.keras", "b.keras")]
    args = ["--method", "kd", "--seeds", "2", *_TINY]
    code, out, err = main_in_process(
        ["distill", "--teacher", ",".join(teachers), "--ensemble", "mean_logits", *args],
        tmp_path,
        monkeypatch,
        capsys,
    )
    assert code == 0, err[-2000:]
    for index, path in enumerate(teachers, start=1):
        assert f"teacher {index}: " in out and f"test accuracy ({path})" in out
    assert "ensemble of the 2 teachers (mean of their softmaxes)" in out
    assert (
        "combined with --ensemble mean_logits (the students distil the mean of their logits)" in out
    )
    summary = json.loads((tmp_path / "out" / "results.json").read_text())
    assert summary["teachers"] == teachers and summary["ensemble"] == "mean_logits"
    # The ensemble's accuracy: the mean of the two teachers' softmaxes.
    x, y = _test_split()
    probabilities = np.mean(
        [
            keras.ops.convert_to_numpy(keras.ops.softmax(keras.saving.load_model(p)(x)))
            for p in teachers
        ],
        axis=0,
    )
    np.testing.assert_allclose(summary["teacher_accuracy"], np.mean(probabilities.argmax(-1) == y))
    assert len(summary["teacher_accuracies"]) == 2
    assert [r["distilled_from"] for r in summary["results"]] == [
        None,
        "ensemble of 2 teachers (mean_logits)",
    ]
    table = (tmp_path / "out" / "results.md").read_text()
    assert f"| teacher 1: {teachers[0]} |" in table and f"| teacher 2: {teachers[1]} |" in table
    assert "| teachers' ensemble (mean of softmaxes) |" in table

    mean = _mean_of(teachers, tmp_path / "mean.keras")
    single = tmp_path / "single"
    single.mkdir()
    code, _, err = main_in_process(
        ["distill", "--teacher", mean, *args], single, monkeypatch, capsys
    )
    assert code == 0, err[-2000:]
    alone = json.loads((single / "out" / "results.json").read_text())
    assert alone["results"][1]["distilled_from"] == "teacher"
    assert [r["accuracies"] for r in alone["results"]] == [
        r["accuracies"] for r in summary["results"]
    ]
    for a, b in zip(
        keras.saving.load_model(tmp_path / "out" / "student_kd.keras").get_weights(),
        keras.saving.load_model(single / "out" / "student_kd.keras").get_weights(),
    ):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@once
def test_teachers_trained_here_are_cached_and_reused(tmp_path, monkeypatch, capsys):
    args = ["distill", "--teachers", "2", "--teacher-epochs", "1", "--seeds", "1"]
    args += ["--method", "kd", *_TINY]
    code, out, err = main_in_process(args, tmp_path, monkeypatch, capsys)
    assert code == 0, err[-2000:]
    folder = tmp_path / "out"
    assert "training teacher 1\n" in out and "training teacher 2\n" in out
    for name in ("teacher.keras", "teacher_2.keras"):
        assert (folder / name).exists() and (folder / name).with_suffix(".json").exists()
    seeds = [
        json.loads((folder / n).read_text())["settings"]["seed"]
        for n in ("teacher.json", "teacher_2.json")
    ]
    assert seeds == [0, 1]
    first, second = (
        keras.saving.load_model(folder / n) for n in ("teacher.keras", "teacher_2.keras")
    )
    assert not np.array_equal(first.get_weights()[0], second.get_weights()[0])
    _assert_uncompiled(folder)
    code, out, err = main_in_process(args, tmp_path, monkeypatch, capsys)
    assert code == 0, err[-2000:]
    assert f"reusing teacher {Path('out') / 'teacher.keras'}" in out
    assert f"reusing teacher {Path('out') / 'teacher_2.keras'}" in out


@once
def test_the_default_methods_leave_out_what_the_ensemble_cannot_distil(capsys):
    """Logit MSE compares raw logits, which `--ensemble mean_probs` does not
    give it: the default methods go on without it and say so (a method
    the user named is refused: test_cli.py's bad inputs)."""
    import argparse

    from keras_cskd.cli._common import DEFAULT_METHODS
    from keras_cskd.cli.run import _methods_for_the_ensemble

    args = argparse.Namespace(method=",".join(DEFAULT_METHODS), temperature=4.0)
    for ensemble, kept in (
        ("mean_probs", ["kd", "cskd", "cskd_cswt"]),
        ("mean_logits", list(DEFAULT_METHODS)),
    ):
        job = argparse.Namespace(teachers=2, ensemble=ensemble)
        assert _methods_for_the_ensemble(args, job, list(DEFAULT_METHODS)) == kept
    assert "(Logit MSE left out: --ensemble mean_probs" in capsys.readouterr().out


@once
def test_a_chain_of_students(tmp_path, monkeypatch, capsys):
    """--chain 32,8: teacher -> MLP 32 -> MLP 8, per method and seed. Each
    generation's best seed is kept (chain_1_kd.keras, ...), CE only trains
    the last architecture and is compared with the last generation only;
    student.keras and student_{method}.keras are the best seed of the best
    row and of their row; every kept model is uncompiled."""
    teacher = save_model(mlp((8, 8, 1), 10), tmp_path / "t.keras")
    args = ["distill", "--teacher", teacher, "--chain", "32,8", "--method", "kd"]
    code, out, err = main_in_process([*args, "--seeds", "2", *_TINY], tmp_path, monkeypatch, capsys)
    assert code == 0, err[-2000:]
    folder = tmp_path / "out"
    summary = json.loads((folder / "results.json").read_text())
    rows = summary["results"]
    assert [r["label"] for r in rows] == [
        "CE only (MLP 8)",
        "KD (KL, tau^2), gen 1 (MLP 32)",
        "KD (KL, tau^2), gen 2 (MLP 8)",
    ]
    assert [r["compared"] for r in rows] == [True, False, True]
    assert rows[1]["difference"] is None and rows[2]["difference"] is not None
    assert "| KD (KL, tau^2), gen 1 (MLP 32) |" in out and "(another architecture)" in out
    assert "Chain: teacher -> MLP 32 -> MLP 8" in out
    # The kept files: the generations' widths, each its row's best seed.
    hidden = {
        name: keras.saving.load_model(folder / name).layers[2].units
        for name in ("chain_1_kd.keras", "chain_2_kd.keras", "student_kd.keras", "student_ce.keras")
    }
    assert hidden == {
        "chain_1_kd.keras": 32,
        "chain_2_kd.keras": 8,
        "student_kd.keras": 8,
        "student_ce.keras": 8,
    }
    x, y = _test_split()
    for name, row in (("chain_1_kd.keras", 1), ("chain_2_kd.keras", 2), ("student_ce.keras", 0)):
        assert _accuracy(folder / name, x, y) == pytest.approx(max(rows[row]["accuracies"]))
    best = max((r for r in rows if r["compared"]), key=lambda r: r["accuracy"])
    assert _accuracy(folder / "student.keras", x, y) == pytest.approx(max(best["accuracies"]))
    _assert_uncompiled(folder)
    # How to use the kept student, printed and in results.md.
    backend = keras.backend.backend()
    for text in (out, (folder / "results.md").read_text()):
        assert f"KERAS_BACKEND={backend}" in text and "keras.ops.softmax" in text
        assert "without optimizer or compile state" in text


def _interrupt_fit(calls):
    """A `_guarded_fit` that raises KeyboardInterrupt at its call `calls`
    (counted from 1) and runs the real one otherwise."""
    from keras_cskd.cli import run

    real, count = run._guarded_fit, [0]

    def fit(*args, **kwargs):
        count[0] += 1
        if count[0] == calls:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    return fit


@once
@pytest.mark.slow
def test_generations_resume_after_an_interruption(tmp_path, monkeypatch, capsys):
    """Born-again generations interrupted during generation 2: the rerun
    resumes from the finished students (generation 2's teacher is
    generation 1's saved student) and ends with what an uninterrupted run
    gives, whose generation 2 is a one-generation run from generation 1's
    student."""
    from keras_cskd.cli import run

    teacher = save_model(mlp((8, 8, 1), 10), tmp_path / "t.keras")
    args = ["distill", "--teacher", teacher, "--generations", "2", "--method", "kd"]
    args += ["--seeds", "1", *_TINY]
    with monkeypatch.context() as patch:
        patch.setattr(run, "_guarded_fit", _interrupt_fit(3))  # ce, kd gen 1, kd gen 2
        code, _, err = main_in_process(args, tmp_path, monkeypatch, capsys)
    assert code == 130
    assert "interrupted during kd, generation 2 (seed 0): no epoch of it had finished" in err
    code, out, err = main_in_process(args, tmp_path, monkeypatch, capsys)
    assert code == 0, err[-2000:]
    assert "resuming the interrupted run in out (finished: ce/0, kd_gen1/0)" in out
    resumed = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [r["label"] for r in resumed["results"]] == [
        "CE only",
        "KD (KL, tau^2), gen 1",
        "KD (KL, tau^2), gen 2",
    ]
    assert all(r["compared"] for r in resumed["results"])
    assert (tmp_path / "out" / "chain_2_kd.keras").exists()
    assert not (tmp_path / "out" / "backup").exists()

    straight = tmp_path / "straight"
    straight.mkdir()
    code, _, err = main_in_process(args, straight, monkeypatch, capsys)
    assert code == 0, err[-2000:]
    uninterrupted = json.loads((straight / "out" / "results.json").read_text())
    assert [r["accuracies"] for r in resumed["results"]] == [
        r["accuracies"] for r in uninterrupted["results"]
    ]
    # Generation 2 is what a run gives with generation 1's student as its
    # teacher (born-again: the same student initialisation per seed).
    assert [r["distilled_from"] for r in uninterrupted["results"]] == [
        None,
        "teacher",
        "KD (KL, tau^2), gen 1 (same seed)",
    ]
    again = tmp_path / "again"
    again.mkdir()
    first = str(straight / "out" / "chain_1_kd.keras")
    args = ["distill", "--teacher", first, "--method", "kd", "--seeds", "1", *_TINY]
    code, _, err = main_in_process(args, again, monkeypatch, capsys)
    assert code == 0, err[-2000:]
    alone = json.loads((again / "out" / "results.json").read_text())
    assert alone["results"][1]["accuracies"] == uninterrupted["results"][2]["accuracies"]
    for a, b in zip(
        keras.saving.load_model(again / "out" / "student_kd.keras").get_weights(),
        keras.saving.load_model(straight / "out" / "chain_2_kd.keras").get_weights(),
    ):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
