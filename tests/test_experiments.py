"""benchmarks/experiments.py: the protocol's bookkeeping, not the accuracy
of the real tables.

The smoke runs train on a small synthetic MNIST-format data set written
here (IDX files found through KERAS_CSKD_DATA), one epoch each: they check
resumability, that tuning reads validation numbers only (the same choice
with garbage test labels and images), the parallel mode with a deadline,
and that the report is a function of the result files.
"""

import gzip
import importlib.util
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from subprocess_env import subprocess_env

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "experiments.py"
# The runner is plain Python around fits of the library's public API; it runs once.
pytestmark = pytest.mark.backend_independent


def _load_runner():
    spec = importlib.util.spec_from_file_location("experiments", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


experiments = _load_runner()
SMALL = ["--limit", "240", "--val-limit", "96", "--test-limit", "96"]


def _write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype("uint8").tobytes())


def _synthetic_mnist(root, garbage_test=False):
    """An MNIST-format folder: 720 training images (the last 120 are the
    runner's validation split) and 120 test images, a bright square whose
    place depends on the class, plus noise. `garbage_test`: the same
    training file, test images of pure noise with shuffled labels."""
    rng = np.random.default_rng(0)

    def images(labels):
        x = rng.integers(0, 60, (len(labels), 28, 28))
        for i, label in enumerate(labels):
            row, col = divmod(int(label), 5)
            x[i, 4 + 10 * row : 12 + 10 * row, 1 + 5 * col : 6 + 5 * col] = 255
        return x

    y = np.arange(720) % 10
    rng.shuffle(y)
    y_test = np.arange(120) % 10
    x, x_test = images(y), images(y_test)
    if garbage_test:
        x_test = rng.integers(0, 256, x_test.shape)
        y_test = rng.permutation(y_test)
    folder = Path(root) / "mnist"
    folder.mkdir(parents=True)
    for name, array in (
        ("train-images-idx3-ubyte.gz", x),
        ("train-labels-idx1-ubyte.gz", y),
        ("t10k-images-idx3-ubyte.gz", x_test),
        ("t10k-labels-idx1-ubyte.gz", y_test),
    ):
        _write_idx(folder / name, array)
    return Path(root)


def _run_args(tmp, *extra):
    return experiments.parse_args(
        [
            "run", "--smoke", "--recipes", "hinton_mnist", "--methods", "ce,kd",
            "--teacher-seeds", "0", *SMALL,
            "--results", str(tmp / "results"), "--cache", str(tmp / "cache"), *extra,
        ]
    )  # fmt: skip


def _records(results):
    return {
        path.name: json.loads(path.read_text())
        for path in Path(results).glob("hinton_mnist-*/*.json")
    }


@pytest.mark.slow
def test_smoke_run_resumes_and_tunes_on_validation_only(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KERAS_CSKD_DATA", str(_synthetic_mnist(tmp_path / "data")))
    first = tmp_path / "first"
    plan = experiments.run(_run_args(first, "--seeds", "0", "1"))
    assert not plan.ready and not plan.blocked
    records = _records(first / "results")
    runs = {k: r for k, r in records.items() if "-seed" in k}
    # 2 configurations x 2 methods tuned; CE and KD at defaults and tuned, 2 seeds
    assert sum(r["seed"] == experiments.TUNING_SEED for r in runs.values()) == 4
    assert {r["method"] for r in runs.values()} == {"ce", "kd"}
    for record in runs.values():
        assert len(record["val_errors"]) == len(record["test_errors"]) == 1
        assert record["n_train"] == 240 and record["n_val"] == 96 and record["n_test"] == 96
        assert record["device"]["platform"] == "cpu" and record["versions"]["keras"]
        assert (
            record["command"].startswith("KERAS_BACKEND=") or "experiments.py" in record["command"]
        )
        if record["method"] == "kd":
            assert record["teacher_seed"] == 0 and record["teacher_fingerprint"]
    selection = records["selection.json"]
    assert set(selection) == {"ce", "kd"}
    for entry in selection.values():
        assert len(entry["grid"]) == 2 and entry["chosen"] in [r["config"] for r in entry["grid"]]
        best = max(r["val_accuracy"] for r in entry["grid"])
        chosen = [r for r in entry["grid"] if r["config"] == entry["chosen"]][0]
        assert chosen["val_accuracy"] == best
    teacher = json.loads(next((first / "results" / "teachers").glob("*.json")).read_text())
    assert len(teacher["val_errors"]) == 1 and teacher["train_errors"] >= 0
    capsys.readouterr()

    # A second run finds everything done and changes no file.
    stamps = {p: p.read_bytes() for p in (first / "results").rglob("*.json")}
    experiments.run(_run_args(first, "--seeds", "0", "1"))
    assert "every run is finished" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in (first / "results").rglob("*.json")} == stamps

    # Garbage test images and labels: the same validation numbers, the same choice.
    monkeypatch.setenv(
        "KERAS_CSKD_DATA", str(_synthetic_mnist(tmp_path / "garbage", garbage_test=True))
    )
    second = tmp_path / "second"
    experiments.run(_run_args(second, "--seeds"))  # no seed: the tuning runs only
    garbage = _records(second / "results")
    assert garbage["selection.json"] == selection
    tuning = [k for k in garbage if k.endswith(f"seed{experiments.TUNING_SEED}.json")]
    assert len(tuning) == 4
    for name in tuning:
        assert garbage[name]["val_errors"] == records[name]["val_errors"]
    assert any(garbage[n]["test_errors"] != records[n]["test_errors"] for n in tuning)


@pytest.mark.slow
def test_a_teacher_comes_back_from_its_committed_archive(tmp_path, monkeypatch, capsys):
    # The cache (--cache, ignored by git) does not outlive a checkout; the
    # teacher's weights committed next to its record do, and refill it.
    monkeypatch.setenv("KERAS_CSKD_DATA", str(_synthetic_mnist(tmp_path / "data")))
    results, cache = tmp_path / "results", tmp_path / "cache"
    experiments.run(_run_args(tmp_path, "--methods", "kd", "--seeds"))  # teacher + tuning
    (record_path,) = (results / "teachers").glob("*.json")
    archive = record_path.with_suffix(".npz")
    record_bytes = record_path.read_bytes()
    record = json.loads(record_bytes)
    with np.load(archive) as stored:
        weights = [stored[f"arr_{i}"] for i in range(len(stored.files))]
    assert experiments.fingerprint(weights) == record["fingerprint"]
    assert not list((results / "teachers").glob("*partial*"))

    # A new checkout: no cache. The teacher is not trained again (its record is
    # unchanged), a new student seed runs, and the cache holds the same weights.
    import shutil

    shutil.rmtree(cache)
    monkeypatch.setattr(experiments, "_TEACHERS", {})  # a new process: nothing loaded
    capsys.readouterr()
    experiments.run(_run_args(tmp_path, "--methods", "kd", "--seeds", "0"))
    out = capsys.readouterr().out
    assert "teacher mnist_mlp1200 seed 0 epoch" not in out and "weights are neither" not in out
    assert record_path.read_bytes() == record_bytes
    runs = [r for r in _records(results).values() if r.get("seed") == 0]
    assert runs and all(r["teacher_fingerprint"] == record["fingerprint"] for r in runs)
    (folder,) = cache.glob("teacher-*")
    with np.load(folder / "weights.npz") as cached:
        restored = [cached[f"arr_{i}"] for i in range(len(cached.files))]
    assert experiments.fingerprint(restored) == record["fingerprint"]
    assert np.load(folder / "train_logits.npy").shape == (240, 10)

    # An archive that holds other weights is refused, naming the file.
    np.savez_compressed(archive, *[w + 1.0 for w in weights])
    shutil.rmtree(cache)
    recipe = experiments.resolve_all(_run_args(tmp_path))[0]
    with pytest.raises(RuntimeError, match="does not hold the teacher of"):
        experiments.restore_teacher(recipe, 0, results, cache / "teacher")
    assert not (cache / "teacher").exists()  # nothing half-written into the cache

    # Neither archive nor cache: the plan says where the weights should be.
    archive.unlink()
    capsys.readouterr()
    experiments.run(_run_args(tmp_path, "--methods", "kd", "--seeds", "1", "--plan"))
    assert "weights are neither in" in capsys.readouterr().out


