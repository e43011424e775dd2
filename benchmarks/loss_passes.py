#!/usr/bin/env python
"""How many passes over `(B, C)` arrays each distillation loss's training step makes.

For one cell (C classes, batch B) this compiles, on Keras' JAX backend and
exactly as `benchmarks/scaling.py` does, the training step of the student
alone and of a `keras_cskd.Distiller` (cached teacher logits) for each loss,
and prints per configuration:

- `temp MiB`: XLA's `memory_analysis()` temporaries of the compiled step
  (exact, independent of the machine's load);
- `(B,C) ops`: the number of instructions of the optimised HLO
  (`compiled.as_text()`, its entry computation) whose output is a
  float32 `(B, C)` array, i.e. the passes that write one to memory (a
  multi-output fusion counts once per `(B, C)` output; parameters, bitcasts
  and tuple plumbing are not counted). Deterministic for a given jax/XLA;
- `x time`: the step time over the student step, median over rounds, the
  configurations interleaved within each round (scaling.py's clock).

The student row gives the baseline: its own forward and backward write
`(B, C)` arrays too. Compare the loss rows before and after a change:

    python benchmarks/loss_passes.py --classes 32000 --batch-size 64
    python benchmarks/loss_passes.py --batch-size 256 --losses kd,dkd --rounds 3
"""

import argparse
import os
import re
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import scaling  # noqa: E402  (the sibling benchmark: its step builder and runner)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", type=int, default=32000, help="number of classes C.")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size B.")
    parser.add_argument("--losses", default=",".join(scaling.LOSSES), help="comma-separated.")
    parser.add_argument("--steps", type=int, default=10, help="steps per timed block.")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (0: no timing).")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    parser.add_argument("--hlo-dir", default=None, help="write each step's optimised HLO here.")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def count_outputs(hlo_text, batch_size, num_classes):
    """Instructions of the entry computation that write `f32[B, C]` arrays.

    The other computations of the module are the bodies of its fusions and
    reductions: they run inside a pass, not as one."""
    target = f"f32[{batch_size},{num_classes}]"
    skipped = ("parameter(", "bitcast(", "get-tuple-element(", "tuple(", "constant(")
    count, entry = 0, False
    for line in hlo_text.splitlines():
        if line.startswith("ENTRY "):
            entry = True
            continue
        if not entry or " = " not in line:
            continue
        result = line.split(" = ", 1)[1]
        match = re.match(r"(\([^=]*?\)|\S+)\s+([\w-]+\()", result)
        if match is None or match.group(2).startswith(skipped):
            continue
        count += match.group(1).count(target)
    return count


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if os.environ.get("KERAS_BACKEND") != "jax":
        os.environ["KERAS_BACKEND"] = "jax"
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
    ).strip()
    import jax
    import keras
    import numpy as np

    import keras_cskd
    from keras_cskd import losses, models

    names = [name.strip() for name in args.losses.split(",") if name.strip()]
    rng = np.random.default_rng(args.seed)
    batch, classes = args.batch_size, args.classes
    x = keras.ops.convert_to_tensor(rng.standard_normal((batch, 32)).astype("float32"))
    y = keras.ops.convert_to_tensor(rng.integers(0, classes, batch).astype("int32"))
    t = keras.ops.convert_to_tensor((3.0 * rng.standard_normal((batch, classes))).astype("float32"))

    def student():
        keras.utils.set_random_seed(args.seed)
        return models.mlp((32,), classes, hidden=(64,))

    def optimizer():
        return keras.optimizers.SGD(0.05, momentum=0.9)

    rows, runners = {}, {}
    model = student()
    model.compile(optimizer=optimizer(), loss=keras.losses.SparseCategoricalCrossentropy(True))
    built = {scaling.STUDENT: scaling.build_step(model, x, y)}
    for name in names:
        distiller = keras_cskd.Distiller(student(), None, losses.get(name), seed=args.seed)
        distiller.compile(optimizer=optimizer())
        built[name] = scaling.build_step(distiller, {"x": x, "teacher_logits": t}, y)
    for key, (compiled, state, data, memory) in built.items():
        text = compiled.as_text()
        if args.hlo_dir:
            os.makedirs(args.hlo_dir, exist_ok=True)
            with open(os.path.join(args.hlo_dir, f"{key}_{batch}x{classes}.hlo"), "w") as f:
                f.write(text)
        rows[key] = {"temp": memory["temp_bytes"], "outputs": count_outputs(text, batch, classes)}
        runners[key] = scaling.Runner(compiled, state, data)

    ratios = {key: [] for key in runners}
    if args.rounds:
        clock = time.process_time if args.clock == "cpu" else time.perf_counter
        for run in runners.values():  # warm-up
            run(args.steps)
        for _ in range(args.rounds):
            this_round = {}
            for key, run in runners.items():
                start = clock()
                run(args.steps)
                this_round[key] = clock() - start
            for key in runners:
                ratios[key].append(this_round[key] / this_round[scaling.STUDENT])

    print(f"# loss_passes: jax {jax.__version__}, keras {keras.__version__}, C={classes} B={batch}")
    print(
        f"# {args.steps} steps x {args.rounds} rounds, clock {args.clock}; "
        f"load average {os.getloadavg()}"
    )
    print(f"{'config':<16} {'temp MiB':>9} {'(B,C) ops':>9} {'x time':>7}")
    for key, row in rows.items():
        ratio = f"{statistics.median(ratios[key]):>7.2f}" if ratios[key] else f"{'-':>7}"
        print(f"{key:<16} {row['temp'] / 2**20:>9.2f} {row['outputs']:>9} {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
