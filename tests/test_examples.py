"""Runs every tutorial in `examples/` top to bottom, in a subprocess, in fast
mode (`KERAS_CSKD_FAST=1`), under the current `KERAS_BACKEND`, and checks
that it exits 0 and printed its key result.

The tutorials exercise the library through its public API, which the
backend matrix covers: the module is `backend_independent` (scripts/test.sh
runs it in its first backend's pass only). `backend_agnostic.py` spawns all
three backends itself and needs them installed.

The subprocesses get `OMP_NUM_THREADS=1` unless it is set: on shared CI
cores PyTorch's multi-threaded CPU kernels can run tens of times slower
under contention (this changes speed only, never results).
"""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from subprocess_env import subprocess_env

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
ALL_EXAMPLES = (
    "quickstart.py",
    "cswt_temperatures.py",
    "compare_losses.py",
    "keras_builtin_interop.py",
    "bring_your_own_models.py",
    "backend_agnostic.py",
    "token_distillation.py",
    "pixel_distillation.py",
    "teachers_and_chains.py",
    "language_model_distillation.py",
)
# Tutorials that use TensorFlow whatever their backend (the others run
# without it, as after `pip install ".[jax,demo]"`; see subprocess_env.py).
NEEDS_TENSORFLOW = (
    "bring_your_own_models.py",  # reads an image folder with tf.data
    "backend_agnostic.py",  # runs TensorFlow as one of its three backends
    "language_model_distillation.py",  # keras-hub's SentencePiece trainer reads tf.data
)
HEADER_FIELDS = ("Title", "Author", "Date created", "Last modified", "Description", "Accelerator")
pytestmark = pytest.mark.backend_independent


def _backend():
    backend = os.environ.get("KERAS_BACKEND")
    if backend:
        return backend
    import keras

    return keras.backend.backend()


def _mnist_is_here():
    from keras_cskd.data import shared_data_folder

    return (shared_data_folder("mnist") / "train-images-idx3-ubyte.gz").exists()


# The two tutorials on MNIST read it from ../shared/data/mnist (or
# $KERAS_CSKD_DATA/mnist), which a clone elsewhere lacks: there they stop
# with keras_cskd.data.DataError naming the folder, and their tests skip
# saying so, as tests/test_data.py does.
needs_mnist = pytest.mark.skipif(
    not _mnist_is_here(),
    reason="MNIST is not in ../shared/data/mnist or $KERAS_CSKD_DATA/mnist on this machine",
)


def run_example(name, out_dir, timeout=600):
    env = subprocess_env(
        _backend(),
        tensorflow=name in NEEDS_TENSORFLOW,
        KERAS_CSKD_FAST="1",
        KERAS_CSKD_OUT=str(out_dir),
        MPLBACKEND="Agg",
        PYTHONWARNINGS="ignore",
    )
    env.setdefault("OMP_NUM_THREADS", "1")
    before = sorted(p.name for p in EXAMPLES.iterdir())
    process = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        cwd=out_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert process.returncode == 0, (
        f"{name} exited with {process.returncode}\n--- stdout ---\n"
        f"{process.stdout[-4000:]}\n--- stderr ---\n{process.stderr[-6000:]}"
    )
    assert sorted(p.name for p in EXAMPLES.iterdir()) == before, f"{name} wrote into examples/"
    return process.stdout


def number(pattern, text):
    match = re.search(pattern, text)
    assert match, f"pattern {pattern!r} not found in output:\n{text}"
    return float(match.group(1))


@pytest.mark.parametrize("name", ALL_EXAMPLES)
def test_keras_io_header(name):
    source = (EXAMPLES / name).read_text()
    assert source.startswith('"""\nTitle: ')
    header = source.split('"""')[1]
    for field in HEADER_FIELDS:
        assert re.search(rf"^{field}: \S", header, re.M), f"{name}: no '{field}:' in the header"
    assert "KERAS_CSKD_FAST" in source and "KERAS_CSKD_OUT" in source
    compile(source, name, "exec")


@pytest.mark.slow
def test_quickstart(tmp_path):
    out = run_example("quickstart.py", tmp_path)
    teacher = number(r"Teacher test accuracy: ([0-9.]+)", out)
    student = number(r"Student \(CSKD\) test accuracy: ([0-9.]+)", out)
    assert 0.2 < teacher <= 1.0 and 0.0 <= student <= 1.0
    assert (tmp_path / "quickstart.png").stat().st_size > 0


