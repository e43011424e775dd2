"""Bad inputs raise a ValueError whose message names the problem."""

import keras
import numpy as np
import pytest
from helpers import LOSS_CASES

from keras_cskd import losses
from keras_cskd import ops as kd_ops
from keras_cskd.layers import CosineSimilarityWeightedTemperature


def _logits(shape=(7, 3), seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=shape) * 3).astype("float32"), (rng.normal(size=shape) * 3).astype(
        "float32"
    )


LABELS = np.array([0, 1, 2, 0, 1, 2, 0])


def _callables():
    """Every checked entry point: each loss case and both CSWT layers, as
    `(name, fn(t, s))`."""
    out = []
    for case in LOSS_CASES:
        loss = case.make()
        out.append(
            (
                case.name,
                lambda t, s, case=case, loss=loss: case(loss, t, s, labels=LABELS[: len(t)]),
            )
        )
    for granularity in ("sample", "class"):
        layer = CosineSimilarityWeightedTemperature(granularity=granularity)
        out.append((f"cswt_{granularity}", lambda t, s, layer=layer: layer(t, s)))
    return out


CALLABLES = _callables()
CALLABLE_IDS = [name for name, _ in CALLABLES]


@pytest.mark.parametrize("entry", CALLABLES, ids=CALLABLE_IDS)
@pytest.mark.parametrize(
    "t_shape,s_shape",
    [((12,), (12,)), ((4, 3), (4, 3, 1)), ((2, 2, 3), (4, 3))],
    ids=["rank1", "student_rank3", "teacher_rank3"],
)
def test_rank_not_two(entry, t_shape, s_shape):
    """Rank 1, or teacher and student of different ranks; both of rank 3
    (per-position logits) is valid, see tests/test_positions.py."""
    _, fn = entry
    rng = np.random.default_rng(1)
    t = rng.normal(size=t_shape).astype("float32")
    s = rng.normal(size=s_shape).astype("float32")
    with pytest.raises(ValueError, match=r"shape \(batch, classes\)") as info:
        fn(t, s)
    assert "rank" in str(info.value)


@pytest.mark.parametrize("entry", CALLABLES, ids=CALLABLE_IDS)
def test_class_count_mismatch(entry):
    _, fn = entry
    t, _ = _logits((7, 3))
    _, s = _logits((7, 5))
    with pytest.raises(ValueError, match="teacher predicts 3 classes but the student 5"):
        fn(t, s)


@pytest.mark.parametrize("entry", CALLABLES, ids=CALLABLE_IDS)
def test_batch_size_mismatch(entry):
    _, fn = entry
    t, _ = _logits((7, 3))
    _, s = _logits((3, 3))
    with pytest.raises(ValueError, match="batch size 7 != student batch size 3"):
        fn(t, s)


@pytest.mark.parametrize("entry", CALLABLES, ids=CALLABLE_IDS)
def test_single_class(entry):
    _, fn = entry
    t, s = _logits((7, 1))
    with pytest.raises(ValueError, match="at least 2 classes"):
        fn(t, s)


@pytest.mark.parametrize("case", [c for c in LOSS_CASES if c.batchwise], ids=lambda c: c.name)
def test_batchwise_loss_needs_two_samples(case):
    t, s = _logits((1, 3))
    with pytest.raises(ValueError, match="batch of at least 2 samples; got 1"):
        case(case.make(), t, s)


@pytest.mark.parametrize(
    "make",
    [
        lambda v: losses.KLDivergenceDistillation(temperature=v),
        lambda v: losses.CosineSimilarityDistillation(temperature=v),
        lambda v: losses.SimilarityTransferDistillation(temperature=v),
        lambda v: losses.DISTDistillation(temperature=v),
        lambda v: losses.DecoupledKDDistillation(temperature=v),
    ],
    ids=["kd", "cskd", "stkd", "dist", "dkd"],
)
@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), float("inf")])
def test_non_positive_temperature(make, value):
    with pytest.raises(ValueError, match="`temperature` must be a positive"):
        make(value)


@pytest.mark.parametrize("value", ["4", None, True])
def test_non_numeric_temperature(value):
    with pytest.raises(ValueError, match="`temperature` must be a positive number"):
        losses.CosineSimilarityDistillation(temperature=value)


@pytest.mark.parametrize(
    "low,high,fragment",
    [
        (0.0, 6.0, "`low` must be a positive"),
        (-2.0, 6.0, "`low` must be a positive"),
        (2.0, 0.0, "`high` must be a positive"),
        (2.0, float("inf"), "`high` must be a positive"),
    ],
)
def test_cswt_non_positive_bounds(low, high, fragment):
    with pytest.raises(ValueError, match=fragment):
        CosineSimilarityWeightedTemperature(low=low, high=high)