@pytest.mark.slow
def test_an_interrupted_teacher_resumes_and_ends_as_if_never_stopped(tmp_path, monkeypatch, capsys):
    # A teacher takes hours on a CPU: a deadline or a lost session must not
    # lose its epochs, and resuming must not change it (dropout's random
    # state, the input pipeline's epoch and the per-epoch scores included).
    monkeypatch.setenv("KERAS_CSKD_DATA", str(_synthetic_mnist(tmp_path / "data")))
    epochs = ["--methods", "ce", "--teacher-epochs", "6", "--seeds"]

    def teacher_of(root, *extra):
        experiments.run(_run_args(root, *epochs, *extra))
        (path,) = (root / "results" / "teachers").glob("*.json")
        return json.loads(path.read_text())

    straight = teacher_of(tmp_path / "straight")
    assert straight["resumed_at_epochs"] == []

    import keras

    class Interrupted(Exception):
        pass

    real = experiments.resumable_fit_callbacks

    def stopping_after_epoch_2(*args):
        callbacks, progress = real(*args)

        class Stop(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if epoch == 1:  # after the backup of epoch 2 was written
                    raise Interrupted

        return [*callbacks, Stop()], progress

    root = tmp_path / "resumed"
    monkeypatch.setattr(experiments, "resumable_fit_callbacks", stopping_after_epoch_2)
    with pytest.raises(SystemExit, match="1 run"):
        experiments.run(_run_args(root, *epochs))
    assert not list((root / "results" / "teachers").glob("*.json"))
    (backup,) = (root / "cache").glob("teacher-*-in-progress")
    assert len(json.loads((backup / "progress.json").read_text())["epochs"]) == 2
    plan = experiments.run(_run_args(root, *epochs, "--plan"))
    (job,) = [j for j in plan.ready if j["kind"] == "teacher"]
    assert job["epochs_done"] == 2  # the plan's estimate counts the 4 left

    monkeypatch.setattr(experiments, "resumable_fit_callbacks", real)
    capsys.readouterr()
    resumed = teacher_of(root)
    assert "resuming after epoch 2" in capsys.readouterr().out
    assert resumed["resumed_at_epochs"] == [2]
    assert resumed["fingerprint"] == straight["fingerprint"]
    for key in ("val_errors", "test_errors", "train_errors", "train_loss"):
        assert resumed[key] == straight[key], key
    assert len(resumed["train_loss"]) == 6
    assert not backup.exists()  # the finished teacher leaves no backup


@pytest.mark.slow
def test_parallel_workers_stop_at_the_deadline_and_resume(tmp_path):
    data = _synthetic_mnist(tmp_path / "data")
    command = [
        sys.executable, str(SCRIPT), "run", "--smoke", "--recipes", "hinton_mnist",
        "--methods", "ce,kd", "--teacher-seeds", "0", "--seeds", "0", *SMALL,
        "--results", str(tmp_path / "results"), "--cache", str(tmp_path / "cache"),
        "--workers", "2", "--assume", "cpu",
        # A teacher of 300 steps (several seconds of training after its start-up)
        # is still training at the 6-s deadline on any machine: with 1 epoch it
        # finished just at the deadline on a quiet one and nothing was cut.
        "--teacher-epochs", "150",
    ]  # fmt: skip
    env = subprocess_env("jax", KERAS_CSKD_DATA=str(data))
    # Estimates 100x too short: jobs are started that the deadline then cuts.
    # (What shows the cut is the teacher's state, not the wall time, which a
    # busy machine stretches: the run once took longer than a bound of 26 s
    # beside two training workers, and cut the teacher all the same.)
    cut = subprocess.run(
        [*command, "--deadline-minutes", "0.1", "--estimate-scale", "0.01"], env=env,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert cut.returncode == 0, cut.stderr[-3000:]
    assert re.search(r"teacher .* cut short \(it (reruns|resumes after epoch \d+) next", cut.stdout)
    # the teacher stopped unfinished: no record yet (written when it finishes)
    assert not list((tmp_path / "results" / "teachers").glob("*.json"))
    kept = {p: p.read_bytes() for p in (tmp_path / "results").rglob("*.json")}
    for content in kept.values():
        json.loads(content)  # every file complete (atomic writes)
    assert not list((tmp_path / "results").rglob("*.tmp"))

    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "finished for now:" in done.stdout and "0 ready, 0 waiting" in done.stdout
    runs = {k: r for k, r in _records(tmp_path / "results").items() if "-seed" in k}
    assert len(runs) >= 6 and {r["worker"] for r in runs.values()} <= {"w0", "w1"}
    for path, content in kept.items():
        if path.name == "selection.json":
            # A summary that grows as tuning grids finish (the cut run may have
            # chosen only some methods): what it had chosen stays as it was.
            before, after = json.loads(content), json.loads(path.read_text())
            assert {m: after[m] for m in before} == before
        else:
            assert path.read_bytes() == content  # finished before the deadline: not run again
    log = (tmp_path / "cache" / "log.txt").read_text()
    assert "w0: start" in log and "w1: start" in log


def test_a_run_starts_only_when_it_can_finish_before_the_deadline():
    # 24-min runs with 16 min left: the estimate is corrected by this session's
    # measured ratio once a run has finished, so the run would be cut (and its
    # worker's 16 min lost); before that, half the estimate fitting starts it.
    minute = 60.0
    assert not experiments.worth_starting(24 * minute, 16 * minute, calibrated=True)
    assert experiments.worth_starting(24 * minute, 16 * minute, calibrated=False)
    assert experiments.worth_starting(24 * minute, 25 * minute, calibrated=True)
    assert not experiments.worth_starting(24 * minute, 11 * minute, calibrated=False)
    assert experiments.worth_starting(1e9, None, calibrated=True)
    # A teacher keeps its finished epochs: it starts when 3 of its 200 fit.
    hours = 3 * 3600.0
    assert experiments.worth_starting(hours, 4 * minute, calibrated=True, epochs=200)
    assert not experiments.worth_starting(hours, 2 * minute, calibrated=True, epochs=200)


def test_the_estimates_correction_is_the_median_measured_ratio():
    # Two runs recorded at 1,443 s each, started together, took 1,820 and
    # 1,832 s: the correction is their ratio (about 1.27), although it changed
    # between the second's start and its end (it once compounded: 1.60).
    runner = object.__new__(experiments.Parallel)
    runner.ratios = []
    first = {"recorded_estimate": 1443.0, "estimate": 1443.0 * runner.factor()}
    second = {"recorded_estimate": 1443.0, "estimate": 1443.0 * runner.factor()}
    runner.record_time(first, 1820.0)
    runner.record_time(second, 1832.0)
    assert runner.factor() == pytest.approx(1832.0 / 1443.0)
    assert 1443.0 * runner.factor() == pytest.approx(1832.0)
    # runs that diverged stopped early: their times are not counted
    for _ in range(3):
        runner.record_time({"recorded_estimate": 1443.0}, 2.0, diverged=True)
    assert runner.factor() == pytest.approx(1832.0 / 1443.0)


def test_distillation_term_sees_the_unlabelled_images():
    """The low-label row's construction: label -1 with the runner's labelled
    cross-entropy leaves the distillation loss as with every label, while a
    sample weight of 0 would remove those images from it too."""
    import keras

    import keras_cskd

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = rng.integers(0, 3, 64)
    logits = rng.normal(size=(64, 3)).astype("float32") * 3
    unlabelled = np.where(np.arange(64) % 2 == 0, -1, y)

    def distillation_loss(labels, loss="auto", sample_weight=None):
        keras.utils.set_random_seed(0)
        student = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
        model = keras_cskd.Distiller(student, None, keras_cskd.losses.KLDivergenceDistillation())
        model.compile(optimizer=keras.optimizers.SGD(0.0), loss=loss)
        history = model.fit(
            {"x": x, "teacher_logits": logits}, labels, sample_weight=sample_weight,
            batch_size=64, epochs=1, verbose=0, shuffle=False,
        )  # fmt: skip
        return history.history["distillation_loss"][0], history.history["student_loss"][0]

    every = distillation_loss(y)
    partial = distillation_loss(unlabelled, loss=experiments.labelled_cross_entropy)
    assert partial[0] == pytest.approx(every[0], rel=1e-6)
    assert partial[1] != pytest.approx(every[1], rel=1e-3)
    weighted = distillation_loss(y, sample_weight=(unlabelled >= 0).astype("float32"))
    assert weighted[0] != pytest.approx(every[0], rel=1e-3)


# ------------------------------------------------------------------ report
def _fake_results(root, ce, kd, cskd, tuned_kd=None):
    """A results folder written by hand: {seed: test errors} per row."""
    recipe = experiments.resolve_recipe("hinton_mnist", {})
    recipe["methods"] = ["ce", "kd", "cskd"]
    recipe["studies"] = []
    key = experiments.recipe_key(recipe)
    folder = root / f"hinton_mnist-{key}"
    folder.mkdir(parents=True)
    meta = {"format": 2, "recipe": recipe, "key": key, "seeds": [0, 1, 2, 3],
            "teacher_seeds": [0, 1]}  # fmt: skip
    (folder / "recipe.json").write_text(json.dumps(meta))

    def record(method, config, seed, errors):
        return {
            "format": 2, "recipe_key": key, "method": method, "config": config, "seed": seed,
            "final_test_errors": errors, "final_test_accuracy": 1 - errors / 10000,
            "best_test_errors": errors - 2, "n_test": 10000, "n_val": 10000, "n_train": 50000,
            "diverged": False, "mean_temperature": None, "seconds": 30.0, "labelled": None,
            "command": "python benchmarks/experiments.py run --deadline-minutes 7",
            "student_parameters": 1276810,
            "device": {"platform": "gpu", "name": "NVIDIA H200"},
            "versions": {"backend": "jax", "keras": "3.15.1"},
            "val_errors": [errors + 5], "test_errors": [errors],
        }  # fmt: skip

    kd_default = experiments.default_config(recipe, "kd")
    rows = [
        ("ce", experiments.default_config(recipe, "ce"), ce),
        ("kd", kd_default, kd),
        ("cskd", experiments.default_config(recipe, "cskd"), cskd),
    ]
    if tuned_kd:
        rows.append(("kd", {"temperature": 4.0, "weight": 0.5}, tuned_kd))
    for method, config, values in rows:
        for seed, errors in values.items():
            name = f"{method}-{experiments.slug(config)}-seed{seed}.json"
            (folder / name).write_text(json.dumps(record(method, config, seed, errors)))
    grid = [
        {"config": kd_default, "val_accuracy": 0.98},
        {"config": {"temperature": 4.0, "weight": 0.5}, "val_accuracy": 0.985},
    ]
    selection = {
        "kd": {"chosen": {"temperature": 4.0, "weight": 0.5}, "grid": grid},
        "ce": {"chosen": experiments.default_config(recipe, "ce"),
               "grid": [{"config": experiments.default_config(recipe, "ce"),
                         "val_accuracy": 0.97}]},
        "cskd": {"chosen": experiments.default_config(recipe, "cskd"),
                 "grid": [{"config": experiments.default_config(recipe, "cskd"),
                           "val_accuracy": 0.981}]},
    }  # fmt: skip
    (folder / "selection.json").write_text(json.dumps(selection))
    teachers = root / "teachers"
    teachers.mkdir()
    for seed, errors in ((0, 70), (1, 80)):
        name = f"mnist_mlp1200-{experiments.teacher_key(recipe, seed)}-seed{seed}.json"
        (teachers / name).write_text(
            json.dumps(
                {
                    "key": experiments.teacher_key(recipe, seed), "seed": seed,
                    "parameters": 2395210, "final_test_errors": errors,
                    "final_test_accuracy": 1 - errors / 10000, "final_val_errors": errors,
                    "train_errors": 0, "n_test": 10000, "n_val": 10000, "n_train": 50000,
                    "val_errors": [300, 150, 100, errors], "seconds": 120.0,
                    "device": {"platform": "gpu", "name": "NVIDIA H200"},
                    "versions": {"backend": "jax", "keras": "3.15.1"},
                }
            )
        )  # fmt: skip
    return folder


def test_report_is_a_function_of_the_result_files(tmp_path):
    ce = {0: 160, 1: 166, 2: 158, 3: 162}
    kd = {0: 120, 1: 127, 2: 119, 3: 122}  # -40, -39, -39, -40: consistent
    cskd = {0: 150, 1: 175, 2: 150, 3: 170}  # -10, +9, -8, +8: noise
    tuned = {0: 110, 1: 115, 2: 112, 3: 111}
    results = tmp_path / "results"
    _fake_results(results, ce, kd, cskd, tuned)
    args = experiments.parse_args(["report", "--results", str(results), "--out", str(tmp_path)])
    text = experiments.report(args)
    assert experiments.report(args) == text  # nothing but the files goes in
    rows = [line for line in text.splitlines() if line.startswith("| ")]

    def row(label, setting):
        return next(r for r in rows if r.startswith(f"| {label} | {setting} |"))

    diffs = np.array([-40.0, -39, -39, -40])
    half = 3.182 * diffs.std(ddof=1) / 2
    cell = f"**{diffs.mean():+.1f} [{diffs.mean() - half:+.1f}, {diffs.mean() + half:+.1f}]**"
    assert cell in row("KD", "defaults")
    noisy = np.array([-10.0, 9, -8, 8])
    half = 3.182 * noisy.std(ddof=1) / 2
    cell = f"{noisy.mean():+.1f} [{noisy.mean() - half:+.1f}, {noisy.mean() + half:+.1f}]"
    assert cell in row("CSKD", "defaults") and f"**{cell}" not in row("CSKD", "defaults")
    # Gap closed: (CE - KD) / (CE - teachers' mean of 75 errors)
    gap = (np.mean(list(ce.values())) - np.mean(list(kd.values()))) / (161.5 - 75)
    assert f"| {100 * gap:.0f} % |" in row("KD", "defaults")
    # ... over the seeds a row shares with CE, each seed's own teacher: a
    # row of seeds 1 and 3 only (teacher 1, 80 errors) against CE's 164
    folder = next(results.glob("hinton_mnist-*"))
    for seed in (0, 2):
        next(folder.glob(f"cskd-*-seed{seed}.json")).unlink()
    text = experiments.report(args)
    cskd_row = next(r for r in text.splitlines() if r.startswith("| CSKD | defaults |"))
    gap = (np.mean([166, 162]) - np.mean([175, 170])) / (np.mean([166, 162]) - 80)
    assert f"| {100 * gap:.0f} % |" in cskd_row and "| 2 |" in cskd_row
    assert "T = 4, w = 0.5" in row("KD", "tuned") and "112.0 ±" in row("KD", "tuned")
    assert "**T = 4, w = 0.5: 98.50**" in text  # the tuning table marks the choice
    assert "91 % of the gap closed" in text  # the paper's, next to ours
    assert "| 0 | 4 | 70 / 10,000 |" in text  # the teachers' table
    assert "NVIDIA H200 (gpu)" in text
    # the table's own command, not one run's (with its deadline and workers)
    assert "Reproduce: `python benchmarks/experiments.py run --recipes hinton_mnist`" in text
    assert "--deadline-minutes" not in text
    assert (tmp_path / "img").glob("results_hinton_mnist-*.png")
    assert "Left out" not in text

    # A run distilled from an earlier teacher of its seed (retrained since its
    # weights were lost) leaves the table until `run` does it again.
    folder = next(results.glob("hinton_mnist-*"))
    (teacher_path,) = (results / "teachers").glob("*-seed0.json")
    teacher = json.loads(teacher_path.read_text())
    teacher_path.write_text(json.dumps({**teacher, "fingerprint": "the retrained teacher"}))
    kd_path = next(folder.glob("kd-*-seed2.json"))
    kd_run = json.loads(kd_path.read_text())
    kd_path.write_text(
        json.dumps({**kd_run, "teacher_seed": 0, "teacher_fingerprint": "the lost teacher"})
    )
    stale = experiments.report(args)
    assert "Left out: 1 run(s) distilled from an earlier teacher" in stale
    kd_row = next(r for r in stale.splitlines() if r.startswith("| KD | defaults"))
    assert kd_row.endswith("| 3 | 120, 127, 122 |")  # seeds 0, 1 and 3
    kd_path.write_text(
        json.dumps({**kd_run, "teacher_seed": 0, "teacher_fingerprint": "the retrained teacher"})
    )
    assert "Left out" not in experiments.report(args)
    kd_path.write_text(json.dumps(kd_run))
    teacher_path.write_text(json.dumps(teacher))

    # In a page with the markers, only the text between them is replaced.
    page = tmp_path / "results.md"
    page.write_text(
        f"# Results\nprose before\n{experiments.START}\nold table\n{experiments.END}\nprose after\n"
    )
    experiments.report(args)
    written = page.read_text()
    assert written.startswith("# Results\nprose before\n") and written.endswith("prose after\n")
    assert "old table" not in written and text in written


def test_report_labels_runs_that_diverged_or_ended_at_chance(tmp_path):
    ce = {0: 160, 1: 166, 2: 158, 3: 162}
    kd = {0: 120, 1: 127, 2: 119, 3: 9000}  # seed 3 collapsed: finite losses, 10 % accuracy
    cskd = {0: 150, 1: 175, 2: 150, 3: 170}
    results = tmp_path / "results"
    _fake_results(results, ce, kd, cskd)
    (path,) = results.glob("*/cskd-*seed1.json")
    record = json.loads(path.read_text())
    path.write_text(json.dumps(dict(record, diverged=True, final_test_errors=9020,
                                    final_test_accuracy=1 - 9020 / 10000)))  # fmt: skip
    args = experiments.parse_args(["report", "--results", str(results), "--out", str(tmp_path)])
    rows = [line for line in experiments.report(args).splitlines() if line.startswith("| ")]
    assert any(r.startswith("| KD — at chance in 1 run(s) | defaults |") for r in rows)
    # a non-finite loss counts as diverged, not also as at chance
    assert any(r.startswith("| CSKD — diverged in 1 run(s) | defaults |") for r in rows)
    assert any(r.startswith("| CE (student alone) | defaults |") for r in rows)


def test_cswt_mean_temperature_leaves_out_runs_that_did_not_train():
    def run(temperature, accuracy=0.9, diverged=False):
        return {"mean_temperature": temperature, "final_test_accuracy": accuracy,
                "diverged": diverged}  # fmt: skip

    assert experiments.cswt_temperature_text([run(2.2), run(2.4)]) == "2.30"
    # a collapsed run (5.36: the top of CSWT's range) and a diverged one are left out
    runs = [run(2.2), run(2.4), run(5.36, accuracy=0.1), run(4.0, 0.1, diverged=True)]
    assert experiments.cswt_temperature_text(runs) == "2.30 in the 2 run(s) that trained"
    assert experiments.cswt_temperature_text([run(None), run(5.36, accuracy=0.1)]) is None


def test_paired_interval_against_a_t_test_by_hand():
    values = {0: 3.0, 1: 5.0, 2: 4.0, 3: 4.5}
    baseline = {0: 2.0, 1: 2.0, 2: 2.5, 3: 9.0}
    cell = experiments.paired(values, baseline)
    diffs = np.array([1.0, 3.0, 1.5, -4.5])
    half = 3.1824 * diffs.std(ddof=1) / 2.0  # t(0.975, 3) = 3.18245
    assert cell["n"] == 4
    assert cell["mean"] == pytest.approx(diffs.mean())
    assert cell["low"] == pytest.approx(diffs.mean() - half, abs=1e-4)
    assert cell["high"] == pytest.approx(diffs.mean() + half, abs=1e-4)
    assert cell["significant"] is bool(abs(diffs.mean()) > half)
    assert experiments.paired({0: 1.0}, {0: 2.0}) is None  # one seed: no noise estimate


def test_every_method_gets_the_same_grid_size_and_its_defaults():
    for name in experiments.RECIPES:
        recipe = experiments.resolve_recipe(name, {})
        if not recipe["tune"]:
            continue
        for method in recipe["methods"]:
            configs = experiments.grid(recipe, method)
            assert len(configs) == 4, method
            assert configs[0] == experiments.default_config(recipe, method)
            assert len({experiments.slug(c) for c in configs}) == 4
    ce = experiments.grid(experiments.resolve_recipe("hinton_mnist", {}), "ce")
    assert {tuple(sorted(c)) for c in ce} == {("label_smoothing", "weight_decay")}
    assert experiments.TUNING_SEED not in experiments.SEEDS
    hinton = experiments.resolve_recipe("hinton_mnist", {})
    assert experiments.default_config(hinton, "kd")["temperature"] == 20.0


def test_cheap_students_get_10_seeds_after_every_recipes_first_5(tmp_path):
    """The MLP students (minutes a run) are planned with 10 seeds, the conv
    student with 5; seeds 5-9 come after every recipe's first 5 seeds and
    studies; `--seeds` still chooses the seeds of every recipe."""
    folders = ["--results", str(tmp_path / "results"), "--cache", str(tmp_path / "cache")]
    plan = experiments.run(experiments.parse_args(["run", "--plan", *folders]))
    jobs = [j for j in plan.ready + plan.blocked if j["kind"] == "student"]
    jobs = [j for j in jobs if j["stage"] != "tune"]

    def seeds(name):
        return {j["seed"] for j in jobs if j["recipe"]["name"] == name}

    for name in ("hinton_mnist", "mnist_lowlabel", "hinton_mnist_60k", "fashion_mlp"):
        assert seeds(name) == set(range(10)), name
    for name in ("hinton_mnist_lr_high", "hinton_mnist_lr_low"):
        assert seeds(name) == set(range(5)), name
    # and `extra_seeds` for some rows: seeds 5-9 (the lost teachers' 2-4 never run)
    assert seeds("hinton_mnist_long") == set(range(10))
    assert seeds("fashion_conv") == set(range(10))
    ordered = sorted(
        plan.ready, key=lambda j: experiments.priority(j["recipe"], j["stage"], j["seed"])
    )
    extra = [i for i, j in enumerate(ordered) if j["kind"] == "student" and 5 <= j["seed"] <= 9]
    # all at the end, among only the teachers they need (seeds 2 and 3)
    tail = [ordered[i] for i in range(extra[0], len(ordered)) if i not in extra]
    assert tail and all(j["kind"] == "teacher" and j["seed"] in (2, 3) for j in tail)
    recipe_json = next((tmp_path / "results").glob("hinton_mnist-*/recipe.json"))
    assert json.loads(recipe_json.read_text())["seeds"] == list(range(10))
    chosen = experiments.run(experiments.parse_args(["run", "--plan", "--seeds", "0", *folders]))
    students = [j for j in chosen.ready if j["kind"] == "student" and j["stage"] != "tune"]
    assert students and {j["seed"] for j in students} == {0}
    # ... and the table keeps its 10 seeds (the report shows every row's)
    assert json.loads(recipe_json.read_text())["seeds"] == list(range(10))


def test_extra_seeds_run_only_the_rows_of_their_methods(tmp_path, capsys):
    # Fashion-MNIST's DIST and DKD rows replace their lost seeds 2-4 by
    # seeds 5-7, with CE and KD (paired); then the studies run at seeds 5-9
    # with every row they are compared with. Logit MSE keeps its 5 seeds.
    plan = experiments.run(
        experiments.parse_args(
            ["run", "--plan", "--recipes", "fashion_conv,fashion_mlp",
             "--results", str(tmp_path / "results"), "--cache", str(tmp_path / "cache")]
        )
    )  # fmt: skip
    capsys.readouterr()
    seeds = {}
    jobs = [j for j in plan.ready + plan.blocked if j["recipe"]["name"] == "fashion_conv"]
    for job in jobs:
        if job["kind"] == "student" and job["stage"] in ("final", "study"):
            seeds.setdefault((job["method"], job["row"]), set()).add(job["seed"])
    for method in ("dist", "dkd"):
        for row in ("default", "tuned"):
            assert seeds[(method, row)] == set(range(8)), (method, row)
    for method in ("ce", "kd", "cskd", "cskd_cswt"):
        for row in ("default", "tuned"):
            assert seeds[(method, row)] == set(range(10)), (method, row)
    for row in ("cskd_w4", "cskd_tmean", "cswt_class", "stkd"):
        (key,) = [k for k in seeds if k[1] == row]
        assert seeds[key] == set(range(10)), row
    assert seeds[("mse", "default")] == seeds[("mse", "tuned")] == set(range(5))
    teachers = sorted(j["seed"] for j in jobs if j["kind"] == "teacher")
    assert teachers == [0, 1, 2, 3]
    recipe = experiments.resolve_recipe("fashion_conv", {})
    assert experiments.table_seeds(recipe) == list(range(10))
    assert [experiments.teacher_seed_for(s, [0, 1]) for s in range(5, 10)] == [3, 2, 3, 2, 3]
    # The order: the first group (DIST and DKD's seeds 5-7, with CE and
    # KD), then the MLP study's seeds 5-9, then the second group, seed by
    # seed; the teachers they need before them.
    mlp = experiments.resolve_recipe("fashion_mlp", {})

    def rank(recipe, method, seed):
        return experiments.priority(recipe, "final", seed, method)

    first = [rank(recipe, m, s) for m in ("ce", "kd", "dist", "dkd") for s in (5, 6, 7)]
    second = [rank(recipe, m, s) for m in ("cskd", "cskd_cswt", "stkd") for s in range(5, 10)]
    second += [rank(recipe, m, s) for m in ("ce", "kd") for s in (8, 9)]
    cheap = [rank(mlp, m, s) for m in ("ce", "kd", "cskd") for s in range(5, 10)]
    teacher = experiments.priority(recipe, "teacher", 3)
    assert teacher < min(first) and max(first) < min(cheap) and max(cheap) < min(second)
    assert rank(recipe, "stkd", 5) < rank(recipe, "ce", 8) < rank(recipe, "cskd", 9)
    assert experiments.priority(recipe, "study", 2, "stkd") < min(first)
    # the 200-epoch MNIST probe: CE and KD, seeds 5-9 for its lost 2-4,
    # after the Fashion-MNIST MLP study's seeds 5-9, before the studies' group
    long = experiments.resolve_recipe("hinton_mnist_long", {})
    args = experiments.parse_args(["run"])
    assert experiments.method_seeds(long, "kd", args) == list(range(10))
    assert experiments.method_seeds(long, "ce", args) == list(range(10))
    assert max(cheap) < rank(long, "kd", 8) < min(second)


def test_a_seed_runs_under_the_one_backend_its_recipe_names(tmp_path, capsys, monkeypatch):
    # Fashion-MNIST's conv seeds 5-9 train under TensorFlow, the MLP study's
    # and the 200-epoch probe's seeds 8-9 under JAX (their other seeds'),
    # every other seed under any backend: a runner leaves the others' runs
    # for a runner under their backend, and says so.
    def plan_under(backend):
        monkeypatch.setenv("KERAS_BACKEND", backend)
        plan = experiments.run(
            experiments.parse_args(
                ["run", "--plan", "--recipes", "fashion_conv,fashion_mlp",
                 "--results", str(tmp_path / "results"), "--cache", str(tmp_path / "cache")]
            )
        )  # fmt: skip
        return plan, capsys.readouterr().out

    def ce(plan, recipe, seed):
        for name in ("ready", "blocked"):
            for job in getattr(plan, name):
                if (job["recipe"]["name"], job.get("method"), job["seed"]) == (recipe, "ce", seed):
                    if job.get("row") == "default":
                        return name, job.get("other_backend")
        raise AssertionError((recipe, seed))

    plan, out = plan_under("jax")
    assert ce(plan, "fashion_conv", 0) == ("ready", None)
    assert [ce(plan, "fashion_conv", s) for s in range(5, 10)] == [("blocked", "tensorflow")] * 5
    assert ce(plan, "fashion_mlp", 9) == ("ready", None)
    elsewhere = [j for j in plan.blocked if j.get("other_backend") == "tensorflow"]
    assert {j["seed"] for j in elsewhere} == set(range(5, 10))
    assert f", {len(elsewhere)} run(s) for KERAS_BACKEND=tensorflow (run again under it)" in out
    assert "under KERAS_BACKEND=tensorflow]" in out
    plan, out = plan_under("tensorflow")
    assert ce(plan, "fashion_conv", 0) == ("ready", None)
    assert [ce(plan, "fashion_conv", s) for s in range(5, 10)] == [("ready", None)] * 5
    assert ce(plan, "fashion_mlp", 9) == ("blocked", "jax")
    assert ce(plan, "fashion_mlp", 5) == ("ready", None)
    long = experiments.resolve_recipe("hinton_mnist_long", {})
    assert [experiments.seed_backend(long, s) for s in (0, 7, 8, 9)] == [None, None, "jax", "jax"]
    conv = experiments.resolve_recipe("fashion_conv", {})
    assert experiments.reproduce_text(conv).startswith(
        "`KERAS_BACKEND=jax python benchmarks/experiments.py run --recipes fashion_conv` and "
        "`KERAS_BACKEND=tensorflow python benchmarks/experiments.py run --recipes fashion_conv` "
        "(seeds 5, 6, 7, 8, 9 run only under tensorflow; resumable"
    )
    plain = experiments.resolve_recipe("hinton_mnist", {})
    assert experiments.reproduce_text(plain).startswith(
        "`python benchmarks/experiments.py run --recipes hinton_mnist` (resumable"
    )
    # A run handed to a process of another backend stops before it trains.
    import keras

    recipe = experiments.resolve_recipe("fashion_mlp", {})
    other = "jax" if keras.backend.backend() != "jax" else "tensorflow"
    recipe["seed_backends"] = {other: [5]}
    job = experiments.Job(kind="student", recipe=recipe, method="ce", config={}, seed=5)
    with pytest.raises(RuntimeError, match=f"seed 5 trains under KERAS_BACKEND={other}"):
        experiments.train_student(job, experiments.parse_args(["run"]), print)


def test_seeds_5_to_9_get_teachers_of_their_own():
    pair = experiments.teacher_seed_for
    assert [pair(s, [0, 1]) for s in range(10)] == [0, 1, 0, 1, 0, 3, 2, 3, 2, 3]
    assert [pair(s, [0]) for s in range(10)] == [0] * 10  # a one-teacher study keeps it
    assert pair(experiments.TUNING_SEED, [0, 1]) == 0
    assert experiments.pairing_text([0, 1], range(5)) == (
        "each seed paired with teacher seed `seed % 2`"
    )
    assert experiments.pairing_text([0, 1], range(10)).endswith(
        "; seeds 5-9 with teacher seed `2 + seed % 2`"
    )
    # the tuning seed is in no row: no "seeds 100-104" block
    assert experiments.pairing_text([0, 1], [*range(10), experiments.TUNING_SEED]).endswith(
        "; seeds 5-9 with teacher seed `2 + seed % 2`"
    )
    assert experiments.pairing_text([0], range(10)) == "each with teacher seed 0"
    # a table of seeds 5-9 only names their teachers
    assert (
        experiments.pairing_text([0, 1], range(5, 10))
        == "seeds 5-9 with teacher seed `2 + seed % 2`"
    )


def test_a_teacher_without_weights_blocks_only_the_runs_that_need_it(tmp_path, capsys):
    # Teachers 0 and 1 have records but no weights (neither archive nor
    # cache): their finished runs stay finished, a new run that needs them
    # waits, and so does CE where it would pair with nothing; seeds 5-9 wait
    # for teachers 2 and 3, which train, and CE runs there.
    results = tmp_path / "results"
    folder = _fake_results(results, ce={0: 160}, kd={0: 110}, cskd={})
    recipe = experiments.resolve_recipe("hinton_mnist", {})
    teachers = {}
    for path in (results / "teachers").glob("*.json"):
        record = json.loads(path.read_text())
        record["fingerprint"] = f"weights of teacher {record['seed']}"
        path.write_text(json.dumps(record))
        teachers[record["seed"]] = record
    for method, teacher in (("ce", None), ("kd", teachers[0])):
        config = experiments.default_config(recipe, method)
        path = folder / f"{method}-{experiments.slug(config)}-seed0.json"
        record = json.loads(path.read_text())
        record["run_key"] = experiments.run_key(recipe, method, config, 0, teacher)
        path.write_text(json.dumps(record))
    capsys.readouterr()
    plan = experiments.run(
        experiments.parse_args(
            ["run", "--plan", "--recipes", "hinton_mnist", "--methods", "ce,kd",
             "--results", str(results), "--cache", str(tmp_path / "cache")]
        )
    )  # fmt: skip
    out = capsys.readouterr().out
    assert out.count("weights are neither in") == 2
    # the two teachers, and the runs that need them, are counted as what
    # they are, not as runs that wait, and cost nothing in the plan's groups
    needing = [job for job in plan.blocked if job.get("teacher_missing")]
    waiting = len(plan.blocked) - 2 - len(needing)
    assert {job["teacher_seed"] for job in needing if not job.get("unpaired")} == {0, 1}
    assert {job["method"] for job in needing if job.get("unpaired")} == {"ce"}
    assert (
        f"{waiting} waiting, 2 teacher(s) without weights and {len(needing)} run(s) that need"
        " them (see the note)"
    ) in out
    assert "teacher 0's weights are missing" in out and "teacher 1's weights are missing" in out
    assert not re.search(r"^  teachers\s+0\.0 min", out, re.MULTILINE)

    def state(kind, seed, method=None, row="default"):
        for name in ("done", "ready", "blocked"):
            for job in getattr(plan, name):
                if (
                    job["kind"] == kind
                    and job["seed"] == seed
                    and (kind == "teacher" or (job["method"] == method and job.get("row") == row))
                ):
                    return name, job
        raise AssertionError((kind, seed, method))

    assert [state("teacher", t)[0] for t in range(4)] == ["blocked", "blocked", "ready", "ready"]
    assert state("student", 0, "kd")[0] == "done" and state("student", 0, "ce")[0] == "done"
    name, job = state("student", 2, "kd")
    assert name == "blocked" and job["teacher_missing"]
    # CE needs no teacher, but at seed 2 it would pair with nothing: it waits
    name, job = state("student", 2, "ce")
    assert name == "blocked" and job["unpaired"]
    assert "every run it pairs with needs a teacher without weights" in out
    name, job = state("student", 5, "kd")
    assert name == "blocked" and job["teacher_seed"] == 3 and not job.get("teacher_missing")
    assert state("student", 5, "ce")[0] == "ready"


def test_plan_runs_teachers_first_and_tuned_rows_after_tuning(tmp_path, capsys):
    args = experiments.parse_args(
        ["run", "--plan", "--assume", "gpu", "--workers", "14",
         "--results", str(tmp_path / "results"), "--cache", str(tmp_path / "cache")]
    )  # fmt: skip
    plan = experiments.run(args)
    out = capsys.readouterr().out
    assert not plan.done
    first = sorted(
        plan.ready, key=lambda j: experiments.priority(j["recipe"], j["stage"], j["seed"])
    )
    # 2 data sets x 2 seeds, and the 60,000-image study's one teacher
    assert [j["kind"] for j in first[:5]] == ["teacher"] * 5
    later = [i for i, j in enumerate(first) if j["kind"] == "teacher"][5:]
    # the MNIST teacher-quality probe's one conv-net teacher (seed 0), then ...
    probe = [i for i in later if first[i]["recipe"]["teacher"]["name"] == "mnist_conv_net"]
    assert [first[i]["seed"] for i in probe] == [0]
    later = [i for i in later if i not in probe]
    # ... teachers 2 and 3 of both data sets, for the cheap tables' seeds 5-9 ...
    assert sorted(first[i]["seed"] for i in later) == [2, 2, 3, 3]
    # ... come after every table's first five seeds, before those seeds 5-9
    seeds_5_to_9 = [i for i, j in enumerate(first) if j["kind"] == "student" and j["seed"] >= 5]
    assert min(later) > 5 and max(later) < max(seeds_5_to_9)
    assert all(j["method"] == "ce" for j in first[5:] if j["kind"] == "student")
    tuned = [j for j in plan.blocked if j["kind"] == "student" and j["config"] is None]
    assert tuned and all(j["stage"] in ("final", "study") for j in tuned)
    assert "config chosen after tuning" in out and "min on 14 worker(s)" in out
    assert not list((tmp_path / "results").rglob("*-seed*.json"))  # --plan runs nothing


def test_settings_hash_is_stable_and_order_free():
    assert experiments.settings_hash({"a": 1, "b": [1, 2]}) == experiments.settings_hash(
        {"b": [1, 2], "a": 1}
    )
    assert experiments.settings_hash({"a": 1}) != experiments.settings_hash({"a": 2})


@pytest.mark.slow
def test_a_probe_replays_the_first_epochs_of_a_run(tmp_path, monkeypatch):
    """benchmarks/divergence_probe.py re-runs the first epochs of a run with
    its learning rate scaled: at scale 1 its first epoch is the run's first
    epoch (same seed, teacher and schedule), and at scale 0 nothing moves."""
    monkeypatch.setenv("KERAS_CSKD_DATA", str(_synthetic_mnist(tmp_path / "data")))
    args = _run_args(tmp_path, "--seeds", "0", "--epochs", "2")
    experiments.run(args)
    (recipe,) = experiments.resolve_all(args)
    config = experiments.default_config(recipe, "kd")
    job = experiments.student_job(recipe, "kd", config, 0, "final", None, args.results, [0])
    full = json.loads(job.path.read_text())
    assert len(full["val_errors"]) == 2

    replay = experiments.Job(job, lr_scale=1.0, epochs_to_run=1)
    record = experiments.train_student(replay, args, print)
    assert record["epochs"] == 2 and record["epochs_run"] == 1
    assert record["lr"] == recipe["student"]["lr"]
    assert record["val_errors"] == full["val_errors"][:1]
    assert record["train_loss"] == pytest.approx(full["train_loss"][:1], rel=1e-6)

    frozen = experiments.Job(job, lr_scale=0.0, epochs_to_run=1)
    frozen = experiments.train_student(frozen, args, print)
    assert frozen["lr"] == 0.0
    import keras

    keras.utils.set_random_seed(0)  # the student's initialisation, untrained
    splits = experiments.load_splits(recipe)
    shape = splits["train"][0].shape[1:]
    untrained = experiments.build_network(recipe["student"], shape, "student")
    assert frozen["val_errors"] == [experiments.predict_errors(untrained, *splits["val"])]


def test_a_probe_leaves_a_case_to_its_seeds_backend(tmp_path, monkeypatch, capsys):
    """A probe case whose seed trains under another backend (the recipe's
    seed_backends) is left for that backend, said so, and not replayed."""
    import keras

    spec = importlib.util.spec_from_file_location(
        "divergence_probe", ROOT / "benchmarks" / "divergence_probe.py"
    )
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    other = next(b for b in ("jax", "tensorflow") if b != keras.backend.backend())
    monkeypatch.setattr(probe, "CASES", [("fashion_conv", "stkd", {"temperature": 4.0}, 5, 2)])
    monkeypatch.setattr(probe.experiments, "seed_backend", lambda recipe, seed: other)

    def must_not_train(*args, **kwargs):
        raise AssertionError("a case of another backend was replayed")

    monkeypatch.setattr(probe.experiments, "train_student", must_not_train)
    args = probe.argparse.Namespace(out=str(tmp_path), results=str(tmp_path), cache=str(tmp_path))
    probe.run(args)
    printed = capsys.readouterr().out
    assert f"left for KERAS_BACKEND={other}" in printed
    assert printed.count("left for") == len(probe.LR_SCALES)
    assert not list(tmp_path.glob("*.json"))


def test_cswt_mean_temperature_comes_from_a_run_that_trained(tmp_path):
    """The `cskd_tmean` study's fixed T is CSWT's mean temperature in a
    cskd_cswt run that trained: the default configuration's first, else the
    other grid configurations'; collapsed or diverged runs are skipped."""
    from types import SimpleNamespace

    recipe = experiments.resolve_recipe("fashion_conv", {})
    teachers = {0: {"fingerprint": "t0"}, 1: {"fingerprint": "t1"}}
    args = SimpleNamespace(seeds=[0, 1], teacher_seeds=[0, 1])
    plan = SimpleNamespace(results=tmp_path)
    default = experiments.default_config(recipe, "cskd_cswt")
    other = [c for c in experiments.grid(recipe, "cskd_cswt") if c != default]

    def write(config, seed, mean_temperature, val_accuracy, diverged=False):
        job = experiments.student_job(recipe, "cskd_cswt", config, seed, "", None, tmp_path, [0, 1])
        key = experiments.run_key(recipe, "cskd_cswt", config, seed, teachers[job["teacher_seed"]])
        record = {
            "format": experiments.FORMAT,
            "run_key": key,
            "diverged": diverged,
            "mean_temperature": mean_temperature,
            "final_val_accuracy": val_accuracy,
        }
        experiments.write_json(job.path, record)

    def chosen():
        return experiments.Plan._cswt_mean_temperature(plan, recipe, args, teachers)

    assert chosen() is None  # nothing run yet: the study waits
    write(default, experiments.TUNING_SEED, 5.3553, 0.097)  # collapsed to chance
    write(other[1], experiments.TUNING_SEED, 2.2509, 0.92)
    assert chosen() == 2.25
    write(other[0], experiments.TUNING_SEED, 3.0, 0.95, diverged=True)
    assert chosen() == 2.25
    write(default, 1, 2.4149, 0.9)  # the default configuration, a reported seed
    assert chosen() == 2.41
    write(default, experiments.TUNING_SEED, 2.2871, 0.91)  # its tuning run, trained
    assert chosen() == 2.29


def test_a_run_of_some_methods_keeps_the_others_selections(tmp_path):
    """`run --methods kd` rewrites KD's entry of selection.json and keeps
    the entries of the methods it did not plan (the report reads them)."""
    from types import SimpleNamespace

    recipe = experiments.resolve_recipe("hinton_mnist", {})
    path = experiments.folder_of(tmp_path, recipe) / "selection.json"
    dist = {"chosen": {"temperature": 4.0, "weight": 1.0}, "grid": [{"val_accuracy": 0.98}]}
    old_kd = {"chosen": {"temperature": 20.0, "weight": 0.9}, "grid": []}
    experiments.write_json(path, {"kd": old_kd, "dist": dist})
    new_kd = ({"temperature": 4.0, "weight": 0.5}, [{"val_accuracy": 0.99}])
    plan = SimpleNamespace(
        selections={("hinton_mnist", "kd"): new_kd, ("hinton_mnist", "ce"): (None, None)}
    )
    experiments.write_selections(plan, [recipe], SimpleNamespace(results=tmp_path))
    written = json.loads(path.read_text())
    assert set(written) == {"kd", "dist"}
    assert written["kd"] == {"chosen": new_kd[0], "grid": new_kd[1]}
    assert written["dist"] == dist


def _tiny_teacher_and_images(seed=0, n=150):
    import keras

    rng = np.random.default_rng(seed)
    x = (rng.integers(0, 256, (n, 8, 8, 1)) / 255.0).astype("float32")
    y = rng.integers(0, 4, n)
    keras.utils.set_random_seed(seed)
    teacher = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(6, 3, activation="relu"),
            keras.layers.BatchNormalization(),  # inference mode in both paths
            keras.layers.Flatten(),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(4),
        ]
    )
    return teacher, x, y


