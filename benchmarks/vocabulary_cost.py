"""The cost of the distillation losses at large vocabularies (token-level KD).

Times one compiled loss-and-gradient evaluation (with respect to the
student logits) of cross-entropy, KD, CSKD and CSKD + CSWT on logits of
shape `(positions, vocabulary)` and reports each relative to KD, plus the
size of one `(positions, vocabulary)` float32 tensor and, under JAX, the
temporary memory XLA allocates for the compiled step (its
`memory_analysis()`). The losses' work is
elementwise over that tensor plus reductions, so the time per element is
what to compare; docs/methods.md quotes the numbers.

    KERAS_BACKEND=jax python benchmarks/vocabulary_cost.py
    python benchmarks/vocabulary_cost.py --positions 512 --vocabularies 1000 32000

Rounds interleave the losses, and the median is reported, so load from other
processes affects all losses alike.
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default=os.environ.get("KERAS_BACKEND", "jax"))
    parser.add_argument("--positions", type=int, default=1024, help="tokens per batch")
    parser.add_argument("--vocabularies", type=int, nargs="+", default=[1000, 8000, 32000, 128000])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    os.environ["KERAS_BACKEND"] = args.backend

    import keras

    from keras_cskd import losses

    cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    kd, cskd, cskd_cswt = losses.get("kd"), losses.get("cskd"), losses.get("cskd_cswt")
    candidates = {
        "cross-entropy": lambda t, s, y: cross_entropy(y, s),
        "kd": lambda t, s, y: kd.compute(t, s),
        "cskd": lambda t, s, y: cskd.compute(t, s),
        "cskd+cswt": lambda t, s, y: cskd_cswt.compute(t, s),
    }
    print(f"backend {keras.backend.backend()}, {args.positions} positions, float32")
    print(f"{'vocabulary':>10} {'tensor MB':>10} " + " ".join(f"{n:>14}" for n in candidates))
    for vocabulary in args.vocabularies:
        rng = np.random.default_rng(0)
        shape = (args.positions, vocabulary)
        t = keras.ops.convert_to_tensor(rng.normal(size=shape).astype("float32"))
        s = keras.ops.convert_to_tensor(rng.normal(size=shape).astype("float32"))
        y = keras.ops.convert_to_tensor(rng.integers(0, vocabulary, size=args.positions))
        steps = {
            name: _value_and_grad(fn, keras.backend.backend()) for name, fn in candidates.items()
        }
        times = {name: [] for name in candidates}
        for step in steps.values():  # compile and warm up
            step(t, s, y)
        for _ in range(args.rounds):
            for name, step in steps.items():
                start = time.perf_counter()
                step(t, s, y)
                times[name].append(time.perf_counter() - start)
        median = {name: statistics.median(values) for name, values in times.items()}
        cells = [f"{1e3 * median[n]:7.1f} ms {median[n] / median['kd']:4.2f}x" for n in candidates]
        megabytes = args.positions * vocabulary * 4 / 1e6
        print(f"{vocabulary:>10} {megabytes:>10.1f} " + " ".join(f"{c:>14}" for c in cells))
        temporary = {n: getattr(step, "temporary_bytes", None) for n, step in steps.items()}
        if all(value is not None for value in temporary.values()):
            cells = [f"{value / 1e6:9.1f} MB tmp" for value in temporary.values()]
            print(f"{'':>10} {'':>10} " + " ".join(f"{c:>14}" for c in cells))
    return 0


def _value_and_grad(fn, backend):
    """A function `(t, s, y) -> None` that computes `fn`'s value and its
    gradient with respect to `s`, compiled where the backend compiles, and
    waits for the result."""
    if backend == "jax":
        import jax

        compiled = {}

        def run(t, s, y):
            if not compiled:
                grad = jax.value_and_grad(lambda s, t, y: fn(t, s, y), argnums=0)
                compiled["step"] = jax.jit(grad).lower(s, t, y).compile()
                analysis = compiled["step"].memory_analysis()
                run.temporary_bytes = getattr(analysis, "temp_size_in_bytes", None)
            return jax.block_until_ready(compiled["step"](s, t, y))

        return run
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function(jit_compile=True)
        def step(t, s, y):
            with tf.GradientTape() as tape:
                tape.watch(s)
                value = fn(t, s, y)
            return value, tape.gradient(value, s)

        return lambda t, s, y: [x.numpy() for x in step(t, s, y)]
    import torch

    def step(t, s, y):
        s = s.detach().requires_grad_(True)
        value = fn(t, s, y)
        (grad,) = torch.autograd.grad(value, s)
        return value.item(), grad

    return step


if __name__ == "__main__":
    sys.exit(main())
