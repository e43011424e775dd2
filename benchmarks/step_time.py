#!/usr/bin/env python
"""Time a distillation step against its physical floor and against peers.

For one (teacher, student) pair this measures, in one process, interleaved
(round-robin blocks after a warm-up), on a fixed synthetic batch:

  (a) the student trained alone (student.compile + fit / train_on_batch),
  (b) the teacher's forward pass (predict / predict_on_batch),
  (c) a keras_cskd.Distiller step with KD, CSKD, CSKD+CSWT and STKD,
  (d) keras.distillation.Distiller with LogitsDistillation (its KL),
  (e) a keras_cskd.Distiller step with cached teacher logits
      (x={"x": x, "teacher_logits": logits}; the teacher is not run),
  (p) the raw PyTorch peer: a plain eager KD step written in torch.nn with
      the same layer shapes and parameter counts (benchmarks/torch_peer.py),
      float32 and autocast bfloat16, on CUDA when PyTorch sees a GPU,

and prints medians (ms per step), peak memory (RSS; device memory where the
backend exposes it) and the ratios c/(a+b), d/(a+b), e/a, c/d and c/p.

Timing. Every round times, for every config in turn, a block of `--steps`
steps and one of `3 * --steps` steps; ms/step is the difference divided by
the extra steps, which removes the fixed cost of a `fit`/`predict` call
(callbacks, iterator set-up, the final state sync), a cost real training
pays once per epoch. Each block ends with one host sync (`fit` returns the
epoch's loss as a Python float; `predict` returns NumPy), so asynchronous
dispatch cannot hide work and no step pays a sync of its own (with
`--loop on-batch`, `train_on_batch` syncs every step, as Keras implements
it). The synthetic data are backend tensors made once (`--data tensor`), all
batches the same shape, and the script counts traces of the training step
after warm-up: a non-zero count means a recompilation. `--clock cpu` reports
this process's CPU time instead of wall time: steadier on a CPU-only machine
shared with other jobs, meaningless for a GPU run.

Examples:

    python benchmarks/step_time.py --pair mlp --backend jax
    python benchmarks/step_time.py --pair resnet --backend jax --batch-size 64 \
        --steps 20 --rounds 5
    python benchmarks/step_time.py --pair mlp --backend torch --jit true
"""

import argparse
import os
import statistics
import sys
import time

import experiments  # benchmarks/experiments.py: the results page's recipes (standard library only)

BACKENDS = ("jax", "tensorflow", "torch")
DISTILLATION_LOSSES = ("kd", "cskd", "cskd+cswt", "stkd")
# Each round times a block of `steps` and one of `LONG_BLOCK * steps` steps
# per config; their difference removes the fixed cost of a `fit`/`predict`
# call (callbacks, data adapter, state sync), which real training amortises
# over an epoch.
LONG_BLOCK = 3


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help="Keras backend (re-executes with KERAS_BACKEND set); "
        "default: the current KERAS_BACKEND.",
    )
    parser.add_argument(
        "--pair",
        choices=tuple(PAIR_INPUTS),
        default="mlp",
        help="mlp: small MLP teacher/student; resnet: resnet32x4 -> "
        "resnet8x4 at 32x32x3, 100 classes; fashion_conv: the results page's "
        "Fashion-MNIST conv_net pair at 28x28x1, 10 classes (with "
        "--torch-peer none).",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--steps",
        type=int,
        default=10,
        help="training steps per timed block (one host sync per block).",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="timed rounds; each round runs one block of every config.",
    )
    parser.add_argument(
        "--warmup", type=int, default=1, help="untimed rounds first (compilation happens here)."
    )
    parser.add_argument(
        "--jit",
        choices=("auto", "true", "false"),
        default="auto",
        help="compile(jit_compile=...): XLA on TF/JAX, torch.compile on torch.",
    )
    parser.add_argument(
        "--mixed-precision",
        nargs="?",
        const="mixed_bfloat16",
        default=None,
        choices=("mixed_bfloat16", "mixed_float16"),
        help="global dtype policy for both networks (default when "
        "given without a value: mixed_bfloat16).",
    )
    parser.add_argument(
        "--loop",
        choices=("fit", "on-batch"),
        default="fit",
        help="fit: fit/predict over steps*batch samples (default); "
        "on-batch: train_on_batch/predict_on_batch per step.",
    )
    parser.add_argument(
        "--losses",
        default=",".join(DISTILLATION_LOSSES),
        help="comma-separated keras_cskd losses for (c).",
    )
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: perf_counter (what a GPU run needs); cpu: this "
        "process's CPU time (all threads), steadier on a CPU-only "
        "host shared with other jobs. Ratios are printed for both.",
    )
    parser.add_argument(
        "--data",
        choices=("tensor", "numpy"),
        default="tensor",
        help="tensor: the synthetic data as backend tensors, made once "
        "(default; measures the step); numpy: NumPy arrays, so every "
        "fit call also pays keras_cskd.Distiller.fit's input checks, "
        "one pass over the arrays given to that call.",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="intra-op CPU threads (torch.set_num_threads, TF intra-op "
        "threads, XLA's Eigen pool off for 1); default: the library's.",
    )
    parser.add_argument(
        "--torch-peer",
        choices=("both", "fp32", "bf16", "none"),
        default="both",
        help="(p) the raw PyTorch eager KD step: float32, autocast bfloat16 "
        "(where supported), both, or none.",
    )
    parser.add_argument(
        "--json",
        default=None,
        help="also write the medians and ratios to this JSON file (see perf_table.py).",
    )
    parser.add_argument(
        "--num-classes",
        type=int,
        default=None,
        help="classes of the models and labels (default: the pair's own, "
        "100 for the CIFAR pairs, 10 for fashion_conv).",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.num_classes is None:
        args.num_classes = PAIR_CLASSES[args.pair]
    if args.pair == "fashion_conv" and args.torch_peer != "none":
        parser.error("--pair fashion_conv has no PyTorch peer: add --torch-peer none")
    return args


def _reexec_with_backend(args, argv):
    """Keras reads KERAS_BACKEND at import: start again with it set."""
    if args.backend is None or os.environ.get("KERAS_BACKEND") == args.backend:
        return
    if "keras" in sys.modules:
        raise SystemExit("--backend must be chosen before Keras is imported.")
    env = dict(os.environ, KERAS_BACKEND=args.backend)
    os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *argv], env)


