"""The environment of the suite's subprocesses (the command line, examples,
docs snippets, benchmark scripts, kill and distributed workers).

`subprocess_env(backend)` is the suite's environment with KERAS_BACKEND set,
TensorFlow's C++ logs quiet and JAX on the CPU. A subprocess that runs JAX or
PyTorch also starts without TensorFlow, as after the README's install
(`pip install ".[jax,demo]"`): Keras' `keras.utils.set_random_seed` imports
TensorFlow whenever it is installed, whatever the backend, which costs each
such process 3-5 s (a third of a small example's run) and ~400 MB. A
subprocess that does need TensorFlow (an image folder read with `tf.data`,
TensorFlow as a second backend) says so with `tensorflow=True`; with it
hidden, it would fail with an ImportError, never pass silently.
"""

import os
from pathlib import Path

_NO_TENSORFLOW = Path(__file__).resolve().parent / "no_tensorflow"


def subprocess_env(backend, *, tensorflow=False, **variables):
    """`os.environ` for a subprocess that runs Keras on `backend`, plus
    `variables`; `backend=None` leaves KERAS_BACKEND unset (the subprocess
    picks its own, as the docs snippets do). TensorFlow is hidden unless
    `backend` is "tensorflow" or `tensorflow=True`."""
    env = dict(os.environ, **variables)
    env.pop("KERAS_BACKEND", None)
    if backend is not None:
        env["KERAS_BACKEND"] = backend
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env.setdefault("JAX_PLATFORMS", "cpu")
    if backend != "tensorflow" and not tensorflow:
        path = [str(_NO_TENSORFLOW), *filter(None, [env.get("PYTHONPATH")])]
        env["PYTHONPATH"] = os.pathsep.join(path)
        env["KERAS_CSKD_TESTS_WITHOUT_TENSORFLOW"] = "1"
    return env
