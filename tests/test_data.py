"""Data loaders: the real MNIST / Fashion-MNIST IDX files and synthetic
IDX, .npz and image-folder round trips."""

import gzip
from pathlib import Path

import numpy as np
import pytest

from keras_cskd import data

# Label counts per class, from /work/shared/data/*/README.md.
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
FASHION_TRAIN_COUNTS = [6000] * 10
FASHION_TEST_COUNTS = [1000] * 10


def _shared(name):
    folder = data.shared_data_folder(name)
    if not (folder / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"{folder} is not available on this machine")
    return folder


@pytest.mark.parametrize(
    "name, train_counts, test_counts",
    [
        ("fashion-mnist", FASHION_TRAIN_COUNTS, FASHION_TEST_COUNTS),
        ("mnist", MNIST_TRAIN_COUNTS, MNIST_TEST_COUNTS),
    ],
)
def test_real_idx_folder(name, train_counts, test_counts):
    (x, y), (x_test, y_test) = data.load_idx_folder(_shared(name))
    assert x.shape == (60000, 28, 28, 1) and x_test.shape == (10000, 28, 28, 1)
    assert x.dtype == np.float32 and x_test.dtype == np.float32
    assert y.dtype == np.int32 and y_test.dtype == np.int32
    assert y.shape == (60000,) and y_test.shape == (10000,)
    assert 0.0 == x.min() and x.max() == 1.0  # uint8 0..255 scaled to [0, 1]
    assert np.bincount(y, minlength=10).tolist() == train_counts
    assert np.bincount(y_test, minlength=10).tolist() == test_counts


def test_real_idx_folder_raw_bytes_and_limit():
    folder = _shared("fashion-mnist")
    raw = data.read_idx(folder / "t10k-labels-idx1-ubyte.gz")
    assert raw.dtype == np.uint8 and raw.shape == (10000,)
    (x, y), (x_test, y_test) = data.load_idx_folder(folder, limit=100)
    assert x.shape == (100, 28, 28, 1) and x_test.shape == (100, 28, 28, 1)
    np.testing.assert_array_equal(y_test, raw[:100].astype("int32"))


def test_shared_data_folder_honours_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_CSKD_DATA", str(tmp_path))
    assert data.shared_data_folder("mnist") == tmp_path / "mnist"
    monkeypatch.delenv("KERAS_CSKD_DATA")
    assert data.shared_data_folder("mnist").parts[-3:] == ("shared", "data", "mnist")


# ------------------------------------------------------------ synthetic IDX
def _write_idx(path, array, compress):
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(size).to_bytes(4, "big") for size in array.shape
    )
    payload = header + array.tobytes()
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as handle:
            handle.write(payload)
    else:
        Path(path).write_bytes(payload)


def _synthetic(n, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)


@pytest.mark.parametrize("compress", [True, False])
def test_idx_round_trip(tmp_path, compress):
    x, y = _synthetic(12, 0)
    x_test, y_test = _synthetic(5, 1)
    for key, array in (("x_train", x), ("y_train", y), ("x_test", x_test), ("y_test", y_test)):
        _write_idx(tmp_path / data.IDX_FILES[key], array, compress)
    (xa, ya), (xb, yb) = data.load_idx_folder(tmp_path)
    np.testing.assert_allclose(xa[..., 0], x / 255.0, rtol=1e-6)
    np.testing.assert_allclose(xb[..., 0], x_test / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ya, y)
    np.testing.assert_array_equal(yb, y_test)
    assert xa.dtype == np.float32 and ya.dtype == np.int32


def test_idx_errors(tmp_path):
    with pytest.raises(data.DataError, match="does not exist"):
        data.load_idx_folder(tmp_path / "missing")
    with pytest.raises(data.DataError, match="No train-images"):
        data.load_idx_folder(tmp_path)
    bad = tmp_path / "bad.idx"
    bad.write_bytes(b"\x00\x00\x0d\x01" + (3).to_bytes(4, "big") + b"abc")
    with pytest.raises(data.DataError, match="magic"):
        data.read_idx(bad)
    short = tmp_path / "short.idx"
    short.write_bytes(b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + b"abc")
    with pytest.raises(data.DataError, match="truncated"):
        data.read_idx(short)
    x, y = _synthetic(4, 0)
    for key in ("x_train", "x_test", "y_test"):
        _write_idx(tmp_path / data.IDX_FILES[key], x if key.startswith("x") else y, True)
    _write_idx(tmp_path / data.IDX_FILES["y_train"], y[:3], True)
    with pytest.raises(data.DataError, match="differ in count"):
        data.load_idx_folder(tmp_path)


