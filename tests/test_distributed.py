"""Data-parallel distillation: batch-wise losses over the GLOBAL batch.

CSKD, CSWT, DIST and STKD compare samples across the batch, so a
data-parallel run is only the same training as a single-device run if the
losses see the global batch, not each device's shard. Each test runs
`distributed_worker.py` in a subprocess (the virtual device count must be
set before JAX/TensorFlow start), which trains the same pair twice on the
same global batch -- on one device (the reference) and distributed -- and
the test compares losses and final student weights.

- JAX (`keras.distribution`, 8 virtual CPU devices): `DataParallel`, and
  `ModelParallel` with the teacher's layers sharded and the student
  replicated; plus every batch-wise loss on logits sharded over the 8
  devices. Run when the suite's backend is JAX.
- TensorFlow (`tf.distribute.MirroredStrategy`, 4 logical CPU devices): the
  Distiller all-gathers the logits across replicas (the chunked step: the
  hidden states, for CSKD), and token means divide by the global batch's
  kept tokens. Run when the suite's backend is TensorFlow.

CPU virtual devices check correctness only; nothing here is timed.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from subprocess_env import subprocess_env

BACKEND = keras.backend.backend()
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "distributed_worker.py")
# float32 training of a few steps, reductions reordered across devices.
RTOL, ATOL = 1e-4, 1e-5
pytestmark = pytest.mark.slow  # multi-device training in subprocesses


def _run_worker(mode, tmp_path):
    out = str(tmp_path / f"{mode}.npz")
    env = subprocess_env("jax" if mode == "jax" else "tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    process = subprocess.run(
        [sys.executable, WORKER, mode, out],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-6000:]
    with open(out + ".json") as f:
        info = json.load(f)
    return dict(np.load(out)), info


def _cases(results):
    return sorted({key.split("/")[0] for key in results if "/single/" in key})


def _assert_same_training(results, case):
    single = {
        k.split("/single/", 1)[1]: v for k, v in results.items() if k.startswith(f"{case}/single/")
    }
    distributed = {
        k.split("/distributed/", 1)[1]: v
        for k, v in results.items()
        if k.startswith(f"{case}/distributed/")
    }
    assert single and set(single) == set(distributed), (case, sorted(single), sorted(distributed))
    for key in sorted(single):
        np.testing.assert_allclose(
            distributed[key], single[key], rtol=RTOL, atol=ATOL, err_msg=f"{case}: {key}"
        )
    # The distillation term was part of the compared training.
    assert "log/distillation_loss" in single, case


def _assert_discriminating(info):
    """The comparison can tell the semantics apart: on the same logits, the
    mean of per-shard CSKD losses is far from the global-batch loss."""
    gap = abs(info["cskd_global"] - info["cskd_per_replica_mean"])
    assert gap > 100 * (ATOL + RTOL * abs(info["cskd_global"])), info


@pytest.fixture(scope="module")
def jax_results(tmp_path_factory):
    if BACKEND != "jax":
        pytest.skip(
            "keras.distribution (DataParallel/ModelParallel) is tested under the JAX "
            f"backend; this run uses {BACKEND!r}."
        )
    return _run_worker("jax", tmp_path_factory.mktemp("distributed_jax"))


@pytest.fixture(scope="module")
def tf_results(tmp_path_factory):
    if BACKEND != "tensorflow":
        pytest.skip(
            "tf.distribute.MirroredStrategy is tested under the TensorFlow backend; "
            f"this run uses {BACKEND!r}."
        )
    pytest.importorskip("tensorflow")
    return _run_worker("tf", tmp_path_factory.mktemp("distributed_tf"))


def test_jax_data_parallel_matches_single_device(jax_results):
    results, info = jax_results
    cases = [case for case in _cases(results) if not case.startswith("model_parallel")]
    assert set(cases) >= {"batchwise_mix_weighted", "stkd_mixup"}, cases
    for case in cases:
        assert info[f"{case}/devices"] == 8, info
        assert "P(None, None)" in info[f"{case}/student_sharding"], info  # replicated
        _assert_same_training(results, case)
    _assert_discriminating(info)


def test_jax_model_parallel_sharded_teacher_matches_single_device(jax_results):
    results, info = jax_results
    # The teacher's kernel is really split over the 'model' axis (4 ways) ...
    assert info["model_parallel/teacher_kernel_spec"] == "P(None, 'model')", info
    shape = info["model_parallel/teacher_kernel_shape"]
    assert info["model_parallel/teacher_kernel_shard_shape"] == [shape[0], shape[1] // 4], info
    # ... the student is replicated, and training is unchanged.
    assert info["model_parallel/student_kernel_spec"] == "P(None, None)", info
    _assert_same_training(results, "model_parallel_batchwise_mix_weighted")


def test_jax_batchwise_losses_on_sharded_logits(jax_results):
    results, _ = jax_results
    names = sorted({key.split("/")[1] for key in results if key.startswith("sharded/")})
    assert {"cskd", "cswt_sample", "cswt_class", "dist", "stkd"} <= set(names), names
    for name in names:
        for part in ("value", "grad"):
            np.testing.assert_allclose(
                results[f"sharded/{name}/sharded_{part}"],
                results[f"sharded/{name}/single_{part}"],
                rtol=1e-5,
                atol=1e-6,
                err_msg=f"{name} {part}",
            )


def test_tf_mirrored_strategy_gathers_global_batch(tf_results):
    results, info = tf_results
    cases = _cases(results)
    assert set(cases) >= {"batchwise_mix_weighted", "dkd_stkd_no_mixup"}, cases
    for case in cases:
        assert info[f"{case}/replicas"] == 4, info
        _assert_same_training(results, case)
    _assert_discriminating(info)


def test_tf_mirrored_strategy_language_models_count_the_global_tokens(tf_results):
    """Padded token batches (tests/tiny_gpt2.py: one row keeps 4 tokens,
    the others 7; and with one replica's shard keeping none) split over 4
    replicas: the student's cross-entropy and the token terms are means over
    the global batch's kept tokens, and the chunked step's CSKD compares the
    global batch's tokens, as on one device. (Before 0.2 each replica
    divided by its own count.)"""
    results, info = tf_results
    pytest.importorskip("keras_hub", reason="keras-hub (the [hub] extra) not installed")
    cases = ["lm_kd_logits", "lm_kd_chunked", "lm_cskd_logits", "lm_cskd_chunked"]
    cases += ["lm_kd_logits_empty_shard", "lm_cskd_chunked_empty_shard"]  # a shard keeps none
    for case in cases:
        assert info[f"{case}/replicas"] == 4, info
        _assert_same_training(results, case)


def test_tf_mirrored_strategy_token_cross_entropy_equals_float64_reference(tf_results):
    """The student's token cross-entropy on 4 replicas, 2,048 positions each,
    whose shards keep 1, 0, all and about half of their tokens (fractional
    weights): what Keras sums over the replicas equals NumPy's float64 mean
    over the global batch's kept tokens, not the mean of the shards' means."""
    results, _ = tf_results
    reference = float(results["token_normaliser/reference"])
    per_replica_mean = float(results["token_normaliser/per_replica_mean"])
    assert abs(reference - per_replica_mean) > 0.1 * reference  # the check can tell them apart
    np.testing.assert_allclose(float(results["token_normaliser/keras_sum"]), reference, rtol=1e-5)
    # The empty shard's share is exactly 0, not NaN.
    assert results["token_normaliser/replica_values"][1] == 0.0


def test_tf_mirrored_strategy_with_mixup_runs(tf_results):
    results, _ = tf_results
    # Mixup pairs are drawn within each replica's shard (docs/distributed.md),
    # so there is no single-device reference; the run must stay finite.
    assert np.all(np.isfinite(results["stkd_mixup/distributed/log/loss"]))
