#!/usr/bin/env python
"""How the cost of each distillation loss grows with the classes and the batch.

For every number of classes C and batch size B of the grid, this times, on
Keras' JAX backend, the compiled training step of

  - the student alone (`student.compile(SGD, sparse CE)`), the baseline, and
  - a `keras_cskd.Distiller` with cached teacher logits
    (`x={"x": x, "teacher_logits": t}`, the teacher not run) for KD, CSKD,
    CSKD+CSWT (per sample and per class), DIST and DKD,

on a small MLP student (32 inputs, 64 hidden units, C outputs), so that the
loss is a large part of the step. The CSKD-family losses and DIST are
batch-wise: each class's column of B probabilities is compared across the
batch, and CSWT takes a min/max over the batch.

What is measured:

- step time: Keras' own `train_step` under `jax.jit` (as `fit` compiles it,
  state donated), called `--steps` times in a row with one sync at the end;
  configurations interleaved within each round, median over rounds. Printed
  as ms/step and as the ratio to the student-only step of the same round.
- memory: XLA's `memory_analysis()` of the compiled step, exact and
  independent of the machine's load: `temp` (the step's working memory: the
  intermediates of forward, loss and backward) and `peak` = arguments +
  outputs - donated (aliased) buffers + temp.

Examples:

    python benchmarks/scaling.py
    python benchmarks/scaling.py --classes 10,1000 --batch-sizes 64 --rounds 3
    python benchmarks/scaling.py --json scaling.json --plot docs/img/scaling.png
"""

import argparse
import json
import os
import statistics
import sys
import time

LOSSES = ("kd", "cskd", "cskd_cswt", "cskd_cswt_class", "dist", "dkd")
STUDENT = "student"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", default="10,100,1000,32000", help="comma-separated C values.")
    parser.add_argument("--batch-sizes", default="16,64,256", help="comma-separated B values.")
    parser.add_argument(
        "--losses",
        default=",".join(LOSSES),
        help="comma-separated keras_cskd.losses.METHODS names.",
    )
    parser.add_argument("--features", type=int, default=32, help="student input size.")
    parser.add_argument("--hidden", type=int, default=64, help="student hidden units.")
    parser.add_argument("--steps", type=int, default=10, help="steps per timed block.")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (medians).")
    parser.add_argument(
        "--clock",
        choices=("cpu", "wall"),
        default="cpu",
        help="cpu: this process's CPU time (steady on a shared CPU host); wall: for a GPU.",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="1 turns XLA's multi-threaded Eigen off (steadier on a shared CPU); 0 keeps it.",
    )
    parser.add_argument("--json", default=None, help="write the rows to this JSON file.")
    parser.add_argument("--plot", default=None, help="write a PNG plot of the ratios here.")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def _ints(text):
    return [int(v) for v in text.split(",") if v.strip()]


def build_step(model, inputs, labels):
    """(compiled step, state, data, memory dict) of `model`'s training step
    on one batch, as Keras' JAX trainer compiles it."""
    import jax

    model.train_on_batch(inputs, labels)  # builds the model, optimizer and metrics
    data = (inputs, labels, None)
    state = model._get_jax_state(
        trainable_variables=True,
        non_trainable_variables=True,
        optimizer_variables=True,
        metrics_variables=True,
    )
    compiled = jax.jit(model.train_step, donate_argnums=0).lower(state, data).compile()
    analysis = compiled.memory_analysis()
    memory = {
        "temp_bytes": int(analysis.temp_size_in_bytes),
        "peak_bytes": int(
            analysis.argument_size_in_bytes
            + analysis.output_size_in_bytes
            - analysis.alias_size_in_bytes
            + analysis.temp_size_in_bytes
        ),
    }
    # Fresh buffers: the compiled step donates (frees) the state it is given.
    state = jax.tree_util.tree_map(lambda v: v.copy(), state)
    return compiled, state, data, memory


class Runner:
    """Calls a compiled step `steps` times, carrying the state; one sync."""

    def __init__(self, compiled, state, data):
        self.compiled, self.state, self.data = compiled, state, data

    def __call__(self, steps):
        import jax

        for _ in range(steps):
            logs, self.state = self.compiled(self.state, self.data)
        jax.block_until_ready((logs, self.state))