def test_per_epoch_targets_are_the_live_teachers_outputs(tmp_path):
    """An augmented recipe's cached targets: every batch's `teacher_logits`
    is the teacher's output on that batch's augmented images (the images a
    live teacher would see), a new augmentation each epoch; a second build
    computes nothing."""
    import keras

    teacher, x, y = _tiny_teacher_and_images()
    augmentation = {"shift": 2, "flip": True}
    targets = experiments.EpochTargets(tmp_path / "t", teacher, x, 3, augmentation, batch_size=64)
    assert targets.build(2) == 3 and targets.build(2) == 0  # data epochs 0, 1, 2
    cached = experiments.make_batches(x, y, 64, 3, augmentation, epoch_logits=targets)
    plain = experiments.make_batches(x, y, 64, 3, augmentation)
    assert len(cached) == len(plain) == 3
    seen = []
    for _ in range(2):
        for i in range(len(plain)):
            (inputs, y_cached), (images, y_plain) = cached[i], plain[i]
            np.testing.assert_array_equal(inputs["x"], images)
            np.testing.assert_array_equal(y_cached, y_plain)
            live = keras.ops.convert_to_numpy(teacher(images, training=False))
            np.testing.assert_allclose(inputs["teacher_logits"], live, rtol=1e-5, atol=1e-5)
            seen.append(images)
        cached.on_epoch_end()
        plain.on_epoch_end()
    assert not np.array_equal(seen[0], seen[3])  # epoch 2 is augmented anew
    # Not the unaugmented images' logits.
    assert not np.allclose(targets(0), teacher.predict(x, verbose=0), atol=1e-3)


