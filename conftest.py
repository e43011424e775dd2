"""Test-session rules shared by `tests/` and the doctests of `keras_cskd/`.

- Backend-independent tests (marker `backend_independent`: the CLI,
  examples, docs build and the doctests of the pure-Python modules) exercise
  no backend-specific code path, so `scripts/test.sh` runs them in one pass
  only (the JAX one where JAX is among its backends, else the first): with
  `KERAS_CSKD_BACKEND_INDEPENDENT=skip` they are deselected (and reported as
  such). Where they run
  (`KERAS_CSKD_BACKEND_INDEPENDENT=run`), the tests marked
  `covered_by_backend_independent` are deselected instead: a
  backend-independent test checks the same on the whole (the README's main
  job covers the short main job).
- A doctest that needs an optional package (TensorFlow's `tf.data` and Pillow
  for image folders, scikit-learn for the digits) is skipped, with the reason,
  where that package is not installed, so that each extra installed alone
  (`pip install "keras-cskd[jax]" pytest`) passes `pytest keras_cskd`.
- The test modules that run whole trainings come first, longest first
  (`_LONGEST_FIRST`): `scripts/test.sh` hands out whole modules to its
  pytest-xdist workers in collection order (`--dist loadfile
  --no-loadscope-reorder`), so that no worker is left alone with a long one
  at the end while the other idles.
- The test processes collect garbage less often (`pytest_configure`).
"""

import gc
import importlib.util
import os

import pytest

# Doctests of modules without backend-specific code (a folder: all its modules).
_BACKEND_INDEPENDENT_DOCTEST_MODULES = ("cli", "data.py", "_backend_choice.py")
# Doctests that need an optional package: doctest -> (module, the extra or package).
_DOCTEST_REQUIREMENTS = {
    "keras_cskd.data.load_image_folder": (
        ("tensorflow", "TensorFlow (tf.data)"),
        ("PIL", "Pillow (writes the example's images)"),
    ),
    "keras_cskd.data.load_digits": (("sklearn", "scikit-learn (the [demo] extra)"),),
}
# Measured with `bash scripts/test.sh --durations=0` (a module's total in the
# pass where it takes longest); the other modules keep pytest's order after these.
_LONGEST_FIRST = (
    "tests/test_examples.py",
    "tests/test_snippets.py",
    "tests/test_benchmarks.py",
    "tests/test_cli_resume.py",
    "tests/test_cli_runs.py",
    "tests/test_cli_teachers.py",
    "tests/test_positions.py",
    "tests/test_hub.py",
    "tests/test_chunked_distiller.py",
    "tests/test_teachers.py",
    "tests/test_chunked.py",
    "tests/test_top_k.py",
    "tests/test_experiments.py",
    "tests/test_distiller.py",
    "tests/test_cli.py",
    "tests/test_kill.py",
    "tests/test_properties.py",
    "tests/test_distributed.py",
    "tests/test_serialization.py",
    "tests/test_models.py",
    "tests/test_bad_models.py",
    "tests/test_interruption.py",
    "tests/test_bad_data.py",
    "tests/test_bad_losses.py",
    "tests/test_bad_files.py",
)


def pytest_configure(config):
    # A test process holds millions of long-lived objects (Keras, the
    # backends, their traced and compiled programs), and each of Python's
    # automatic full collections walks them all: with the default thresholds
    # (700, 10, 10) a TensorFlow pass spent 13 s of its workers' CPU time in
    # the garbage collector, with (10_000, 10, 10) 6 s (measured with
    # `gc.callbacks`; peak memory unchanged). A few per cent of a pass's CPU
    # time, so within the run-to-run noise of its wall time. Garbage is
    # still collected, in fewer, larger rounds; the library and the tests'
    # subprocesses are unaffected.
    gc.set_threshold(10_000, 10, 10)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if not isinstance(item, pytest.DoctestItem):
            continue
        if {item.path.name, item.path.parent.name} & set(_BACKEND_INDEPENDENT_DOCTEST_MODULES):
            item.add_marker(pytest.mark.backend_independent)
        for module, name in _DOCTEST_REQUIREMENTS.get(item.name, ()):
            if importlib.util.find_spec(module) is None:
                item.add_marker(pytest.mark.skip(reason=f"needs {name}, not installed"))
                break
    # In the pass that runs the backend-independent tests, a test marked
    # `covered_by_backend_independent` is left out: one of those covers it.
    dropped = {
        "skip": "backend_independent",
        "run": "covered_by_backend_independent",
    }.get(os.environ.get("KERAS_CSKD_BACKEND_INDEPENDENT"))
    if dropped:
        kept = [item for item in items if item.get_closest_marker(dropped) is None]
        deselected = [item for item in items if item.get_closest_marker(dropped)]
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = kept
    rank = {module: position for position, module in enumerate(_LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))
