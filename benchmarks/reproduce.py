"""Reproduction run: a teacher, then students distilled with every method.

Trains a teacher with cross-entropy, then one student per method and seed
under one recipe, and writes a Markdown table (mean ± std over seeds, with
the teacher's accuracy), a PNG of the test-accuracy curves and a JSON file
with every history to `--out`.

The recipe is the standard CIFAR-100 one (docs/methods.md §7) scaled to
`--epochs`: SGD with momentum 0.9, batch 64, lr 0.05 (0.01 for MobileNetV2 /
ShuffleNetV2 students and teachers), divided by 10 at 150/240, 180/240 and
210/240 of training, weight decay 5e-4 applied like PyTorch's SGD (an L2
term of 5e-4/2 on every trainable parameter, so its gradient goes through
the momentum), random crop with 4-pixel zero padding + horizontal flip
(no flip for MNIST digits). Augmentation runs on the device inside the
training step (keras.ops and keras.random, one crop offset and flip per
sample); teacher and student see the same augmented (and, for STKD, mixed)
batch. Inputs are standardised per channel with the training set's
statistics by a `Normalization` layer in front of each network.

Methods and their loss weights (the CIFAR-100 defaults of each paper/repo):

| method    | loss                                                  |
| --------- | ----------------------------------------------------- |
| ce        | CE (the student trained alone)                        |
| kd        | 0.1 CE + 0.9 KD(τ=4)                                  |
| mse       | logit MSE alone (Kim et al.: no CE)                   |
| cskd      | CE + 2 CSKD(τ=4) (the authors' factor 2)              |
| cskd_cswt | CE + 2 CSKD(τ=4) + 2 CSKD(CSWT 2..6) (paper's Eq. 9)  |
| stkd      | mixed CE + KL(τ=4) + CSKD(τ=4) on mixup (α=1) batches |
| dist      | CE + 2 DIST(τ=4, β=γ=1)                               |
| dkd       | CE + DKD(α=1, β=8, τ=4), weight warmed up over 20/240 |

Example (a few minutes on a laptop CPU):

    KERAS_BACKEND=jax python benchmarks/reproduce.py --dataset fashion_mnist \\
        --teacher resnet20 --student resnet8 --stem-stride 2 --epochs 3 \\
        --limit 4000 --seeds 0 1 --methods ce,kd,cskd --out runs/quick

Runs are deterministic for a given seed on one backend and machine
(`keras.utils.set_random_seed`).
"""

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

