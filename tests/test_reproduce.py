"""benchmarks/reproduce.py: a 1-epoch smoke run and its augmentation."""

import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import keras
import numpy as np
import pytest
from subprocess_env import subprocess_env

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "reproduce.py"
# A benchmark driver, not library code paths: run once (scripts/test.sh).
pytestmark = pytest.mark.backend_independent


def _load_script():
    spec = importlib.util.spec_from_file_location("reproduce", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_smoke_run_writes_table(tmp_path):
    from keras_cskd import data

    if not (data.shared_data_folder("fashion-mnist") / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("the shared Fashion-MNIST files are not available")
    out = tmp_path / "run"
    command = [
        sys.executable,
        str(SCRIPT),
        "--dataset", "fashion_mnist",
        "--teacher", "resnet8",
        "--student", "resnet8",
        "--stem-stride", "2",
        "--epochs", "1",
        "--teacher-epochs", "0",  # an untrained teacher: this only checks the plumbing
        "--limit", "256",
        "--test-limit", "128",
        "--seeds", "0",
        "--methods", "ce,kd",
        "--out", str(out),
        # JAX: reuse compiled programs across test sessions (first run ~2x slower).
        "--jax-cache", str(Path(tempfile.gettempdir()) / "keras_cskd_jax_cache"),
    ]  # fmt: skip
    result = subprocess.run(
        command,
        cwd=ROOT,
        env=subprocess_env(keras.backend.backend()),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = (out / "results.md").read_text()
    assert "| CE (student alone) |" in table and "| KD |" in table
    assert "Teacher resnet8:" in table
    summary = json.loads((out / "results.json").read_text())
    assert summary["complete"] is True
    assert [r["method"] for r in summary["students"]] == ["ce", "kd"]
    assert all(len(r["test_accuracy"]) == 1 for r in summary["students"])
    assert (out / "curves.png").stat().st_size > 0


def test_parse_args_rejects_unknown_method():
    reproduce = _load_script()
    args = reproduce.parse_args(["--methods", "CE,kd,CSKD+CSWT", "--epochs", "3"])
    assert args.methods == ["ce", "kd", "cskd_cswt"] and args.teacher_epochs == 3
    with pytest.raises(SystemExit):
        reproduce.parse_args(["--methods", "ce,fitnet"])


def test_schedule_scales_the_240_epoch_milestones():
    import keras

    reproduce = _load_script()
    optimizer = reproduce.make_optimizer(0.05, 0.9, epochs=24, steps_per_epoch=10)
    schedule = optimizer._learning_rate
    # 150/240, 180/240, 210/240 of 240 steps: 150, 180, 210.
    values = [float(keras.ops.convert_to_numpy(schedule(step))) for step in (0, 150, 151, 181, 211)]
    np.testing.assert_allclose(values, [0.05, 0.05, 0.005, 0.0005, 0.00005], rtol=1e-5)


def test_random_crop_flip_is_a_per_sample_shift_and_flip():
    import keras

    reproduce = _load_script()
    layer = reproduce.random_crop_flip_layer(padding=2, flip=True, seed=3)
    images = np.arange(2 * 8 * 8, dtype="float32").reshape(2, 8, 8, 1) + 1.0
    images = np.concatenate([images] * 8)  # 16 samples, 2 distinct images
    assert np.array_equal(keras.ops.convert_to_numpy(layer(images, training=False)), images)
    out = keras.ops.convert_to_numpy(layer(images, training=True))
    assert out.shape == images.shape
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)))
    offsets = set()
    for original, augmented in zip(padded, out, strict=True):
        matches = [
            (dy, dx, flipped)
            for dy in range(5)
            for dx in range(5)
            for flipped in (False, True)
            if np.array_equal(
                augmented,
                (
                    original[dy : dy + 8, dx : dx + 8, :][:, ::-1]
                    if flipped
                    else original[dy : dy + 8, dx : dx + 8, :]
                ),
            )
        ]
        assert matches, "every output is a crop of the padded image, maybe flipped"
        offsets.add(matches[0])
    assert len(offsets) > 1  # the samples of one batch get different crops


def test_zoo_model_accepts_width_reduced_resnets():
    import keras

    from keras_cskd.models import count_parameters

    reproduce = _load_script()
    with keras.StatelessScope(initialize_variables=False):
        narrow = reproduce.zoo_model("resnet8:8,8,16,32", input_shape=(28, 28, 1), num_classes=10)
        full = reproduce.zoo_model("resnet8", input_shape=(28, 28, 1), num_classes=10)
        assert narrow.name == "resnet8_w8_8_16_32" and full.name == "resnet8"
        assert count_parameters(narrow) < count_parameters(full) / 3
    keras.utils.clear_session()
    with pytest.raises(ValueError, match="CIFAR ResNets"):
        reproduce.zoo_model("vgg8:8,8,16,32")
