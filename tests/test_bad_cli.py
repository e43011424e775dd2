"""Bad input to the command line (`keras-cskd distill`): the data file or
folder, the numbers, `--out`. Each must end with exit code 2 and one line
on stderr, before the teacher trains and before anything is written. One
case per row of docs/reliability.md's table; the harness is
`bad_inputs.py`."""

from pathlib import Path

import keras
import numpy as np
import pytest
from bad_inputs import Cases

cases = Cases("The command line")


def _npz(lab, name, **arrays):
    path = lab.tmp / f"{name}.npz"
    np.savez(path, **arrays)
    return ["--data", str(path)]


@cases.cli_error(
    "cli_last_batch_of_one",
    "`keras-cskd distill --method cskd --batch-size 16` on 33 training samples (a last batch of 1)",
    ["33 training sample(s) in batches of 16", "CSKD", "--batch-size 17"],
)
def _(lab):
    x, y = lab.x, lab.y
    data = _npz(lab, "data", x_train=np.concatenate([x, x[:1]]), y_train=np.r_[y, y[:1]],
                x_test=x[:8], y_test=y[:8])  # fmt: skip
    return [*data, "--method", "cskd", "--batch-size", "16"]


@cases.cli_error("cli_limit_1", "`keras-cskd distill --limit 1`", ["--limit must be at least 2"])
def _(lab):
    return ["--limit", "1"]


@cases.cli_error(
    "cli_negative_labels",
    "`keras-cskd distill --data` with a label -1 in the `.npz`",
    ["labels hold 1 negative value(s)", "np.unique"],
)
def _(lab):
    y = lab.y.copy()
    y[7] = -1
    return _npz(lab, "data", x=lab.x, y=y)


@cases.cli_error(
    "cli_string_labels",
    "`keras-cskd distill --data` with string labels (`'cat'`, `'dog'`, ...)",
    ["labels have dtype <U3", "np.unique(y, return_inverse=True)"],
)
def _(lab):
    names = np.array(["cat", "dog", "owl"])[lab.y]
    return _npz(lab, "data", x=lab.x, y=names)


@cases.cli_error(
    "cli_fractional_labels",
    "`keras-cskd distill --data` with a fractional label (`1.5`)",
    ["non-integer values", "whole numbers"],
)
def _(lab):
    y = lab.y.astype("float32")
    y[4] = 1.5
    return _npz(lab, "data", x=lab.x, y=y)


@cases.cli_error(
    "cli_nan_in_x",
    "`keras-cskd distill --data` with NaN in `x` (trained a NaN teacher before)",
    ["inputs hold NaN or inf in 1 sample(s) (first: sample 3)", "nan_to_num"],
)
def _(lab):
    x = lab.x.copy()
    x[3, 2] = np.nan
    return _npz(lab, "data", x=x, y=lab.y)


@cases.cli_error(
    "cli_one_class",
    "`keras-cskd distill --data` whose labels are all one class",
    ["one class only", "at least 2 classes"],
)
def _(lab):
    return _npz(lab, "data", x=lab.x, y=np.zeros(32, "int32"))


@cases.cli_error(
    "cli_mismatched_lengths",
    "`keras-cskd distill --data` with 32 training inputs but 31 labels",
    ["differ in count (32 inputs, 31 labels)"],
)
def _(lab):
    return _npz(lab, "data", x_train=lab.x, y_train=lab.y[:31], x_test=lab.x, y_test=lab.y)


def _image_folder(lab, corrupt=None):
    for label in ("cat", "dog"):
        (lab.tmp / "images" / label).mkdir(parents=True)
        for index in range(4):
            image = (lab.x[index, :6].reshape(2, 3, 1) * 255).astype("uint8").repeat(3, axis=2)
            keras.utils.save_img(lab.tmp / "images" / label / f"{index}.png", image, scale=False)
    if corrupt:
        (lab.tmp / "images" / corrupt).write_bytes(b"not an image")
    return ["--data", str(lab.tmp / "images"), "--image-size", "4"]


@cases.cli_error(
    "cli_corrupt_image",
    "`keras-cskd distill --data` on an image folder holding a file that is not an image",
    ["cannot be decoded as images", "cat/broken.png", "Delete or replace"],
)
def _(lab):
    return _image_folder(lab, corrupt="cat/broken.png")


@cases.cli_error(
    "cli_empty_folder",
    "`keras-cskd distill --data` on an empty folder",
    ["No images found", "one sub-folder of images per class"],
)
def _(lab):
    (lab.tmp / "empty").mkdir()
    return ["--data", str(lab.tmp / "empty")]


@cases.cli_error(
    "cli_out_is_a_file",
    "`keras-cskd distill --out` naming an existing file",
    ["is a file, not a folder"],
)
def _(lab):
    (lab.tmp / "results.txt").write_text("keep me")
    return ["--out", str(lab.tmp / "results.txt")]


@cases.cli_error(
    "cli_temperature_nan",
    "`keras-cskd distill --temperature nan`",
    ["--temperature must be positive, got nan"],
)
def _(lab):
    return ["--temperature", "nan"]


# The data file itself (keras_cskd.data.load_npz) ----------------------------
@cases.cli_error(
    "cli_npz_no_samples",
    "`keras-cskd distill --data` with an `.npz` whose `x` and `y` hold 0 samples",
    ["inputs and labels hold no samples (x has shape (0, 8))", "at least one sample"],
)
def _(lab):
    return _npz(lab, "data", x=lab.x[:0], y=lab.y[:0])