def test_a_student_on_per_epoch_targets_trains_as_with_the_live_teacher(tmp_path):
    """Two epochs of KD with the teacher live in the Distiller and with
    `EpochTargets`: the same student weights to float rounding."""
    import keras

    import keras_cskd

    teacher, x, y = _tiny_teacher_and_images(n=128)
    teacher.trainable = False
    augmentation = {"shift": 1, "flip": False}
    targets = experiments.EpochTargets(tmp_path / "t", teacher, x, 5, augmentation)
    targets.build(2)
    weights = []
    for live in (True, False):
        keras.utils.set_random_seed(1)
        student = keras.Sequential(
            [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(4)]
        )
        distiller = keras_cskd.Distiller(
            student, teacher if live else None, keras_cskd.losses.KLDivergenceDistillation(4.0)
        )
        distiller.compile(optimizer=keras.optimizers.SGD(0.5))
        initial = [np.asarray(w) for w in student.get_weights()]
        batches = experiments.make_batches(
            x, y, 32, 5, augmentation, epoch_logits=None if live else targets
        )
        distiller.fit(batches, epochs=2, verbose=0)
        weights.append([np.asarray(w) for w in student.get_weights()])
    assert np.abs(weights[0][0] - initial[0]).max() > 1e-3  # training moved it
    for live_w, cached_w in zip(*weights):
        np.testing.assert_allclose(cached_w, live_w, rtol=1e-4, atol=1e-5)


