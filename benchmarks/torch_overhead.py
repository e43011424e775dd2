#!/usr/bin/env python
"""Where the Distiller's step goes on Keras' PyTorch backend (eager), with a profile.

On Keras' PyTorch backend every `keras.ops` call, `Layer.__call__` and metric
update runs eagerly: Python work in Keras plus a dispatch into PyTorch, on
every step. This script measures, on the MLP pair of `step_time.py`, in one
process:

1. step time, interleaved, median over rounds (CPU time, 1 thread by
   default), of Keras' own step functions called directly (no `fit` loop):
   (a) the student's `train_step`, (b) the teacher's `predict_step` under
   `no_grad`, (c) `keras_cskd.Distiller.train_step` for each loss,
   (d) `keras.distillation.Distiller.train_step`; and the ratio c/(a+b);
2. a `torch.profiler` profile of each: PyTorch ops per step and inside
   the Distiller's regions (the distillation loss, the student loss, the
   metric updates, labelled with `record_function`); and the CPU cost of one
   trivial eager `keras.ops` call, measured in the same process.

The excess of (c) over (a)+(b) is then split into the extra ops it runs and
the per-op cost of eager Keras on PyTorch.

Example:

    python benchmarks/torch_overhead.py --losses kd,cskd,cskd+cswt,stkd
"""

import argparse
import os
import statistics
import sys
import time

LOSSES = ("kd", "cskd", "cskd+cswt", "stkd", "dist", "dkd")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--losses", default="kd,cskd,cskd+cswt,stkd")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-classes", type=int, default=100)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed block.")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile-steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    parser.add_argument("--top", type=int, default=0, help="also print the N costliest ops.")
    return parser.parse_args(argv)


def build(args):
    """{key: (label, step function)}: (a), (b), (c) per loss, (d)."""
    import keras
    import numpy as np
    import torch

    import keras_cskd
    from keras_cskd import losses, models

    rng = np.random.default_rng(0)
    x = keras.ops.convert_to_tensor(
        rng.standard_normal((args.batch_size, 32, 32, 3)).astype("float32")
    )
    y = keras.ops.convert_to_tensor(
        rng.integers(0, args.num_classes, args.batch_size).astype("int32")
    )

    def student():
        return models.mlp((32, 32, 3), args.num_classes, hidden=(256,), name="mlp_student")

    def ce():
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def sgd():
        return keras.optimizers.SGD(0.05, momentum=0.9)

    teacher = models.mlp((32, 32, 3), args.num_classes, hidden=(1024, 1024), name="mlp_teacher")
    teacher.trainable = False
    factories = {
        "kd": lambda: losses.KLDivergenceDistillation(4.0),
        "cskd": lambda: losses.CosineSimilarityDistillation(4.0),
        "cskd+cswt": losses.cskd_paper_objective,
        "stkd": lambda: losses.SimilarityTransferDistillation(4.0),
        "dist": lambda: losses.DISTDistillation(4.0),
        "dkd": lambda: losses.DecoupledKDDistillation(4.0),
    }
    steps = {}

    def train(model):
        model.train_on_batch(x, y)  # builds optimizer and metrics
        return lambda: model.train_step((x, y, None))

    model = student()
    model.compile(optimizer=sgd(), loss=ce())
    steps["a"] = ("(a) student train_step", train(model))
    teacher.predict_on_batch(x)

    def forward():
        with torch.no_grad():
            return teacher.predict_step((x,))

    steps["b"] = ("(b) teacher predict_step", forward)
    for name in args.losses.split(","):
        distiller = keras_cskd.Distiller(student(), teacher, factories[name](), seed=0)
        distiller.compile(optimizer=sgd())
        label_regions(distiller)
        steps[f"c:{name}"] = (f"(c) keras_cskd {name}", train(distiller))
    if hasattr(keras, "distillation"):
        peer = keras.distillation.Distiller(
            teacher=teacher,
            student=student(),
            distillation_losses=keras.distillation.LogitsDistillation(temperature=4.0),
        )
        peer.compile(optimizer=sgd(), loss=ce())
        steps["d"] = ("(d) keras.distillation KL", train(peer))
    return steps


def label_regions(distiller):
    """Wraps the Distiller's loss terms (each distillation loss's `compute`,
    the supervised loss) and metric updates in
    `torch.profiler.record_function` regions (instance attributes only)."""
    import torch

    def labelled(function, label):
        def wrapper(*args, **kwargs):
            with torch.profiler.record_function(label):
                return function(*args, **kwargs)

        return wrapper

    for loss in distiller.terms.losses:
        for method in ("compute", "compute_with_statistics"):
            object.__setattr__(
                loss, method, labelled(getattr(loss, method), "cskd::distillation_loss")
            )
    distiller.student_loss_fn = labelled(distiller.student_loss_fn, "cskd::student_loss")
    for metric in distiller.metrics:
        object.__setattr__(
            metric, "update_state", labelled(metric.update_state, "cskd::metric_update")
        )


