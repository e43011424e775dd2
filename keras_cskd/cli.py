"""The `keras-cskd` command line: a whole distillation run in one command.

    keras-cskd distill                      # embedded digits, no network
    keras-cskd distill --teacher t.keras --student s.keras --data d.npz
    keras-cskd distill --dataset fashion_mnist --method kd,cskd --epochs 20

Trains (or loads) a teacher, trains the student with cross-entropy only and
with each method from the same seed, prints a results table, writes a PNG
plot, `results.json`/`results.md` and the students as `.keras` files. Bad
input ends with a one-line error and exit code 2; Ctrl-C keeps the last
checkpoint and says where it is.
"""

import argparse
import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from keras_cskd.losses import METHODS

DEFAULT_METHODS = ("kd", "mse", "cskd", "cskd_cswt")
METHOD_LABELS = {"ce": "CE only", **{name: method.label for name, method in METHODS.items()}}
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A problem with the user's input, reported in one line (exit 2).

    Example:

    >>> import argparse
    >>> from keras_cskd.cli import UsageError, run_distill
    >>> try:
    ...     run_distill(
    ...         argparse.Namespace(method="kd", batch_size=4, temperature=0.0, label_noise=0.0)
    ...     )
    ... except UsageError as error:
    ...     print(f"keras-cskd: error: {error}")
    keras-cskd: error: --temperature must be positive
    """


def _parser():
    parser = argparse.ArgumentParser(
        prog="keras-cskd",
        description="Knowledge distillation for Keras 3 (CSKD, CSWT, KD, MSE, ...).",
    )
    commands = parser.add_subparsers(dest="command")
    distill = commands.add_parser(
        "distill",
        help="distil a teacher into a student and compare methods",
        description="Trains/loads a teacher, distils students with each method, "
        "prints a table and writes a plot and the students.",
    )
    source = distill.add_mutually_exclusive_group()
    source.add_argument(
        "--data",
        help="your data: an .npz with x/y (or x_train/y_train/x_test/y_test), "
        "a folder of class sub-folders of images, or a folder of MNIST-style IDX files",
    )
    source.add_argument(
        "--dataset",
        choices=("digits", "mnist", "fashion_mnist", "cifar10", "cifar100"),
        default=None,
        help="a named data set (digits is embedded; the others come through "
        "keras.datasets, or the local IDX files for mnist/fashion_mnist)",
    )
    distill.add_argument("--teacher", help="teacher: a .keras file or module:function")
    distill.add_argument("--student", help="student: a .keras file or module:function")
    distill.add_argument(
        "--method",
        default=",".join(DEFAULT_METHODS),
        help=f"comma-separated methods from {sorted(set(METHOD_LABELS) - {'ce'})} "
        f"(default {','.join(DEFAULT_METHODS)}); CE-only is always run as the baseline",
    )
    distill.add_argument("--epochs", type=int, default=None, help="student epochs")
    distill.add_argument("--teacher-epochs", type=int, default=None)
    distill.add_argument("--batch-size", type=int, default=64)
    distill.add_argument("--learning-rate", type=float, default=None)
    distill.add_argument("--temperature", type=float, default=4.0)
    distill.add_argument("--seed", type=int, default=0)
    distill.add_argument("--limit", type=int, default=None, help="use the first N samples")
    distill.add_argument(
        "--label-noise",
        type=float,
        default=0.0,
        help="replace this fraction of the students' training labels by random "
        "ones (the teacher keeps the clean labels): Kim et al.'s label-noise setting",
    )
    distill.add_argument("--image-size", type=int, default=32, help="for image folders")
    distill.add_argument("--out", default="cskd-out", help="output folder (default cskd-out)")
    distill.add_argument(
        "--backend",
        choices=("jax", "tensorflow", "torch"),
        help="Keras backend (default: $KERAS_BACKEND, else ~/.keras/keras.json, "
        "else the first installed of jax, tensorflow, torch)",
    )
    distill.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _choose_backend(requested):
    """--backend, else $KERAS_BACKEND, else keras.json's backend if it is
    installed, else the first installed of jax, tensorflow, torch. Keras is
    already imported (with the package): a different choice re-runs the
    command in a fresh process with KERAS_BACKEND set."""
    from keras_cskd import _backend_choice

    chosen = requested or os.environ.get("KERAS_BACKEND") or _backend_choice.installed_backend()
    if chosen is None:
        raise UsageError(
            "no Keras backend is installed: pip install 'keras-cskd[jax]' "
            "(or [tensorflow], [torch])"
        )
    if chosen in _backend_choice.BACKEND_MODULES and not _backend_choice.installed(chosen):
        raise UsageError(
            f"the Keras backend {chosen!r} is not installed: pip install "
            f"'keras-cskd[{chosen}]' or choose another with --backend"
        )
    return chosen


def main(argv=None):
    """Entry point of `keras-cskd` and `python -m keras_cskd`.

    Example:

    >>> from keras_cskd.cli import main
    >>> main(["distill", "--method", "kd,nonsense"])  # a one-line error on stderr, exit code 2
    2
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command != "distill":
        parser.print_help()
        return EXIT_BAD_INPUT if args.command is None and argv else 0
    try:
        backend = _choose_backend(args.backend)
        import keras

        if keras.backend.backend() != backend:
            env = dict(os.environ, KERAS_BACKEND=backend)
            command = [
                sys.executable,
                "-m",
                "keras_cskd",
                *(sys.argv[1:] if argv is None else argv),
            ]
            return subprocess.call(command, env=env)
        if backend in ("tensorflow",):
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        return run_distill(args)
    except KeyboardInterrupt:
        print("keras-cskd: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except UsageError as error:
        print(f"keras-cskd: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT


# --------------------------------------------------------------------- data
def _load_data(args):
    from keras_cskd import data

    try:
        if args.data:
            path = Path(args.data)
            if not path.exists():
                raise UsageError(f"--data {path}: no such file or folder")
            if path.is_file():
                if path.suffix != ".npz":
                    raise UsageError(f"--data {path}: expected an .npz file or a folder")
                splits = data.load_npz(path, seed=args.seed)
            elif any(path.glob("*idx*-ubyte*")):
                splits = data.load_idx_folder(path)
            else:
                size = (args.image_size, args.image_size)
                splits = data.load_image_folder(path, image_size=size, seed=args.seed)
            name = path.name
        else:
            name = args.dataset or "digits"
            if name == "digits":
                splits = data.load_digits(seed=args.seed)
            else:
                local = data.shared_data_folder(name.replace("_", "-"))
                if name in ("mnist", "fashion_mnist") and local.is_dir():
                    splits = data.load_idx_folder(local)
                else:
                    splits = data.load_keras_dataset(name)
    except data.DataError as error:
        raise UsageError(str(error)) from error
    (x_train, y_train), (x_test, y_test) = splits
    if args.limit:
        x_train, y_train = x_train[: args.limit], y_train[: args.limit]
        x_test, y_test = x_test[: max(1, args.limit // 4)], y_test[: max(1, args.limit // 4)]
    if len(x_train) == 0 or len(x_test) == 0:
        raise UsageError("the data set is empty")
    return name, (x_train, y_train), (x_test, y_test)


# ------------------------------------------------------------------- models
def _load_model(spec, role):
    import keras

    if spec.endswith(".keras") or spec.endswith(".h5"):
        if not Path(spec).exists():
            raise UsageError(f"--{role} {spec}: no such file")
        try:
            return keras.saving.load_model(spec, compile=False)
        except Exception as error:
            raise UsageError(
                f"--{role} {spec} is not a loadable Keras model "
                f"({type(error).__name__}: {str(error).splitlines()[0][:160]})"
            ) from error
    if ":" in spec:
        module_name, _, function_name = spec.partition(":")
        sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(module_name)
            factory = getattr(module, function_name)
        except (ImportError, AttributeError) as error:
            raise UsageError(f"--{role} {spec}: cannot import it ({error})") from error
        model = factory()
        if not isinstance(model, keras.Model):
            raise UsageError(f"--{role} {spec} returned {type(model).__name__}, not a keras.Model")
        return model
    raise UsageError(f"--{role} {spec}: expected a .keras file or module:function")


def _default_models(input_shape, num_classes, seed):
    import keras

    from keras_cskd.models import mlp

    keras.utils.set_random_seed(seed)
    teacher = mlp(input_shape, num_classes, hidden=(512, 256), dropout=0.2, name="teacher")

    def student():
        return mlp(input_shape, num_classes, hidden=(16,), name="student")

    return teacher, student


def _check_pair(teacher, student_factory, input_shape, num_classes):
    from keras_cskd import validation

    student = student_factory()
    for role, model in (("teacher", teacher), ("student", student)):
        try:
            validation.check_no_softmax_head(model, role)
            classes = validation.output_classes(model, role)
        except ValueError as error:
            raise UsageError(str(error)) from error
        model_shape = tuple(model.inputs[0].shape[1:]) if getattr(model, "inputs", None) else None
        if model_shape is not None and model_shape != tuple(input_shape):
            raise UsageError(
                f"the {role} expects inputs of shape {model_shape} but the data "
                f"has {tuple(input_shape)}: resize the data (--image-size) or the model"
            )
        if classes is not None and classes != num_classes:
            raise UsageError(
                f"the {role} predicts {classes} classes but the data has {num_classes}"
            )


# -------------------------------------------------------------------- train
def run_distill(args):
    """Runs `keras-cskd distill` with parsed arguments; returns an exit code.

    Example:

    >>> import argparse
    >>> from keras_cskd.cli import run_distill
    >>> run_distill(
    ...     argparse.Namespace(method="cskd", batch_size=1, temperature=4.0, label_noise=0.0)
    ... )
    Traceback (most recent call last):
    ...
    keras_cskd.cli.UsageError: --batch-size must be at least 2 (CSKD compares samples across a
    batch)
    """
    started = time.perf_counter()
    methods = [m.strip() for m in args.method.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHOD_LABELS or m == "ce"]
    if unknown:
        raise UsageError(
            f"unknown method(s) {unknown}; choose from {sorted(set(METHOD_LABELS) - {'ce'})}"
        )
    if args.batch_size < 2:
        raise UsageError("--batch-size must be at least 2 (CSKD compares samples across a batch)")
    if args.temperature <= 0:
        raise UsageError("--temperature must be positive")
    if not 0.0 <= args.label_noise < 1.0:
        raise UsageError("--label-noise must be in [0, 1)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import keras
    import numpy as np

    import keras_cskd
    from keras_cskd import losses, validation
    from keras_cskd.callbacks import AtomicCheckpoint

    name, (x_train, y_train), (x_test, y_test) = _load_data(args)
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    input_shape = x_train.shape[1:]
    verbose = 0 if args.quiet else 2
    embedded = args.data is None and (args.dataset in (None, "digits"))
    epochs = args.epochs or (40 if embedded else 10)
    teacher_epochs = args.teacher_epochs or (40 if embedded else 10)
    learning_rate = args.learning_rate or 3e-3
    print(
        f"keras-cskd {keras_cskd.__version__} | backend {keras.backend.backend()} | "
        f"data {name}: {len(x_train)} train / {len(x_test)} test, {input_shape}, "
        f"{num_classes} classes"
    )

    default_teacher, default_student = _default_models(input_shape, num_classes, args.seed)
    template = _load_model(args.student, "student") if args.student else None

    def student_factory():
        """The same freshly initialised student for every method."""
        keras.utils.set_random_seed(args.seed + 1)
        if template is None:
            return default_student()
        return keras.models.clone_model(template)

    ce_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    # Teacher: given, cached from an earlier run, or trained now.
    teacher_path = out / "teacher.keras"
    if args.teacher:
        teacher = _load_model(args.teacher, "teacher")
        _check_pair(teacher, student_factory, input_shape, num_classes)
        teacher_source = args.teacher
    elif embedded and teacher_path.exists():
        teacher = keras.saving.load_model(teacher_path, compile=False)
        teacher_source = f"loaded {teacher_path}"
    else:
        teacher = default_teacher
        _check_pair(teacher, student_factory, input_shape, num_classes)
        teacher.compile(keras.optimizers.Adam(1e-3), ce_loss, metrics=["accuracy"])
        print(
            f"training the teacher ({teacher.count_params():,} parameters, {teacher_epochs} epochs)"
        )
        try:
            teacher.fit(
                x_train,
                y_train,
                batch_size=args.batch_size,
                epochs=teacher_epochs,
                verbose=verbose,
                shuffle=True,
            )
        except KeyboardInterrupt:
            teacher.save(out / "teacher.interrupted.keras")
            print(
                f"\ninterrupted: teacher saved to {out / 'teacher.interrupted.keras'}",
                file=sys.stderr,
            )
            return EXIT_INTERRUPTED
        teacher.save(teacher_path)
        teacher_source = f"trained, saved to {teacher_path}"
    teacher_accuracy = _accuracy(teacher, x_test, y_test)
    probe = np.asarray(teacher.predict(x_test[: min(len(x_test), 64)], verbose=0))
    if probe.ndim == 2 and validation.looks_like_probabilities(probe):
        raise UsageError(
            "the teacher outputs probabilities (rows in [0, 1] summing to 1); "
            "distillation needs logits: remove its final softmax"
        )
    print(f"teacher: {teacher_accuracy:.2%} test accuracy ({teacher_source})")

    student_labels = y_train
    if args.label_noise:
        rng = np.random.default_rng(args.seed)
        flip = rng.random(len(y_train)) < args.label_noise
        student_labels = y_train.copy()
        student_labels[flip] = rng.integers(0, num_classes, int(flip.sum()))
        print(f"label noise: {flip.mean():.0%} of the students' training labels randomised")

    results = []
    histories = {}
    for method in ["ce", *methods]:
        student = student_factory()
        checkpoint = out / f"student_{method}.keras"
        callbacks = [AtomicCheckpoint(out / f"checkpoint_{method}.keras")]
        tic = time.perf_counter()
        try:
            if method == "ce":
                model = student
                model.compile(keras.optimizers.Adam(learning_rate), ce_loss, metrics=["accuracy"])
            else:
                fixed = losses.METHODS[method].fixed_temperature
                loss = losses.get(method, **({"temperature": args.temperature} if fixed else {}))
                model = keras_cskd.Distiller(student, teacher, loss, seed=args.seed)
                model.compile(keras.optimizers.Adam(learning_rate), metrics=["accuracy"])
            print(f"\n== {METHOD_LABELS[method]} ({student.count_params():,} student parameters)")
            history = model.fit(
                x_train,
                student_labels,
                batch_size=args.batch_size,
                epochs=epochs,
                validation_data=(x_test, y_test),
                verbose=verbose,
                callbacks=callbacks,
            )
        except KeyboardInterrupt:
            print(
                f"\ninterrupted during {method}: the last checkpoint (end of the "
                f"last finished epoch) is {out / f'checkpoint_{method}.keras'}",
                file=sys.stderr,
            )
            return EXIT_INTERRUPTED
        seconds = time.perf_counter() - tic
        student.save(checkpoint)
        (out / f"checkpoint_{method}.keras").unlink(missing_ok=True)
        accuracy = _accuracy(student, x_test, y_test)
        histories[method] = history.history.get("val_accuracy", [])
        results.append(
            {"method": method, "accuracy": accuracy, "seconds": seconds, "student": str(checkpoint)}
        )

    baseline = results[0]["accuracy"]
    best = max(results[1:] or results, key=lambda r: r["accuracy"])
    _copy_best(best, out)
    table = _table(results, baseline, teacher_accuracy)
    table += (
        f"\n\nOne test sample is {100 / len(x_test):.2f} pt: differences of a few "
        "samples are noise; repeat with other --seed values before concluding."
    )
    print("\n" + table)
    summary = {
        "backend": keras.backend.backend(),
        "data": name,
        "teacher_accuracy": teacher_accuracy,
        "results": results,
        "epochs": epochs,
        "seed": args.seed,
        "temperature": args.temperature,
        "label_noise": args.label_noise,
        "seconds": time.perf_counter() - started,
    }
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    (out / "results.md").write_text(table + "\n")
    plot = _plot(histories, results, teacher_accuracy, out / "results.png")
    print(
        f"\nbest: {METHOD_LABELS[best['method']]} -> {out / 'student.keras'}"
        + (f" | plot: {plot}" if plot else "")
        + f" | total {summary['seconds']:.0f} s"
    )
    return 0


def _accuracy(model, x, y):
    import numpy as np

    logits = model.predict(x, batch_size=256, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def _copy_best(best, out):
    import shutil

    shutil.copyfile(best["student"], out / "student.keras")


def _table(results, baseline, teacher_accuracy):
    lines = [
        "| method | test accuracy | vs CE only | train time (s) |",
        "|---|---:|---:|---:|",
        f"| teacher | {teacher_accuracy:.2%} | | |",
    ]
    for row in results:
        delta = "" if row["method"] == "ce" else f"{100 * (row['accuracy'] - baseline):+.2f} pt"
        lines.append(
            f"| {METHOD_LABELS[row['method']]} | {row['accuracy']:.2%} | {delta} "
            f"| {row['seconds']:.1f} |"
        )
    return "\n".join(lines)


def _plot(histories, results, teacher_accuracy, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: no plot; pip install 'keras-cskd[plot]')")
        return None
    figure, (curves, bars) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for method, values in histories.items():
        curves.plot(range(1, len(values) + 1), values, label=METHOD_LABELS[method])
    curves.axhline(teacher_accuracy, color="black", linestyle="--", label="teacher")
    curves.set_xlabel("epoch")
    curves.set_ylabel("test accuracy")
    curves.legend(fontsize=8)
    curves.set_title("student test accuracy")
    names = [METHOD_LABELS[r["method"]] for r in results]
    values = [100 * r["accuracy"] for r in results]
    bars.barh(names, values, color=["grey"] + ["tab:blue"] * (len(values) - 1))
    bars.set_xlim(min(values) - 2, max(max(values), 100 * teacher_accuracy) + 1)
    bars.axvline(100 * teacher_accuracy, color="black", linestyle="--")
    bars.set_xlabel("final test accuracy (%)")
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return str(path)


if __name__ == "__main__":
    raise SystemExit(main())