# --------------------------------------------------------------------- models
def _cifar_resnet_fallback(depth, width, input_shape, num_classes, name):
    """CIFAR ResNet (basic blocks) used only until keras_cskd.models ships
    resnet32x4/resnet8x4: filters [32w/4, 64w/4, 128w/4, 256w/4]... with
    width 4: [32, 64, 128, 256], (depth - 2) // 6 blocks per stage."""
    import keras
    from keras import layers

    blocks = (depth - 2) // 6
    bn = dict(epsilon=1e-5, momentum=0.9)
    inputs = keras.Input(input_shape)
    x = layers.Conv2D(8 * width, 3, padding="same", use_bias=False)(inputs)
    x = layers.ReLU()(layers.BatchNormalization(**bn)(x))
    for stage, filters in enumerate((16 * width, 32 * width, 64 * width)):
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            shortcut = x
            y = layers.Conv2D(filters, 3, stride, padding="same", use_bias=False)(x)
            y = layers.ReLU()(layers.BatchNormalization(**bn)(y))
            y = layers.Conv2D(filters, 3, padding="same", use_bias=False)(y)
            y = layers.BatchNormalization(**bn)(y)
            if stride != 1 or shortcut.shape[-1] != filters:
                shortcut = layers.Conv2D(filters, 1, stride, use_bias=False)(shortcut)
                shortcut = layers.BatchNormalization(**bn)(shortcut)
            x = layers.ReLU()(layers.Add()([y, shortcut]))
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(num_classes)(x)
    return keras.Model(inputs, outputs, name=name)


# The input shape of each pair's synthetic batch.
PAIR_INPUTS = {"mlp": (32, 32, 3), "resnet": (32, 32, 3), "fashion_conv": (28, 28, 1)}
PAIR_CLASSES = {"mlp": 100, "resnet": 100, "fashion_conv": 10}


