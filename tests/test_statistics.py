"""`keras_cskd.statistics`: the paired 95 % interval every table uses,
against SciPy's Student t in float64 and hand-worked cases. Pure Python:
it runs once, not once a backend."""

import numpy as np
import pytest

from keras_cskd.statistics import paired_difference, t_quantile_975

pytestmark = pytest.mark.backend_independent


def test_t_quantile_matches_scipy_at_every_seed_count():
    from scipy import stats

    for degrees_of_freedom in [*range(1, 60), 100, 1000, 10**6]:
        expected = stats.t.ppf(0.975, degrees_of_freedom)
        assert abs(t_quantile_975(degrees_of_freedom) - expected) < 1e-4, degrees_of_freedom


@pytest.mark.parametrize("n", [2, 3, 5, 10, 31, 40, 200])
def test_interval_matches_scipy_in_float64(n):
    from scipy import stats

    rng = np.random.default_rng(n)
    baseline = rng.uniform(0.85, 0.95, n)
    values = baseline + rng.normal(0.004, 0.01, n)
    differences = values.astype("float64") - baseline.astype("float64")
    low, high = stats.t.interval(0.95, n - 1, loc=differences.mean(), scale=stats.sem(differences))
    result = paired_difference(list(values), list(baseline))
    assert result["n"] == n
    np.testing.assert_allclose(result["mean"], differences.mean(), rtol=1e-12)
    np.testing.assert_allclose(result["std"], differences.std(ddof=1), rtol=1e-12)
    # the quantile's table has 4 decimals: the bounds within 1e-4 of the half-width
    half = (high - low) / 2
    np.testing.assert_allclose([result["low"], result["high"]], [low, high], atol=1e-4 * half)
    assert result["beyond_noise"] == bool(low > 0 or high < 0)


def test_hand_worked_case():
    # differences 0.02, 0.03, 0.01: mean 0.02, std 0.01, t(0.975, 2) = 4.3027
    result = paired_difference([0.92, 0.93, 0.91], [0.90, 0.90, 0.90])
    half = 4.3027 * 0.01 / 3**0.5
    assert result["low"] == pytest.approx(0.02 - half)
    assert result["high"] == pytest.approx(0.02 + half)
    assert result["beyond_noise"] is False
    # the same mean with a tenth of the spread is beyond noise
    assert paired_difference([0.921, 0.920, 0.919], [0.9, 0.9, 0.9])["beyond_noise"] is True


def test_dicts_pair_by_seed_not_by_position():
    values = {3: 0.95, 1: 0.91, 2: 0.92, 7: 0.5}  # seed 7 has no baseline
    baseline = {1: 0.90, 2: 0.90, 3: 0.90, 9: 0.1}
    by_seed = paired_difference(values, baseline)
    in_order = paired_difference([0.91, 0.92, 0.95], [0.90, 0.90, 0.90])
    assert by_seed == in_order
    assert by_seed["n"] == 3


def test_one_seed_has_a_mean_and_no_interval():
    result = paired_difference([0.93], [0.90])
    assert result["mean"] == pytest.approx(0.03)
    assert result["std"] is result["low"] is result["high"] is result["beyond_noise"] is None


def test_identical_students_are_not_beyond_noise():
    result = paired_difference([0.9, 0.8, 0.7], [0.9, 0.8, 0.7])
    assert result["mean"] == result["std"] == result["low"] == result["high"] == 0.0
    assert result["beyond_noise"] is False


@pytest.mark.parametrize(
    "values, baseline, match",
    [
        ([0.9, 0.8], [0.9], "2 values against 1 baseline"),
        ([], [], "no seed to compare"),
        ({1: 0.9}, [0.9], "one of each"),
    ],
)
def test_bad_input_names_the_problem(values, baseline, match):
    with pytest.raises((ValueError, TypeError), match=match):
        paired_difference(values, baseline)


def test_quantile_needs_a_degree_of_freedom():
    with pytest.raises(ValueError, match="at least 1 degree of freedom"):
        t_quantile_975(0)