METHODS = ("ce", "kd", "mse", "cskd", "cskd_cswt", "stkd", "dist", "dkd")
METHOD_LABELS = {
    "ce": "CE (student alone)",
    "kd": "KD",
    "mse": "MSE (logits)",
    "cskd": "CSKD",
    "cskd_cswt": "CSKD+CSWT",
    "stkd": "STKD",
    "dist": "DIST",
    "dkd": "DKD",
}
DATASETS = ("fashion_mnist", "mnist", "cifar100")
# §7: lr ×0.1 at epochs 150, 180 and 210 of 240.
MILESTONES = (150 / 240, 180 / 240, 210 / 240)
DKD_WARMUP_FRACTION = 20 / 240
SMALL_LR_MODELS = ("mobilenetv2", "mobile_half", "shufflenetv2", "shufflev2")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", choices=DATASETS, default="fashion_mnist")
    parser.add_argument(
        "--data", default=None, help="IDX folder (MNIST/Fashion-MNIST) overriding the shared copy"
    )
    parser.add_argument(
        "--teacher",
        default="resnet20",
        help="zoo name (keras_cskd.models.MODELS) or resnet<depth>:w0,w1,w2,w3",
    )
    parser.add_argument(
        "--student",
        default="resnet8",
        help="zoo name (keras_cskd.models.MODELS) or resnet<depth>:w0,w1,w2,w3",
    )
    parser.add_argument(
        "--stem-stride",
        type=int,
        default=None,
        help="stride of both models' first conv (default: the original's)",
    )
    parser.add_argument("--epochs", type=int, default=240, help="student epochs (§7: 240)")
    parser.add_argument(
        "--teacher-epochs",
        type=int,
        default=None,
        help="default: --epochs; 0 keeps the teacher untrained (smoke tests)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--teacher-seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--lr",
        type=float,
        default=None,
        help="base lr (default 0.05; 0.01 for MobileNetV2/ShuffleNetV2)",
    )
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        help="use a fixed random subset of this many training samples",
    )
    parser.add_argument(
        "--test-limit",
        type=int,
        default=None,
        help="use a fixed random subset of this many test samples",
    )
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"comma-separated subset of {','.join(METHODS)}",
    )
    parser.add_argument("--crop-padding", type=int, default=4)
    parser.add_argument(
        "--no-flip", action="store_true", help="no horizontal flips (always off for MNIST)"
    )
    parser.add_argument(
        "--teacher-weights",
        default=None,
        help="a .weights.h5 of the teacher to load instead of training it",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="output folder (default cskd-out/reproduce; with --replot: next to the JSON)",
    )
    parser.add_argument(
        "--jax-cache",
        default=os.environ.get("KERAS_CSKD_JAX_CACHE"),
        help="JAX persistent compilation cache folder "
        "(default: $KERAS_CSKD_JAX_CACHE or OUT/.jax_cache; 'none' to disable)",
    )
    parser.add_argument("--verbose", type=int, default=0, help="Keras fit verbosity")
    parser.add_argument(
        "--replot",
        default=None,
        metavar="RESULTS_JSON",
        help="rewrite the table and plot of a finished run from its results.json (no training)",
    )
    args = parser.parse_args(argv)
    methods = [
        m.strip().lower().replace("+", "_").replace("-", "_")
        for m in args.methods.split(",")
        if m.strip()
    ]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
    args.methods = methods
    if args.teacher_epochs is None:
        args.teacher_epochs = args.epochs
    if args.epochs < 1 or args.teacher_epochs < 0 or args.batch_size < 2:
        parser.error("--epochs >= 1, --teacher-epochs >= 0 and --batch-size >= 2 are required")
    return args


# ---------------------------------------------------------------- backend
def _configure_jax_cache(folder):
    """JAX's persistent compilation cache: runs that differ only in their
    seed compile to the same XLA programs (and every model build compiles
    one small program per weight shape for the initialisers), so later runs
    load them from disk instead of compiling again."""
    try:
        import jax

        jax.config.update("jax_compilation_cache_dir", str(folder))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    except Exception:  # pragma: no cover - older JAX
        pass


# ------------------------------------------------------------------- data
def load_dataset(args):
    import numpy as np

    from keras_cskd import data

    if args.dataset == "cifar100":
        (x, y), (x_test, y_test) = data.load_keras_dataset("cifar100")
        num_classes = 100
    else:
        folder = args.data or data.shared_data_folder(args.dataset.replace("_", "-"))
        (x, y), (x_test, y_test) = data.load_idx_folder(folder)
        num_classes = 10
    rng = np.random.default_rng(12345)  # the subset does not depend on --seeds
    if args.limit is not None and args.limit < len(x):
        keep = np.sort(rng.permutation(len(x))[: args.limit])
        x, y = x[keep], y[keep]
    if args.test_limit is not None and args.test_limit < len(x_test):
        keep = np.sort(rng.permutation(len(x_test))[: args.test_limit])
        x_test, y_test = x_test[keep], y_test[keep]
    return (x, y), (x_test, y_test), num_classes


