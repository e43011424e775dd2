"""Files that are either complete or absent: written to a temporary file
next to the target, flushed to disk (`fsync`), then renamed over it.

A rename within one folder is atomic on POSIX and Windows file systems, so
a process killed at any moment (SIGKILL, a lost machine) leaves the old file
or the new one, never a mix; `fsync` of the file and of its folder makes the
new one survive a power cut once `write_atomically` has returned.

Example:

>>> import os, tempfile
>>> from keras_cskd._files import write_text_atomically
>>> path = os.path.join(tempfile.mkdtemp(), "run.json")
>>> write_text_atomically(path, '{"epoch": 3}')
>>> open(path).read()
'{"epoch": 3}'
"""

import os

# Keras chooses the format from the end of the name: keep it on the
# temporary file ("model.keras" -> "model.partial.keras").
_KERAS_SUFFIXES = (".weights.h5", ".keras", ".h5")


def partial_path(filepath):
    """The temporary name `write_atomically` writes `filepath` to first."""
    filepath = os.fspath(filepath)
    for suffix in _KERAS_SUFFIXES:
        if filepath.endswith(suffix):
            return filepath[: -len(suffix)] + ".partial" + suffix
    return filepath + ".partial"


def write_atomically(filepath, write):
    """Calls `write(temporary_path)`, then moves the result to `filepath`
    in one step. On any exception (Ctrl-C included) the temporary file is
    removed and `filepath` is left as it was."""
    filepath = os.fspath(filepath)
    temporary = partial_path(filepath)
    try:
        write(temporary)
        _fsync(temporary)
        os.replace(temporary, filepath)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    _fsync_folder(os.path.dirname(os.path.abspath(filepath)))


def write_text_atomically(filepath, text):
    """`write_atomically` for a text file."""

    def write(path):
        with open(path, "w") as handle:
            handle.write(text)

    write_atomically(filepath, write)


def copy_atomically(source, target):
    """Copies `source` to `target` with `write_atomically`."""
    import shutil

    write_atomically(target, lambda path: shutil.copyfile(source, path))


def _fsync(path):
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _fsync_folder(folder):
    """Makes the rename itself durable. Not possible on Windows (a folder
    cannot be opened there), where the rename is durable once the file
    system flushes its journal."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
