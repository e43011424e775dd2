"""Serialization never loses a model (issue "Reliability").

- Every loss, the CSWT layer and the student cross-entropy round-trip
  through `get_config`/`from_config`, `keras.saving.serialize_keras_object`
  / `deserialize_keras_object` and JSON, without `custom_objects` (they are
  registered under the package name `keras_cskd`), and compute the same
  values afterwards.
- A `Distiller` with each loss (CSKD+CSWT per sample and per class, a list
  of `(loss, weight)` pairs, the paper's two-term objective) round-trips
  through its config and a `.keras` file: the loaded model is a
  `Distiller` with the same configuration, predictions, teacher and
  optimizer state, and continues training to exactly the weights of a
  run that was never saved.
- The teacher's weights are stored once in the archive, and neither its
  weights nor its BatchNorm moving statistics change during `fit`.
"""

import io
import json
import subprocess
import sys
import zipfile

import h5py
import keras
import numpy as np
import pytest
from helpers import never_trains_its_teachers
from subprocess_env import subprocess_env

import keras_cskd
from keras_cskd import losses
from keras_cskd.data import load_digits
from keras_cskd.layers import CosineSimilarityWeightedTemperature as CSWT
from keras_cskd.losses import StudentCrossEntropy
from keras_cskd.models import mlp, small_cnn

BATCH = 32


def to_numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def weights_of(model):
    return [to_numpy(w) for w in model.weights]


def as_json(data):
    return json.loads(json.dumps(data))


def json_config(obj):
    """`obj`'s serialized config as plain JSON data (what a file holds)."""
    return json.loads(json.dumps(keras.saving.serialize_keras_object(obj)))


@pytest.fixture(scope="module")
def digits():
    (x, y), _ = load_digits()
    return x[: 3 * BATCH], y[: 3 * BATCH]


# ----------------------------------------------------------------- losses
LOSSES = {
    "kd": lambda: losses.KLDivergenceDistillation(temperature=3.0, name="kd3"),
    "mse": lambda: losses.LogitMSEDistillation(),
    "cskd": lambda: losses.CosineSimilarityDistillation(temperature=2.5, epsilon=1e-7),
    "cskd_cswt_sample": lambda: losses.CosineSimilarityDistillation(
        cswt=CSWT(low=1.5, high=5.0, granularity="sample")
    ),
    "cskd_cswt_class": lambda: losses.CosineSimilarityDistillation(
        cswt=CSWT(low=1.0, high=3.0, granularity="class", epsilon=1e-5)
    ),
    "stkd": lambda: losses.SimilarityTransferDistillation(
        temperature=3.0, kl_weight=0.5, batch_weight=2.0, mixup_alpha=0.4
    ),
    "dist": lambda: losses.DISTDistillation(temperature=2.0, inter_weight=1.5, intra_weight=0.5),
    "dkd": lambda: losses.DecoupledKDDistillation(
        temperature=2.0, target_weight=0.5, non_target_weight=4.0
    ),
}


def loss_value(loss, t, s, labels):
    kwargs = {"labels": labels} if loss.requires_labels else {}
    return float(to_numpy(loss(t, s, **kwargs)))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_round_trips(name):
    rng = np.random.default_rng(3)
    t = rng.normal(size=(6, 5)).astype("float32") * 2
    s = rng.normal(size=(6, 5)).astype("float32") * 2
    labels = rng.integers(0, 5, 6)
    loss = LOSSES[name]()
    expected = loss_value(loss, t, s, labels)
    config = loss.get_config()

    serialized = json_config(loss)
    assert serialized["registered_name"] == f"keras_cskd>{type(loss).__name__}"
    copies = [
        type(loss).from_config(config),
        keras.saving.deserialize_keras_object(serialized),  # no custom_objects
    ]
    for copy in copies:
        assert type(copy) is type(loss)
        assert as_json(copy.get_config()) == as_json(config)
        assert copy.name == loss.name
        assert loss_value(copy, t, s, labels) == pytest.approx(expected, rel=1e-6, abs=1e-7)
    if isinstance(loss, losses.CosineSimilarityDistillation) and loss.cswt is not None:
        for copy in copies:
            assert isinstance(copy.cswt, CSWT)
            assert copy.cswt is not loss.cswt
            assert as_json(copy.cswt.get_config()) == as_json(loss.cswt.get_config())