# ----------------------------------------------------------- augmentation
def random_crop_flip_layer(padding, flip, seed):
    """A Keras layer: per-sample random crop of the zero-padded image
    (torchvision's `RandomCrop(size, padding)`) and random horizontal flip,
    only when `training=True`."""
    import keras
    from keras import ops

    class RandomCropFlip(keras.layers.Layer):
        def __init__(self, padding, flip, seed=None, **kwargs):
            super().__init__(**kwargs)
            self.padding = int(padding)
            self.flip = bool(flip)
            self.seed_generator = keras.random.SeedGenerator(seed)

        def call(self, images, training=False):
            if not training:
                return images
            batch = ops.shape(images)[0]
            height, width = images.shape[1], images.shape[2]
            out = images
            if self.padding:
                pad = self.padding
                padded = ops.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
                span = 2 * pad + 1
                dy = keras.random.randint((batch,), 0, span, seed=self.seed_generator)
                dx = keras.random.randint((batch,), 0, span, seed=self.seed_generator)
                # One-hot row/column selections: a gather that compiles on
                # every backend. rows[b, i, p] = 1 where p = i + dy[b].
                rows = ops.one_hot(ops.arange(height)[None, :] + dy[:, None], height + 2 * pad)
                cols = ops.one_hot(ops.arange(width)[None, :] + dx[:, None], width + 2 * pad)
                rows = ops.cast(rows, images.dtype)
                cols = ops.cast(cols, images.dtype)
                out = ops.einsum("bip,bpqc->biqc", rows, padded)
                out = ops.einsum("bjq,biqc->bijc", cols, out)
            if self.flip:
                coin = keras.random.uniform((batch, 1, 1, 1), seed=self.seed_generator)
                out = ops.where(coin < 0.5, ops.flip(out, axis=2), out)
            return out

        def compute_output_shape(self, input_shape):
            return input_shape

    return RandomCropFlip(padding, flip, seed, name="random_crop_flip")


# ----------------------------------------------------------------- models
def zoo_model(spec, **kwargs):
    """A zoo model from its name (`keras_cskd.models.MODELS`), or a
    width-reduced CIFAR ResNet written `resnet<depth>:<stem>,<w1>,<w2>,<w3>`
    (e.g. `resnet8:8,8,16,32`, resnet8 at half width)."""
    from keras_cskd import models

    name, _, widths = str(spec).partition(":")
    if not widths:
        return models.get(name, **kwargs)
    if not name.startswith("resnet") or not name[6:].isdigit():
        raise ValueError(
            f"Custom widths are for CIFAR ResNets (resnet<depth>:w0,w1,w2,w3), got {spec!r}."
        )
    filters = tuple(int(w) for w in widths.split(","))
    model_name = f"{name}_w" + "_".join(str(w) for w in filters)
    return models.resnet(int(name[6:]), filters, name=model_name, **kwargs)


def build_network(name, input_shape, num_classes, stem_stride, mean, variance, role):
    """Normalization (training-set statistics) + a zoo model, returning logits."""
    import keras

    kwargs = {"input_shape": input_shape, "num_classes": num_classes}
    if stem_stride is not None:
        kwargs["stem_stride"] = stem_stride
    body = zoo_model(name, **kwargs)
    inputs = keras.Input(input_shape)
    x = keras.layers.Normalization(mean=mean, variance=variance, name="standardize")(inputs)
    return keras.Model(inputs, body(x), name=f"{role}_{body.name}")


def add_weight_decay(model, weight_decay):
    """PyTorch-style (coupled) weight decay: an L2 penalty of
    `weight_decay / 2 * ||w||^2` on every trainable parameter, so that its
    gradient `weight_decay * w` goes through SGD's momentum as in
    `torch.optim.SGD(weight_decay=...)`."""
    import keras

    if not weight_decay:
        return
    regularizer = keras.regularizers.L2(weight_decay / 2.0)
    for variable in model.trainable_weights:
        variable.regularizer = regularizer


def make_optimizer(base_lr, momentum, epochs, steps_per_epoch):
    import keras

    total = epochs * steps_per_epoch
    boundaries = sorted({max(1, int(round(f * total))) for f in MILESTONES})
    values = [base_lr * 0.1**i for i in range(len(boundaries) + 1)]
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    return keras.optimizers.SGD(learning_rate=schedule, momentum=momentum)