def test_workers_share_the_epochs_they_compute(tmp_path):
    """While another process holds an epoch's lock, a builder computes the
    other epochs, then waits for that one and keeps what the other wrote."""
    import fcntl
    import threading

    teacher, x, _ = _tiny_teacher_and_images(n=40)
    targets = experiments.EpochTargets(tmp_path / "t", teacher, x, 0, {"shift": 1, "flip": True})
    targets.folder.mkdir(parents=True)
    other = open(targets.path(0).with_suffix(".lock"), "w")
    fcntl.flock(other, fcntl.LOCK_EX)
    result = {}
    builder = threading.Thread(target=lambda: result.update(computed=targets.build(2)))
    builder.start()
    deadline = time.time() + 60
    while not (targets.path(1).exists() and targets.path(2).exists()) and time.time() < deadline:
        time.sleep(0.05)
    assert builder.is_alive()  # waiting for epoch 0
    written_by_other = np.full((40, 4), 7.0, dtype="float32")
    np.save(targets.path(0), written_by_other)
    fcntl.flock(other, fcntl.LOCK_UN)
    other.close()
    builder.join(60)
    assert result == {"computed": 2}
    np.testing.assert_array_equal(targets(0), written_by_other)


def test_the_60k_study_trains_on_every_training_image_with_one_teacher(tmp_path, monkeypatch):
    """`hinton_mnist_60k` trains teachers and students on the validation
    images too (the paper's data), with its own single teacher seed whatever
    the command line says; the other recipes' keys do not change."""
    monkeypatch.setenv("KERAS_CSKD_DATA", str(_synthetic_mnist(tmp_path / "data")))
    study = experiments.resolve_recipe("hinton_mnist_60k", {})
    main = experiments.resolve_recipe("hinton_mnist", {})
    assert "all_training_images" not in main["data"]
    assert experiments.recipe_key(main) == "7dc416ab9c"  # the committed table's folder
    assert experiments.teacher_key(study, 0) != experiments.teacher_key(main, 0)
    splits = experiments.load_splits(study)
    x_main, _ = experiments.load_splits(main)["train"]
    x_all, _ = splits["train"]
    x_val, _ = splits["val"]
    assert len(x_main) == 600 and len(x_all) == 720 and len(x_val) == 120
    np.testing.assert_array_equal(x_all[600:], x_val)  # validation images are trained on
    assert experiments.n_train(study) == 60000 and experiments.n_train(main) == 50000

    args = experiments.parse_args(
        ["run", "--plan", "--recipes", "hinton_mnist_60k", "--teacher-seeds", "0", "1",
         "--results", str(tmp_path / "results"), "--cache", str(tmp_path / "cache")]
    )  # fmt: skip
    plan = experiments.run(args)
    jobs = plan.ready + plan.blocked
    assert [j["seed"] for j in jobs if j["kind"] == "teacher"] == [0]
    students = [j for j in jobs if j["kind"] == "student"]
    assert {j["method"] for j in students} == {"ce", "kd"} and len(students) == 20  # 10 seeds
    assert {j["teacher_seed"] for j in students if j["method"] == "kd"} == {0}

    run = experiments.parse_args(
        ["run", "--smoke", "--recipes", "hinton_mnist_60k", *SMALL, "--seeds", "0", "1",
         "--epochs", "1", "--teacher-epochs", "1",
         "--results", str(tmp_path / "results"), "--cache", str(tmp_path / "cache")]
    )  # fmt: skip
    experiments.run(run)
    records = [json.loads(p.read_text()) for p in (tmp_path / "results").glob("*60k*/*seed*.json")]
    assert len(records) == 4 and {r["n_train"] for r in records} == {240}
    assert {r["teacher_seed"] for r in records if r["method"] == "kd"} == {0}
    report = experiments.parse_args(
        ["report", "--results", str(tmp_path / "results"), "--out", str(tmp_path)]
    )
    text = experiments.report(report)
    assert "(each with teacher seed 0)" in text and "seed % 2" not in text
    assert "the validation images are among the training images" in text