@pytest.mark.parametrize("granularity", ["sample", "class"])
def test_cswt_layer_round_trips(granularity):
    rng = np.random.default_rng(4)
    t = rng.normal(size=(7, 4)).astype("float32") * 3
    s = rng.normal(size=(7, 4)).astype("float32") * 3
    layer = CSWT(low=1.5, high=7.0, granularity=granularity, epsilon=1e-5, name="my_cswt")
    expected = to_numpy(layer(t, s))
    serialized = json_config(layer)
    assert serialized["registered_name"] == "keras_cskd>CosineSimilarityWeightedTemperature"
    for copy in (
        CSWT.from_config(layer.get_config()),
        keras.saving.deserialize_keras_object(serialized),
    ):
        assert (copy.low, copy.high, copy.granularity, copy.epsilon, copy.name) == (
            1.5,
            7.0,
            granularity,
            1e-5,
            "my_cswt",
        )
        np.testing.assert_allclose(to_numpy(copy(t, s)), expected, rtol=1e-6)


def test_student_cross_entropy_round_trips():
    loss = StudentCrossEntropy(kind="sparse", name="ce")
    copy = keras.saving.deserialize_keras_object(json_config(loss))
    assert isinstance(copy, StudentCrossEntropy)
    assert (copy.kind, copy.name) == ("sparse", "ce")


# ------------------------------------------------------------- distillers
DISTILLERS = {
    "kd": lambda: dict(distillation_loss="kd"),
    "mse": lambda: dict(distillation_loss="mse", student_loss_weight=0.0),
    "cskd": lambda: dict(distillation_loss=LOSSES["cskd"]()),
    "cskd_cswt_sample": lambda: dict(distillation_loss="cskd_cswt"),
    "cskd_cswt_class": lambda: dict(distillation_loss=LOSSES["cskd_cswt_class"](), seed=3),
    "stkd": lambda: dict(distillation_loss=LOSSES["stkd"](), seed=11),
    "dist": lambda: dict(distillation_loss="dist", distillation_loss_weight=2.0),
    "dkd": lambda: dict(distillation_loss=LOSSES["dkd"](), student_loss_weight=0.5),
    "pairs": lambda: dict(
        distillation_loss=[
            (losses.KLDivergenceDistillation(temperature=3.0), 0.5),
            (LOSSES["cskd_cswt_class"](), 2.0),
        ]
    ),
    "paper_objective": lambda: dict(distillation_loss=losses.cskd_paper_objective(), seed=5),
}
# Continuing training is checked for the configurations with state beyond
# plain weights: mixup's random generator (stkd), per-class CSWT, two
# weighted losses (the paper's objective), labels (dkd).
CONTINUED = {"stkd", "cskd_cswt_class", "dkd", "paper_objective"}


def build_distiller(name, teacher=None, student=None):
    teacher = teacher or mlp((8, 8, 1), 10, hidden=(32,), name="teacher")
    student = student or mlp((8, 8, 1), 10, hidden=(16,), name="student")
    distiller = keras_cskd.Distiller(student, teacher, **DISTILLERS[name]())
    distiller.compile(optimizer=keras.optimizers.Adam(5e-3), metrics=["accuracy"])
    return distiller


def fit(distiller, x, y):
    return distiller.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0).history


def normalised_config(distiller):
    config = json.loads(json.dumps(distiller.get_config()))
    # Keras numbers sub-models' input layers by creation order; that is not
    # part of the configuration a user chose.
    for role in ("student", "teacher"):
        config[role]["config"].pop("name", None)
    return json.dumps(config, sort_keys=True)