def base_lr_for(args, *names):
    if args.lr is not None:
        return args.lr
    return 0.01 if any(n.lower() in SMALL_LR_MODELS for n in names) else 0.05


def method_setup(method, epochs):
    """(distillation loss, student weight, distillation weight, callbacks)."""
    from keras_cskd import callbacks, losses

    if method == "kd":
        return losses.KLDivergenceDistillation(4.0), 0.1, 0.9, []
    if method == "mse":
        return losses.LogitMSEDistillation(), 0.0, 1.0, []
    if method == "cskd":
        return losses.CosineSimilarityDistillation(4.0), 1.0, 2.0, []
    if method == "cskd_cswt":
        return losses.cskd_paper_objective(temperature=4.0, low=2.0, high=6.0), 1.0, 1.0, []
    if method == "stkd":
        return losses.SimilarityTransferDistillation(4.0), 1.0, 1.0, []
    if method == "dist":
        return losses.DISTDistillation(4.0), 1.0, 2.0, []
    if method == "dkd":
        warmup = max(1, int(round(DKD_WARMUP_FRACTION * epochs)))
        loss = losses.DecoupledKDDistillation(4.0, 1.0, 8.0)
        return loss, 1.0, 1.0, [callbacks.DistillationWeightWarmup(epochs=warmup)]
    raise ValueError(method)


# --------------------------------------------------------------- training
def _augmented_distiller_class():
    from keras_cskd import Distiller

    class AugmentingDistiller(Distiller):
        """A `Distiller` that augments each training batch before the
        teacher and student see it (both see the same images)."""

        def __init__(self, student, teacher, distillation_loss, *, augment, **kwargs):
            super().__init__(student, teacher, distillation_loss, **kwargs)
            self.augment = augment

        def call(self, inputs, training=False):
            if training:
                inputs = self.augment(inputs, training=True)
            return super().call(inputs, training=training)

    return AugmentingDistiller


def train_run(args, role, method, seed, net_name, data, teacher=None, epochs=None):
    """Trains one network; returns (network, record)."""
    import keras
    import numpy as np

    (x, y), (x_test, y_test), num_classes, mean, variance = data
    epochs = epochs or args.epochs
    keras.utils.clear_session()
    keras.utils.set_random_seed(seed)
    network = build_network(
        net_name, x.shape[1:], num_classes, args.stem_stride, mean, variance, role
    )
    add_weight_decay(network, args.weight_decay)
    flip = not args.no_flip and args.dataset != "mnist"
    augment = random_crop_flip_layer(args.crop_padding, flip, seed)
    steps = math.ceil(len(x) / args.batch_size)
    lr = base_lr_for(args, net_name)
    optimizer = make_optimizer(lr, args.momentum, epochs, steps)
    metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    fit_callbacks = []
    if method == "ce":
        model = keras.Sequential([keras.Input(x.shape[1:]), augment, network], name=f"{role}_ce")
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=metrics,
        )
    else:
        loss, student_weight, distillation_weight, fit_callbacks = method_setup(method, epochs)
        model = _augmented_distiller_class()(
            network,
            teacher,
            loss,
            augment=augment,
            student_loss_weight=student_weight,
            distillation_loss_weight=distillation_weight,
            seed=seed,
        )
        model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=metrics)
    start = time.time()
    history = model.fit(
        x,
        y,
        batch_size=args.batch_size,
        epochs=epochs,
        validation_data=(x_test, y_test),
        callbacks=fit_callbacks,
        shuffle=True,
        verbose=args.verbose,
    )
    seconds = time.time() - start
    curve = [float(v) for v in history.history["val_accuracy"]]
    record = {
        "role": role,
        "method": method,
        "seed": seed,
        "model": net_name,
        "lr": lr,
        "epochs": epochs,
        "test_accuracy": curve,
        "train_loss": [float(v) for v in history.history["loss"]],
        "final": curve[-1],
        "best": float(np.max(curve)),
        "seconds": seconds,
    }
    return network, record


