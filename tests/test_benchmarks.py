"""Smoke tests of the benchmarks: each mode runs end to end in seconds and
prints its report. No timing is asserted (the numbers of a two-step run on a
shared CPU mean nothing); see docs/performance.md for measurements. What is
checked against independent references: the PyTorch peer's parameter counts
(the Keras models') and loss (tests/reference.py), and XLA's memory figures
against the bytes the step must at least hold."""

import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import reference
from subprocess_env import subprocess_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(ROOT, "benchmarks")
NUMBER = r"-?\d+\.\d+"
# Scripts, not library code paths: run once (scripts/test.sh), with the slow tests.
pytestmark = [pytest.mark.backend_independent, pytest.mark.slow]


def run_script(name, *args, backend, timeout=300):
    """Runs benchmarks/`name` on `backend` (None: the script uses no Keras)."""
    process = subprocess.run(
        [sys.executable, os.path.join(BENCHMARKS, name), *args],
        env=subprocess_env(backend, TF_CPP_MIN_LOG_LEVEL="2"),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = process.stdout
    assert process.returncode == 0, output[-3000:] + process.stderr[-6000:]
    return output


def test_step_time_smoke_prints_ratios(tmp_path):
    backend = keras.backend.backend()
    report = tmp_path / "report.json"
    output = run_script(
        "step_time.py",
        *("--backend", backend, "--pair", "mlp", "--steps", "2", "--rounds", "1"),
        *("--warmup", "1", "--batch-size", "16", "--threads", "1", "--json", str(report)),
        backend=backend,
    )
    assert f"backend {backend}" in output
    for label in (
        "(a) student step",
        "(b) teacher forward",
        "(c) keras_cskd kd",
        "(c) keras_cskd cskd+cswt",
        "(c) keras_cskd stkd",
        "(e) keras_cskd cached logits",
        "(p) PyTorch eager KD fp32",
        "(p) PyTorch eager KD bf16",
    ):
        assert label in output, label
    # The peer's models were checked against the Keras models' parameter counts.
    assert "(p) torch peer teacher: 4,298,852 parameters (= Keras)" in output
    assert "(p) torch peer student: 812,388 parameters (= Keras)" in output
    for ratio in (
        r"c/\(a\+b\) \[kd\]",
        r"c/\(a\+b\) \[cskd\]",
        r"c/\(a\+b\) \[cskd\+cswt\]",
        r"c/\(a\+b\) \[stkd\]",
        r"e/a \[cached logits\]",
        r"c/p \[kd vs torch fp32\]",
        r"c/p \[stkd vs torch bf16\]",
        r"e/p \[cached logits vs torch fp32\]",
    ):
        assert re.search(rf"^RATIO {ratio} = {NUMBER} \(wall\)$", output, re.M), ratio
    if hasattr(keras, "distillation"):
        assert re.search(rf"^RATIO d/\(a\+b\) \[keras.distillation\] = {NUMBER}", output, re.M)
        assert re.search(rf"^RATIO c/d \[kd\] = {NUMBER}", output, re.M)
    # No training step was traced again after warm-up (compiled backends).
    if backend != "torch":
        rows = [line for line in output.splitlines() if line.startswith("(")]
        assert rows and all(line.split()[-1] in ("0", "n/a") for line in rows), rows

    # The JSON report holds the printed ratios, and perf_table.py tabulates it.
    data = json.loads(report.read_text())
    ms = data["ms_per_step"]
    floor = ms["a"] + ms["b"]
    assert data["ratios"]["c/(a+b) [kd]"] == pytest.approx(ms["c:kd"] / floor)
    assert data["ratios"]["c/p [kd vs torch fp32]"] == pytest.approx(ms["c:kd"] / ms["p:fp32"])
    table = run_script("perf_table.py", str(report), backend=None)
    assert f"| ms/step | {backend} fp32 |" in table
    assert re.search(rf"^\| c/p \[kd vs torch fp32\] \| {NUMBER} \|$", table, re.M)


def test_scaling_smoke_reports_time_and_memory(tmp_path):
    classes, batch, hidden = 12, 4, 8
    out = tmp_path / "scaling.json"
    plot = tmp_path / "scaling.png"
    output = run_script(
        "scaling.py",
        *("--classes", str(classes), "--batch-sizes", str(batch), "--hidden", str(hidden)),
        *("--losses", "kd,cskd_cswt_class,dkd", "--steps", "1", "--rounds", "1"),
        *("--json", str(out), "--plot", str(plot)),
        backend="jax",
        timeout=240,
    )
    rows = json.loads(out.read_text())["rows"]
    assert [row["config"] for row in rows] == ["student", "kd", "cskd_cswt_class", "dkd"]
    for row in rows:
        assert re.search(rf"^\s+{classes}\s+{batch} {row['config']}\s", output, re.M), row
    student = rows[0]
    assert student["time_ratio"] == 1.0 and student["peak_ratio"] == 1.0
    # The step must hold at least the student's weights and SGD momentum
    # (float32, (32 + 1) * 8 + (8 + 1) * 12 each), the batch and the labels.
    weights = (32 + 1) * hidden + (hidden + 1) * classes
    at_least = 4 * (2 * weights + batch * 32 + batch)
    assert all(row["peak_bytes"] >= at_least for row in rows)
    # With cached logits the Distiller's step also reads the (B, C) teacher logits.
    assert all(row["peak_bytes"] >= student["peak_bytes"] for row in rows)
    assert plot.stat().st_size > 0


def test_loss_passes_smoke_prints_one_row_per_loss():
    output = run_script(
        "loss_passes.py",
        *("--classes", "12", "--batch-size", "4", "--losses", "kd,dkd"),
        *("--steps", "1", "--rounds", "1"),
        backend="jax",
        timeout=240,
    )
    rows = dict(
        (m.group(1), (float(m.group(2)), int(m.group(3))))
        for m in re.finditer(rf"^(\w+)\s+({NUMBER})\s+(\d+)\s+{NUMBER}$", output, re.M)
    )
    assert list(rows) == ["student", "kd", "dkd"], output
    # Each step writes (B, C) arrays (the logits, their gradient); the
    # Distiller's also reads the teacher's and computes the loss on them.
    assert all(outputs >= 2 for _, outputs in rows.values())
    assert rows["kd"][1] > rows["student"][1]


def test_step_time_fashion_conv_pair_is_the_results_pages_models(tmp_path):
    """`--pair fashion_conv` times the Fashion-MNIST recipe's teacher and
    student (docs/results.md: 428,202 and 106,010 parameters at 28x28x1),
    and asks for --torch-peer none (no PyTorch peer of these models)."""
    sys.path.insert(0, BENCHMARKS)
    try:
        import step_time
    finally:
        sys.path.remove(BENCHMARKS)
    teacher_fn, student_fn, _ = step_time.build_pair("fashion_conv", 10)
    teacher, student = teacher_fn(), student_fn()
    assert tuple(teacher.input_shape[1:]) == tuple(student.input_shape[1:]) == (28, 28, 1)
    # count_params(), as the results' records count (BatchNorm statistics included)
    assert teacher.count_params() == 428_202
    assert student.count_params() == 106_010
    # the pair's own class count by default; another one is built when asked
    fashion_args = ["--pair", "fashion_conv", "--torch-peer", "none"]
    assert step_time.parse_args(fashion_args).num_classes == 10
    assert step_time.parse_args(["--pair", "resnet"]).num_classes == 100
    assert step_time.build_pair("fashion_conv", 3)[1]().output_shape == (None, 3)
    process = subprocess.run(
        [sys.executable, os.path.join(BENCHMARKS, "step_time.py"), "--pair", "fashion_conv"],
        env=subprocess_env(keras.backend.backend(), TF_CPP_MIN_LOG_LEVEL="2"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.returncode != 0
    assert "--torch-peer none" in process.stdout + process.stderr


def test_loss_passes_counts_the_entry_computations_outputs():
    sys.path.insert(0, BENCHMARKS)
    try:
        import loss_passes
    finally:
        sys.path.remove(BENCHMARKS)
    text = "\n".join(
        [
            "%fused_computation (p: f32[4,12]) -> f32[4,12] {",
            "  ROOT %e = f32[4,12]{1,0} exponential(%p)",
            "}",
            "ENTRY %main (x: f32[4,12]) -> f32[4] {",
            "  %x = f32[4,12]{1,0} parameter(0)",
            "  %f = f32[4,12]{1,0} fusion(%x), kind=kLoop, calls=%fused_computation",
            "  %m = (f32[4,12]{1,0}, f32[4]{0}, f32[4,12]{1,0}) fusion(%f), kind=kLoop",
            "  %b = f32[48]{0} bitcast(%f)",
            "  ROOT %r = f32[4]{0} reduce(%f), dimensions={1}",
            "}",
        ]
    )
    assert loss_passes.count_outputs(text, 4, 12) == 3


def test_torch_overhead_smoke_prints_profile():
    output = run_script(
        "torch_overhead.py",
        *("--losses", "kd,cskd,cskd+cswt,dkd", "--steps", "2", "--rounds", "1"),
        *("--profile-steps", "1", "--batch-size", "8"),
        backend="torch",
        timeout=240,
    )
    rows = {}
    distillers = ["(c) keras_cskd cskd", "(c) keras_cskd cskd+cswt", "(c) keras_cskd dkd"]
    for label in ["(a) student train_step", *distillers]:
        match = re.search(rf"^{re.escape(label)}\s+{NUMBER}\s+\S+\s+(\d+)\s+(\d+)", output, re.M)
        assert match, (label, output)
        rows[label] = int(match.group(1)), int(match.group(2))
    assert "(b) teacher predict_step" in output and "distillation_loss" in output
    assert re.search(rf"^EXCESS c:kd: [-+]{NUMBER} ms over \(a\)\+\(b\)", output, re.M)
    # Host reads (.item(), a device sync each on a GPU): the Distiller adds
    # none to those of Keras' own student step (its optimizer reads one).
    student_syncs = rows["(a) student train_step"][1]
    assert [rows[label][1] for label in distillers] == [student_syncs] * len(distillers)


# ---------------------------------------------------------- the PyTorch peer
@pytest.fixture(scope="module")
def torch_peer():
    sys.path.insert(0, BENCHMARKS)
    try:
        import torch_peer as module
    finally:
        sys.path.remove(BENCHMARKS)
    return module


@pytest.mark.parametrize("pair", ["mlp", "resnet"])
def test_torch_peer_has_the_keras_models_parameter_counts(torch_peer, pair):
    from keras_cskd import models

    with keras.StatelessScope(initialize_variables=False):
        if pair == "mlp":
            keras_models = [
                models.mlp((32, 32, 3), 100, hidden=hidden) for hidden in ((1024, 1024), (256,))
            ]
        else:
            keras_models = [models.resnet32x4(num_classes=100), models.resnet8x4(num_classes=100)]
    torch_models = torch_peer.build_pair(pair, 100)
    for keras_model, torch_model in zip(keras_models, torch_models, strict=True):
        count = models.count_parameters(keras_model)
        assert torch_peer.count_parameters(torch_model) == count


def test_torch_peer_kd_loss_matches_reference(torch_peer):
    import torch

    rng = np.random.default_rng(3)
    t = rng.normal(size=(5, 7)).astype("float32") * 3
    s = rng.normal(size=(5, 7)).astype("float32") * 3
    value = torch_peer.kd_loss(torch.as_tensor(t), torch.as_tensor(s), 4.0)
    np.testing.assert_allclose(float(value), reference.kd_loss(t, s, 4.0), rtol=1e-5)


def test_torch_peer_step_lowers_the_loss_on_a_fixed_batch(torch_peer):
    import torch

    torch.manual_seed(0)
    teacher, student = torch_peer.build_pair("mlp", 4, input_shape=(4, 4, 1))
    x = torch.randn(8, 1, 4, 4)
    y = torch.arange(8) % 4
    step = torch_peer.KDStep(teacher, student, x, y)
    first = step.run(1)
    last = step.run(20)
    assert last < first
    assert all(not p.requires_grad for p in teacher.parameters())
    with pytest.raises(ValueError, match="precision must be 'fp32' or 'bf16'"):
        torch_peer.KDStep(teacher, student, x, y, precision="fp16")


def test_vocabulary_cost_smoke_prints_one_row_per_vocabulary():
    backend = keras.backend.backend()
    script = os.path.join(ROOT, "benchmarks", "vocabulary_cost.py")
    process = subprocess.run(
        [sys.executable, script, "--backend", backend, "--positions", "8"]
        + ["--vocabularies", "50", "70", "--rounds", "1"],
        env=subprocess_env(backend, TF_CPP_MIN_LOG_LEVEL="2"),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-6000:]
    assert f"backend {backend}, 8 positions" in process.stdout
    for vocabulary in (50, 70):
        row = re.search(
            rf"^\s+{vocabulary}\s+[0-9.]+((?:\s+[0-9.]+ ms [0-9.]+x){{4}})$", process.stdout, re.M
        )
        assert row, process.stdout


def test_chunked_memory_smoke_reports_every_step_and_chunking_holds_less(tmp_path):
    plot = tmp_path / "chunked.png"
    output = run_script(
        "chunked_memory.py",
        *("--tokens", "64", "256", "--vocabularies", "300", "--student-dim", "8"),
        *("--teacher-dim", "8", "--chunk-size", "16", "--time", "--rounds", "1"),
        *("--plot", str(plot)),
        backend="jax",
    )
    assert "64, 256 tokens" in output
    peaks = {}
    for tokens in (64, 256):
        for step in ("ce", "kd", "kd+ce", "chunked kd", "chunked kd+ce", "cskd", "chunked cskd"):
            pattern = rf"^\s+{tokens}\s+300\s+{re.escape(step)}\s+({NUMBER})(\s+{NUMBER}){{5}}$"
            row = re.search(pattern, output, re.M)
            assert row, output
            peaks[tokens, step] = float(row.group(1))
    for tokens in (64, 256):
        assert peaks[tokens, "chunked kd"] < peaks[tokens, "kd"]
        assert peaks[tokens, "chunked cskd"] < peaks[tokens, "cskd"]
    # 4x the tokens: the full logits grow with them, the chunked step less.
    growth = {step: peaks[256, step] - peaks[64, step] for step in ("kd", "chunked kd")}
    assert growth["chunked kd"] < growth["kd"], growth
    assert plot.stat().st_size > 1000


def test_teachers_table_pairs_each_seed_with_the_one_teacher_student():
    """benchmarks/teachers_table.py on the committed result files: each cell
    is the mean paired difference with its 95 % t-interval (scipy)."""
    import json

    import numpy as np
    from scipy import stats

    folder = os.path.join(ROOT, "benchmarks", "results", "teachers-digits")
    table = run_script("teachers_table.py", folder, backend=None)
    load = lambda name: json.load(open(os.path.join(folder, name + ".json")))  # noqa: E731
    one = next(r for r in load("one-teacher")["results"] if r["method"] == "kd")
    ensemble = next(r for r in load("ensemble-3")["results"] if r["method"] == "kd")
    differences = 100 * (np.array(ensemble["accuracies"]) - np.array(one["accuracies"]))
    low, high = stats.t.interval(
        0.95, len(differences) - 1, differences.mean(), stats.sem(differences)
    )
    cell = f"{differences.mean():+.1f} [{low:+.1f}, {high:+.1f}]"
    row = next(line for line in table.splitlines() if line.startswith("| KD (KL, tau^2) |"))
    assert cell in row, (cell, row)
