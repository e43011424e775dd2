"""Fixtures of the test suite. The helpers the test modules share are in
`helpers.py`: this file imports no backend, because pytest-xdist's
controller process loads it too and runs no test."""

import importlib.util
import os

import pytest

# no_tensorflow/sitecustomize.py goes on subprocesses' PYTHONPATH only (subprocess_env.py).
collect_ignore = ["no_tensorflow"]
# The keras-hub models' helper: its test modules skip without keras-hub.
if importlib.util.find_spec("keras_hub") is None:
    collect_ignore.append("tiny_gpt2.py")


@pytest.fixture(scope="session", autouse=True)
def single_torch_thread():
    """The tests run tiny tensors: torch's intra-op thread pool only adds
    synchronisation (milliseconds per softmax on a busy 2-core machine).
    Not where OMP_NUM_THREADS is set; a no-op on other backends."""
    import keras

    if keras.backend.backend() == "torch" and "OMP_NUM_THREADS" not in os.environ:
        import torch

        torch.set_num_threads(1)
    yield


@pytest.fixture(scope="module")
def fast_jax_compilation():
    """Under JAX every new input shape means new XLA compilations, and
    property tests draw many shapes: compile with XLA's optimisations off
    (about a third less compile time here; same IEEE float32 arithmetic)
    for the module that asks for it. Restored afterwards; a no-op on other
    backends."""
    import keras

    if keras.backend.backend() != "jax":
        yield
        return
    import jax

    previous = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", True)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", previous)
