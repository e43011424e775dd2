"""Comparing students over seeds: the paired difference and its 95 % interval.

One rule for every table of keras-cskd (the command line's "beyond seed
noise", `benchmarks/experiments.py`'s results page, the several-teachers and
language-model tables): two students trained with the same seeds (the same
initial weights, data order and labelled subset) are compared seed by seed,
and the mean of those differences gets a two-sided 95 % Student-t interval.
A difference is "beyond seed noise" when its interval excludes 0. Pure
Python (no backend, no SciPy).
"""

import math

__all__ = ["paired_difference", "t_quantile_975"]

# Two-sided 95 % quantiles of Student's t, by degrees of freedom (1-30).
_T_975 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)  # fmt: skip


def t_quantile_975(degrees_of_freedom):
    """The 0.975 quantile of Student's t (a two-sided 95 % interval's factor).

    A table up to 30 degrees of freedom; beyond, the Cornish-Fisher expansion
    around the normal quantile (within 1e-4 of the exact value there).

    Example:

    >>> from keras_cskd.statistics import t_quantile_975
    >>> round(t_quantile_975(4), 4)  # five seeds
    2.7764
    >>> round(t_quantile_975(10**6), 3)  # the normal quantile
    1.96
    """
    degrees_of_freedom = int(degrees_of_freedom)
    if degrees_of_freedom < 1:
        raise ValueError(
            f"t_quantile_975 needs at least 1 degree of freedom (2 seeds); got {degrees_of_freedom}"
        )
    if degrees_of_freedom <= len(_T_975):
        return _T_975[degrees_of_freedom - 1]
    z, nu = 1.959964, float(degrees_of_freedom)
    return (
        z
        + (z**3 + z) / (4 * nu)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * nu**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * nu**3)
    )


def paired_difference(values, baseline):
    """The mean of `values[i] - baseline[i]` with its 95 % t-interval.

    Args:
        values, baseline: one number per seed, in the same order (the same
            seed at the same position), or two dicts keyed by seed (the
            seeds both have are compared, in sorted order).

    Returns:
        A dict: `mean`, `std` (the differences' sample standard deviation),
        `n` (how many seeds), `low` and `high` (the interval's bounds) and
        `beyond_noise` (whether the interval excludes 0). With one seed the
        interval is unknown: `std`, `low`, `high` and `beyond_noise` are None.

    Example:

    >>> from keras_cskd.statistics import paired_difference
    >>> d = paired_difference([0.92, 0.93, 0.91], [0.90, 0.90, 0.90])
    >>> round(d["mean"], 4), round(d["low"], 4), round(d["high"], 4), d["beyond_noise"]
    (0.02, -0.0048, 0.0448, False)
    """
    if isinstance(values, dict) != isinstance(baseline, dict):
        raise TypeError(
            "paired_difference: pass two sequences in the same seed order, or two dicts "
            "keyed by seed; got one of each"
        )
    if isinstance(values, dict):
        common = sorted(set(values) & set(baseline))
        values, baseline = [values[s] for s in common], [baseline[s] for s in common]
    values, baseline = [float(v) for v in values], [float(b) for b in baseline]
    if len(values) != len(baseline):
        raise ValueError(
            f"paired_difference: {len(values)} values against {len(baseline)} baseline "
            "values; a paired comparison needs one of each per seed"
        )
    if not values:
        raise ValueError("paired_difference: no seed to compare")
    differences = [v - b for v, b in zip(values, baseline)]
    n = len(differences)
    mean = sum(differences) / n
    result = {"mean": mean, "std": None, "n": n, "low": None, "high": None, "beyond_noise": None}
    if n > 1:
        std = math.sqrt(sum((d - mean) ** 2 for d in differences) / (n - 1))
        half = t_quantile_975(n - 1) * std / math.sqrt(n)
        result.update(std=std, low=mean - half, high=mean + half)
        result["beyond_noise"] = bool(mean - half > 0 or mean + half < 0)
    return result
