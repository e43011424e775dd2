"""Python imports this module at start-up when its folder is on PYTHONPATH
(see `tests/subprocess_env.py`). In a process that also has
KERAS_CSKD_TESTS_WITHOUT_TENSORFLOW=1, TensorFlow then behaves as if it were
not installed: `import tensorflow` raises ModuleNotFoundError (a finder put
first on `sys.meta_path`), `importlib.util.find_spec("tensorflow")` returns
None, and "tensorflow" never enters `sys.modules` (which Keras reads to tell
whether TensorFlow is in use)."""

import importlib.util
import os
import sys


def _is_tensorflow(name):
    return name.partition(".")[0] == "tensorflow"


class _NoTensorFlowFinder:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if _is_tensorflow(name):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


def _find_spec_without_tensorflow(name, package=None, _find_spec=importlib.util.find_spec):
    return None if _is_tensorflow(name) else _find_spec(name, package)


if os.environ.get("KERAS_CSKD_TESTS_WITHOUT_TENSORFLOW") == "1":
    sys.meta_path.insert(0, _NoTensorFlowFinder())
    importlib.util.find_spec = _find_spec_without_tensorflow