@cases.cli_error(
    "cli_npz_zero_bytes",
    "`keras-cskd distill --data` on an empty (0-byte) `.npz` file",
    ["is empty (0 bytes)", "np.savez(path, x=x, y=y)"],
)
def _(lab):
    (lab.tmp / "data.npz").write_bytes(b"")
    return ["--data", str(lab.tmp / "data.npz")]


@cases.cli_error(
    "cli_npz_text_file",
    "`keras-cskd distill --data` on a text file named `data.npz`",
    ["is not a readable .npz file: not a zip archive", "np.savez(path, x=x, y=y)"],
)
def _(lab):
    (lab.tmp / "data.npz").write_text("x,y\n0.5,1\n")
    return ["--data", str(lab.tmp / "data.npz")]


@cases.cli_error(
    "cli_npz_truncated",
    "`keras-cskd distill --data` on an `.npz` cut in half (interrupted copy)",
    ["truncated or damaged zip archive", "write it again"],
)
def _(lab):
    path = Path(_npz(lab, "data", x=lab.x, y=lab.y)[1])
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return ["--data", str(path)]


@cases.cli_error(
    "cli_npz_object_arrays",
    "`keras-cskd distill --data` with an `.npz` of Python objects (`x` saved from a list of "
    "rows of different lengths)",
    ["the array 'x' holds Python objects (dtype=object", "numeric arrays"],
)
def _(lab):
    rows = np.empty(32, dtype=object)
    rows[:] = [list(range(1 + i % 3)) for i in range(32)]
    return _npz(lab, "data", x=rows, y=lab.y)


@cases.cli_error(
    "cli_npz_wrong_names",
    "`keras-cskd distill --data` with an `.npz` whose arrays are named `a` and `b`",
    ["holds ['a', 'b']; expected arrays 'x' and 'y'"],
)
def _(lab):
    return _npz(lab, "data", a=lab.x, b=lab.y)


@cases.cli_error(
    "cli_npz_scalars",
    "`keras-cskd distill --data` with an `.npz` whose `x` and `y` are single numbers",
    ["inputs are a single value (shape ())", "x of shape (n, features)"],
)
def _(lab):
    return _npz(lab, "data", x=np.float32(1.0), y=np.int32(1))


@cases.cli_error(
    "cli_x_one_dimensional",
    "`keras-cskd distill --data` with 1-D inputs `x` of shape `(n,)` (trained a teacher on "
    "scalars before)",
    ["inputs have shape (32,)", "x[:, None]"],
)
def _(lab):
    return _npz(lab, "data", x=lab.x[:, 0], y=lab.y)


@cases.cli_error(
    "cli_complex_x",
    "`keras-cskd distill --data` with complex inputs (their imaginary part was dropped)",
    ["inputs have dtype complex64", "real and imaginary parts as separate features"],
)
def _(lab):
    return _npz(lab, "data", x=lab.x.astype("complex64"), y=lab.y)


@cases.cli_error(
    "cli_labels_per_position",
    "`keras-cskd distill --data` with labels of shape `(n, 3)` holding a class index per "
    "position (were read as one-hot rows: their argmax)",
    ["labels have shape (32, 3)", "not one-hot", "class indices of shape (n,)"],
)
def _(lab):
    return _npz(lab, "data", x=lab.x, y=np.stack([lab.y, lab.y[::-1], lab.y], axis=1))


@cases.cli_error(
    "cli_sparse_class_ids",
    "`keras-cskd distill --data` with labels {0, 100000, 200000} (built a 200,001-class run)",
    [
        "3 distinct values (0, 100000, 200000)",
        "200,001 classes",
        "np.unique(y, return_inverse=True)[1]",
    ],
)
def _(lab):
    return _npz(lab, "data", x=lab.x, y=lab.y * 100_000)


# Options that make no sense together (several teachers and chains).
@cases.cli_error(
    "cli_teacher_and_teachers",
    "`keras-cskd distill --teacher t.keras --teachers 3` (given teachers and trained ones)",
    ["--teacher gives the teachers and --teachers trains them: use one"],
)
def _(lab):
    return ["--teacher", str(lab.tmp / "t.keras"), "--teachers", "3"]


@cases.cli_error(
    "cli_ensemble_of_one",
    "`keras-cskd distill --ensemble mean_logits` with one teacher",
    ["--ensemble combines several teachers, but this run has one", "--teachers N"],
)
def _(lab):
    return ["--ensemble", "mean_logits"]


@cases.cli_error(
    "cli_chain_and_generations",
    "`keras-cskd distill --chain 64,16 --generations 2`",
    ["--chain gives the generations' widths and --generations repeats the student"],
)
def _(lab):
    return ["--chain", "64,16", "--generations", "2"]


@cases.cli_error(
    "cli_chain_not_widths",
    "`keras-cskd distill --chain 64,x`",
    ["--chain must be the hidden widths of the students", "got '64,x'"],
)
def _(lab):
    return ["--chain", "64,x"]


@cases.cli_error(
    "cli_chain_of_an_ensemble",
    "`keras-cskd distill --teachers 2 --chain 32` (a chain from several teachers)",
    ["--chain distils each generation from one model, and this run has 2 teachers"],
)
def _(lab):
    return ["--teachers", "2", "--chain", "32"]


@pytest.mark.parametrize("key", list(cases))
def test_bad_input(key, tmp_path_factory):
    cases.check(key, tmp_path_factory)


def test_reliability_table_is_current(tmp_path_factory):
    cases.check_page(tmp_path_factory, __name__)