def test_counts_name_teachers_without_weights_that_nothing_needs():
    plan = object.__new__(experiments.Plan)
    plan.done, plan.ready = [{}], []
    plan.blocked = [{"weights_missing": True}, {"weights_missing": True}]
    assert plan.counts() == (
        "1 done, 0 ready, 0 waiting, 2 teacher(s) without weights (no run left needs them)"
        " (see the note)"
    )
    plan.blocked.append({"teacher_missing": True})
    assert plan.counts().endswith(
        "2 teacher(s) without weights and 1 run(s) that need them (see the note)"
    )


def _smoke_run_at_seed_5(tmp_path, monkeypatch, *names):
    """A smoke run of the seed-5-9 studies `names` at seed 5 (teacher 3),
    under whatever backend runs the tests (their `seed_backends` lifted):
    [(recipe name, record)] and the report's text."""
    monkeypatch.setenv("KERAS_CSKD_DATA", str(_synthetic_mnist(tmp_path / "data")))
    for name in names:
        monkeypatch.delitem(experiments.RECIPES[name], "seed_backends")
    folders = ["--results", str(tmp_path / "results"), "--cache", str(tmp_path / "cache")]
    run = experiments.parse_args(
        ["run", "--smoke", "--recipes", ",".join(names), *SMALL, "--seeds", "5",
         "--epochs", "1", "--teacher-epochs", "1", *folders]
    )  # fmt: skip
    experiments.run(run)
    runs = [
        (path.parent.name.rsplit("-", 1)[0], json.loads(path.read_text()))
        for name in names
        for path in (tmp_path / "results").glob(f"{name}-*/*seed5.json")
    ]
    report = experiments.parse_args(["report", *folders[:2], "--out", str(tmp_path)])
    return runs, experiments.report(report)


