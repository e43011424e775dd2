"""Gradients of every loss w.r.t. the student logits, under the active
backend, against a central finite difference of the float64 reference.

CSWT temperatures carry no gradient (they are computed under
`stop_gradient`), so for CSKD with CSWT the finite difference holds the
temperatures fixed at their value for the unperturbed input.
"""

import numpy as np
import pytest
import reference
from helpers import LOSS_CASE_IDS, LOSS_CASES, random_labels, random_logits, value_and_grad

from keras_cskd import ops as kd_ops


def _reference_of_student(case, t, s, labels, weights):
    """The reference loss as a function of the student logits only."""
    if case.cswt is None:
        return lambda x: case.ref(t, x, labels, weights)
    low, high, granularity = case.cswt
    fixed = reference.cswt_temperatures(t, s, low, high, granularity)
    return lambda x: reference.cskd_loss(t, x, fixed, weights)


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("shape,scale", [((7, 3), 1.0), ((8, 10), 3.0)], ids=["7x3", "8x10"])
@pytest.mark.parametrize("case", LOSS_CASES, ids=LOSS_CASE_IDS)
def test_gradient_matches_finite_difference(case, shape, scale, weighted):
    rng = np.random.default_rng([shape[0], shape[1], int(weighted)])
    t, s = (x.astype("float32") for x in random_logits(rng, shape, scale))
    labels = random_labels(rng, *shape)
    weights = rng.uniform(0.2, 2.0, size=shape[0]).astype("float32") if weighted else None
    t64, s64 = t.astype("float64"), s.astype("float64")
    loss = case.make()

    value, grad = value_and_grad(
        lambda tt, ss: case(loss, tt, ss, labels=labels, sample_weight=weights), t, s
    )
    fd = reference.finite_difference(_reference_of_student(case, t64, s64, labels, weights), s64)

    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(value, case.ref(t64, s64, labels, weights), rtol=1e-5)
    # float32 backprop vs float64 finite differences.
    atol = 1e-5 * max(1.0, float(np.max(np.abs(fd))))
    np.testing.assert_allclose(grad, fd, rtol=1e-4, atol=atol)
    # Not vacuous: the loss does depend on the student.
    assert np.max(np.abs(fd)) > 1e-4


def test_cswt_gradient_differs_from_differentiating_the_temperatures():
    """Sanity check of the stop-gradient convention: the full finite
    difference (temperatures recomputed at each perturbation) differs from
    the library's gradient, which matches the fixed-temperature one."""
    rng = np.random.default_rng(11)
    t, s = (x.astype("float32") for x in random_logits(rng, (7, 3), 2.0))
    t64, s64 = t.astype("float64"), s.astype("float64")
    case = next(c for c in LOSS_CASES if c.name == "cskd_cswt_sample_2_6")
    loss = case.make()
    _, grad = value_and_grad(lambda tt, ss: loss(tt, ss), t, s)
    full = reference.finite_difference(
        lambda x: reference.cskd_cswt_loss(t64, x, 2.0, 6.0, "sample"), s64
    )
    fixed = reference.finite_difference(_reference_of_student(case, t64, s64, None, None), s64)
    np.testing.assert_allclose(grad, fixed, rtol=1e-4, atol=1e-5 * np.max(np.abs(fixed)))
    assert np.max(np.abs(full - fixed)) > 1e-3


@pytest.mark.parametrize("tau", [1.0, 4.0])
def test_ops_gradients(tau):
    """The `keras_cskd.ops` functions (reduced to scalars) differentiate the
    same way."""
    rng = np.random.default_rng(12)
    t, s = (x.astype("float32") for x in random_logits(rng, (7, 3), 2.0))
    labels = random_labels(rng, 7, 3)
    t64, s64 = t.astype("float64"), s.astype("float64")
    weights = np.array([0.5, 1.0, 2.0, 1.5, 0.0, 1.0, 3.0], "float32")
    pairs = [
        (
            lambda tt, ss: kd_ops.cosine_similarity_distillation(
                tt, ss, tau, sample_weight=weights
            ),
            lambda x: reference.cskd_loss(t64, x, tau, weights),
        ),
        (
            lambda tt, ss: kd_ops.dist_distillation(tt, ss, tau, sample_weight=weights),
            lambda x: reference.dist_loss(t64, x, tau, sample_weight=weights),
        ),
        (
            lambda tt, ss: kd_ops.decoupled_kd(tt, ss, labels, tau)[1],
            lambda x: reference.dkd_per_sample(t64, x, labels, tau)[1],
        ),
        (
            lambda tt, ss: kd_ops.kl_divergence_distillation(tt, ss, tau)[2],
            lambda x: reference.kd_per_sample(t64, x, tau)[2],
        ),
    ]
    for fn, ref in pairs:
        _, grad = value_and_grad(fn, t, s)
        fd = reference.finite_difference(ref, s64)
        np.testing.assert_allclose(grad, fd, rtol=1e-4, atol=1e-5 * max(1.0, np.max(np.abs(fd))))


@pytest.mark.parametrize("delta", [1e-3, 3e-4, 1e-4])
def test_cskd_gradient_near_convergence(delta):
    """Near cos = 1 (student ~ teacher, B = 8) float32 rounds some column
    cosines to >= 1; the clip that keeps the loss >= 0 must not zero or
    halve their gradient. Relative error of the whole gradient against a
    float64 finite difference (the unclipped `minimum(cos, 1)` gave 13-39 %)."""
    rng = np.random.default_rng(int(1 / delta))
    t = (rng.normal(size=(8, 10)) * 3.0).astype("float32")
    s = (t + delta * rng.normal(size=t.shape)).astype("float32")
    t64, s64 = t.astype("float64"), s.astype("float64")

    value, grad = value_and_grad(
        lambda tt, ss: kd_ops.cosine_similarity_distillation(tt, ss, 4.0), t, s
    )
    fd = reference.finite_difference(lambda x: reference.cskd_loss(t64, x, 4.0, None), s64)

    assert value >= 0.0
    assert np.linalg.norm(grad - fd) / np.linalg.norm(fd) < 0.03