@pytest.mark.parametrize("name", sorted(DISTILLERS))
def test_distiller_round_trips(name, digits, tmp_path):
    x, y = digits
    distiller = build_distiller(name)
    if name in CONTINUED:
        fit(distiller, x, y)  # 3 steps: optimizer and mixup state exist
    config = distiller.get_config()

    copies = {
        "from_config": keras_cskd.Distiller.from_config(config),
        "deserialize": keras.saving.deserialize_keras_object(json_config(distiller)),
    }
    path = str(tmp_path / "distiller.keras")
    distiller.save(path)
    copies["keras_file"] = keras.saving.load_model(path)  # no custom_objects
    for how, copy in copies.items():
        assert isinstance(copy, keras_cskd.Distiller), how
        assert normalised_config(copy) == normalised_config(distiller), how
        assert [type(loss) for loss, _ in copy.distillation_losses] == [
            type(loss) for loss, _ in distiller.distillation_losses
        ]
        assert [w for _, w in copy.distillation_losses] == [
            w for _, w in distiller.distillation_losses
        ]
        assert copy.mixup_alpha == distiller.mixup_alpha
        assert never_trains_its_teachers(copy)

    loaded = copies["keras_file"]
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), distiller.predict(x, verbose=0))
    for a, b in zip(weights_of(loaded.teacher), weights_of(distiller.teacher), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(
        to_numpy(loaded.student_loss_weight), to_numpy(distiller.student_loss_weight)
    )
    np.testing.assert_array_equal(
        to_numpy(loaded.distillation_loss_weight), to_numpy(distiller.distillation_loss_weight)
    )
    if name not in CONTINUED:
        return

    assert to_numpy(loaded.optimizer.iterations) == 3
    np.testing.assert_array_equal(
        to_numpy(loaded.seed_generator.state), to_numpy(distiller.seed_generator.state)
    )
    # 3 more steps for both; the saved one must end exactly where the
    # never-saved one does (same losses logged, same weights).
    history = fit(distiller, x, y)
    loaded_history = fit(loaded, x, y)
    assert loaded_history["loss"] == pytest.approx(history["loss"], rel=1e-6)
    for a, b in zip(weights_of(loaded.student), weights_of(distiller.student), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert to_numpy(loaded.optimizer.iterations) == 6


# ----------------------------------------------------------------- teacher
def randomise(model, seed):
    """Distinct random values in every weight (BatchNorm variances > 0), so
    each array can be found in a weights file by value."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        values = rng.normal(size=weight.shape)
        if "variance" in weight.path:
            values = np.abs(values) + 0.5
        weight.assign(values.astype(weight.dtype))


def archive_datasets(path):
    with zipfile.ZipFile(path) as archive:
        data = archive.read("model.weights.h5")
    datasets = []
    with h5py.File(io.BytesIO(data), "r") as store:
        store.visititems(
            lambda name, item: (
                datasets.append((name, item[()])) if isinstance(item, h5py.Dataset) else None
            )
        )
    return datasets


@pytest.fixture(scope="module")
def trained_bn_distiller(digits):
    """A CNN teacher and student with BatchNorm, teacher randomised, before
    and after an epoch of STKD (mixup: the teacher sees mixed inputs)."""
    x, y = digits
    teacher = small_cnn((8, 8, 1), 10, filters=(8,), dense=16, name="bn_teacher")
    student = small_cnn((8, 8, 1), 10, filters=(4,), dense=8, name="bn_student")
    randomise(teacher, seed=1)
    distiller = build_distiller("stkd", teacher=teacher, student=student)
    teacher_before = weights_of(teacher)
    student_before = weights_of(student)
    distiller.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    return distiller, teacher_before, student_before


def test_teacher_and_its_batchnorm_statistics_unchanged_by_fit(trained_bn_distiller):
    distiller, teacher_before, student_before = trained_bn_distiller
    teacher = distiller.teacher
    moving = [i for i, w in enumerate(teacher.weights) if "moving" in w.path]
    assert len(moving) == 2  # moving_mean, moving_variance
    for before, after in zip(teacher_before, weights_of(teacher), strict=True):
        np.testing.assert_array_equal(after, before)
    assert not any(id(w) in {id(v) for v in distiller.trainable_weights} for w in teacher.weights)
    # The same fit did train the student, BatchNorm statistics included.
    student = distiller.student
    for i, weight in enumerate(student.weights):
        assert not np.array_equal(to_numpy(weight), student_before[i]), weight.path


def test_teacher_weights_stored_once(trained_bn_distiller, tmp_path):
    distiller = trained_bn_distiller[0]
    path = str(tmp_path / "distiller.keras")
    distiller.save(path)
    datasets = archive_datasets(path)
    # Every variable once: student + teacher + the two loss weights, the
    # optimizer's variables and the mixup generator's state.
    assert (
        len(distiller.weights)
        == len(distiller.student.weights) + len(distiller.teacher.weights) + 2
    )
    assert len(datasets) == len(distiller.weights) + len(distiller.optimizer.variables) + 1
    for weight in distiller.teacher.weights:
        values = to_numpy(weight)
        copies = [
            name
            for name, data in datasets
            if data.shape == values.shape and np.array_equal(data, values)
        ]
        assert len(copies) == 1, (weight.path, copies)

    loaded = keras.saving.load_model(path)
    for a, b in zip(weights_of(loaded.teacher), weights_of(distiller.teacher), strict=True):
        np.testing.assert_array_equal(a, b)
    assert never_trains_its_teachers(loaded)


@pytest.mark.slow
def test_loads_in_a_fresh_process_after_import_keras_cskd(digits, tmp_path):
    """What a user does in a new session: import the package, load the
    file; no custom_objects, no access to keras_cskd.Distiller first."""
    x, y = digits
    distiller = build_distiller("cskd_cswt_class")
    path = tmp_path / "distiller.keras"
    distiller.save(str(path))
    np.save(tmp_path / "x.npy", x)
    script = (
        "import sys, numpy as np, keras, keras_cskd\n"
        f"model = keras.saving.load_model({str(path)!r})\n"
        "assert type(model).__name__ == 'Distiller', type(model)\n"
        f"x = np.load({str(tmp_path / 'x.npy')!r})\n"
        f"np.save({str(tmp_path / 'pred.npy')!r}, model.predict(x, verbose=0))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=subprocess_env(keras.backend.backend()),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-1500:]
    np.testing.assert_array_equal(np.load(tmp_path / "pred.npy"), distiller.predict(x, verbose=0))


DATA = __import__("pathlib").Path(__file__).parent / "data"


def test_a_distiller_saved_by_keras_cskd_0_1_loads_and_trains_on():
    """A `.keras` file written by keras-cskd 0.1 (tests/data, made by
    commit c325d19's code: CSKD+CSWT and KD, weights 0.5 / 2.0, trained two
    epochs) loads with this release: the same predictions, losses and
    weights, and `fit` continues it without training its teacher."""
    expected = np.load(DATA / "distiller-keras-cskd-0.1-expected.npz")
    loaded = keras.saving.load_model(DATA / "distiller-keras-cskd-0.1.keras")
    assert isinstance(loaded, keras_cskd.Distiller)
    np.testing.assert_allclose(
        loaded.student.predict(expected["x"], verbose=0), expected["student"], rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        loaded.teacher.predict(expected["x"], verbose=0), expected["teacher"], rtol=1e-5, atol=1e-6
    )
    assert [type(loss).__name__ for loss, _ in loaded.distillation_losses] == [
        "CosineSimilarityDistillation",
        "KLDivergenceDistillation",
    ]
    assert [w for _, w in loaded.distillation_losses] == [1.0, 0.5]
    assert loaded.configured_loss_weights == (0.5, 2.0)
    assert never_trains_its_teachers(loaded)
    teacher_before = [np.array(w) for w in loaded.teacher.get_weights()]
    student_before = [np.array(w) for w in loaded.student.get_weights()]
    loaded.fit(expected["x"], expected["y"], batch_size=16, epochs=1, verbose=0)
    for a, b in zip(teacher_before, loaded.teacher.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert any(not np.allclose(a, b) for a, b in zip(student_before, loaded.student.get_weights()))


@pytest.mark.parametrize(
    "saved_under", [b for b in ("torch", "jax", "tensorflow") if b != keras.backend.backend()]
)
def test_a_distiller_saved_under_one_backend_trains_on_under_another(saved_under, tmp_path):
    """Saved and compiled under `saved_under` (in a subprocess), loaded and
    trained on under this backend. Keras stores a backend's own optimizer
    class (PyTorch's Adam saved under torch failed under JAX: "expected
    Tensor ... got jaxlib ArrayImpl"); keras-cskd loads the public class."""
    path = tmp_path / "distiller.keras"
    script = (
        "import sys, numpy as np, keras, keras_cskd\n"
        "from keras_cskd.models import mlp\n"
        "keras.utils.set_random_seed(0)\n"
        "t, s = mlp((6,), 3, hidden=(16,), name='t'), mlp((6,), 3, hidden=(4,), name='s')\n"
        "x = np.random.rand(32, 6).astype('float32'); y = np.arange(32) % 3\n"
        "d = keras_cskd.Distiller(s, t, 'cskd_cswt', check_roles=False)\n"
        "d.compile('adam', metrics=['accuracy'])\n"
        "d.fit(x, y, batch_size=16, epochs=1, verbose=0)\n"
        f"d.save({str(path)!r})\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=subprocess_env(saved_under),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-1500:]
    loaded = keras.saving.load_model(path)
    x = np.random.default_rng(0).random((32, 6)).astype("float32")
    y = np.arange(32) % 3
    before = [np.array(w) for w in loaded.student.get_weights()]
    history = loaded.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.allclose(a, b) for a, b in zip(before, loaded.student.get_weights()))
