"""Choosing a Keras backend that is installed, before Keras is imported.

Keras writes `~/.keras/keras.json` with `"tensorflow"` on its first import,
so on a machine with only JAX (e.g. `pip install "keras-cskd[jax]"`) a plain
`import keras` fails. When `KERAS_BACKEND` is unset and the configured
backend is not installed, keras-cskd picks the first installed of jax,
tensorflow and torch. An explicit `KERAS_BACKEND` is never overridden.
"""

import importlib.util
import json
import os
from pathlib import Path

BACKEND_MODULES = {"jax": "jax", "tensorflow": "tensorflow", "torch": "torch"}


def installed(backend):
    """True when the backend's framework can be imported."""
    module = BACKEND_MODULES.get(backend)
    return module is not None and importlib.util.find_spec(module) is not None


def configured_backend():
    """The backend named in keras.json, or None."""
    config = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "keras.json"
    try:
        return json.loads(config.read_text()).get("backend")
    except (OSError, ValueError):
        return None


def installed_backend():
    """keras.json's backend if installed, else the first installed one."""
    configured = configured_backend()
    candidates = ([configured] if configured else []) + list(BACKEND_MODULES)
    return next((b for b in candidates if installed(b)), None)


def ensure_installed_backend():
    """Sets KERAS_BACKEND to an installed backend if it is unset and Keras
    is not imported yet; a no-op otherwise."""
    import sys

    if os.environ.get("KERAS_BACKEND") or "keras" in sys.modules:
        return
    configured = configured_backend() or "tensorflow"
    if installed(configured):
        return
    choice = installed_backend()
    if choice:
        os.environ["KERAS_BACKEND"] = choice
