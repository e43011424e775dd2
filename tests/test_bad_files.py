"""Bad input: files that are not a saved `Distiller` -- text, a truncated
archive, a foreign zip, a weights file, a process that never imported
keras-cskd. One case per row of docs/reliability.md's table; the harness
is `bad_inputs.py`. A Distiller saved under PyTorch and trained on under
JAX is not a row: Keras 3.15 fails there (see its xfail test)."""

import subprocess
import sys
import zipfile

import keras
import pytest
from bad_inputs import BACKEND, Cases
from subprocess_env import subprocess_env

cases = Cases("Saved files")


@cases.bad_input(
    "load_text_file",
    "`keras.saving.load_model` on a text file named `notes.keras`",
    ValueError,
    ["accessible `.keras` zip file"],
    hint="Keras' message (the file exists, but is not a zip archive): check the path "
    "points to a file written by `model.save(...)`.",
)
def _(lab):
    path = lab.tmp / "notes.keras"
    path.write_text("not a model")
    return lambda: keras.saving.load_model(str(path))


@cases.bad_input(
    "load_truncated_file",
    "`keras.saving.load_model` on a `.keras` file cut in half (interrupted copy)",
    ValueError,
    ["accessible `.keras` zip file"],
    hint="Keras' message: copy the file again; keep backups with `ModelCheckpoint`.",
)
def _(lab):
    distiller = lab.distiller()
    path = lab.tmp / "distiller.keras"
    distiller.save(str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return lambda: keras.saving.load_model(str(path))


@cases.bad_input(
    "load_zip_without_config",
    "`keras.saving.load_model` on a zip archive that is not a Keras model",
    KeyError,
    ["config.json"],
    hint="Keras' message: the archive lacks the `config.json` every `.keras` file has; "
    "it was not written by `model.save(...)`.",
)
def _(lab):
    path = lab.tmp / "other.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    return lambda: keras.saving.load_model(str(path))


@cases.bad_input(
    "load_weights_file_as_model",
    "`keras.saving.load_model` on a `.weights.h5` file",
    ValueError,
    ["No model config found"],
    hint="Keras' message: a weights file needs the model first: build the same "
    "`Distiller` and call `distiller.load_weights(path)`.",
)
def _(lab):
    distiller = lab.distiller()
    path = lab.tmp / "distiller.weights.h5"
    distiller.save_weights(str(path))
    return lambda: keras.saving.load_model(str(path))


@cases.bad_input(
    "load_without_keras_cskd",
    "`keras.saving.load_model` on a saved `Distiller` in a process that never imported keras-cskd",
    TypeError,
    ["Could not locate class 'Distiller'", "imported"],
    hint="Keras' message: `import keras_cskd` before loading (no `custom_objects` needed).",
)
def _(lab):
    path = lab.tmp / "distiller.keras"
    lab.distiller().save(str(path))
    script = (
        "import keras\n"
        "try:\n"
        f"    keras.saving.load_model({str(path)!r})\n"
        "except TypeError as error:\n"
        "    open(__import__('sys').argv[1], 'w').write(str(error))\n"
    )
    out = lab.tmp / "error.txt"
    subprocess.run(
        [sys.executable, "-c", script, str(out)],
        env=subprocess_env(BACKEND),
        check=True,
        timeout=300,
        capture_output=True,
    )

    def load_elsewhere():
        raise TypeError(out.read_text())

    return load_elsewhere


_SAVE_UNDER_TORCH = """
import sys, numpy as np, keras, keras_cskd
keras.utils.set_random_seed(0)
x = np.random.default_rng(0).random((32, 8)).astype("float32")
y = np.arange(32) % 3
teacher = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16), keras.layers.Dense(3)])
student = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
distiller = keras_cskd.Distiller(student, teacher, "cskd")
distiller.compile(optimizer="adam")
distiller.fit(x, y, batch_size=8, verbose=0)
distiller.save(sys.argv[1])
np.save(sys.argv[1] + ".npy", distiller.predict(x, verbose=0))
"""
_FIT_UNDER_JAX = """
import sys, numpy as np, keras, keras_cskd
x = np.random.default_rng(0).random((32, 8)).astype("float32")
distiller = keras.saving.load_model(sys.argv[1])
np.testing.assert_allclose(distiller.predict(x, verbose=0), np.load(sys.argv[1] + ".npy"), 1e-5)
history = distiller.fit(x, np.arange(32) % 3, batch_size=8, verbose=0)
assert int(keras.ops.convert_to_numpy(distiller.optimizer.iterations)) == 8
assert np.isfinite(history.history["loss"][0])
"""


class TorchOptimizerUnderJax(Exception):
    """The JAX process trained with the torch optimizer class the file names."""


@pytest.mark.slow
@pytest.mark.backend_independent
@pytest.mark.xfail(
    raises=TorchOptimizerUnderJax,
    strict=True,
    reason="Keras 3.15 saves the torch backend's optimizer class (module "
    "keras.src.backend.torch.optimizers.torch_adam) and loads it under JAX: `fit` fails "
    "with TypeError: expected Tensor as element 0 in argument 0, but got "
    "jaxlib._jax.ArrayImpl (a plain keras.Sequential too; not a keras-cskd bug)",
)
def test_distiller_saved_under_torch_fits_under_jax(tmp_path):
    """A Distiller saved by a PyTorch process loads in a JAX process with the
    same predictions, and `fit` continues from its optimizer state."""
    path = str(tmp_path / "distiller.keras")
    for backend, script in (("torch", _SAVE_UNDER_TORCH), ("jax", _FIT_UNDER_JAX)):
        result = subprocess.run(
            [sys.executable, "-c", script, path],
            env=subprocess_env(backend),
            capture_output=True,
            text=True,
            timeout=300,
        )
        if backend == "jax" and "got jaxlib._jax.ArrayImpl" in result.stderr:
            raise TorchOptimizerUnderJax(result.stderr.strip().splitlines()[-1])
        assert result.returncode == 0, (backend, result.stderr[-2000:])


@pytest.mark.parametrize("key", list(cases))
def test_bad_input(key, tmp_path_factory):
    cases.check(key, tmp_path_factory)


def test_reliability_table_is_current(tmp_path_factory):
    cases.check_page(tmp_path_factory, __name__)