def build_pair(pair, num_classes):
    """(teacher_fn, student_fn, description); each fn builds a fresh model."""
    from keras_cskd import models

    input_shape = PAIR_INPUTS[pair]
    if pair == "fashion_conv":  # the models of benchmarks/experiments.py's recipe
        student = experiments.RECIPES["fashion_conv"]["student"]
        teacher = experiments.TEACHERS[experiments.RECIPES["fashion_conv"]["teacher"]]
        return (
            lambda: experiments.build_network(teacher, input_shape, "conv_teacher", num_classes),
            lambda: experiments.build_network(student, input_shape, "conv_student", num_classes),
            "experiments.py's fashion_conv recipe: conv_net teacher -> conv_net student",
        )
    if pair == "mlp":
        return (
            lambda: models.mlp(input_shape, num_classes, hidden=(1024, 1024), name="mlp_teacher"),
            lambda: models.mlp(input_shape, num_classes, hidden=(256,), name="mlp_student"),
            "mlp(1024,1024) -> mlp(256)",
        )
    teacher_fn = getattr(models, "resnet32x4", None)
    student_fn = getattr(models, "resnet8x4", None)
    if teacher_fn is not None and student_fn is not None:
        return (
            lambda: teacher_fn(input_shape=input_shape, num_classes=num_classes),
            lambda: student_fn(input_shape=input_shape, num_classes=num_classes),
            "keras_cskd.models.resnet32x4 -> resnet8x4",
        )
    return (
        lambda: _cifar_resnet_fallback(32, 4, input_shape, num_classes, "resnet32x4_fallback"),
        lambda: _cifar_resnet_fallback(8, 4, input_shape, num_classes, "resnet8x4_fallback"),
        "resnet32x4 -> resnet8x4 (benchmark's fallback definition: "
        "keras_cskd.models has no resnet32x4/resnet8x4 yet)",
    )


# ------------------------------------------------------------ instrumentation
class TraceCounter:
    """Counts Python executions of a model's `compute_loss`. Inside a
    compiled step (tf.function, jax.jit) that happens only while tracing,
    so after warm-up the count must stay 0; in eager PyTorch it runs every
    step and the count is not reported."""

    def __init__(self, model):
        self.count = 0
        original = model.compute_loss

        def counting(*args, **kwargs):
            self.count += 1
            return original(*args, **kwargs)

        object.__setattr__(model, "compute_loss", counting)


class CompileEvents:
    """Counts XLA backend compilations (JAX only), a second recompilation check."""

    def __init__(self):
        self.count = 0
        import keras

        if keras.backend.backend() != "jax":
            self.available = False
            return
        import jax.monitoring

        def listener(event, duration, **kwargs):
            if event == "/jax/core/compile/backend_compile_duration":
                self.count += 1

        jax.monitoring.register_event_duration_secs_listener(listener)
        self.available = True


def reset_peak_rss():
    """Resets the kernel's peak-RSS mark (VmHWM) of this process (Linux)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def device_memory():
    """(description, reset function, peak-bytes function) for accelerators;
    None on CPU or when the backend exposes nothing."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform == "cpu":
            return None
        stats = device.memory_stats() or {}
        if "peak_bytes_in_use" not in stats:
            return None
        # JAX exposes no reset: report the process-wide peak.
        return (
            "jax peak_bytes_in_use (process peak)",
            lambda: None,
            lambda: device.memory_stats().get("peak_bytes_in_use", 0),
        )
    if backend == "torch":
        import torch

        if not torch.cuda.is_available():
            return None
        return (
            "torch.cuda.max_memory_allocated",
            torch.cuda.reset_peak_memory_stats,
            torch.cuda.max_memory_allocated,
        )
    if backend == "tensorflow":
        import tensorflow as tf

        if not tf.config.list_logical_devices("GPU"):
            return None
        return (
            "tf get_memory_info('GPU:0')['peak']",
            lambda: tf.config.experimental.reset_memory_stats("GPU:0"),
            lambda: tf.config.experimental.get_memory_info("GPU:0")["peak"],
        )
    return None


def torch_cuda_memory():
    """(description, reset, peak bytes) of the PyTorch peer on CUDA; None on CPU."""
    import torch

    if not torch.cuda.is_available():
        return None
    return (
        "torch.cuda.max_memory_allocated",
        torch.cuda.reset_peak_memory_stats,
        torch.cuda.max_memory_allocated,
    )