# ------------------------------------------------------------- synthetic npz
def test_npz_round_trip_with_split(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (20, 8, 8), dtype=np.uint8)
    y = np.arange(20) % 4
    path = tmp_path / "arrays.npz"
    np.savez(path, x=x, y=y)
    (xa, ya), (xb, yb) = data.load_npz(path, test_fraction=0.25, seed=3)
    assert xa.shape == (15, 8, 8, 1) and xb.shape == (5, 8, 8, 1)
    assert xa.dtype == np.float32 and ya.dtype == np.int32
    # The same samples, shuffled reproducibly: each (image, label) pair survives.
    merged = np.round(np.concatenate([xa, xb])[..., 0] * 255).astype(np.uint8)
    labels = np.concatenate([ya, yb])
    found = [int(np.where(np.all(x == image, axis=(1, 2)))[0][0]) for image in merged]
    assert sorted(found) == list(range(20))
    assert labels.tolist() == y[found].tolist()
    (xc, _), _ = data.load_npz(path, test_fraction=0.25, seed=3)
    np.testing.assert_array_equal(xa, xc)


def test_npz_round_trip_presplit_one_hot(tmp_path):
    x = np.random.default_rng(1).random((6, 4, 4, 3)).astype("float32")
    y = np.eye(3)[[0, 1, 2, 0, 1, 2]]
    path = tmp_path / "split.npz"
    np.savez(path, x_train=x[:4], y_train=y[:4], x_test=x[4:], y_test=y[4:])
    (xa, ya), (xb, yb) = data.load_npz(path)
    np.testing.assert_array_equal(xa, x[:4])
    assert ya.tolist() == [0, 1, 2, 0] and yb.tolist() == [1, 2]


def test_npz_errors(tmp_path):
    with pytest.raises(data.DataError, match="does not exist"):
        data.load_npz(tmp_path / "none.npz")
    path = tmp_path / "wrong.npz"
    np.savez(path, images=np.zeros((2, 2)))
    with pytest.raises(data.DataError, match="expected arrays 'x' and 'y'"):
        data.load_npz(path)
    np.savez(path, x=np.zeros((3, 2, 2)), y=np.zeros(2))
    with pytest.raises(data.DataError, match=r"differ in count \(3 inputs, 2 labels\)"):
        data.load_npz(path)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip")
    with pytest.raises(data.DataError, match="not a readable"):
        data.load_npz(garbage)


@pytest.mark.parametrize(
    "x, y, message",
    [
        (np.zeros((4, 2)), np.array([0, 1, -1, 1]), r"1 negative value\(s\) \(min -1\)"),
        (np.zeros((4, 2)), np.array([0, 1, 0.5, 1]), r"non-integer values \(e.g. 0.5\)"),
        (np.zeros((4, 2)), np.array(["a", "b", "a", "b"]), r"dtype <U1 \(e.g. 'a'\)"),
        (np.zeros((4, 2)), np.array([0, 1, np.nan, 1]), "labels hold NaN or inf"),
        (np.array([[0, 1], [0, np.inf], [0, 0], [1, 1]]), np.array([0, 1, 0, 1]), "sample 1"),
        (np.array([["a", "b"]] * 4), np.array([0, 1, 0, 1]), "inputs have dtype <U1"),
    ],
    ids=["negative", "fractional", "strings", "nan_label", "inf_input", "string_input"],
)
def test_npz_arrays_are_checked(tmp_path, x, y, message):
    """Every loader checks its arrays (here through load_npz, before the
    split, so a sample index is the file's)."""
    path = tmp_path / "data.npz"
    np.savez(path, x=x, y=y)
    with pytest.raises(data.DataError, match=message):
        data.load_npz(path)


# ------------------------------------------------------ synthetic image folder
def test_image_folder_round_trip(tmp_path):
    pytest.importorskip("tensorflow")  # image_dataset_from_directory uses tf.data
    pytest.importorskip("PIL")
    from PIL import Image

    colours = {"blue": (0, 0, 255), "red": (255, 0, 0)}
    for name, colour in colours.items():
        (tmp_path / name).mkdir()
        for index in range(5):
            Image.new("RGB", (10, 12), colour).save(tmp_path / name / f"{index}.png")
    (x, y), (x_test, y_test) = data.load_image_folder(
        tmp_path, image_size=(8, 8), test_fraction=0.2, seed=0
    )
    assert len(x) + len(x_test) == 10 and len(x_test) == 2
    assert x.shape[1:] == (8, 8, 3) and x.dtype == np.float32 and y.dtype == np.int32
    # Class indices follow the sorted folder names: 0 = blue, 1 = red.
    for images, labels in ((x, y), (x_test, y_test)):
        for image, label in zip(images, labels, strict=True):
            expected = np.array(colours[sorted(colours)[label]], "float32")
            np.testing.assert_allclose(image.reshape(-1, 3).mean(axis=0), expected, atol=1.0)


def test_image_folder_errors(tmp_path):
    with pytest.raises(data.DataError, match="does not exist"):
        data.load_image_folder(tmp_path / "missing")
    pytest.importorskip("tensorflow")
    with pytest.raises(data.DataError, match="one sub-folder of images per class"):
        data.load_image_folder(tmp_path)  # empty
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for index in range(3):
            (tmp_path / name / f"{index}.png").write_bytes(b"not a png")
    with pytest.raises(data.DataError, match=r"file\(s\) in the image folder cannot be decoded"):
        data.load_image_folder(tmp_path, image_size=(4, 4))


def test_keras_dataset_name_check():
    with pytest.raises(data.DataError, match="Unknown dataset"):
        data.load_keras_dataset("imagenet")