# ---------------------------------------------------------------- reports
def _mean_std(values):
    import numpy as np

    values = np.asarray(values, dtype="float64") * 100.0
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return float(values.mean()), std


def make_table(args, teacher_record, records, parameter_counts):
    lines = []
    dataset = {"fashion_mnist": "Fashion-MNIST", "mnist": "MNIST", "cifar100": "CIFAR-100"}[
        args.dataset
    ]
    teacher_acc = teacher_record["final"] * 100.0
    lines.append(
        f"{dataset}: teacher {args.teacher} ({parameter_counts['teacher']:,} parameters) -> "
        f"student {args.student} ({parameter_counts['student']:,} parameters); "
        f"{args.epochs} student epochs, {len(args.seeds)} seed(s) {args.seeds}."
    )
    lines.append("")
    lines.append(
        f"Teacher {args.teacher}: {teacher_acc:.2f} % test accuracy (final epoch, seed "
        f"{teacher_record['seed']}, {teacher_record['epochs']} epochs)."
    )
    lines.append("")
    lines.append(
        "| Method | Test acc. % (final epoch) | Best epoch % | Δ vs CE | Per seed (final) |"
    )
    lines.append("| --- | ---: | ---: | ---: | --- |")
    ce_mean = None
    by_method = {}
    for record in records:
        by_method.setdefault(record["method"], []).append(record)
    if "ce" in by_method:
        ce_mean = _mean_std([r["final"] for r in by_method["ce"]])[0]
    for method in args.methods:
        runs = by_method.get(method, [])
        if not runs:
            continue
        final_mean, final_std = _mean_std([r["final"] for r in runs])
        best_mean, best_std = _mean_std([r["best"] for r in runs])
        delta = "—" if ce_mean is None or method == "ce" else f"{final_mean - ce_mean:+.2f}"
        seeds = ", ".join(f"{r['final'] * 100:.2f}" for r in runs)
        lines.append(
            f"| {METHOD_LABELS[method]} | {final_mean:.2f} ± {final_std:.2f} | "
            f"{best_mean:.2f} ± {best_std:.2f} | {delta} | {seeds} |"
        )
    return "\n".join(lines) + "\n"


def plot_curves(path, args, teacher_record, records):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    figure, axis = plt.subplots(figsize=(8, 5), constrained_layout=True)
    by_method = {}
    for record in records:
        by_method.setdefault(record["method"], []).append(record["test_accuracy"])
    for method in args.methods:
        if method not in by_method:
            continue
        curves = np.asarray(by_method[method], dtype="float64") * 100.0
        epochs = np.arange(1, curves.shape[1] + 1)
        mean = curves.mean(axis=0)
        line = axis.plot(epochs, mean, marker="o", markersize=3, label=METHOD_LABELS[method])[0]
        if len(curves) > 1:
            std = curves.std(axis=0, ddof=1)
            axis.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.15)
    axis.axhline(
        teacher_record["final"] * 100.0,
        color="black",
        linestyle="--",
        linewidth=1,
        label=f"teacher {args.teacher}",
    )
    axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axis.set_xlabel("epoch")
    axis.set_ylabel("test accuracy (%)")
    axis.set_title(
        f"{args.dataset}: {args.teacher} -> {args.student} "
        f"(mean ± std over {len(args.seeds)} seeds)"
    )
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="lower right")
    figure.savefig(path, dpi=110)
    plt.close(figure)


# ------------------------------------------------------------------- main
def replot(results_json, out=None):
    """Rewrites results.md and curves.png from a run's results.json."""
    summary = json.loads(Path(results_json).read_text())
    args = argparse.Namespace(**summary["args"])
    out = Path(out or Path(results_json).parent)
    out.mkdir(parents=True, exist_ok=True)
    table = make_table(args, summary["teacher"], summary["students"], summary["parameters"])
    (out / "results.md").write_text(table)
    plot_curves(out / "curves.png", args, summary["teacher"], summary["students"])
    return table


