"""Choosing a Keras backend that is installed, before Keras is imported
(and, for the command line only, TensorFlow's C++ log level).

Keras writes `~/.keras/keras.json` with `"tensorflow"` on its first import,
so on a machine with only JAX (e.g. `pip install "keras-cskd[jax]"`) a plain
`import keras` fails. When `KERAS_BACKEND` is unset and the configured
backend is not installed, keras-cskd picks the first installed of jax,
tensorflow and torch. An explicit `KERAS_BACKEND` is never overridden.
"""

import importlib.util
import json
import os
import re
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


def is_command_line(argv=None):
    """True when this process is the `keras-cskd` command line (the console
    script, or `python -m keras_cskd`), from the interpreter's own command
    line (`sys.orig_argv`: while the package is imported for `-m`,
    `sys.argv[0]` is only "-m").

    >>> is_command_line(["python", "-m", "keras_cskd", "distill"])
    True
    >>> is_command_line(["/venv/bin/python", "/venv/bin/keras-cskd", "--version"])
    True
    >>> is_command_line(["python", "-X", "importtime", "-m", "keras_cskd"])
    True
    >>> is_command_line(["python", "train.py"])
    False
    """
    import sys

    if argv is None:
        argv = getattr(sys, "orig_argv", sys.argv)
    arguments = iter(argv[1:])
    for arg in arguments:
        if arg == "-m":
            return next(arguments, "").partition(".")[0] == "keras_cskd"
        if arg in ("-X", "-W"):  # an interpreter option with a value
            next(arguments, None)
        elif arg == "-c" or arg == "-":
            return False
        elif not arg.startswith("-"):  # the script
            return Path(arg).stem == "keras-cskd"
    return False


def ensure_installed_backend():
    """Sets KERAS_BACKEND to an installed backend if it is unset and Keras
    is not imported yet; a no-op otherwise. In the command line, also
    imports TensorFlow quietly first when the run will import it
    (`import_tensorflow_quietly`)."""
    import sys

    if "keras" in sys.modules:
        return
    argv = getattr(sys, "orig_argv", sys.argv)
    if is_command_line(argv):
        command_line_backend(argv[1:])
    if not os.environ.get("KERAS_BACKEND"):
        configured = configured_backend() or "tensorflow"
        if not installed(configured):
            choice = installed_backend()
            if choice:
                os.environ["KERAS_BACKEND"] = choice
    if is_command_line(argv) and installed("tensorflow"):
        backend = os.environ.get("KERAS_BACKEND") or configured_backend() or "tensorflow"
        # `distill` imports TensorFlow under every backend (Keras'
        # `set_random_seed` does, when it is installed).
        if backend == "tensorflow" or "distill" in argv:
            import_tensorflow_quietly()


# What installs a backend's CPU build from PyPI (keras-cskd itself is
# installed from a clone: its extras are `pip install ".[jax]"` there).
INSTALL = {
    "jax": "pip install jax",
    "tensorflow": "pip install tensorflow-cpu",
    "torch": "pip install torch --index-url https://download.pytorch.org/whl/cpu",
}


def install_hint(backend=None):
    """How to install `backend` (None: any backend), in one phrase.

    >>> install_hint("tensorflow")
    'pip install tensorflow-cpu (or, in a clone of keras-cskd, pip install ".[tensorflow]")'
    """
    if backend is None:
        return (
            ", or ".join(INSTALL.values())
            + ' (in a clone of keras-cskd: pip install ".[jax]", ".[tensorflow]" or ".[torch]")'
        )
    return f'{INSTALL[backend]} (or, in a clone of keras-cskd, pip install ".[{backend}]")'


def command_line_backend(arguments):
    """For the command line, before Keras is imported (which would end in
    an ImportError traceback): KERAS_BACKEND naming a backend that is not
    installed is replaced by `--backend`'s when that one is installed, by
    any installed one for `--version` and `--help`, and otherwise ends the
    command with how to install it (one line, exit code 2); so does a
    machine without any backend."""
    import sys

    def fail(message):
        sys.stderr.write(f"keras-cskd: error: {message}\n")
        sys.stderr.flush()
        raise SystemExit(2)

    wanted = os.environ.get("KERAS_BACKEND")
    if wanted and wanted not in BACKEND_MODULES:  # e.g. "numpy": Keras' own
        return
    available = [backend for backend in BACKEND_MODULES if installed(backend)]
    if not available:
        fail(f"no Keras backend is installed: {install_hint()}")
    if not wanted or installed(wanted):
        return
    requested = None
    for index, arg in enumerate(arguments):
        if arg == "--backend" and index + 1 < len(arguments):
            requested = arguments[index + 1]
        elif arg.startswith("--backend="):
            requested = arg.partition("=")[2]
    if requested in available or (requested is None and "distill" not in arguments):
        os.environ["KERAS_BACKEND"] = requested or available[0]
        return
    fail(
        f"KERAS_BACKEND={wanted}, but {wanted} is not installed: {install_hint(wanted)}, or "
        f"use an installed backend: --backend {available[0]} (installed: {', '.join(available)})"
    )


# The lines of TensorFlow's C++ start-up logs (absl's format: severity
# letter, date, time, thread, file:line]), and absl's notice before them.
_ABSL_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+ +\d+ \S+:\d+\] ")
_ABSL_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called are written to"
_SEVERITIES = "IWEF"


def import_tensorflow_quietly():
    """`import tensorflow` without its C++ start-up logs ("oneDNN custom
    operations are on", "Could not find cuda drivers", the CPU instructions
    it was not built for), which would come before the command's first
    line. TensorFlow 2.21 writes them through absl before its logging is
    initialised, whatever TF_CPP_MIN_LOG_LEVEL says, so the import's
    stderr (file descriptor 2) is captured and replayed without the log
    lines below TF_CPP_MIN_LOG_LEVEL (3 unless set: fatal errors only, as
    TensorFlow itself then shows after start-up: its "failed call to
    cuInit" on a machine without a GPU is an error line); anything else
    it printed is replayed as it was. TF_CPP_MIN_LOG_LEVEL=0 shows
    everything."""
    import sys
    import tempfile

    level = os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        hidden = _SEVERITIES[: max(0, min(int(level), 3))]
    except ValueError:
        hidden = _SEVERITIES[:2]
    if not hidden:
        import tensorflow  # noqa: F401

        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().decode("utf-8", "replace").splitlines()
            kept, dropping = [], False
            for line in lines:
                match = _ABSL_LINE.match(line)
                if match:
                    dropping = match.group(1) in hidden
                elif line.startswith(_ABSL_PREAMBLE):
                    dropping = True
                    continue
                elif not line.startswith("To enable the following instructions"):
                    dropping = False  # a continuation line goes with its log line
                if not dropping:
                    kept.append(line)
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")
                sys.stderr.flush()
