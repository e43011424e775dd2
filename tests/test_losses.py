"""Every loss (class and `keras_cskd.ops` function) against the float64
NumPy reference of `tests/reference.py`, on random logits of several shapes
and scales, with and without `sample_weight`."""

import numpy as np
import pytest
import reference
from helpers import (
    LOSS_CASE_IDS,
    LOSS_CASES,
    random_labels,
    random_logits,
    to_numpy,
)

from keras_cskd import losses
from keras_cskd import ops as kd_ops
from keras_cskd.layers import CosineSimilarityWeightedTemperature

SHAPES = [(2, 2), (8, 10), (64, 100), (7, 3)]
SCALES = [0.5, 3.0, 20.0]
RTOL = 1e-5


def _inputs(shape, scale, weighted, seed=0):
    rng = np.random.default_rng([seed, shape[0], shape[1], int(scale * 10)])
    t, s = random_logits(rng, shape, scale)
    labels = random_labels(rng, shape[0], shape[1])
    weights = None
    if weighted:
        weights = rng.uniform(0.0, 2.0, size=shape[0])
        weights[0] = 0.0  # a sample that must not count
    return t.astype("float32"), s.astype("float32"), labels, weights


def _check_cswt_conditioning(case, t, s):
    """CSWT temperatures are a min-max map of the similarities: where the
    similarities span very little, float32 rounding of the similarities is
    amplified by (high - low) / spread. Keep the comparison well posed."""
    if case.cswt is None:
        return
    low, high, granularity = case.cswt
    sim = reference.cswt_similarities(t, s, granularity)
    spread = sim.max() - sim.min()
    assert spread > 1e-3 or spread <= 1e-7, (
        f"ill-conditioned test data for {case}: similarity spread {spread}"
    )


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("case", LOSS_CASES, ids=LOSS_CASE_IDS)
def test_loss_matches_reference(case, shape, scale, weighted):
    t, s, labels, weights = _inputs(shape, scale, weighted)
    # Rounding to float32 is part of the input: the reference sees the same.
    t64, s64 = t.astype("float64"), s.astype("float64")
    _check_cswt_conditioning(case, t64, s64)
    loss = case.make()
    value = to_numpy(case(loss, t, s, labels=labels, sample_weight=weights))
    assert value.shape == ()
    expected = case.ref(t64, s64, labels, weights)
    np.testing.assert_allclose(value, expected, rtol=RTOL, atol=1e-6 * case.scale)


@pytest.mark.parametrize("case", LOSS_CASES, ids=LOSS_CASE_IDS)
def test_unit_weights_equal_no_weights(case):
    t, s, labels, _ = _inputs((8, 10), 3.0, False, seed=1)
    loss = case.make()
    plain = to_numpy(case(loss, t, s, labels=labels))
    ones = to_numpy(case(loss, t, s, labels=labels, sample_weight=np.ones(8, "float32")))
    np.testing.assert_allclose(ones, plain, rtol=1e-6, atol=1e-7 * case.scale)


@pytest.mark.parametrize(
    "case",
    [c for c in LOSS_CASES if c.cswt is None and c.name.startswith(("cskd", "dist"))],
    ids=lambda c: c.name,
)
def test_zero_weight_sample_is_ignored(case):
    """Batch-wise losses with weighted inner products: a sample of weight 0
    has no influence (same value as the batch without it)."""
    t, s, labels, _ = _inputs((8, 3), 3.0, False, seed=2)
    weights = np.array([1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0], "float32")
    keep = weights > 0
    loss = case.make()
    weighted = to_numpy(case(loss, t, s, labels=labels, sample_weight=weights))
    subset = to_numpy(case(loss, t[keep], s[keep], labels=labels[keep]))
    np.testing.assert_allclose(weighted, subset, rtol=1e-5, atol=1e-6 * case.scale)


