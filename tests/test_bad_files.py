"""Bad input: files that are not a saved `Distiller` -- text, a truncated
archive, a foreign zip, a weights file, a process that never imported
keras-cskd. One case per row of docs/reliability.md's table; the harness
is `bad_inputs.py`."""

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


@pytest.mark.parametrize("key", list(cases))
def test_bad_input(key, tmp_path_factory):
    cases.check(key, tmp_path_factory)


def test_reliability_table_is_current(tmp_path_factory):
    cases.check_page(tmp_path_factory, __name__)