@pytest.mark.slow
def test_cswt_temperatures(tmp_path):
    out = run_example("cswt_temperatures.py", tmp_path)
    # The hand-made batch: best-agreeing sample gets `low`, the worst `high`.
    assert "sample 0: cosine 1.000 -> T = 2.00" in out
    assert "sample 2: cosine 0.037 -> T = 6.00" in out
    # Per class: T = low + (1 - cosine) * (high - low), on a grid of 0.5.
    cosine = number(r"class 2: cosine ([0-9.]+) -> T", out)
    temperature = number(r"class 2: cosine [0-9.]+ -> T = ([0-9.]+)", out)
    assert abs(temperature - (2.0 + (1.0 - cosine) * 4.0)) <= 0.25
    # Every class got a recorded temperature inside [low, high].
    pairs = re.findall(r"class \d: cosine [0-9.]+ -> [0-9.]+, T ([0-9.]+) -> ([0-9.]+)", out)
    assert len(pairs) == 10, out
    temperatures = [float(t) for pair in pairs for t in pair]
    assert all(2.0 <= t <= 6.0 for t in temperatures)
    assert "T range in the last epoch [2.00, 6.00]" in out
    assert (tmp_path / "cswt_per_class.png").exists()
    assert (tmp_path / "cswt_per_sample.png").exists()


@pytest.mark.slow
def test_compare_losses(tmp_path):
    out = run_example("compare_losses.py", tmp_path)
    for row in (
        "CE only (no teacher)",
        "KL tau=4 (CE 0.1, KD 0.9)",
        "MSE (no CE)",
        "CSKD tau=4 (CE + CSKD)",
        "STKD-style (mixup)",
        "KL tau=1 (no CE)",
        "KL tau=100 (no CE)",
    ):
        accuracy = number(re.escape(row) + r"\s+([0-9.]+)\+-", out)
        assert 0.0 <= accuracy <= 1.0
    assert "Best on this run:" in out
    assert (tmp_path / "compare_losses.png").exists()


@pytest.mark.slow
def test_keras_builtin_interop(tmp_path):
    out = run_example("keras_builtin_interop.py", tmp_path)
    rows = re.findall(
        r"^\s+(\d+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)x$", out, re.M
    )
    assert [r[0] for r in rows] == ["1", "4", "20"], out
    ratios = []
    for _, numpy_value, ours, keras_class, _, ratio in rows:
        # keras-cskd and Keras' KLDivergence() class path match the NumPy textbook value.
        assert float(ours) == pytest.approx(float(numpy_value), rel=1e-3, abs=1e-3)
        assert float(keras_class) == pytest.approx(float(numpy_value), rel=1e-3, abs=1e-3)
        ratios.append(float(ratio))
    # ... and the default LogitsDistillation("kl_divergence") path does not.
    assert max(abs(r - 1.0) for r in ratios) > 0.2, ratios
    assert "LogitsDistillation is off by" in out
    for row in (
        "keras_cskd KLDivergenceDistillation(4)",
        "keras_cskd CosineSimilarityDistillation(4)",
    ):
        assert 0.0 <= number(re.escape(row) + r"\s+([0-9.]+)", out) <= 1.0
    assert (tmp_path / "keras_builtin_interop.png").exists()


@pytest.mark.slow
@needs_mnist
def test_bring_your_own_models(tmp_path):
    out = run_example("bring_your_own_models.py", tmp_path)
    assert "Distiller refused the softmax teacher" in out
    student = number(r"Student test accuracy: ([0-9.]+)", out)
    reloaded = number(r"Reloaded student test accuracy: ([0-9.]+)", out)
    assert reloaded == pytest.approx(student, abs=1e-4)
    assert "same predictions as before saving: True" in out
    assert (tmp_path / "my_teacher.keras").exists()
    assert (tmp_path / "student.keras").exists()
    assert (tmp_path / "bring_your_own_models.png").exists()