@pytest.mark.parametrize("case", [c for c in LOSS_CASES if not c.batchwise], ids=lambda c: c.name)
def test_per_sample_losses_reduce_as_sum_over_batch_size(case):
    """Per-sample losses: sum(w * l) / B, so scaling all weights by k
    scales the loss by k."""
    t, s, labels, weights = _inputs((7, 3), 3.0, True, seed=3)
    loss = case.make()
    once = to_numpy(case(loss, t, s, labels=labels, sample_weight=weights))
    twice = to_numpy(case(loss, t, s, labels=labels, sample_weight=2.0 * weights))
    np.testing.assert_allclose(twice, 2.0 * once, rtol=1e-6, atol=1e-7 * case.scale)


def _per_sample_reference(case, t, s, labels):
    """The reference loss of each sample alone (a batch of one), float64."""
    t64, s64 = t.astype("float64"), s.astype("float64")
    return np.array(
        [case.ref(t64[i : i + 1], s64[i : i + 1], labels[i : i + 1], None) for i in range(len(t))]
    )


PER_SAMPLE_CASES = [c for c in LOSS_CASES if not c.batchwise]


@pytest.mark.parametrize("case", PER_SAMPLE_CASES, ids=lambda c: c.name)
def test_per_sample_losses_follow_keras_reduction(case):
    """Keras' `Loss` contract: `reduction="none"` gives one value per sample,
    `"sum"` their (weighted) sum, `"mean_with_sample_weight"` divides by the
    weights' sum; each against the float64 reference of every sample alone."""
    t, s, labels, weights = _inputs((7, 3), 3.0, True, seed=5)
    expected = _per_sample_reference(case, t, s, labels)
    config = case.make().get_config()
    assert config["reduction"] == "sum_over_batch_size"

    def make(reduction):
        return type(case.make()).from_config({**config, "reduction": reduction})

    tol = {"rtol": RTOL, "atol": 1e-6 * case.scale}
    per_sample = to_numpy(case(make("none"), t, s, labels=labels))
    assert per_sample.shape == (7,)
    np.testing.assert_allclose(per_sample, expected, **tol)
    weighted = to_numpy(case(make("none"), t, s, labels=labels, sample_weight=weights))
    np.testing.assert_allclose(weighted, weights * expected, **tol)
    total = to_numpy(case(make("sum"), t, s, labels=labels, sample_weight=weights))
    np.testing.assert_allclose(total, np.sum(weights * expected), **tol)
    mean_w = to_numpy(
        case(make("mean_with_sample_weight"), t, s, labels=labels, sample_weight=weights)
    )
    np.testing.assert_allclose(mean_w, np.sum(weights * expected) / np.sum(weights), **tol)


@pytest.mark.parametrize("case", [c for c in LOSS_CASES if c.batchwise], ids=lambda c: c.name)
def test_batchwise_losses_reduce_themselves(case):
    """CSKD, STKD and DIST compare each class across the batch: there is no
    per-sample value, so they take no `reduction` and return a scalar."""
    loss = case.make()
    assert loss.batchwise and "reduction" not in loss.get_config()
    t, s, labels, _ = _inputs((7, 3), 3.0, False, seed=6)
    assert to_numpy(case(loss, t, s, labels=labels)).shape == ()
    with pytest.raises(TypeError):
        type(loss)(reduction="none")


def test_registry_is_shared_by_get_and_the_cli():
    from keras_cskd import cli

    assert losses.METHODS is losses.METHODS  # one module-level registry
    assert list(cli.METHOD_LABELS) == ["ce", *losses.METHODS]
    for name, method in losses.METHODS.items():
        built = losses.get(name)
        assert type(built) is method.loss_class
        assert cli.METHOD_LABELS[name] == method.label
        assert method.fixed_temperature == (
            hasattr(built, "temperature") and getattr(built, "cswt", None) is None
        )
    assert losses.get("kd", temperature=2.0).temperature == 2.0
    assert losses.get("CSKD+CSWT").cswt is not None
    assert type(losses.get("kl")) is losses.KLDivergenceDistillation
    with pytest.raises(ValueError, match="apply to a loss name only"):
        losses.get(losses.get("kd"), temperature=2.0)


