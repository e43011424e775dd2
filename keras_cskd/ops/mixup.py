"""Mixup's draw: a Beta sample that compiles on every backend."""

from keras import ops


def sample_beta(alpha, seed, candidates=16):
    """One draw of `Beta(alpha, alpha)` from `keras.random` normals and
    uniforms only, so it compiles under XLA on every backend (TensorFlow's
    gamma kernel does not).

    `Beta(a, a) = X / (X + Y)` with `X, Y ~ Gamma(a)`, each drawn with
    Marsaglia and Tsang's method (with the `U^(1/a)` boost for `a < 1`),
    vectorised over `candidates` proposals of which the first accepted is
    used; the chance that all of them are rejected is below `0.05^16`.

    Example:

    >>> import keras
    >>> from keras_cskd import ops as kd_ops
    >>> lam = kd_ops.sample_beta(1.0, keras.random.SeedGenerator(0))
    >>> 0.0 < float(lam) < 1.0
    True
    """
    import keras

    alpha = float(alpha)
    shape_param = alpha + 1.0 if alpha < 1.0 else alpha
    d = shape_param - 1.0 / 3.0
    c = 1.0 / (9.0 * d) ** 0.5
    z = keras.random.normal((2, candidates), seed=seed)
    u = keras.random.uniform((2, candidates), seed=seed)
    v = ops.power(1.0 + c * z, 3)
    accept = ops.logical_and(
        v > 0.0,
        ops.log(ops.maximum(u, 1e-30))
        < 0.5 * ops.square(z) + d - d * ops.maximum(v, 1e-30) + d * ops.log(ops.maximum(v, 1e-30)),
    )
    first = ops.argmax(ops.cast(accept, "int32"), axis=1)
    draws = ops.take_along_axis(d * ops.maximum(v, 1e-30), ops.reshape(first, (2, 1)), axis=1)
    draws = ops.reshape(draws, (2,))
    if alpha < 1.0:
        boost = keras.random.uniform((2,), seed=seed)
        draws = draws * ops.power(ops.maximum(boost, 1e-30), 1.0 / alpha)
    draws = ops.maximum(draws, 1e-30)
    return draws[0] / (draws[0] + draws[1])