def _student_changes(study, main):
    """The student settings a study changes from the main table's."""
    return {k for k in study["student"] if study["student"][k] != main["student"].get(k)}


def test_committed_tables_keep_their_keys():
    """A recipe key names a table's folder of committed result files: a new
    setting (the optimiser study's `optimizer`) must leave them alone."""
    committed = {
        "hinton_mnist": "7dc416ab9c",
        "fashion_conv": "2a7912ef98",
        "mnist_lowlabel": "193750109f",
        "fashion_mlp": "03ecab04f5",
        "hinton_mnist_60k": "dc3971d1eb",
        "hinton_mnist_long": "25f3c23c68",
        "hinton_mnist_lr_high": "bf4765e60a",
        "hinton_mnist_lr_low": "7854d8275b",
        "hinton_mnist_adam": "0466776f06",
        "hinton_mnist_jitter": "a712639bdd",
        "hinton_mnist_conv_teacher": "5aa93236fa",
        "hinton_mnist_he_init": "bd2d9849fa",
        "hinton_mnist_no_momentum": "9dc645a2a8",
        "hinton_mnist_fit": "d9f72bf82f",
        "hinton_mnist_jitter_fit": "9382c9b7ee",
        "hinton_mnist_conv_teacher_fit": "07f4fd5a6f",
        "hinton_mnist_wide_student": "d02ba03e06",
        "hinton_mnist_warmup": "de19a522d6",
    }
    for name, key in committed.items():
        assert experiments.recipe_key(experiments.resolve_recipe(name, {})) == key, name
        assert (experiments.DEFAULT_RESULTS / f"{name}-{key}").is_dir(), name


def test_make_optimizer_builds_sgd_or_adam_with_cosine_decay():
    import keras

    sgd = experiments.make_optimizer(0.05, 2, 10)
    adam = experiments.make_optimizer(1e-3, 2, 10, "adam")
    assert isinstance(sgd, keras.optimizers.SGD) and sgd.momentum == 0.9
    assert isinstance(adam, keras.optimizers.Adam)
    for optimizer, lr in ((sgd, 0.05), (adam, 1e-3)):
        config = optimizer.get_config()["learning_rate"]
        schedule = keras.optimizers.schedules.deserialize(config)
        assert isinstance(schedule, keras.optimizers.schedules.CosineDecay)
        np.testing.assert_allclose(float(schedule(0)), lr, rtol=1e-6)
        np.testing.assert_allclose(float(schedule(10)), lr / 2, rtol=1e-5)  # half-way
        np.testing.assert_allclose(float(schedule(20)), 0.0, atol=1e-12)
    with pytest.raises(ValueError, match="optimizer='rmsprop'"):
        experiments.make_optimizer(0.05, 2, 10, "rmsprop")
    # the momentum study: no momentum at the same steady-state step
    plain = experiments.make_optimizer(0.5, 2, 10, "sgd", momentum=0.0)
    assert isinstance(plain, keras.optimizers.SGD) and plain.momentum == 0.0
    study = experiments.resolve_recipe("hinton_mnist_no_momentum", {})
    main = experiments.resolve_recipe("hinton_mnist", {})
    changed = _student_changes(study, main)
    assert changed == {"momentum", "lr"}
    lr, momentum = study["student"]["lr"], study["student"]["momentum"]
    assert lr * (1 - 0.9) == pytest.approx(main["student"]["lr"]) and momentum == 0.0
    assert experiments.optimizer_text(study["student"]).startswith(
        "SGD without momentum, batch 128, learning rate 0.5 with cosine decay to 0"
    )
    assert experiments.optimizer_text(main["student"]).startswith("SGD with momentum 0.9,")

    # the warm-up study: 0 -> lr linearly over the first epochs, then the
    # cosine from lr to 0 over the rest (4 epochs of 10 steps, 1 of warm-up)
    warm = experiments.make_optimizer(0.05, 4, 10, warmup_epochs=1)
    schedule = keras.optimizers.schedules.deserialize(warm.get_config()["learning_rate"])
    for step, expected in ((0, 0.0), (5, 0.025), (10, 0.05), (25, 0.025), (40, 0.0)):
        np.testing.assert_allclose(float(schedule(step)), expected, rtol=1e-5, atol=1e-9)
    study = experiments.resolve_recipe("hinton_mnist_warmup", {})
    assert _student_changes(study, main) == {"warmup_epochs"} and study["measure_fit"]
    assert experiments.optimizer_text(study["student"]).startswith(
        "SGD with momentum 0.9, batch 128, learning rate 0.05 after a linear warm-up from 0 "
        "over 5 epochs, with cosine decay to 0"
    )


def test_reinitialize_kernels_draws_he_normal_kernels_and_keeps_the_rest():
    import keras

    keras.utils.set_random_seed(0)
    recipe = experiments.resolve_recipe("hinton_mnist_he_init", {})
    main = experiments.resolve_recipe("hinton_mnist", {})
    changed = _student_changes(recipe, main)
    assert changed == {"kernel_initializer"} and recipe["methods"] == ["ce", "kd"]
    model = experiments.build_network(recipe["student"], (28, 28, 1), "student")
    before = [np.array(w) for w in model.get_weights()]
    experiments.reinitialize_kernels(model, None)  # the main table's students
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)
    experiments.reinitialize_kernels(model, "he_normal")
    kernels = [layer.kernel for layer in model.layers if getattr(layer, "kernel", None) is not None]
    assert [tuple(k.shape) for k in kernels] == [(784, 800), (800, 800), (800, 10)]
    for kernel in kernels:
        values = np.asarray(keras.ops.convert_to_numpy(kernel), dtype="float64")
        fan_in = values.shape[0]
        # He-normal: a normal of sd sqrt(2 / fan_in), truncated at 2 sd
        # (Keras' variance scaling corrects the truncation's shrinkage)
        np.testing.assert_allclose(values.std(), np.sqrt(2.0 / fan_in), rtol=0.05)
        assert np.abs(values).max() <= 2 * np.sqrt(2.0 / fan_in) / 0.87962566 + 1e-6
    biases = [w for w, old in zip(model.get_weights(), before) if w.ndim == 1]
    assert biases and all(np.all(b == 0) for b in biases)
    glorot = [np.std(old) for old in before if old.ndim == 2]
    assert glorot[0] < 0.8 * np.sqrt(2.0 / 784)  # Glorot-uniform's were smaller