def test_cswt_low_above_high():
    with pytest.raises(ValueError, match=r"low <= high.*low=6\.0 > high=2\.0"):
        CosineSimilarityWeightedTemperature(low=6.0, high=2.0)


def test_stkd_mixup_alpha_positive():
    with pytest.raises(ValueError, match="`mixup_alpha` must be a positive"):
        losses.SimilarityTransferDistillation(mixup_alpha=0.0)


@pytest.mark.parametrize("entry", CALLABLES, ids=CALLABLE_IDS)
@pytest.mark.parametrize("role", ["teacher", "student"])
def test_probabilities_instead_of_logits(entry, role):
    _, fn = entry
    t, s = _logits((7, 3))
    probs = np.exp(t) / np.exp(t).sum(axis=1, keepdims=True)
    args = (probs, s) if role == "teacher" else (t, probs)
    with pytest.raises(ValueError, match=f"{role} logits look like probabilities") as info:
        fn(*args)
    assert "logits are expected" in str(info.value)


@pytest.mark.parametrize("entry", CALLABLES, ids=CALLABLE_IDS)
@pytest.mark.parametrize(
    "bad", [float("nan"), float("inf"), -float("inf")], ids=["nan", "inf", "-inf"]
)
@pytest.mark.parametrize("role", ["teacher", "student"])
def test_non_finite_values(entry, bad, role):
    _, fn = entry
    t, s = _logits((7, 3))
    (t if role == "teacher" else s)[1, 2] = bad
    with pytest.raises(ValueError, match=f"{role} logits contain 1 NaN/inf value"):
        fn(t, s)


def test_non_finite_values_in_backend_tensor():
    t, s = _logits((7, 3))
    s[0, 0] = np.nan
    loss = losses.CosineSimilarityDistillation()
    with pytest.raises(ValueError, match="NaN/inf"):
        loss(keras.ops.convert_to_tensor(t), keras.ops.convert_to_tensor(s))


@pytest.mark.parametrize("name", ["dkd_tau4", "dkd_tau2_weighted"])
def test_dkd_without_labels(name):
    case = next(c for c in LOSS_CASES if c.name == name)
    t, s = _logits((7, 3))
    with pytest.raises(ValueError, match="needs the ground-truth labels"):
        case.make()(t, s)


def test_unknown_granularity():
    with pytest.raises(ValueError, match="granularity must be 'sample'.*'class'.*got 'batch'"):
        CosineSimilarityWeightedTemperature(granularity="batch")
    t, s = _logits((7, 3))
    with pytest.raises(ValueError, match="granularity must be 'sample' or 'class', got 'rows'"):
        kd_ops.cswt_temperatures(t, s, granularity="rows")


def test_cswt_argument_of_wrong_type():
    with pytest.raises(ValueError, match="`cswt` must be a keras_cskd.layers"):
        losses.CosineSimilarityDistillation(cswt="sample")


def test_unknown_loss_name():
    with pytest.raises(ValueError, match="Unknown distillation loss 'kld'"):
        losses.get("kld")


@pytest.mark.parametrize("entry", CALLABLES, ids=CALLABLE_IDS)
def test_valid_inputs_do_not_raise(entry):
    """The checks do not reject ordinary logits, including rows that happen
    to lie in [0, 1] without summing to 1."""
    _, fn = entry
    t, s = _logits((7, 3))
    fn(t, s)
    fn(np.abs(t) / 10.0, np.abs(s) / 10.0)


@pytest.mark.parametrize("name", ["dkd_tau4", "dkd_tau2_weighted"])
def test_dkd_refuses_soft_labels(name):
    """DKD is defined on hard labels: smoothed one-hot rows would give a
    different loss silently; exact one-hot rows are accepted."""
    case = next(c for c in LOSS_CASES if c.name == name)
    t, s = _logits((7, 3))
    one_hot = np.eye(3, dtype="float32")[LABELS]
    case.make()(t, s, labels=one_hot)
    with pytest.raises(ValueError, match=r"needs hard labels.*7 row\(s\).*soft"):
        case.make()(t, s, labels=0.9 * one_hot + 0.1 / 3)
    mixed = one_hot.copy()
    mixed[2] = [0.5, 0.5, 0.0]
    with pytest.raises(ValueError, match=r"1 row\(s\)"):
        case.make()(keras.ops.convert_to_tensor(t), s, labels=keras.ops.convert_to_tensor(mixed))