def measure_cell(args, num_classes, batch_size, loss_names):
    """Rows for one (C, B): the student baseline and every loss."""
    import keras
    import numpy as np

    import keras_cskd
    from keras_cskd import losses, models

    rng = np.random.default_rng(args.seed)
    x = keras.ops.convert_to_tensor(
        rng.standard_normal((batch_size, args.features)).astype("float32")
    )
    y = keras.ops.convert_to_tensor(rng.integers(0, num_classes, batch_size).astype("int32"))
    t = keras.ops.convert_to_tensor(
        (3.0 * rng.standard_normal((batch_size, num_classes))).astype("float32")
    )

    def student():
        keras.utils.set_random_seed(args.seed)
        return models.mlp((args.features,), num_classes, hidden=(args.hidden,))

    def optimizer():
        return keras.optimizers.SGD(0.05, momentum=0.9)

    runners, memory = {}, {}
    model = student()
    model.compile(
        optimizer=optimizer(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    compiled, state, data, memory[STUDENT] = build_step(model, x, y)
    runners[STUDENT] = Runner(compiled, state, data)
    for name in loss_names:
        distiller = keras_cskd.Distiller(student(), None, losses.get(name), seed=args.seed)
        distiller.compile(optimizer=optimizer())
        compiled, state, data, memory[name] = build_step(
            distiller, {"x": x, "teacher_logits": t}, y
        )
        runners[name] = Runner(compiled, state, data)

    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    for run in runners.values():  # warm-up
        run(args.steps)
    times = {key: [] for key in runners}
    ratios = {key: [] for key in runners}
    for _ in range(args.rounds):
        this_round = {}
        for key, run in runners.items():
            start = clock()
            run(args.steps)
            this_round[key] = (clock() - start) / args.steps * 1e3
            times[key].append(this_round[key])
        for key in runners:
            ratios[key].append(this_round[key] / this_round[STUDENT])
    rows = []
    for key in runners:
        rows.append(
            {
                "classes": num_classes,
                "batch": batch_size,
                "config": key,
                "ms_per_step": statistics.median(times[key]),
                "time_ratio": statistics.median(ratios[key]),
                **memory[key],
                "temp_ratio": memory[key]["temp_bytes"] / max(memory[STUDENT]["temp_bytes"], 1),
                "peak_ratio": memory[key]["peak_bytes"] / max(memory[STUDENT]["peak_bytes"], 1),
            }
        )
    return rows


def format_row(row):
    mib = 2.0**20
    return (
        f"{row['classes']:>6} {row['batch']:>4} {row['config']:<16} "
        f"{row['ms_per_step']:>9.3f} {row['time_ratio']:>7.2f} "
        f"{row['temp_bytes'] / mib:>9.2f} {row['temp_ratio']:>7.2f} "
        f"{row['peak_bytes'] / mib:>9.2f} {row['peak_ratio']:>7.2f}"
    )


HEADER = (
    f"{'C':>6} {'B':>4} {'config':<16} {'ms/step':>9} {'x time':>7} "
    f"{'temp MiB':>9} {'x temp':>7} {'peak MiB':>9} {'x peak':>7}"
)


def plot(rows, path):
    """Step-time ratio to the student step against C, one panel per B."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = sorted({row["batch"] for row in rows})
    configs = [c for c in dict.fromkeys(row["config"] for row in rows) if c != STUDENT]
    figure, axes = plt.subplots(
        2, len(batches), figsize=(4 * len(batches), 6.5), sharex=True, squeeze=False
    )
    for column, batch in enumerate(batches):
        for config in configs:
            points = sorted(
                (row["classes"], row["time_ratio"], row["peak_ratio"])
                for row in rows
                if row["batch"] == batch and row["config"] == config
            )
            classes = [p[0] for p in points]
            axes[0][column].plot(classes, [p[1] for p in points], marker="o", label=config)
            axes[1][column].plot(classes, [p[2] for p in points], marker="o", label=config)
        axes[0][column].set_title(f"batch {batch}")
        axes[1][column].set_xlabel("classes C")
        for row_axes in axes:
            row_axes[column].set_xscale("log")
            row_axes[column].axhline(1.0, color="grey", linewidth=0.8)
    axes[0][0].set_ylabel("step time / student step")
    axes[1][0].set_ylabel("peak memory / student step")
    axes[0][-1].legend(fontsize="small")
    figure.suptitle("Distiller step (cached logits) relative to the student-only step, JAX")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if os.environ.get("KERAS_BACKEND") != "jax":
        if "keras" in sys.modules:
            raise SystemExit("scaling.py runs on Keras' JAX backend: set KERAS_BACKEND=jax.")
        os.environ["KERAS_BACKEND"] = "jax"
    if args.threads == 1:
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
        ).strip()
    import jax
    import keras

    from keras_cskd import losses

    loss_names = [name.strip() for name in args.losses.split(",") if name.strip()]
    unknown = [name for name in loss_names if name not in losses.METHODS]
    if unknown:
        raise SystemExit(f"unknown losses {unknown}; choose from {sorted(losses.METHODS)}")
    print(f"# scaling: keras {keras.__version__}, jax {jax.__version__}, {jax.devices()}")
    print(
        f"# student mlp({args.features} -> {args.hidden} -> C), SGD; Distiller with cached "
        f"logits; {args.steps} steps x {args.rounds} rounds, clock {args.clock}, "
        f"threads {args.threads or 'default'}"
    )
    print(f"# load average at start: {os.getloadavg()}")
    print("# x time: median over rounds of (step / student step in the same round)")
    print("# temp/peak: XLA memory_analysis() of the compiled step (exact, load-independent)")
    print(HEADER)
    sys.stdout.flush()
    rows = []
    for num_classes in _ints(args.classes):
        for batch_size in _ints(args.batch_sizes):
            for row in measure_cell(args, num_classes, batch_size, loss_names):
                rows.append(row)
                print(format_row(row))
            sys.stdout.flush()
    print(f"# load average at end: {os.getloadavg()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1)
    if args.plot:
        plot(rows, args.plot)
        print(f"# plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