@pytest.mark.slow
@pytest.mark.skipif(
    not all(importlib.util.find_spec(name) for name in ("tensorflow", "jax", "torch")),
    reason="backend_agnostic.py runs all three backends: install tensorflow, jax and torch",
)
def test_backend_agnostic(tmp_path):
    out = run_example("backend_agnostic.py", tmp_path, timeout=900)
    rows = {}
    for backend in ("tensorflow", "jax", "torch"):
        match = re.search(rf"^{backend}\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)", out, re.M)
        assert match, f"no result row for {backend}:\n{out}"
        rows[backend] = [float(v) for v in match.groups()]
    formulas = [r[0] for r in rows.values()]
    initial = [r[1] for r in rows.values()]
    # The same formula and the same initial weights give the same loss everywhere.
    assert max(formulas) - min(formulas) < 1e-5
    assert max(initial) - min(initial) < 1e-4 * max(initial)
    assert all(0.0 <= r[3] <= 1.0 for r in rows.values())
    assert (tmp_path / "backend_agnostic.png").exists()


@pytest.mark.slow
def test_token_distillation(tmp_path):
    out = run_example("token_distillation.py", tmp_path)
    assert "% padding" in out
    rows = {}
    for name in (
        "teacher",
        "student, untrained",
        "student, text only (CE)",
        "student, CE + CSKD",
        "student, CE + KD (tau=1)",
    ):
        match = re.search(
            re.escape(name) + r"\s+(\d+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+|-)$", out, re.M
        )
        assert match, f"no row {name!r}:\n{out}"
        rows[name] = match.groups()
    vocabulary = 96
    for _, accuracy, perplexity, _ in rows.values():
        assert 0.0 <= float(accuracy) <= 1.0
        # A perplexity is at least 1; an untrained model's is near the vocabulary size.
        assert 1.0 <= float(perplexity) < 3 * vocabulary
    assert int(rows["teacher"][0]) > 5 * int(rows["student, CE + CSKD"][0])
    assert float(rows["student, text only (CE)"][2]) < float(rows["student, untrained"][2])
    assert (tmp_path / "token_distillation.png").exists()


@pytest.mark.slow
def test_language_model_distillation(tmp_path):
    pytest.importorskip("keras_hub", reason="keras-hub (the [hub] extra) not installed")
    out = run_example("language_model_distillation.py", tmp_path)
    # 16 ids (uint16) and log-probabilities (float16) a token, and the tail.
    assert number(r"top-k cache: \d+ tokens, (\d+) bytes a token", out) == 16 * (2 + 2) + 4
    vocabulary = 257
    rows = {}
    for name in ("teacher", "CE", "forward KL", "CSKD", "forward KL, top-16 cache"):
        weight = "" if name == "teacher" else r" +[0-9.]+"  # the distillation weight
        pattern = "^" + re.escape(name) + weight + r" +([0-9.]+) +([0-9.]+)"
        match = re.search(pattern, out, re.M)
        assert match, f"no row {name!r}:\n{out}"
        rows[name] = [float(value) for value in match.groups()]
    for perplexity, accuracy in rows.values():
        assert 1.0 <= perplexity < 3 * vocabulary and 0.0 <= accuracy <= 1.0
    # One result file per student: an interrupted table resumes.
    assert len(list((tmp_path / "runs").glob("*.json"))) == 4
    assert (tmp_path / "results.json").exists()


@pytest.mark.slow
@needs_mnist
def test_pixel_distillation(tmp_path):
    out = run_example("pixel_distillation.py", tmp_path)
    names = ("teacher", "student, labels only (CE)", "student, CE + CSKD", "student, CE + KD")
    for name in names:
        match = re.search(re.escape(name) + r"\s+(\d+)((?:\s+(?:[0-9.]+|-)){4})$", out, re.M)
        assert match, f"no row {name!r}:\n{out}"
        values = [float(v) for v in match.group(2).split() if v != "-"]
        assert all(0.0 <= v <= 1.0 for v in values), values
    assert (tmp_path / "pixel_distillation.png").exists()


@pytest.mark.slow
def test_teachers_and_chains(tmp_path):
    out = run_example("teachers_and_chains.py", tmp_path)
    for row in (
        r"ensemble \(mean of the softmaxes\): test accuracy ([0-9.]+)",
        r"student distilled from the ensemble: test accuracy ([0-9.]+)",
        r"student of the chain: test accuracy ([0-9.]+)",
        r"born-again generation 2: test accuracy ([0-9.]+)",
    ):
        assert 0.0 <= number(row, out) <= 1.0
    assert "the assistant was not trained by the second Distiller: True" in out
    assert (tmp_path / "born_again_2.keras").stat().st_size > 0