def time_steps(args, steps):
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    times = {key: [] for key in steps}
    for _ in range(1 + args.rounds):  # the first round warms up
        for key, (_, step) in steps.items():
            start = clock()
            for _ in range(args.steps):
                out = step()
            _ = float(out["loss"]) if isinstance(out, dict) and "loss" in out else None
            times[key].append((clock() - start) / args.steps * 1e3)
    return {key: statistics.median(values[1:]) for key, values in times.items()}


def profile_steps(args, step):
    """(PyTorch ops per step, {region: ops per step inside it}, key averages,
    host reads per step (`aten::_local_scalar_dense`, i.e. `.item()`)):
    exact counts of `aten::` ops from `torch.profiler`, independent of the
    machine's load. (Its timings are not used: on a loaded, shared CPU the
    profiler's wall-clock spans are dominated by descheduling.)"""
    from torch.profiler import ProfilerActivity, profile

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.profile_steps):
            step()
    n = args.profile_steps
    events = prof.events()
    ops, syncs, regions = 0, 0, {}
    for event in events:
        syncs += event.name == "aten::_local_scalar_dense"  # .item(): a device sync on a GPU
        if not event.name.startswith("aten::"):
            continue
        parent = event.cpu_parent
        if parent is not None and parent.name.startswith("aten::"):
            continue  # count top-level ops only, not their internal calls
        ops += 1
        while parent is not None and not parent.name.startswith("cskd::"):
            parent = parent.cpu_parent
        if parent is not None:
            regions[parent.name[6:]] = regions.get(parent.name[6:], 0) + 1
    return ops / n, {k: v / n for k, v in regions.items()}, prof.key_averages(), syncs / n


def trivial_op_cost(args):
    """CPU microseconds of one eager `keras.ops.add` of two (64, 100) tensors."""
    import keras

    a = keras.ops.ones((args.batch_size, args.num_classes))
    calls = 2000
    start = time.process_time()
    for _ in range(calls):
        b = keras.ops.add(a, 1.0)
    del b
    return (time.process_time() - start) / calls * 1e6


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if os.environ.get("KERAS_BACKEND") != "torch":
        if "keras" in sys.modules:
            raise SystemExit("torch_overhead.py needs KERAS_BACKEND=torch.")
        os.environ["KERAS_BACKEND"] = "torch"
    import keras
    import torch

    torch.set_num_threads(args.threads)
    keras.utils.set_random_seed(0)
    print(
        f"# torch_overhead: keras {keras.__version__}, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, batch {args.batch_size}, "
        f"mlp(1024,1024) -> mlp(256), {args.num_classes} classes"
    )
    print(f"# load average at start: {os.getloadavg()}")
    steps = build(args)
    medians = time_steps(args, steps)
    floor = medians["a"] + medians["b"]
    profiles = {key: profile_steps(args, step) for key, (_, step) in steps.items()}
    per_op_us = trivial_op_cost(args)
    print(f"# load average at end: {os.getloadavg()}")
    print(
        f"# ms/step: median {args.clock} time over {args.rounds} interleaved rounds of "
        f"{args.steps} steps; ops/step: top-level aten ops in torch.profiler over "
        f"{args.profile_steps} steps (exact), and those inside the Distiller's "
        "forward-pass regions (their backward runs in autograd, outside them)"
    )
    print(
        f"{'config':<28} {'ms/step':>8} {'/(a+b)':>7} {'ops/step':>9} {'syncs':>6}  "
        "ops inside regions"
    )
    for key, (label, _) in steps.items():
        ops, regions, _, syncs = profiles[key]
        ratio = f"{medians[key] / floor:.3f}" if key not in ("a", "b") else "-"
        region_text = ", ".join(f"{k} {v:.0f}" for k, v in sorted(regions.items()))
        print(
            f"{label:<28} {medians[key]:>8.3f} {ratio:>7} {ops:>9.0f} {syncs:>6.0f}  {region_text}"
        )
    print("# syncs: host reads per step (aten::_local_scalar_dense, e.g. .item()), a device")
    print("#   sync each on a GPU")
    ops_floor = profiles["a"][0] + profiles["b"][0]
    print(f"# (a)+(b): {floor:.3f} ms, {ops_floor:.0f} ops/step")
    print(
        f"# one eager keras.ops.add on a ({args.batch_size}, {args.num_classes}) tensor: "
        f"{per_op_us:.1f} us ({args.clock} time)"
    )
    for key in steps:
        if key in ("a", "b"):
            continue
        extra_ops = profiles[key][0] - ops_floor
        extra_ms = medians[key] - floor
        print(
            f"EXCESS {key}: {extra_ms:+.3f} ms over (a)+(b) for {extra_ops:+.0f} ops = "
            f"{extra_ms / extra_ops * 1e3 if extra_ops else float('nan'):.1f} us per extra op "
            f"({extra_ms / extra_ops * 1e3 / per_op_us if extra_ops else float('nan'):.2f} x "
            "one keras.ops.add)"
        )
    if args.top:
        for key in steps:
            print(f"# top ops of {key} by self CPU time")
            table = profiles[key][2].table(sort_by="count", row_limit=args.top)
            print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
