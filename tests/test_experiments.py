"""benchmarks/experiments.py: resumable runs, teacher reuse, the report.

The runs here are tiny (a few hundred MNIST images, one epoch): they check
the bookkeeping, never the accuracy of the real tables.
"""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
# The runner's bookkeeping is plain Python around one fit; it runs once.
pytestmark = pytest.mark.backend_independent


def _load_runner():
    spec = importlib.util.spec_from_file_location(
        "experiments", ROOT / "benchmarks" / "experiments.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


experiments = _load_runner()


def _needs_mnist():
    from keras_cskd import data

    if not (data.shared_data_folder("mnist") / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("the shared MNIST files are not available")


def _run(tmp_path, capsys, methods="ce,kd", teacher_epochs=1, seeds=("0",)):
    argv = [
        "run", "--recipe", "hinton_mnist", "--methods", methods,
        "--epochs", "1", "--teacher-epochs", str(teacher_epochs),
        "--limit", "256", "--test-limit", "128", "--seeds", *seeds,
        "--results", str(tmp_path / "results"), "--cache", str(tmp_path / "cache"),
    ]  # fmt: skip
    folder = experiments.run(experiments.parse_args(argv))
    return folder, capsys.readouterr().out


@pytest.mark.slow
def test_resume_skips_finished_runs_and_redoes_broken_ones(tmp_path, capsys):
    _needs_mnist()
    folder, out = _run(tmp_path, capsys)
    assert "2 run(s) to do" in out and "training teacher" in out
    ce = (folder / "ce-seed0.json").read_bytes()
    record = json.loads(ce)
    assert record["method"] == "ce" and record["seed"] == 0
    assert len(record["test_accuracy"]) == 1 and 0 <= record["final_errors"] <= 128
    assert record["command"].startswith("KERAS_BACKEND=")

    _, out = _run(tmp_path, capsys)
    assert "every run is finished" in out and "teacher" not in out

    # A new method is the only run; the finished files are left untouched.
    (folder / "kd-seed0.json").write_text('{"truncated": ')  # a file cut short by a kill
    _, out = _run(tmp_path, capsys, methods="ce,kd,mse")
    assert "2 run(s) to do" in out and "reusing teacher" in out
    assert (folder / "ce-seed0.json").read_bytes() == ce
    assert json.loads((folder / "kd-seed0.json").read_text())["method"] == "kd"
    assert json.loads((folder / "mse-seed0.json").read_text())["method"] == "mse"
    assert not list(folder.glob("*.tmp"))


@pytest.mark.slow
def test_changed_teacher_settings_never_reuse_a_stale_teacher(tmp_path, capsys):
    _needs_mnist()
    first, out = _run(tmp_path, capsys, methods="ce")
    assert "training teacher" in out
    second, out = _run(tmp_path, capsys, methods="ce", teacher_epochs=2)
    assert "training teacher" in out and "reusing" not in out
    assert first != second  # another table, another folder
    teachers = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(teachers) == 2
    records = [
        json.loads((first / "teacher.json").read_text()),
        json.loads((second / "teacher.json").read_text()),
    ]
    assert [r["settings"]["epochs"] for r in records] == [1, 2]
    assert len(records[1]["curve"]) == 2

    # A cached teacher whose weights were cut short is trained again, not trusted.
    cached = tmp_path / "cache" / f"teacher-hinton_mnist-{records[0]['key']}"
    (cached / "teacher.weights.h5").write_bytes(b"not an h5 file")
    _, out = _run(tmp_path, capsys, methods="ce,kd")
    assert "unreadable" in out and "training teacher" in out


def _fake_folder(root, values, metric="accuracy"):
    """A results folder written by hand: {method: {seed: final accuracy}}."""
    recipe = experiments.resolve_recipe("fashion_mnist")
    recipe["metric"] = metric
    folder = root / "fashion_mnist-fake"
    folder.mkdir(parents=True)
    (folder / "recipe.json").write_text(
        json.dumps({"recipe": recipe, "key": "fake", "backend": "jax", "methods": {}})
    )
    (folder / "teacher.json").write_text(
        json.dumps({"parameters": 1000, "test_accuracy": 0.93, "test_errors": 700, "seconds": 60})
    )
    for method, per_seed in values.items():
        for seed, accuracy in per_seed.items():
            errors = round((1 - accuracy) * 10000)
            record = {
                "method": method, "seed": seed, "recipe_key": "fake",
                "final_accuracy": accuracy, "final_errors": errors,
                "best_accuracy": accuracy + 0.001, "test_accuracy": [accuracy - 0.01, accuracy],
                "seconds": 10.0, "command": "python benchmarks/experiments.py run",
                "student_parameters": 500,
            }  # fmt: skip
            (folder / f"{method}-seed{seed}.json").write_text(json.dumps(record))
    return folder


def test_report_is_a_function_of_the_result_files(tmp_path):
    ce = {0: 0.880, 1: 0.884, 2: 0.882}
    kd = {0: 0.890, 1: 0.893, 2: 0.892}  # +1.0, +0.9, +1.0 points: consistent
    cskd = {0: 0.885, 1: 0.880, 2: 0.889}  # +0.5, -0.4, +0.7: noise
    results = tmp_path / "results"
    _fake_folder(results, {"ce": ce, "kd": kd, "cskd": cskd})
    args = experiments.parse_args(
        ["report", "--results", str(results), "--out", str(tmp_path / "docs")]
    )
    text = experiments.report(args)
    assert experiments.report(args) == text  # nothing but the files goes in

    rows = {
        line.split(" | ")[0].lstrip("| "): line
        for line in text.splitlines()
        if line.startswith("| ")
    }
    mean = np.mean([88.0, 88.4, 88.2])
    std = np.std([88.0, 88.4, 88.2], ddof=1)
    assert f"{mean:.2f} ± {std:.2f}" in rows["CE (student alone)"]
    diffs = np.array([89.0 - 88.0, 89.3 - 88.4, 89.2 - 88.2])
    assert f"**+{diffs.mean():.2f} ± {diffs.std(ddof=1):.2f}**" in rows["KD (T = 4)"]
    noisy = np.array([88.5 - 88.0, 88.0 - 88.4, 88.9 - 88.2])
    cell = f"+{noisy.mean():.2f} ± {noisy.std(ddof=1):.2f}"
    assert cell in rows["CSKD"] and f"**{cell}**" not in rows["CSKD"]
    assert "better beyond seed noise: KD (T = 4)." in text
    assert "Within noise: CSKD." in text
    assert (tmp_path / "docs" / "img" / "results_fashion_mnist-fake.png").stat().st_size > 0

    # In a page with the markers, only the text between them is replaced.
    page = tmp_path / "docs" / "results.md"
    page.write_text(
        f"# Results\nprose before\n{experiments.START}\nold table\n{experiments.END}\nprose after\n"
    )
    experiments.report(args)
    written = page.read_text()
    assert written.startswith("# Results\nprose before\n") and written.endswith("prose after\n")
    assert "old table" not in written and text in written


def test_paired_difference_against_a_t_test_by_hand():
    values = {0: 3.0, 1: 5.0, 2: 4.0, 3: 4.5}
    baseline = {0: 2.0, 1: 2.0, 2: 2.5, 3: 9.0}
    cell = experiments.paired(values, baseline)
    diffs = np.array([1.0, 3.0, 1.5, -4.5])
    assert cell["n"] == 4
    assert cell["mean"] == pytest.approx(diffs.mean())
    assert cell["std"] == pytest.approx(diffs.std(ddof=1))
    t = abs(diffs.mean()) / (diffs.std(ddof=1) / 2.0)
    assert cell["significant"] is bool(t > 3.182)
    assert experiments.paired({0: 1.0}, {0: 2.0}) is None  # one seed: no noise estimate


def test_settings_hash_is_stable_and_order_free():
    assert experiments.settings_hash({"a": 1, "b": [1, 2]}) == experiments.settings_hash(
        {"b": [1, 2], "a": 1}
    )
    assert experiments.settings_hash({"a": 1}) != experiments.settings_hash({"a": 2})
