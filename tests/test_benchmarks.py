"""Smoke test of `benchmarks/step_time.py`: it runs end to end and prints
its report. No timing is asserted (the numbers of a two-step run on a
shared CPU mean nothing); see docs/performance.md for measurements."""

import os
import re
import subprocess
import sys

import keras

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "step_time.py")


def test_step_time_smoke_prints_ratios():
    backend = keras.backend.backend()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    process = subprocess.run(
        [
            sys.executable,
            SCRIPT,
            "--backend",
            backend,
            "--pair",
            "mlp",
            "--steps",
            "2",
            "--rounds",
            "1",
            "--warmup",
            "1",
            "--batch-size",
            "16",
            "--threads",
            "1",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = process.stdout
    assert process.returncode == 0, output[-3000:] + process.stderr[-6000:]
    assert f"backend {backend}" in output
    for label in (
        "(a) student step",
        "(b) teacher forward",
        "(c) keras_cskd kd",
        "(c) keras_cskd cskd+cswt",
        "(c) keras_cskd stkd",
        "(e) keras_cskd cached logits",
    ):
        assert label in output, label
    number = r"-?\d+\.\d+"
    for ratio in (
        r"c/\(a\+b\) \[kd\]",
        r"c/\(a\+b\) \[cskd\]",
        r"c/\(a\+b\) \[cskd\+cswt\]",
        r"c/\(a\+b\) \[stkd\]",
        r"e/a \[cached logits\]",
    ):
        assert re.search(rf"^RATIO {ratio} = {number} \(wall\)$", output, re.M), ratio
    if hasattr(keras, "distillation"):
        assert re.search(rf"^RATIO d/\(a\+b\) \[keras.distillation\] = {number}", output, re.M)
        assert re.search(rf"^RATIO c/d \[kd\] = {number}", output, re.M)
    # No training step was traced again after warm-up (compiled backends).
    if backend != "torch":
        rows = [line for line in output.splitlines() if line.startswith("(")]
        assert rows and all(line.split()[-1] in ("0", "n/a") for line in rows), rows


def test_vocabulary_cost_smoke_prints_one_row_per_vocabulary():
    backend = keras.backend.backend()
    script = os.path.join(ROOT, "benchmarks", "vocabulary_cost.py")
    process = subprocess.run(
        [sys.executable, script, "--backend", backend, "--positions", "8"]
        + ["--vocabularies", "50", "70", "--rounds", "1"],
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
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
