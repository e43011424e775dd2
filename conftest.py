"""Test-session rules shared by `tests/` and the doctests of `keras_cskd/`.

- Backend-independent tests (marker `backend_independent`: the CLI,
  examples, docs build and the doctests of the pure-Python modules) exercise
  no backend-specific code path, so `scripts/test.sh` runs them in its first
  backend's pass only: with `KERAS_CSKD_BACKEND_INDEPENDENT=skip` they are
  deselected (and reported as such), nothing else changes.
- A doctest that needs TensorFlow (`tf.data` image loading) is skipped, with
  the reason, where TensorFlow is not installed (e.g. a JAX-only install).
"""

import importlib.util
import os

import pytest

# Doctests of modules without backend-specific code.
_BACKEND_INDEPENDENT_DOCTEST_MODULES = ("cli.py", "data.py", "_backend_choice.py")
# Smoke tests of the benchmark drivers (benchmarks/): scripts, not library
# code paths; marked here rather than in their modules, which another branch
# edits. Test name -> extra markers.
_BENCHMARK_TESTS = {
    "test_benchmarks.py": ("backend_independent", "slow"),
    "test_reproduce.py": ("backend_independent",),
    "test_reproduce.py::test_smoke_run_writes_table": ("slow",),
}
# Doctests that read data through tf.data.
_DOCTESTS_NEEDING_TENSORFLOW = ("keras_cskd.data.load_image_folder",)


def pytest_collection_modifyitems(config, items):
    has_tensorflow = importlib.util.find_spec("tensorflow") is not None
    for item in items:
        for key in (
            item.path.name,
            f"{item.path.name}::{getattr(item, 'originalname', item.name)}",
        ):
            for marker in _BENCHMARK_TESTS.get(key, ()):
                item.add_marker(getattr(pytest.mark, marker))
        if not isinstance(item, pytest.DoctestItem):
            continue
        if item.path.name in _BACKEND_INDEPENDENT_DOCTEST_MODULES:
            item.add_marker(pytest.mark.backend_independent)
        if item.name in _DOCTESTS_NEEDING_TENSORFLOW and not has_tensorflow:
            item.add_marker(pytest.mark.skip(reason="needs TensorFlow (tf.data), not installed"))
    if os.environ.get("KERAS_CSKD_BACKEND_INDEPENDENT") == "skip":
        kept = [item for item in items if item.get_closest_marker("backend_independent") is None]
        deselected = [item for item in items if item.get_closest_marker("backend_independent")]
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = kept