def test_distiller_refuses_a_per_sample_reduction():
    from keras_cskd import Distiller

    def model():
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])

    with pytest.raises(ValueError, match=r"reduction='none'.*scalar"):
        Distiller(model(), model(), losses.KLDivergenceDistillation(reduction="none"))


# ------------------------------------------------- batch checks of datasets
def _tiny_distiller(loss="kd", seed=0):
    from keras_cskd import Distiller

    def model(name):
        keras.utils.set_random_seed(seed)
        inputs = keras.Input((4,))
        return keras.Model(inputs, keras.layers.Dense(3, name=f"{name}_logits")(inputs))

    distiller = Distiller(model("student"), model("teacher"), loss)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    return distiller


class _Batches(keras.utils.PyDataset):
    def __init__(self, x, y, batch_size):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size
        self.epochs_ended = 0

    def __len__(self):
        return len(self.x) // self.batch_size

    def __getitem__(self, index):
        part = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return self.x[part], self.y[part]

    def on_epoch_end(self):
        self.epochs_ended += 1


@pytest.mark.parametrize("source", ["tf_data", "pydataset", "generator"])
@pytest.mark.parametrize("one_hot", [False, True], ids=["sparse", "one_hot"])
def test_checked_batches_train_exactly_like_arrays(source, one_hot):
    """The batch checks pass valid batches through unchanged: the same
    batches as arrays, a tf.data.Dataset, a PyDataset or a generator give
    the same weights."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 4)).astype("float32")
    y = np.arange(16) % 3
    labels = np.eye(3, dtype="float32")[y] if one_hot else y
    reference = _tiny_distiller()
    reference.fit(x, labels, batch_size=4, epochs=2, shuffle=False, verbose=0)
    distiller = _tiny_distiller()
    if source == "tf_data":
        import tensorflow as tf

        data = tf.data.Dataset.from_tensor_slices((x, labels)).batch(4)
    elif source == "pydataset":
        data = _Batches(x, labels, 4)
    else:
        data = ((x[i : i + 4], labels[i : i + 4]) for i in list(range(0, 16, 4)) * 2)
    steps = {"steps_per_epoch": 4} if source == "generator" else {}
    distiller.fit(data, epochs=2, shuffle=False, verbose=0, **steps)
    for a, b in zip(distiller.student.weights, reference.student.weights, strict=True):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), rtol=1e-6, atol=1e-7
        )
    if source == "pydataset":  # the wrapper passes on_epoch_end on, as often as Keras calls it
        plain = _Batches(x, labels, 4)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        model.compile("sgd", loss=lambda y_true, y_pred: keras.ops.mean(y_pred))
        model.fit(plain, epochs=2, verbose=0)
        assert data.epochs_ended == plain.epochs_ended > 0


def test_batch_checks_of_hard_labels_and_unknown_class_count():
    from keras_cskd.checks.batches import BatchChecks

    x = np.zeros((3, 4), "float32")
    soft = np.full((3, 3), 1.0 / 3.0, "float32")
    BatchChecks(num_classes=3)((x, soft))  # soft labels are fine for CE
    with pytest.raises(ValueError, match=r"batch 5 of the data.*needs hard labels"):
        BatchChecks(3, hard_labels_for=["DecoupledKDDistillation"])((x, soft), 5)
    BatchChecks(num_classes=None)((x, np.array([7, 8, 9])))  # labels not class indices
    BatchChecks(num_classes=3)(x)  # no labels
    with pytest.raises(ValueError, match="5 columns"):
        BatchChecks(num_classes=3)((x, np.eye(5)[:3]))


def test_sample_weight_checks():
    from keras_cskd.checks.arrays import check_sample_weight

    check_sample_weight(np.array([0, 1, 2]), "fit")
    with pytest.raises(ValueError, match=r"contains NaN or inf \(first in sample 1\)"):
        check_sample_weight(np.array([1.0, np.inf]), "fit")
    with pytest.raises(ValueError, match="dtype <U1"):
        check_sample_weight(np.array(["a", "b"]), "fit")


def test_no_warning_when_the_loss_scaler_skips_nothing():
    import warnings

    distiller = _tiny_distiller()
    distiller.compile(optimizer=keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1)))
    x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        distiller.fit(x, np.arange(16) % 3, batch_size=4, verbose=0)
    assert not [w for w in caught if "loss scaler" in str(w.message)]
    assert int(keras.ops.convert_to_numpy(distiller.optimizer.iterations)) == 4
