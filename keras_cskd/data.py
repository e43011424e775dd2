"""Data loaders: the embedded digits demo, IDX folders (MNIST and
Fashion-MNIST files), `.npz` arrays, image folders and `keras.datasets`.

Every loader returns `((x_train, y_train), (x_test, y_test))` as NumPy
arrays: images as float32 in `[0, 1]` with a channel axis, labels as int32.

(Over 400 lines: half of it is the checks every loader applies to what it
read -- shapes, dtypes, label kinds, sparse class ids -- each with the
one-line message that `tests/test_bad_cli.py` checks; they belong to
loading, not to the Distiller's checks of `fit`'s arguments.)
"""

import gzip
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}

KERAS_DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100")


class DataError(ValueError):
    """Raised for unusable data, with a message that names the fix.

    Example:

    >>> from keras_cskd.data import DataError, load_npz
    >>> try:
    ...     load_npz("no-such-file.npz")
    ... except DataError as error:
    ...     print(error)
    Data file no-such-file.npz does not exist.
    """


def load_digits(test_fraction=0.25, seed=0, as_images=True):
    """scikit-learn's 8x8 digits (1,797 images, shipped with scikit-learn,
    no network), split reproducibly into train and test.

    Returns images `(n, 8, 8, 1)` in `[0, 1]` (or flat `(n, 64)` with
    `as_images=False`) and int32 labels 0-9.

    Example:

    >>> from keras_cskd.data import load_digits
    >>> (x, y), (x_test, y_test) = load_digits()
    >>> x.shape, x_test.shape, int(y.max())
    ((1348, 8, 8, 1), (449, 8, 8, 1), 9)
    """
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as error:  # pragma: no cover
        raise ImportError(
            "The embedded demo data set is scikit-learn's digits: pip install 'keras-cskd[demo]'"
        ) from error
    digits = sklearn_digits()
    x = (digits.images / 16.0).astype("float32")
    y = digits.target.astype("int32")
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    x = x[..., None] if as_images else x.reshape(len(x), -1)
    n_test = int(round(len(x) * test_fraction))
    return (x[n_test:], y[n_test:]), (x[:n_test], y[:n_test])


def read_idx(path):
    """Reads one IDX file (optionally gzipped) into a NumPy array.

    Example:

    >>> import gzip, tempfile, os, numpy as np
    >>> from keras_cskd.data import read_idx
    >>> path = os.path.join(tempfile.mkdtemp(), "x.idx.gz")
    >>> header = bytes([0, 0, 8, 2]) + (2).to_bytes(4, "big") + (3).to_bytes(4, "big")
    >>> with gzip.open(path, "wb") as f:
    ...     _ = f.write(header + bytes(range(6)))
    >>> read_idx(path).tolist()
    [[0, 1, 2], [3, 4, 5]]
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path} is not a uint8 IDX file (bad magic number).")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape)) + 4 + 4 * ndim
    if len(data) != expected:
        raise DataError(f"{path} is truncated or corrupt: {len(data)} bytes for shape {shape}.")
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find_idx(folder, stem):
    for name in (stem + ".gz", stem):
        candidate = Path(folder) / name
        if candidate.exists():
            return candidate
    raise DataError(
        f"No {stem}[.gz] in {folder}. An IDX folder holds the four MNIST-style "
        f"files: {', '.join(IDX_FILES.values())} (gzipped or not)."
    )


def load_idx_folder(folder, limit=None):
    """Loads a folder of the four MNIST-style IDX files (MNIST, Fashion-MNIST).

    Images come back as float32 `(n, 28, 28, 1)` in `[0, 1]`, labels int32.
    `limit` keeps the first `limit` training and test samples.

    Example:

    >>> import os, tempfile, numpy as np
    >>> from keras_cskd.data import load_idx_folder
    >>> folder = tempfile.mkdtemp()
    >>> def write_idx(name, array):
    ...     dims = b"".join(n.to_bytes(4, "big") for n in array.shape)
    ...     header = bytes([0, 0, 8, array.ndim]) + dims
    ...     with open(os.path.join(folder, name), "wb") as f:
    ...         _ = f.write(header + array.astype("uint8").tobytes())
    >>> write_idx("train-images-idx3-ubyte", np.zeros((3, 28, 28)))
    >>> write_idx("train-labels-idx1-ubyte", np.array([0, 1, 2]))
    >>> write_idx("t10k-images-idx3-ubyte", np.full((2, 28, 28), 255))
    >>> write_idx("t10k-labels-idx1-ubyte", np.array([3, 4]))
    >>> (x, y), (x_test, y_test) = load_idx_folder(folder)
    >>> x.shape, y.tolist(), float(x_test.max())
    ((3, 28, 28, 1), [0, 1, 2], 1.0)
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"IDX folder {folder} does not exist.")
    arrays = {key: read_idx(_find_idx(folder, stem)) for key, stem in IDX_FILES.items()}
    for split in ("train", "test"):
        if len(arrays[f"x_{split}"]) != len(arrays[f"y_{split}"]):
            raise DataError(f"{folder}: {split} images and labels differ in count.")
    _check_class_ids([arrays["y_train"], arrays["y_test"]], folder)
    if limit is not None:
        arrays = {key: value[:limit] for key, value in arrays.items()}
    return _as_model_arrays(arrays["x_train"], arrays["y_train"], folder), _as_model_arrays(
        arrays["x_test"], arrays["y_test"], folder, "test"
    )