# -------------------------------------------------------------------- configs
def make_configs(args, teacher_fn, student_fn):
    import keras
    import numpy as np

    import keras_cskd
    from keras_cskd import losses as kd_losses

    rng = np.random.default_rng(args.seed)
    batch = args.batch_size
    n = batch * LONG_BLOCK * args.steps
    x1 = rng.standard_normal((batch, *PAIR_INPUTS[args.pair])).astype("float32")
    y1 = rng.integers(0, args.num_classes, size=(batch,)).astype("int32")
    x = np.concatenate([x1] * (n // batch))
    y = np.concatenate([y1] * (n // batch))
    if args.data == "tensor":
        x1, y1, x, y = (keras.ops.convert_to_tensor(v) for v in (x1, y1, x, y))
    jit = {"auto": "auto", "true": True, "false": False}[args.jit]

    def optimizer():
        return keras.optimizers.SGD(0.05, momentum=0.9)

    def ce():
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    teacher = teacher_fn()
    teacher.trainable = False

    def train_block(model, inputs):
        def run(steps):
            if args.loop == "fit":
                part = keras.tree.map_structure(lambda v: v[: steps * batch], inputs)
                history = model.fit(
                    part, y[: steps * batch], batch_size=batch, epochs=1, shuffle=False, verbose=0
                )
                return history.history["loss"][-1]  # a Python float: host sync
            for _ in range(steps):
                loss = model.train_on_batch(
                    keras.tree.map_structure(lambda v: v[:batch], inputs), y1
                )
            return loss  # train_on_batch returns NumPy (a sync per step)

        return run

    def predict_block(model):
        def run(steps):
            if args.loop == "fit":
                return np.asarray(model.predict(x[: steps * batch], batch_size=batch, verbose=0))[
                    -1, 0
                ]
            for _ in range(steps):
                out = model.predict_on_batch(x1)
            return np.asarray(out)[-1, 0]

        return run

    configs = []  # (key, label, model-or-None, run)

    student = student_fn()
    student.compile(optimizer=optimizer(), loss=ce(), jit_compile=jit)
    configs.append(("a", "(a) student step", student, train_block(student, x)))
    configs.append(("b", "(b) teacher forward", None, predict_block(teacher)))

    loss_factories = {
        "kd": lambda: kd_losses.KLDivergenceDistillation(4.0),
        "cskd": lambda: kd_losses.CosineSimilarityDistillation(4.0),
        "cskd+cswt": kd_losses.cskd_paper_objective,
        "stkd": lambda: kd_losses.SimilarityTransferDistillation(4.0),
        "dist": lambda: kd_losses.DISTDistillation(4.0),
        "mse": kd_losses.LogitMSEDistillation,
    }
    for name in [s.strip() for s in args.losses.split(",") if s.strip()]:
        if name not in loss_factories:
            raise SystemExit(f"unknown loss {name!r}; choose from {sorted(loss_factories)}")
        distiller = keras_cskd.Distiller(
            student_fn(), teacher, loss_factories[name](), seed=args.seed
        )
        distiller.compile(optimizer=optimizer(), jit_compile=jit)
        configs.append(
            (f"c:{name}", f"(c) keras_cskd {name}", distiller, train_block(distiller, x))
        )

    if hasattr(keras, "distillation"):
        peer = keras.distillation.Distiller(
            teacher=teacher,
            student=student_fn(),
            distillation_losses=keras.distillation.LogitsDistillation(temperature=4.0),
        )
        peer.compile(optimizer=optimizer(), loss=ce(), jit_compile=jit)
        configs.append(("d", "(d) keras.distillation KL", peer, train_block(peer, x)))

    logits = np.asarray(teacher.predict(x, batch_size=batch, verbose=0), "float32")
    if args.data == "tensor":
        logits = keras.ops.convert_to_tensor(logits)
    cached = keras_cskd.Distiller(
        student_fn(), None, kd_losses.KLDivergenceDistillation(4.0), seed=args.seed
    )
    cached.compile(optimizer=optimizer(), jit_compile=jit)
    configs.append(
        (
            "e",
            "(e) keras_cskd cached logits (kd)",
            cached,
            train_block(cached, {"x": x, "teacher_logits": logits}),
        )
    )
    configs.extend(torch_peer_configs(args, teacher, student, x1, y1))
    return configs


def torch_peer_configs(args, keras_teacher, keras_student, x1, y1):
    """(p) configs: the raw PyTorch eager KD step on the same batch, after
    checking that its models have the Keras models' parameter counts."""
    if args.torch_peer == "none":
        return []
    import numpy as np
    import torch
    import torch_peer

    from keras_cskd import models

    teacher, student = torch_peer.build_pair(args.pair, args.num_classes)
    for role, keras_model, torch_model in (
        ("teacher", keras_teacher, teacher),
        ("student", keras_student, student),
    ):
        counts = models.count_parameters(keras_model), torch_peer.count_parameters(torch_model)
        if counts[0] != counts[1]:
            raise SystemExit(f"torch peer {role}: {counts[1]} parameters, Keras {counts[0]}")
        print(f"# (p) torch peer {role}: {counts[1]:,} parameters (= Keras)")
    on = torch_peer.device()
    x = torch.as_tensor(np.array(x1)).permute(0, 3, 1, 2).contiguous().to(on)  # NHWC -> NCHW
    y = torch.as_tensor(np.array(y1)).long().to(on)
    precisions = ("fp32", "bf16") if args.torch_peer == "both" else (args.torch_peer,)
    configs = []
    for precision in precisions:
        if precision == "bf16" and not torch_peer.bf16_supported(on):
            print(f"# (p) bf16 autocast not supported on {on}: skipped")
            continue
        step = torch_peer.KDStep(
            teacher if precision == precisions[0] else copy_module(teacher),
            student if precision == precisions[0] else copy_module(student),
            x,
            y,
            precision=precision,
        )
        label = f"(p) PyTorch eager KD {precision} ({on.type})"
        configs.append((f"p:{precision}", label, None, step.run))
    return configs


def copy_module(module):
    import copy

    return copy.deepcopy(module)


# ----------------------------------------------------------------------- main
def ratios(medians):
    """The issue's ratios from per-config median ms/step, as
    {"c/(a+b) [kd]": value, ...}."""
    floor = medians["a"] + medians["b"]
    ours = {key[2:]: value for key, value in medians.items() if key.startswith("c:")}
    out = {f"c/(a+b) [{name}]": value / floor for name, value in ours.items()}
    if "d" in medians:
        out["d/(a+b) [keras.distillation]"] = medians["d"] / floor
    out["e/a [cached logits]"] = medians["e"] / medians["a"]
    if "d" in medians:
        out.update({f"c/d [{name}]": value / medians["d"] for name, value in ours.items()})
    for peer in [key for key in medians if key.startswith("p:")]:
        versus = f"vs torch {peer[2:]}"
        out.update({f"c/p [{name} {versus}]": v / medians[peer] for name, v in ours.items()})
        if "d" in medians:
            out[f"d/p [keras.distillation {versus}]"] = medians["d"] / medians[peer]
        out[f"e/p [cached logits {versus}]"] = medians["e"] / medians[peer]
    return out


def print_ratios(medians, clock):
    for name, value in ratios(medians).items():
        print(f"RATIO {name} = {value:.3f} ({clock})")


def describe_hardware():
    import platform

    import keras

    lines = [
        f"python {platform.python_version()}, keras {keras.__version__}, "
        f"backend {keras.backend.backend()}"
    ]
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        lines.append(f"jax {jax.__version__}, devices {jax.devices()}")
    elif backend == "torch":
        import torch

        lines.append(
            f"torch {torch.__version__}, cuda {torch.cuda.is_available()}, "
            f"threads {torch.get_num_threads()}"
        )
    elif backend == "tensorflow":
        import tensorflow as tf

        lines.append(
            f"tensorflow {tf.__version__}, devices "
            f"{[d.name for d in tf.config.list_logical_devices()]}"
        )
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            cpu = names[0]
    except OSError:
        pass
    lines.append(f"cpu: {cpu}; {os.cpu_count()} logical cores visible")
    return lines


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    _reexec_with_backend(args, argv)

    if args.threads == 1 and os.environ.get("KERAS_BACKEND") == "jax":
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
        ).strip()
    import keras
    import numpy as np

    if args.threads:
        if keras.backend.backend() == "torch" or args.torch_peer != "none":
            import torch

            torch.set_num_threads(args.threads)
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    keras.utils.set_random_seed(args.seed)
    if args.mixed_precision:
        keras.mixed_precision.set_global_policy(args.mixed_precision)

    teacher_fn, student_fn, pair_description = build_pair(args.pair, args.num_classes)
    print(f"# step_time: pair {pair_description}")
    for line in describe_hardware():
        print(f"# {line}")
    print(
        f"# batch {args.batch_size}, blocks of {args.steps} and {LONG_BLOCK * args.steps} "
        f"steps, {args.rounds} rounds (+{args.warmup} warm-up), loop {args.loop}, "
        f"jit {args.jit}, policy {keras.mixed_precision.global_policy().name}, "
        f"threads {args.threads or 'default'}, data {args.data}"
    )
    print(f"# load average at start: {os.getloadavg()}")
    sys.stdout.flush()

    configs = make_configs(args, teacher_fn, student_fn)
    tracers = {key: TraceCounter(model) for key, _, model, _ in configs if model is not None}
    compiles = CompileEvents()
    device = device_memory()
    peer_device = torch_cuda_memory() if any(k.startswith("p:") for k, *_ in configs) else None

    for _ in range(args.warmup):
        for _, _, _, run in configs:
            run(args.steps)
            run(LONG_BLOCK * args.steps)
    for tracer in tracers.values():
        tracer.count = 0
    compiles.count = 0

    keys = [key for key, *_ in configs]
    clocks = {"wall": time.perf_counter, "cpu": time.process_time}
    # per clock: differential ms/step (fixed call cost removed), the fixed
    # cost of one fit/predict call, and long-block time / steps (cost included).
    per_step = {c: {key: [] for key in keys} for c in clocks}
    per_call = {c: {key: [] for key in keys} for c in clocks}
    raw = {c: {key: [] for key in keys} for c in clocks}
    peak_rss = {key: 0.0 for key in keys}
    peak_device = {key: 0 for key in keys}
    can_reset_rss = reset_peak_rss()
    short, long = args.steps, LONG_BLOCK * args.steps
    for _ in range(args.rounds):
        for key, _, _, run in configs:
            if can_reset_rss:
                reset_peak_rss()
            memory = peer_device if key.startswith("p:") else device
            if memory is not None:
                memory[1]()
            elapsed = {c: {} for c in clocks}
            for steps in (short, long):
                starts = {c: clock() for c, clock in clocks.items()}
                np.asarray(run(steps))  # each block ends with one host sync
                for c, clock in clocks.items():
                    elapsed[c][steps] = clock() - starts[c]
            for c in clocks:
                step = (elapsed[c][long] - elapsed[c][short]) / (long - short)
                per_step[c][key].append(step * 1e3)
                per_call[c][key].append((elapsed[c][short] - short * step) * 1e3)
                raw[c][key].append(elapsed[c][long] / long * 1e3)
            peak_rss[key] = max(peak_rss[key], peak_rss_mib())
            if memory is not None:
                peak_device[key] = max(peak_device[key], memory[2]())

    eager_torch = keras.backend.backend() == "torch" and args.jit != "true"
    header = (
        f"{'config':<36} {'ms/step':>8} {'(min':>7} {'max)':>7} {'incl. call':>10} "
        f"{'ms/call':>8} {'peak RSS MiB':>12}"
    )
    header += f" {'img/s':>8}"
    if device is not None or peer_device is not None:
        header += f" {'device MiB':>10}"
    header += f" {'retraces':>8}"
    print(f"# clock: {args.clock}")
    print("# ms/step: median over rounds of (T(long block) - T(short block)) / extra steps;")
    print("# incl. call: median T(long block) / steps, the fixed cost of the call included;")
    print("# ms/call: that fixed cost (fit/predict set-up, callbacks, final sync).")
    print(header)
    medians = {}
    for key, label, _, _ in configs:
        values = per_step[args.clock][key]
        medians[key] = statistics.median(values)
        line = (
            f"{label:<36} {medians[key]:>8.3f} {min(values):>7.3f} {max(values):>7.3f} "
            f"{statistics.median(raw[args.clock][key]):>10.3f} "
            f"{statistics.median(per_call[args.clock][key]):>8.2f} "
            f"{peak_rss[key]:>12.1f}"
        )
        line += f" {args.batch_size / medians[key] * 1e3 if medians[key] > 0 else 0:>8.0f}"
        if device is not None or peer_device is not None:
            line += f" {peak_device[key] / 2**20:>10.1f}"
        retraces = "n/a" if (eager_torch or key not in tracers) else str(tracers[key].count)
        line += f" {retraces:>8}"
        print(line)
    if not can_reset_rss:
        print("# peak RSS is the process-wide peak (could not reset VmHWM per config)")
    else:
        print("# peak RSS: VmHWM reset before each config's blocks (includes everything resident)")
    if compiles.available:
        print(f"# XLA compilations during timed rounds: {compiles.count}")
    else:
        print("# XLA compilation events: not exposed by this backend")

    print(f"# load average at end: {os.getloadavg()}")
    for c in (args.clock, *(c for c in clocks if c != args.clock)):
        print_ratios({key: statistics.median(per_step[c][key]) for key in keys}, c)
    if args.json:
        import json

        report = {
            "backend": keras.backend.backend(),
            "pair": args.pair,
            "policy": keras.mixed_precision.global_policy().name,
            "batch_size": args.batch_size,
            "clock": args.clock,
            "hardware": describe_hardware(),
            "load_average_at_end": os.getloadavg(),
            "labels": {key: label for key, label, _, _ in configs},
            "ms_per_step": medians,
            "ratios": ratios(medians),
        }
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