# ----------------------------------------------------------------------------
# The keras_cskd.ops functions.


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_ops_per_sample_functions(shape, scale):
    t, s, labels, _ = _inputs(shape, scale, False, seed=4)
    t64, s64 = t.astype("float64"), s.astype("float64")
    for tau in (1.0, 4.0):
        np.testing.assert_allclose(
            to_numpy(kd_ops.kl_divergence_distillation(t, s, tau)),
            reference.kd_per_sample(t64, s64, tau),
            rtol=RTOL,
            atol=1e-6 * tau**2,
        )
        np.testing.assert_allclose(
            to_numpy(kd_ops.decoupled_kd(t, s, labels, tau, 1.0, 8.0)),
            reference.dkd_per_sample(t64, s64, labels, tau, 1.0, 8.0),
            rtol=RTOL,
            atol=8e-6 * tau**2,
        )
    np.testing.assert_allclose(
        to_numpy(kd_ops.logit_mse(t, s)), reference.mse_per_sample(t64, s64), rtol=RTOL
    )


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_ops_batch_functions(shape, scale):
    t, s, _, weights = _inputs(shape, scale, True, seed=5)
    t64, s64 = t.astype("float64"), s.astype("float64")
    for w in (None, weights):
        for tau in (1.0, 4.0):
            np.testing.assert_allclose(
                to_numpy(kd_ops.cosine_similarity_distillation(t, s, tau, sample_weight=w)),
                reference.cskd_loss(t64, s64, tau, w),
                rtol=RTOL,
                atol=1e-6 * tau**2,
            )
            np.testing.assert_allclose(
                to_numpy(kd_ops.dist_distillation(t, s, tau, 1.0, 1.0, sample_weight=w)),
                reference.dist_loss(t64, s64, tau, 1.0, 1.0, w),
                rtol=RTOL,
                atol=1e-6 * tau**2,
            )
        p_t, p_s = reference.softmax(t64, 4.0), reference.softmax(s64, 4.0)
        np.testing.assert_allclose(
            to_numpy(
                kd_ops.class_cosine_similarity(
                    p_t.astype("float32"), p_s.astype("float32"), sample_weight=w
                )
            ),
            reference.class_cosines(p_t, p_s, w),
            rtol=RTOL,
            atol=1e-6,
        )
    np.testing.assert_allclose(
        to_numpy(kd_ops.softened_probabilities(t, 4.0)),
        reference.softmax(t64, 4.0),
        rtol=RTOL,
        atol=1e-7,
    )


def test_ops_adaptive_temperature_tensor():
    """CSKD with a tensor of temperatures: (B, 1) or (1, C), factor mean(T)^2."""
    rng = np.random.default_rng(6)
    t, s = (x.astype("float32") for x in random_logits(rng, (7, 3), 3.0))
    t64, s64 = t.astype("float64"), s.astype("float64")
    for temps in (rng.uniform(1, 5, (7, 1)), rng.uniform(1, 5, (1, 3))):
        temps = temps.astype("float32")
        np.testing.assert_allclose(
            to_numpy(kd_ops.cosine_similarity_distillation(t, s, temps)),
            reference.cskd_loss(t64, s64, temps.astype("float64")),
            rtol=RTOL,
            atol=1e-6 * 25,
        )