def main(argv=None):
    args = parse_args(argv)
    if args.replot:
        print(replot(args.replot, args.out), flush=True)
        return 0
    out = Path(args.out or "cskd-out/reproduce")
    out.mkdir(parents=True, exist_ok=True)
    import keras

    if keras.backend.backend() == "jax" and str(args.jax_cache).lower() != "none":
        _configure_jax_cache(args.jax_cache or out / ".jax_cache")
    from keras_cskd import models

    started = time.time()
    (x, y), (x_test, y_test), num_classes = load_dataset(args)
    mean = x.mean(axis=(0, 1, 2))
    variance = x.var(axis=(0, 1, 2))
    data = ((x, y), (x_test, y_test), num_classes, mean, variance)
    print(
        f"[reproduce] backend={keras.backend.backend()} dataset={args.dataset} "
        f"train={len(x)} test={len(x_test)} input={x.shape[1:]} classes={num_classes}",
        flush=True,
    )

    records = []
    keras.utils.set_random_seed(args.teacher_seed)
    if args.teacher_weights or args.teacher_epochs == 0:
        keras.utils.clear_session()
        teacher = build_network(
            args.teacher, x.shape[1:], num_classes, args.stem_stride, mean, variance, "teacher"
        )
        if args.teacher_weights:
            teacher.load_weights(args.teacher_weights)
        teacher.compile(
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )
        accuracy = float(teacher.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"])
        teacher_record = {
            "role": "teacher",
            "method": "ce",
            "seed": args.teacher_seed,
            "model": args.teacher,
            "epochs": 0,
            "test_accuracy": [accuracy],
            "final": accuracy,
            "best": accuracy,
            "seconds": 0.0,
            "weights": args.teacher_weights,
        }
    else:
        teacher, teacher_record = train_run(
            args, "teacher", "ce", args.teacher_seed, args.teacher, data, epochs=args.teacher_epochs
        )
        teacher.save_weights(out / "teacher.weights.h5")
    print(
        f"[reproduce] teacher {args.teacher}: {teacher_record['final'] * 100:.2f} % "
        f"({teacher_record['seconds']:.0f} s)",
        flush=True,
    )
    with keras.StatelessScope(initialize_variables=False):
        kwargs = {"input_shape": x.shape[1:], "num_classes": num_classes}
        if args.stem_stride is not None:
            kwargs["stem_stride"] = args.stem_stride
        parameter_counts = {
            "teacher": models.count_parameters(zoo_model(args.teacher, **kwargs)),
            "student": models.count_parameters(zoo_model(args.student, **kwargs)),
        }
    keras.utils.clear_session()

    for seed in args.seeds:
        for method in args.methods:
            _, record = train_run(
                args, "student", method, seed, args.student, data, teacher=teacher
            )
            records.append(record)
            print(
                f"[reproduce] seed {seed} {method:>9}: {record['final'] * 100:.2f} % "
                f"(best {record['best'] * 100:.2f} %, {record['seconds']:.0f} s)",
                flush=True,
            )
            _write_outputs(
                out, args, teacher_record, records, parameter_counts, started, final=False
            )

    table = _write_outputs(
        out, args, teacher_record, records, parameter_counts, started, final=True
    )
    print(table, flush=True)
    print(f"[reproduce] done in {time.time() - started:.0f} s; outputs in {out}", flush=True)
    return 0


def _write_outputs(out, args, teacher_record, records, parameter_counts, started, final):
    import keras

    table = make_table(args, teacher_record, records, parameter_counts)
    (out / "results.md").write_text(table)
    summary = {
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "args": vars(args),
        "parameters": parameter_counts,
        "teacher": teacher_record,
        "students": records,
        "seconds": time.time() - started,
        "complete": final,
    }
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    if final:
        try:
            plot_curves(out / "curves.png", args, teacher_record, records)
        except ImportError:  # pragma: no cover
            print("[reproduce] matplotlib is not installed: no plot", flush=True)
    return table


if __name__ == "__main__":
    sys.exit(main())
