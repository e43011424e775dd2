"""Test-session rules shared by `tests/` and the doctests of `keras_cskd/`.

- Backend-independent tests (marker `backend_independent`: the CLI,
  examples, docs build and the doctests of the pure-Python modules) exercise
  no backend-specific code path, so `scripts/test.sh` runs them in its first
  backend's pass only: with `KERAS_CSKD_BACKEND_INDEPENDENT=skip` they are
  deselected (and reported as such). Where they run
  (`KERAS_CSKD_BACKEND_INDEPENDENT=run`), the tests marked
  `covered_by_backend_independent` are deselected instead: a
  backend-independent test checks the same on the whole (the README's main
  job covers the short main job).
- A doctest that needs an optional package (TensorFlow's `tf.data` and Pillow
  for image folders, scikit-learn for the digits) is skipped, with the reason,
  where that package is not installed, so that each extra installed alone
  (`pip install "keras-cskd[jax]" pytest`) passes `pytest keras_cskd`.
"""

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