def test_dkd_one_hot_labels_equal_integer_labels():
    rng = np.random.default_rng(7)
    t, s = (x.astype("float32") for x in random_logits(rng, (8, 10), 3.0))
    labels = random_labels(rng, 8, 10)
    one_hot = np.eye(10, dtype="float32")[labels]
    loss = losses.DecoupledKDDistillation()
    from_ids = to_numpy(loss(t, s, labels=labels))
    from_one_hot = to_numpy(loss(t, s, labels=one_hot))
    np.testing.assert_allclose(from_one_hot, from_ids, rtol=1e-6)
    np.testing.assert_allclose(
        from_ids, reference.dkd_loss(t.astype("float64"), s.astype("float64"), labels), rtol=RTOL
    )


def test_dkd_decomposes_kd():
    """Zhao et al.'s identity: KD = TCKD + (1 - p_t^T) NCKD per sample. With
    target_weight=1 the NCKD weight 1 - p^T_target recovers KD (checked
    through the library's DKD at alpha=1, beta=0 and alpha=0, beta=1)."""
    rng = np.random.default_rng(8)
    t, s = (x.astype("float32") for x in random_logits(rng, (7, 3), 2.0))
    labels = random_labels(rng, 7, 3)
    tau = 2.0
    tckd = to_numpy(kd_ops.decoupled_kd(t, s, labels, tau, 1.0, 0.0))
    nckd = to_numpy(kd_ops.decoupled_kd(t, s, labels, tau, 0.0, 1.0))
    p_target = reference.softmax(t.astype("float64"), tau)[np.arange(7), labels]
    kd = to_numpy(kd_ops.kl_divergence_distillation(t, s, tau))
    np.testing.assert_allclose(tckd + (1.0 - p_target) * nckd, kd, rtol=1e-5, atol=1e-6)


def test_compute_with_statistics_matches_compute_and_reference():
    rng = np.random.default_rng(9)
    t, s = (x.astype("float32") for x in random_logits(rng, (8, 10), 3.0))
    t64, s64 = t.astype("float64"), s.astype("float64")
    for granularity in ("sample", "class"):
        loss = losses.CosineSimilarityDistillation(
            cswt=CosineSimilarityWeightedTemperature(granularity=granularity)
        )
        value, stats = loss.compute_with_statistics(t, s)
        np.testing.assert_allclose(to_numpy(value), to_numpy(loss.compute(t, s)), rtol=1e-6)
        temps = reference.cswt_temperatures(t64, s64, 2.0, 6.0, granularity)
        np.testing.assert_allclose(to_numpy(stats["temperatures"]), temps, rtol=RTOL)
        np.testing.assert_allclose(to_numpy(stats["temperature"]), temps.mean(), rtol=RTOL)
        cos = reference.cskd_cosines(t64, s64, temps)
        np.testing.assert_allclose(
            to_numpy(stats["class_cosine_similarity"]), cos, rtol=RTOL, atol=1e-6
        )
        np.testing.assert_allclose(to_numpy(stats["cosine_similarity"]), cos.mean(), rtol=RTOL)


def test_docstring_reference_values():
    """Hand-checkable values from the formulas (not from the library)."""
    t = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    assert reference.kd_loss(t, np.zeros_like(t), 4.0) == pytest.approx(0.567956, abs=1e-6)
    np.testing.assert_allclose(
        to_numpy(
            losses.KLDivergenceDistillation(4.0)(t.astype("float32"), np.zeros((2, 3), "float32"))
        ),
        reference.kd_loss(t, np.zeros_like(t), 4.0),
        rtol=RTOL,
    )
    # CSKD of one-hot-like columns: identical directions -> 0; orthogonal -> tau^2.
    eye = np.array([[30.0, -30.0], [-30.0, 30.0]])
    assert reference.cskd_loss(eye, eye, 1.0) == pytest.approx(0.0, abs=1e-7)
    assert reference.cskd_loss(eye, eye[::-1], 1.0) == pytest.approx(1.0, abs=1e-7)
    value = to_numpy(
        losses.CosineSimilarityDistillation(1.0)(eye.astype("float32"), eye[::-1].astype("float32"))
    )
    np.testing.assert_allclose(value, 1.0, atol=1e-6)
