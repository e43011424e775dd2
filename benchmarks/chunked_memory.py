"""Peak memory (and optionally time) of a token-distillation step with and
without chunking, under JAX: the output heads and the loss with the gradient
with respect to the student's hidden states and output kernel.

Steps compared, each `jax.jit(jax.value_and_grad(...))` of a function of
the final hidden states `(tokens, d)` and the heads' kernels `(d, vocabulary)`:

- `ce`: the student's head and cross-entropy on labels (the CE-only step a
  student would take without a teacher);
- `kd`: both heads, then KD (forward KL) on the full logits;
- `kd+ce`: the same, plus the student's cross-entropy;
- `chunked kd`, `chunked kd+ce`: `keras_cskd.ops.chunked_distillation_loss`
  and `chunked_distillation_and_cross_entropy` (`--chunk-size` tokens a
  chunk);
- `cskd`, `chunked cskd`: CSKD over the tokens (temperature 4), unchunked
  and `chunked_cosine_similarity_distillation`.

Memory is XLA's `memory_analysis()` of the compiled program: temporaries
plus arguments plus outputs (`temp + argument + output - alias` bytes).
Only compilation is needed, so large sizes cost no run; `--time` also runs
each step (`--rounds`, median) and should be given small sizes on a CPU.

    python benchmarks/chunked_memory.py
    python benchmarks/chunked_memory.py --tokens 2048 --vocabularies 32000 --time
"""