def test_the_optimiser_and_jitter_probes(tmp_path, monkeypatch):
    """`hinton_mnist_adam` trains its students with Adam, `hinton_mnist_jitter`
    on jittered images with the teacher's targets on those images; both run
    CE and KD at T = 20 at seeds 5-9 only (teachers 3, 2, 3, 2, 3) under
    JAX, and the report names the optimiser and the jitter."""
    adam = experiments.resolve_recipe("hinton_mnist_adam", {})
    jitter = experiments.resolve_recipe("hinton_mnist_jitter", {})
    main = experiments.resolve_recipe("hinton_mnist", {})
    for study in (adam, jitter):
        assert experiments.table_seeds(study) == [5, 6, 7, 8, 9]
        assert study["methods"] == ["ce", "kd"]
        assert experiments.default_config(study, "kd") == {"temperature": 20.0, "weight": 0.9}
        assert [experiments.seed_backend(study, s) for s in range(5, 10)] == ["jax"] * 5
        # one change each to the main table's student
        changed = _student_changes(study, main)
        assert changed == ({"optimizer", "lr"} if study is adam else {"augment"})
    assert experiments.teacher_targets(jitter, "kd") == "per epoch"
    assert experiments.teacher_targets(adam, "kd") == "cached"
    # the teacher-quality probe: the main table's student, one conv-net teacher
    conv = experiments.resolve_recipe("hinton_mnist_conv_teacher", {})
    assert conv["student"] == main["student"] and experiments.table_seeds(conv) == [5, 6, 7, 8, 9]
    assert experiments.recipe_teacher_seeds(conv, experiments.parse_args(["run"])) == [0]
    assert conv["teacher"]["model"] == "conv_net" and conv["dataset"] == "mnist"

    # A smoke run of both at seed 5 (teacher 3), under whatever backend runs the tests.
    runs, text = _smoke_run_at_seed_5(
        tmp_path, monkeypatch, "hinton_mnist_adam", "hinton_mnist_jitter"
    )
    records = {(name, r["method"]): r for name, r in runs}
    assert set(records) == {(n, m) for n in ("hinton_mnist_adam", "hinton_mnist_jitter")
                            for m in ("ce", "kd")}  # fmt: skip
    assert records[("hinton_mnist_jitter", "kd")]["teacher_targets"] == "per epoch"
    assert records[("hinton_mnist_adam", "kd")]["teacher_targets"] == "cached"
    assert {r["teacher_seed"] for r in records.values() if r["method"] == "kd"} == {3}
    assert "(Adam with Keras' defaults, batch 128, learning rate 0.001 with cosine decay" in text
    # every seed is in 5-9: the pairing names only their teachers
    assert "(seeds 5-9 with teacher seed `2 + seed % 2`)" in text
    assert "inputs translated by up to 2 pixels, the distillation targets computed on" in text
    assert "(SGD with momentum 0.9, batch 128, learning rate 0.05 with cosine decay" in text


def _fit_reference(student, teacher, labels, temperature):
    """fit_statistics' numbers by hand: Python floats and loops."""
    kl, squares, cells = 0.0, 0.0, 0
    for s_row, t_row in zip(student.tolist(), teacher.tolist()):
        s_mean, t_mean = sum(s_row) / len(s_row), sum(t_row) / len(t_row)
        for s, t in zip(s_row, t_row):
            squares += ((s - s_mean) - (t - t_mean)) ** 2
            cells += 1
        s_norm = sum(math.exp(v / temperature) for v in s_row)
        t_norm = sum(math.exp(v / temperature) for v in t_row)
        for s, t in zip(s_row, t_row):
            p = math.exp(t / temperature) / t_norm
            q = math.exp(s / temperature) / s_norm
            kl += p * math.log(p / q)
    s_top = [row.index(max(row)) for row in student.tolist()]
    t_top = [row.index(max(row)) for row in teacher.tolist()]
    y = labels.tolist()
    return {
        "errors": sum(s != c for s, c in zip(s_top, y)),
        "teacher_errors": sum(t != c for t, c in zip(t_top, y)),
        "disagreements": sum(s != t for s, t in zip(s_top, t_top)),
        "errors_where_teacher_right": sum(s != c and t == c for s, t, c in zip(s_top, t_top, y)),
        "logit_rms": math.sqrt(squares / cells),
        "kl": kl / len(y),
    }


def test_fit_statistics_against_a_reference_by_hand():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 64)
    teacher = rng.normal(0.0, 3.0, (64, 10))
    teacher[np.arange(64), labels] += 4.0  # a teacher that is mostly right
    student = (teacher + rng.normal(0.0, 2.0, teacher.shape)).astype("float32")
    stats = experiments.fit_statistics(student, teacher.astype("float32"), labels)
    assert stats["images"] == 64
    for temperature in (1.0, 4.0, 20.0):
        expected = _fit_reference(
            student.astype("float64"), teacher.astype("float32").astype("float64"),
            labels, temperature,
        )  # fmt: skip
        assert stats["kl"][f"{temperature:g}"] == pytest.approx(expected["kl"], rel=1e-9)
    for key in ("errors", "teacher_errors", "disagreements", "errors_where_teacher_right"):
        assert stats[key] == expected[key], key
    assert stats["logit_rms"] == pytest.approx(expected["logit_rms"], rel=1e-9)
    # the counts are not all trivial: the noise moves some top classes
    assert 0 < stats["disagreements"] < 64 and 0 < stats["teacher_errors"] < 64

    # two classes by hand: teacher (1/2, 1/2), student (3/4, 1/4) at T = 1
    # -> KL = 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3); centred logits differ
    # by (ln 3 / 2, -ln 3 / 2)
    hand = experiments.fit_statistics([[math.log(3.0), 0.0]], [[0.0, 0.0]], [1], [1.0])
    assert hand["kl"] == {"1": pytest.approx(0.5 * math.log(4.0 / 3.0), rel=1e-12)}
    assert hand["logit_rms"] == pytest.approx(math.log(3.0) / 2, rel=1e-12)
    # a tie picks the first class, as argmax does: the teacher "says" 0, wrong
    assert (hand["errors"], hand["teacher_errors"], hand["disagreements"]) == (1, 1, 0)

    # logits of a thousand: finite, and the KL of a confident mistake is
    # the logit gap (log-softmax, not a softmax's underflow to 0)
    extreme = experiments.fit_statistics([[0.0, 1000.0]], [[1000.0, 0.0]], [0], [1.0])
    assert extreme["kl"]["1"] == pytest.approx(1000.0, rel=1e-12)
    assert extreme["errors_where_teacher_right"] == 1
    same = experiments.fit_statistics([[1000.0, 0.0]] * 3, [[1000.0, 0.0]] * 3, [0, 0, 1])
    assert same["disagreements"] == 0 and all(v == 0.0 for v in same["kl"].values())
    assert same["logit_rms"] == 0.0 and same["errors"] == same["teacher_errors"] == 1


def test_the_fit_studies_repeat_their_tables_runs_and_measure_the_fit(tmp_path, monkeypatch):
    """hinton_mnist_fit, _jitter_fit and _conv_teacher_fit: the main table's,
    the jitter probe's and the conv-teacher probe's recipes (the same
    seeds, backend and teachers) with `measure_fit`, which gives the CE
    runs their seed's teacher too; the runs record their fit and the
    report shows it."""
    pairs = {
        "hinton_mnist_fit": "hinton_mnist",
        "hinton_mnist_jitter_fit": "hinton_mnist_jitter",
        "hinton_mnist_conv_teacher_fit": "hinton_mnist_conv_teacher",
    }
    args = experiments.parse_args(["run"])
    for name, repeated in pairs.items():
        study = experiments.resolve_recipe(name, {})
        original = experiments.resolve_recipe(repeated, {})
        assert study["measure_fit"] and not original.get("measure_fit")
        assert study["student"] == original["student"] and study["teacher"] == original["teacher"]
        assert experiments.table_seeds(study) == [5, 6, 7, 8, 9]
        assert [experiments.seed_backend(study, s) for s in range(5, 10)] == ["jax"] * 5
        assert experiments.default_config(study, "kd") == {"temperature": 20.0, "weight": 0.9}
        assert experiments.recipe_teacher_seeds(study, args) == experiments.recipe_teacher_seeds(
            original, args
        )
        # measure_fit is in the key: the repeat gets its own folder
        assert experiments.recipe_key(study) != experiments.recipe_key(original)
        ce = experiments.student_job(study, "ce", {}, 7, "final", "default", tmp_path, [0, 1])
        assert ce["teacher_seed"] == experiments.teacher_seed_for(7, [0, 1]) == 3
    main = experiments.resolve_recipe("hinton_mnist_fit", {})
    assert [(m, c) for _, _, m, c, _ in main["studies"]] == [
        ("kd", {"temperature": 4.0, "weight": 0.5})
    ]
    # the size study: the main table's student at the teacher's width, measured too
    wide = experiments.resolve_recipe("hinton_mnist_wide_student", {})
    plain_main = experiments.resolve_recipe("hinton_mnist", {})
    assert _student_changes(wide, plain_main) == {"kwargs"}
    assert wide["student"]["kwargs"] == {"hidden": [1200, 1200]} and wide["measure_fit"]
    assert wide["student"]["kwargs"]["hidden"] == wide["teacher"]["kwargs"]["hidden"]
    assert experiments.table_seeds(wide) == [5, 6, 7, 8, 9]
    # without measure_fit, CE takes no teacher, as before
    plain = experiments.resolve_recipe("hinton_mnist", {})
    assert (
        experiments.student_job(plain, "ce", {}, 7, "final", "", tmp_path, [0, 1])["teacher_seed"]
        is None
    )

    # A smoke run at seed 5 (teacher 3), under whatever backend runs the tests.
    runs, text = _smoke_run_at_seed_5(tmp_path, monkeypatch, "hinton_mnist_fit")
    records = {(r["method"], r["config"].get("temperature")): r for _, r in runs}
    assert set(records) == {("ce", None), ("kd", 20.0), ("kd", 4.0)}
    assert {r["teacher_seed"] for r in records.values()} == {3}
    for record in records.values():
        fit = record["fit"]
        assert fit["train"]["images"] == 240 and fit["test"]["images"] == 96
        # the run's own scoring and the fit's agree on the test errors
        assert fit["test"]["errors"] == record["final_test_errors"]
        assert set(fit["train"]["kl"]) == {"1", "4", "20"}
    # the main table names each row's setting (a study row is no default)
    assert "| CE (student alone) | defaults | ls = 0, wd = 0; paper: 146 |" in text
    assert "| KD at the tuned T = 4, w = 0.5 | study | T = 4, w = 0.5 |" in text
    assert "How closely the students follow their teacher at the final epoch" in text
    assert "| KD at the tuned T = 4, w = 0.5 | T = 4, w = 0.5 | training (240) |" in text
    assert text.count("| test (96) |") == 3