def shared_data_folder(name):
    """Where the MNIST/Fashion-MNIST IDX files live: `$KERAS_CSKD_DATA/name`
    if set, else `../shared/data/name` next to the repository.

    Example:

    >>> from keras_cskd.data import load_idx_folder, shared_data_folder
    >>> folder = shared_data_folder("fashion-mnist")
    >>> folder.name
    'fashion-mnist'
    >>> if folder.is_dir():  # present in the development checkout
    ...     (x, y), _ = load_idx_folder(folder, limit=100)
    """
    root = os.environ.get("KERAS_CSKD_DATA")
    if root:
        return Path(root) / name
    return Path(__file__).resolve().parents[2] / "shared" / "data" / name


def load_npz(path, test_fraction=0.2, seed=0):
    """Loads an `.npz` with `x`/`y` arrays (split off `test_fraction`), or
    `x_train`/`y_train`/`x_test`/`y_test`.

    Example:

    >>> import os, tempfile, numpy as np
    >>> from keras_cskd.data import load_npz
    >>> path = os.path.join(tempfile.mkdtemp(), "data.npz")
    >>> np.savez(path, x=np.random.rand(10, 4, 4).astype("float32"), y=np.arange(10) % 2)
    >>> (x, y), (x_test, y_test) = load_npz(path, test_fraction=0.2)
    >>> x.shape, x_test.shape, y.dtype.name
    ((8, 4, 4, 1), (2, 4, 4, 1), 'int32')
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"Data file {path} does not exist.")
    arrays = _read_npz(path)
    if {"x_train", "y_train", "x_test", "y_test"} <= set(arrays):
        train = _as_model_arrays(arrays["x_train"], arrays["y_train"], path)
        test = _as_model_arrays(arrays["x_test"], arrays["y_test"], path, "test")
        _check_class_ids([arrays["y_train"], arrays["y_test"]], path)
        return train, test
    if not {"x", "y"} <= set(arrays):
        raise DataError(
            f"{path} holds {sorted(arrays)}; expected arrays 'x' and 'y' "
            "(or x_train/y_train/x_test/y_test)."
        )
    x, y = arrays["x"], arrays["y"]
    _check_arrays(x, y, path, "")
    if len(x) < 2:
        raise DataError(
            f"{path} holds {len(x)} sample; at least 2 are needed (a fifth of them, at "
            "least one, is split off for testing)."
        )
    _check_class_ids([y], path)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    n_test = max(1, int(round(len(x) * test_fraction)))
    return _as_model_arrays(x[n_test:], y[n_test:], path), _as_model_arrays(
        x[:n_test], y[:n_test], path, "test"
    )


_WRITE_NPZ = "np.savez(path, x=x, y=y) (or x_train=..., y_train=..., x_test=..., y_test=...)"


def _read_npz(path):
    """`{name: array}` of the `.npz` at `path`, or a `DataError` that says
    what the file is instead."""
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as handle:
            start = handle.read(6)
        if not start:
            raise DataError(f"Data file {path} is empty (0 bytes). Write it with {_WRITE_NPZ}.")
        if start.startswith(b"PK"):
            raise DataError(
                f"{path} is a truncated or damaged zip archive (an interrupted copy or "
                f"download?). Copy or write it again with {_WRITE_NPZ}."
            )
        if start == b"\x93NUMPY":
            raise DataError(
                f"{path} holds a single array (written by np.save), not an .npz archive of "
                f"inputs and labels. Write it with {_WRITE_NPZ}."
            )
        raise DataError(
            f"{path} is not a readable .npz file: not a zip archive (text, or another "
            f"format named .npz). Write it with {_WRITE_NPZ}."
        )
    arrays, key = {}, None
    try:
        with np.load(path, allow_pickle=False) as archive:
            for key in archive.files:
                arrays[key] = archive[key]
    except ValueError as error:
        if "allow_pickle" in str(error):  # NumPy: "Object arrays cannot be loaded ..."
            raise DataError(
                f"{path}: the array {key!r} holds Python objects (dtype=object, e.g. "
                "lists of different lengths or mixed types), which are not read (loading "
                "them would run pickled code). Save numeric arrays, e.g. "
                "np.asarray(x, dtype='float32')."
            ) from None
        raise DataError(f"{path} is not a readable .npz file ({_first_line(error)}).") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise DataError(
            f"{path} is not a readable .npz file ({type(error).__name__}: "
            f"{_first_line(error)}); it may be truncated. Write it again with {_WRITE_NPZ}."
        ) from None
    for key, value in arrays.items():
        if not isinstance(value, np.ndarray):  # np.load returns other members as bytes
            raise DataError(
                f"{path}: {key!r} is not a NumPy array (a file of another kind inside the "
                f"archive). Write the archive with {_WRITE_NPZ}."
            )
    return arrays


def load_image_folder(folder, image_size=(32, 32), test_fraction=0.2, seed=0):
    """Loads a folder of class sub-folders of images with
    `keras.utils.image_dataset_from_directory` into arrays.

    Example:

    >>> import os, tempfile, numpy as np, keras
    >>> from keras_cskd.data import load_image_folder
    >>> root = tempfile.mkdtemp()
    >>> for label in ("cat", "dog"):
    ...     os.makedirs(os.path.join(root, label))
    ...     for i in range(5):
    ...         image = np.random.randint(0, 256, (12, 10, 3)).astype("uint8")
    ...         keras.utils.save_img(os.path.join(root, label, f"{i}.png"), image, scale=False)
    >>> (x, y), (x_test, y_test) = load_image_folder(root, image_size=(8, 8), test_fraction=0.2)
    Using ...
    >>> x.shape[1:], len(x), len(x_test)
    ((8, 8, 3), 8, 2)
    """
    import keras

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"Image folder {folder} does not exist.")
    splits = []
    for subset in ("training", "validation"):
        try:
            dataset = keras.utils.image_dataset_from_directory(
                folder,
                image_size=tuple(image_size),
                validation_split=test_fraction,
                subset=subset,
                seed=seed,
                batch_size=None,
                shuffle=True,  # with `seed`: both subsets split the same shuffled list
                verbose=False,
            )
        except ValueError as error:  # e.g. "No images found in directory ..."
            raise DataError(
                f"{_first_line(error).rstrip('.')}. An image folder holds one sub-folder of images "
                f"per class, e.g. {folder / 'cat' / '1.png'}."
            ) from None
        xs, ys = [], []
        try:
            for image, label in dataset:
                xs.append(np.asarray(image))
                ys.append(np.asarray(label))
        except Exception as error:  # tf.errors.InvalidArgumentError: an undecodable file
            raise DataError(_undecodable_images(dataset.file_paths, error)) from None
        if not xs:
            raise DataError(f"No images found in {folder} for the {subset} split.")
        splits.append(_as_model_arrays(np.stack(xs), np.asarray(ys), folder, subset))
    return splits[0], splits[1]


def load_keras_dataset(name):
    """`keras.datasets.<name>.load_data()` (downloads where a network exists).

    Example:

    >>> from keras_cskd.data import load_keras_dataset
    >>> load_keras_dataset("imagenet")
    Traceback (most recent call last):
    ...
    keras_cskd.data.DataError: Unknown dataset 'imagenet'; choose one of ('mnist',
    'fashion_mnist', 'cifar10', 'cifar100').
    """
    import keras

    if name not in KERAS_DATASETS:
        raise DataError(f"Unknown dataset {name!r}; choose one of {KERAS_DATASETS}.")
    try:
        (x, y), (x_test, y_test) = getattr(keras.datasets, name).load_data()
    except Exception as error:  # network or cache problems
        raise DataError(
            f"Could not load keras.datasets.{name} ({type(error).__name__}: {error}). "
            "It downloads on first use; without a network pass --data with local files."
        ) from error
    return _as_model_arrays(x, y, name), _as_model_arrays(x_test, y_test, name, "test")


def _undecodable_images(paths, error):
    """The message for an image folder with files that cannot be decoded,
    naming them (found by decoding each file again, on this error path only)."""
    import tensorflow as tf

    bad = []
    for path in paths:
        try:
            tf.io.decode_image(tf.io.read_file(path), expand_animations=False)
        except Exception:  # noqa: BLE001 - any decoding failure marks the file
            bad.append(path)
    if not bad:
        return f"Reading the images failed ({type(error).__name__}: {_first_line(error)})."
    shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
    return (
        f"{len(bad)} file(s) in the image folder cannot be decoded as images: {shown}. "
        "Delete or replace them (PNG, JPEG, GIF or BMP)."
    )


def _first_line(error):
    lines = str(error).strip().splitlines()
    return lines[0][:200] if lines else ""


def _check_arrays(x, y, source, split):
    """Raises a `DataError` unless `x` and `y` are numeric arrays of the
    same length, `x` finite and `y` class indices (whole numbers >= 0) or
    one-hot rows."""
    where = f"{source}: the {split} " if split else f"{source}: "
    for name, array in (("inputs", x), ("labels", y)):
        if array.ndim == 0:
            raise DataError(
                f"{where}{name} are a single value (shape ()); expected one entry per "
                "sample, e.g. x of shape (n, features) and y of shape (n,)."
            )
    if len(x) != len(y):
        raise DataError(
            f"{where}inputs and labels differ in count ({len(x)} inputs, {len(y)} "
            "labels). Give one label per input."
        )
    if len(x) == 0:
        raise DataError(
            f"{where}inputs and labels hold no samples (x has shape {x.shape}). Give at "
            "least one sample" + (" per split." if split else ".")
        )
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise DataError(f"{where}inputs have dtype {x.dtype}; expected numbers (e.g. float32).")
    if np.issubdtype(x.dtype, np.complexfloating):
        raise DataError(
            f"{where}inputs have dtype {x.dtype}; expected real numbers (e.g. float32): "
            "give the real and imaginary parts as separate features."
        )
    if x.ndim == 1:
        raise DataError(
            f"{where}inputs have shape {x.shape}: one number per sample, no feature axis. "
            "Give them the shape (n, features...), e.g. x[:, None] for one feature."
        )
    if x[0].size == 0:
        raise DataError(
            f"{where}inputs have shape {x.shape}: no features per sample. Give each "
            "sample at least one feature."
        )
    if not (np.issubdtype(y.dtype, np.number) or y.dtype == np.bool_) or np.issubdtype(
        y.dtype, np.complexfloating
    ):
        raise DataError(
            f"{where}labels have dtype {y.dtype} (e.g. {str(y.flat[0])!r}); expected class "
            "indices 0..C-1. Map names to indices first, e.g. "
            "np.unique(y, return_inverse=True)[1]."
        )
    if np.issubdtype(x.dtype, np.floating):
        finite = np.concatenate(
            [
                np.isfinite(x[i : i + 4096].reshape(-1, x[0].size)).all(axis=1)
                for i in range(0, len(x), 4096)
            ]
            or [np.ones(0, bool)]
        )
        if not finite.all():
            raise DataError(
                f"{where}inputs hold NaN or inf in {int(np.count_nonzero(~finite))} "
                f"sample(s) (first: sample {int(np.argmin(finite))}). Drop or impute them "
                "(e.g. np.nan_to_num) first."
            )
    labels = np.asarray(y, dtype="float64")
    if not np.isfinite(labels).all():
        raise DataError(f"{where}labels hold NaN or inf. Every sample needs a class index.")
    labels = labels.reshape(len(labels), -1)
    if labels.shape[1] == 1:
        if not np.all(labels == np.round(labels)):
            raise DataError(
                f"{where}labels hold non-integer values (e.g. "
                f"{labels.flat[np.argmax(labels != np.round(labels))]:g}); class indices "
                "must be whole numbers 0..C-1."
            )
        if labels.size and labels.min() < 0:
            raise DataError(
                f"{where}labels hold {int(np.count_nonzero(labels < 0))} negative value(s) "
                f"(min {labels.min():g}); class indices must be 0..C-1. Remap them, e.g. "
                "np.unique(y, return_inverse=True)[1]."
            )
        return
    # (n, C): one-hot rows, or class probabilities (soft labels): argmax is the class.
    rows = (labels >= 0).all(axis=1) & (np.abs(labels.sum(axis=1) - 1.0) <= 1e-3)
    if not rows.all():
        bad = int(np.argmin(rows))
        raise DataError(
            f"{where}labels have shape {y.shape}, but {int(np.count_nonzero(~rows))} of "
            f"their rows are not one-hot (nor probabilities summing to 1), e.g. row {bad}: "
            f"{np.round(labels[bad][:6], 3).tolist()}. Give one class per sample: class "
            "indices of shape (n,) or one-hot rows of shape (n, C)."
        )


def _check_class_ids(label_arrays, source):
    """Refuses class indices that use few of the ids up to their maximum
    (e.g. {0, 100000, 200000}): every id up to the maximum becomes a class
    of the models, so such labels would build a 200,001-class run. They are
    refused rather than remapped: the trained models' output k is class k
    of the user's data, which a silent remapping would break."""
    sparse = [
        np.asarray(y).reshape(len(y), -1)[:, 0]
        for y in label_arrays
        if np.asarray(y).reshape(len(y), -1).shape[1] == 1
    ]
    if not sparse:
        return
    values = [int(v) for v in np.unique(np.concatenate(sparse))]  # whole numbers >= 0
    classes = values[-1] + 1
    if classes > max(10 * len(values), 2):
        shown = ", ".join(map(str, values[:4])) + (", ..." if len(values) > 4 else "")
        raise DataError(
            f"{source}: the labels take {len(values)} distinct values ({shown}) but reach "
            f"{values[-1]}, so the models would get {classes:,} classes, "
            f"{len(values)} of them with samples. Number the classes 0..{len(values) - 1}, "
            "e.g. y = np.unique(y, return_inverse=True)[1] (on all the labels together)."
        )


def _as_model_arrays(x, y, source="data", split="training"):
    x, y = np.asarray(x), np.asarray(y)
    _check_arrays(x, y, source, split)
    if x.dtype == np.uint8:  # 8-bit images
        x = x.astype("float32") / 255.0
    x = x.astype("float32")
    if x.ndim == 3:  # (n, h, w) grayscale
        x = x[..., None]
    y = np.asarray(y).reshape(len(y), -1)
    if y.shape[1] == 1:
        y = y[:, 0]
    else:
        y = np.argmax(y, axis=1)
    return x, y.astype("int32")


__all__ = [
    "DataError",
    "IDX_FILES",
    "KERAS_DATASETS",
    "load_digits",
    "load_idx_folder",
    "load_image_folder",
    "load_keras_dataset",
    "load_npz",
    "read_idx",
    "shared_data_folder",
]


def __dir__():  # what `dir()` and tab completion show: the public names only
    return __all__