import argparse
import os
import statistics
import sys
import time


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[8192])
    parser.add_argument("--vocabularies", type=int, nargs="+", default=[32000, 128000, 256000])
    parser.add_argument("--student-dim", type=int, default=768)
    parser.add_argument("--teacher-dim", type=int, default=1024)
    parser.add_argument("--chunk-size", type=int, default=1024)
    parser.add_argument("--time", action="store_true", help="also run each step and time it")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--plot", help="write a PNG of peak memory against tokens per vocabulary")
    args = parser.parse_args(argv)
    os.environ["KERAS_BACKEND"] = "jax"

    import jax
    import jax.numpy as jnp
    import numpy as np

    from keras_cskd import ops as kd_ops

    chunk = args.chunk_size

    def cross_entropy(s, y):
        s = s.astype("float32")
        picked = jnp.take_along_axis(s, y[:, None], axis=-1)[:, 0]
        return jnp.mean(jax.nn.logsumexp(s, axis=-1) - picked)

    def ce(h, w, h_t, w_t, y):
        return cross_entropy(h @ w, y)

    def kd(h, w, h_t, w_t, y):
        return jnp.mean(kd_ops.kl_divergence_distillation(h_t @ w_t, h @ w, temperature=1.0))

    def kd_ce(h, w, h_t, w_t, y):
        s = h @ w
        kl = jnp.mean(kd_ops.kl_divergence_distillation(h_t @ w_t, s, temperature=1.0))
        return kl + cross_entropy(s, y)

    def cskd(h, w, h_t, w_t, y):
        return kd_ops.cosine_similarity_distillation(h_t @ w_t, h @ w, temperature=4.0)

    def chunked_cskd(h, w, h_t, w_t, y):
        return kd_ops.chunked_cosine_similarity_distillation(
            h, w, h_t, w_t, chunk_size=chunk, temperature=4.0
        )

    def chunked_kd(h, w, h_t, w_t, y):
        return kd_ops.chunked_distillation_loss(h, w, h_t, w_t, "kl", chunk_size=chunk)

    def chunked_kd_ce(h, w, h_t, w_t, y):
        total, _, _ = kd_ops.chunked_distillation_and_cross_entropy(
            h, w, h_t, w_t, labels=y, chunk_size=chunk
        )
        return total

    steps = {
        "ce": ce,
        "kd": kd,
        "kd+ce": kd_ce,
        "chunked kd": chunked_kd,
        "chunked kd+ce": chunked_kd_ce,
        "cskd": cskd,
        "chunked cskd": chunked_cskd,
    }
    d_s, d_t = args.student_dim, args.teacher_dim
    tokens = ", ".join(str(n) for n in args.tokens)
    print(
        f"JAX {jax.__version__} on {jax.devices()[0].platform}, {tokens} tokens, student "
        f"d={d_s}, teacher d={d_t}, chunk {chunk}, float32; peak = XLA temp + arguments + outputs"
    )
    header = f"{'tokens':>7} {'vocabulary':>10} {'step':>14} {'peak MB':>9} {'temp MB':>9}"
    header += f" {'x ce':>6} {'x kd':>6}"
    print(header + (f" {'ms':>9} {'x kd time':>9}" if args.time else ""))
    measured = {}  # (vocabulary, step) -> [(tokens, peak bytes)]
    for n, vocabulary in ((n, v) for v in args.vocabularies for n in args.tokens):
        shapes = (
            jax.ShapeDtypeStruct((n, d_s), jnp.float32),
            jax.ShapeDtypeStruct((d_s, vocabulary), jnp.float32),
            jax.ShapeDtypeStruct((n, d_t), jnp.float32),
            jax.ShapeDtypeStruct((d_t, vocabulary), jnp.float32),
            jax.ShapeDtypeStruct((n,), jnp.int32),
        )
        compiled, peaks, temps = {}, {}, {}
        for name, fn in steps.items():
            program = jax.jit(jax.value_and_grad(fn, argnums=(0, 1))).lower(*shapes).compile()
            memory = program.memory_analysis()
            compiled[name] = program
            temps[name] = memory.temp_size_in_bytes
            peaks[name] = (
                memory.temp_size_in_bytes
                + memory.argument_size_in_bytes
                + memory.output_size_in_bytes
                - memory.alias_size_in_bytes
            )
        times = {}
        if args.time:
            rng = np.random.default_rng(0)
            inputs = [
                jnp.asarray(rng.normal(size=s.shape).astype("float32") * 0.05)
                if s.dtype == jnp.float32
                else jnp.asarray(rng.integers(0, vocabulary, s.shape).astype("int32"))
                for s in shapes
            ]
            samples = {name: [] for name in steps}
            for program in compiled.values():  # warm-up
                jax.block_until_ready(program(*inputs))
            for _ in range(args.rounds):  # interleaved rounds: load affects all alike
                for name, program in compiled.items():
                    start = time.perf_counter()
                    jax.block_until_ready(program(*inputs))
                    samples[name].append(time.perf_counter() - start)
            times = {name: statistics.median(values) for name, values in samples.items()}
        for name in steps:
            measured.setdefault((vocabulary, name), []).append((n, peaks[name]))
            row = (
                f"{n:>7} {vocabulary:>10} {name:>14} "
                f"{peaks[name] / 1e6:>9.1f} {temps[name] / 1e6:>9.1f} "
                f"{peaks[name] / peaks['ce']:>6.2f} {peaks[name] / peaks['kd']:>6.2f}"
            )
            if times:
                row += f" {times[name] * 1e3:>9.1f} {times[name] / times['kd']:>9.2f}"
            print(row)
        sys.stdout.flush()
    if args.plot:
        _plot(measured, args)


def _plot(measured, args):
    """Peak memory against tokens, one panel per vocabulary: the full-logit
    steps grow with tokens x vocabulary, the chunked ones with tokens x d."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = ("ce", "kd", "chunked kd", "cskd", "chunked cskd")
    figure, axes = plt.subplots(
        1, len(args.vocabularies), figsize=(4 * len(args.vocabularies), 3.4), squeeze=False
    )
    for axis, vocabulary in zip(axes[0], args.vocabularies):
        for name in shown:
            points = measured.get((vocabulary, name), [])
            style = "-o" if name.startswith("chunked") else "--s"
            axis.plot([p[0] for p in points], [p[1] / 1e9 for p in points], style, label=name)
        axis.set_title(f"V = {vocabulary:,}")
        axis.set_xlabel("tokens a step")
        axis.set_xscale("log", base=2)
        axis.set_ylabel("peak GB (XLA memory analysis)")
    axes[0][0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(args.plot, dpi=100)
    print(f"Saved {args.plot}")


if __name__ == "__main__":
    main()
