"""The `keras-cskd` command line: a whole distillation run in one command.

    keras-cskd distill                      # embedded digits, no network
    keras-cskd distill --teacher t.keras --student s.keras --data d.npz
    keras-cskd distill --dataset fashion_mnist --method kd,cskd --epochs 20

Trains (or loads) a teacher, trains the student with cross-entropy only and
with each method from the same seed, prints a results table, writes a PNG
plot, `results.json`/`results.md` and the students as `.keras` files. All
the input (arguments, data, models, `--out`) is checked before anything
trains: bad input ends with a one-line error and exit code 2, never a
traceback (`--debug` shows one, for reporting a bug). Ctrl-C keeps the last
checkpoint and says where it is; the same command run again (or with
`--resume`) continues from the last finished epoch, and nothing of an
interrupted run is deleted without `--overwrite`.
"""

import argparse
import importlib
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from keras_cskd.losses import METHODS

DEFAULT_METHODS = ("kd", "mse", "cskd", "cskd_cswt")
METHOD_LABELS = {"ce": "CE only", **{name: method.label for name, method in METHODS.items()}}
# The main job (`keras-cskd distill`, embedded digits): a teacher trained on
# every label, students that get the images but only 50 labels (5 per class)
# -- Hinton et al.'s point that soft targets let a student learn from far
# fewer labels -- repeated over 5 seeds to show the spread.
MAIN_JOB = {"labels": 50, "seeds": 5, "epochs": 15, "teacher_epochs": 20}
DEFAULT_TEACHER = {"hidden": [256], "dropout": 0.2}
DEFAULT_STUDENT = {"hidden": [32]}
TEACHER_LEARNING_RATE = 1e-3
EXIT_BAD_INPUT = 2
EXIT_BUG = 1
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
    keras-cskd: error: --temperature must be positive, got 0
    """


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: ...)" except where the default depends on the data
    (None), which the help text then spells out."""

    def _get_help_string(self, action):
        if action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


def _parser():
    parser = argparse.ArgumentParser(
        prog="keras-cskd",
        description="Knowledge distillation for Keras 3 (CSKD, CSWT, KD, MSE, ...).",
        formatter_class=_HelpFormatter,
    )
    commands = parser.add_subparsers(dest="command")
    main_job = MAIN_JOB
    distill = commands.add_parser(
        "distill",
        help="distil a teacher into a student and compare methods",
        description="Trains/loads a teacher, distils students with each method over "
        "several seeds, prints a table (mean ± std, paired differences with CE only) "
        "and writes a plot and the students. With no arguments: the main job on the "
        f"embedded digits, students with {main_job['labels']} labels, {main_job['seeds']} seeds.",
        formatter_class=_HelpFormatter,
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
        help="a named data set (default: digits, embedded; the others come through "
        "keras.datasets, or the local IDX files for mnist/fashion_mnist)",
    )
    distill.add_argument(
        "--teacher",
        help="teacher: a .keras file or module:function "
        "(default: an MLP trained here, reused from --out when its settings match)",
    )
    distill.add_argument(
        "--student",
        help="student: a .keras file or module:function "
        f"(default: an MLP with hidden layers {DEFAULT_STUDENT['hidden']})",
    )
    distill.add_argument(
        "--method",
        default=",".join(DEFAULT_METHODS),
        help=f"comma-separated methods from {sorted(set(METHOD_LABELS) - {'ce'})}; "
        "CE-only is always run as the baseline",
    )
    distill.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"student epochs (default: {main_job['epochs']} on digits, 10 otherwise)",
    )
    distill.add_argument(
        "--teacher-epochs",
        type=int,
        default=None,
        help=f"teacher epochs (default: {main_job['teacher_epochs']} on digits, 10 otherwise)",
    )
    distill.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="train every student with this many seeds (--seed, --seed+1, ...) "
        f"to measure the spread (default: {main_job['seeds']} on digits, 1 otherwise)",
    )
    distill.add_argument(
        "--labels",
        type=int,
        default=None,
        help="give the students only this many labelled training samples "
        "(balanced over classes); the distillation methods still see every "
        "training image through the teacher "
        f"(default: {main_job['labels']} on digits, all otherwise)",
    )
    distill.add_argument("--batch-size", type=int, default=64, help="batch size (at least 2)")
    distill.add_argument(
        "--learning-rate", type=float, default=3e-3, help="Adam learning rate of the students"
    )
    distill.add_argument(
        "--temperature",
        type=float,
        default=4.0,
        help="softmax temperature of the fixed-temperature losses",
    )
    distill.add_argument(
        "--seed", type=int, default=0, help="first seed (teacher, data split, students)"
    )
    distill.add_argument("--limit", type=int, default=None, help="use the first N samples")
    distill.add_argument(
        "--label-noise",
        type=float,
        default=0.0,
        help="replace this fraction of the students' training labels by random "
        "ones (the teacher keeps the clean labels): Kim et al.'s label-noise setting",
    )
    distill.add_argument("--image-size", type=int, default=32, help="for image folders")
    distill.add_argument("--out", default="cskd-out", help="output folder")
    distill.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted run in --out from its last finished epoch "
        "(also what a rerun with the same options does); an error if there is none",
    )
    distill.add_argument(
        "--overwrite",
        action="store_true",
        help="discard an interrupted run in --out (its backups and checkpoints) "
        "and start over; without it such a run is never deleted",
    )
    distill.add_argument(
        "--backend",
        choices=("jax", "tensorflow", "torch"),
        help="Keras backend (default: $KERAS_BACKEND, else ~/.keras/keras.json, "
        "else the first installed of jax, tensorflow, torch)",
    )
    distill.add_argument("--quiet", action="store_true", help="no progress bars")
    distill.add_argument(
        "--debug",
        action="store_true",
        help="show the full traceback of an error (for reporting a bug) instead of one line",
    )
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
        # TensorFlow also reads image folders under the other backends.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        return run_distill(args)
    except KeyboardInterrupt:
        print("keras-cskd: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except UsageError as error:
        print(f"keras-cskd: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as error:
        if args.debug:
            raise
        # Keras' and keras-cskd's input checks raise ValueError: bad input
        # that the checks above did not foresee. Anything else is a bug.
        bad_input = isinstance(error, ValueError)
        print(
            f"keras-cskd: {'error' if bad_input else 'internal error'}: "
            f"{type(error).__name__}: {_one_line(error)} (--debug shows the traceback"
            + ("" if bad_input else "; please report it")
            + ")",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT if bad_input else EXIT_BUG


def _one_line(error, limit=600):
    """An exception's message on one line (Keras' messages span several)."""
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# Set by the console script's Ctrl-C handler. A KeyboardInterrupt raised
# inside backend code can be swallowed there (seen under load on JAX and
# TensorFlow: training went on to the end), so every fit of a run also checks
# this flag between batches and raises it again from Python code.
_CTRL_C = threading.Event()


def _on_ctrl_c(signum, frame):
    _CTRL_C.set()
    raise KeyboardInterrupt


def _raise_if_ctrl_c(*_, **__):
    if _CTRL_C.is_set():
        raise KeyboardInterrupt


def console_main():
    """The `keras-cskd` console script: `main()` with Ctrl-C remembered (see
    `_CTRL_C`), then, after Ctrl-C, an immediate exit once the message and
    the checkpoint are written, so that no backend thread left running by an
    interrupted `fit` can hold the interpreter's shutdown (seen
    intermittently under torch and JAX)."""
    signal.signal(signal.SIGINT, _on_ctrl_c)
    code = main()
    if code == EXIT_INTERRUPTED:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


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
        try:
            model = factory()
        except Exception as error:
            raise UsageError(
                f"--{role} {spec} raised {type(error).__name__}: {_one_line(error, 200)}"
            ) from error
        if not isinstance(model, keras.Model):
            raise UsageError(f"--{role} {spec} returned {type(model).__name__}, not a keras.Model")
        return model
    raise UsageError(f"--{role} {spec}: expected a .keras file or module:function")


def _default_teacher(input_shape, num_classes, seed):
    import keras

    from keras_cskd.models import mlp

    keras.utils.set_random_seed(seed)
    return mlp(
        input_shape,
        num_classes,
        hidden=tuple(DEFAULT_TEACHER["hidden"]),
        dropout=DEFAULT_TEACHER["dropout"],
        name="teacher",
    )


def _default_student(input_shape, num_classes):
    from keras_cskd.models import mlp

    return mlp(input_shape, num_classes, hidden=tuple(DEFAULT_STUDENT["hidden"]), name="student")


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
def _check_numbers(args):
    """Refuses impossible numbers before any work is done (exit 2)."""
    rules = (
        ("epochs", "--epochs", lambda v: v >= 1, "at least 1"),
        ("teacher_epochs", "--teacher-epochs", lambda v: v >= 1, "at least 1"),
        ("seeds", "--seeds", lambda v: v >= 1, "at least 1"),
        ("seed", "--seed", lambda v: v >= 0, "0 or more"),
        (
            "batch_size",
            "--batch-size",
            lambda v: v >= 2,
            "at least 2 (CSKD compares samples across a batch)",
        ),
        ("learning_rate", "--learning-rate", lambda v: v > 0, "positive"),
        ("temperature", "--temperature", lambda v: v > 0, "positive"),
        ("label_noise", "--label-noise", lambda v: 0 <= v < 1, "in [0, 1)"),
        ("limit", "--limit", lambda v: v >= 2, "at least 2"),
        ("labels", "--labels", lambda v: v >= 1, "at least 1"),
        ("image_size", "--image-size", lambda v: v >= 1, "at least 1"),
    )
    for attribute, flag, valid, wanted in rules:
        value = getattr(args, attribute, None)
        if value is not None and not (math.isfinite(value) and valid(value)):
            raise UsageError(f"{flag} must be {wanted}, got {value:g}")


def _labelled_subset(labels, budget, num_classes, rng):
    """`budget` indices with every class as equally represented as it can be."""
    if budget < num_classes:
        raise UsageError(
            f"--labels {budget} is fewer than the {num_classes} classes: give at "
            "least one label per class"
        )
    if budget > len(labels):
        raise UsageError(f"--labels {budget} is more than the {len(labels)} training samples")
    order = rng.permutation(len(labels))
    per_class = [order[labels[order] == c] for c in range(num_classes)]
    chosen = [index for members in per_class for index in members[: budget // num_classes]]
    rest = rng.permutation(np.setdiff1d(order, chosen))
    return np.sort(np.concatenate([chosen, rest[: budget - len(chosen)]]).astype(int))


def _labelled_cross_entropy(y_true, logits):
    """Cross-entropy on the student's logits over the labelled samples of
    the batch (label -1: unlabelled, distilled from the teacher only)."""
    import keras
    from keras import ops

    y_true = ops.reshape(ops.cast(y_true, "int32"), (-1,))
    labelled = ops.cast(y_true >= 0, "float32")
    per_sample = keras.losses.sparse_categorical_crossentropy(
        ops.maximum(y_true, 0), ops.cast(logits, "float32"), from_logits=True
    )
    # Keras averages the returned values over the batch: rescale so that
    # the result is the mean over the labelled samples only.
    batch = ops.cast(ops.shape(y_true)[0], "float32")
    return labelled * per_sample * batch / ops.maximum(ops.sum(labelled), 1.0)


def _teacher_settings(args, name, x_train, y_train, teacher_epochs):
    """Everything that determines the default teacher, and its hash."""
    import hashlib

    import keras

    data_hash = hashlib.sha256()
    for array in (x_train, y_train):
        data_hash.update(str((array.shape, array.dtype)).encode())
        data_hash.update(np.ascontiguousarray(array).tobytes())
    settings = {
        "data": name,
        "data_sha256": data_hash.hexdigest()[:16],
        "seed": args.seed,
        "epochs": teacher_epochs,
        "batch_size": args.batch_size,
        "architecture": DEFAULT_TEACHER,
        "learning_rate": TEACHER_LEARNING_RATE,
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    return settings, digest


def _reusable_teacher(teacher_path, settings, digest):
    """(True, why) when `teacher_path` was trained with these settings."""
    record_path = teacher_path.with_suffix(".json")
    if not teacher_path.exists():
        return False, "training teacher"
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        return False, f"training teacher (no settings record next to {teacher_path})"
    if record.get("settings_sha256") == digest:
        if record.get("file_sha256") != _sha256(teacher_path):
            return False, (
                f"training teacher ({teacher_path} does not match the checksum in "
                f"{record_path}: it was cut short or replaced)"
            )
        return True, f"reusing teacher {teacher_path} (settings match, sha256 {digest})"
    old = record.get("settings", {})
    changed = [
        f"{key} {old.get(key)!r} -> {value!r}"
        for key, value in settings.items()
        if old.get(key) != value
    ]
    return False, "training teacher (settings changed: " + (", ".join(changed) or "format") + ")"


def _save_teacher(teacher, teacher_path, settings, digest):
    """The teacher cache: the model, then its record (settings and the
    file's checksum), each written atomically. A cache cut short or
    replaced no longer matches its record, so it is retrained, not read."""
    from keras_cskd._files import write_atomically, write_text_atomically

    write_atomically(teacher_path, teacher.save)
    record = {"settings": settings, "settings_sha256": digest, "file_sha256": _sha256(teacher_path)}
    write_text_atomically(teacher_path.with_suffix(".json"), json.dumps(record, indent=2))


def _sha256(path):
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _progress_bar(args, title, total):
    """Keras' own progress bar, one per model, over its epochs (x seeds)."""
    import keras

    if args.quiet:
        return []
    print(title, flush=True)
    bar = keras.utils.Progbar(total, unit_name="epoch", stateful_metrics=["loss"])
    done = [0]

    def advance(epoch, logs):
        done[0] += 1
        bar.update(done[0], values=[("loss", float((logs or {}).get("loss", float("nan"))))])

    return [keras.callbacks.LambdaCallback(on_epoch_end=advance)]


def _student_checkpoint(path, student):
    """`AtomicCheckpoint` of the student alone (the model to keep; saving
    the whole Distiller would also write the teacher every epoch)."""
    from keras_cskd.callbacks import AtomicCheckpoint

    class StudentCheckpoint(AtomicCheckpoint):
        def set_model(self, model):
            super().set_model(student)

    return StudentCheckpoint(path)


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
    batch), got 1
    """
    started = time.perf_counter()
    methods = [m.strip() for m in args.method.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHOD_LABELS or m == "ce"]
    if unknown:
        raise UsageError(
            f"unknown method(s) {unknown}; choose from {sorted(set(METHOD_LABELS) - {'ce'})}"
        )
    _check_numbers(args)

    import keras

    import keras_cskd

    job = _plan_job(args, methods)
    print(
        f"keras-cskd {keras_cskd.__version__} | backend {keras.backend.backend()} | "
        f"data {job.name}: {len(job.x_train)} train / {len(job.x_test)} test, "
        f"{job.input_shape}, {job.num_classes} classes"
    )
    # A given teacher is checked before the run record is written: a run
    # refused for bad input leaves nothing in --out that would block the
    # corrected command.
    given = _given_teacher(args.teacher, job) if args.teacher else None
    job.record = _open_run_record(args, job, methods)
    try:
        teacher, teacher_source = given or _teacher_for(args, job)
        teacher_accuracy = _accuracy(teacher, job.x_test, job.y_test)
        print(f"teacher: {teacher_accuracy:.2%} test accuracy ({teacher_source})")
        runs = _seed_runs(args, job)
        results = [_train_method(method, args, job, teacher, runs) for method in ["ce", *methods]]
    except _Interrupted:
        return EXIT_INTERRUPTED
    _write_report(args, job, results, teacher_accuracy, started)
    job.record.finish()
    return 0


class _Interrupted(Exception):
    """Ctrl-C during training, after saying what was kept."""


# ------------------------------------------------------------------- resume
RUN_RECORD = "run.json"
BACKUPS = "backup"


class _RunRecord:
    """`--out/run.json`: the settings of the run and the result of every
    (method, seed) finished so far, rewritten atomically after each one, so
    that an interrupted run (Ctrl-C, a kill) resumes where it stopped."""

    def __init__(self, out, settings):
        self.path = out / RUN_RECORD
        self.backups = out / BACKUPS
        self.settings = settings
        self.digest = _digest(settings)
        self.done = {}

    def result(self, method, seed):
        return self.done.get(f"{method}/{seed}")

    def add(self, method, seed, accuracy, seconds):
        self.done[f"{method}/{seed}"] = {"accuracy": accuracy, "seconds": seconds}
        self.save()

    def save(self, finished=False):
        from keras_cskd._files import write_text_atomically

        record = {
            "settings": self.settings,
            "settings_sha256": self.digest,
            "done": self.done,
            "finished": finished,
        }
        write_text_atomically(self.path, json.dumps(record, indent=2))

    def finish(self):
        import shutil

        self.save(finished=True)
        shutil.rmtree(self.backups, ignore_errors=True)


def _digest(settings):
    import hashlib

    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _run_settings(args, job, methods):
    """Everything that decides a run's results (not --quiet, --out, ...)."""
    teacher_settings, _ = _teacher_settings(
        args, job.name, job.x_train, job.y_train, job.teacher_epochs
    )
    return {
        **teacher_settings,
        "teacher": args.teacher,
        "student": args.student,
        "methods": methods,
        "student_epochs": job.epochs,
        "seeds": job.seeds,
        "labels": job.budget,
        "student_learning_rate": job.learning_rate,
        "temperature": args.temperature,
        "label_noise": args.label_noise,
    }


def _open_run_record(args, job, methods):
    """The run record to train under: the interrupted run in --out when
    its settings match (resumed), else a new one. An interrupted run with
    other settings is kept unless --overwrite (exit 2 otherwise)."""
    import shutil

    record = _RunRecord(job.out, _run_settings(args, job, methods))
    previous = None
    if record.path.exists():
        try:
            previous = json.loads(record.path.read_text())
            previous["done"], previous["settings_sha256"]  # noqa: B018 (the keys it needs)
        except (OSError, ValueError, KeyError, TypeError) as error:
            if not args.overwrite:
                raise UsageError(
                    f"{record.path} cannot be read ({type(error).__name__}): it is not a "
                    "keras-cskd run record; rerun with --overwrite to start over"
                ) from error
            previous = None
    interrupted = previous is not None and not previous.get("finished", False)
    if interrupted and previous["settings_sha256"] == record.digest and not args.overwrite:
        record.done = dict(previous["done"])
        finished = ", ".join(sorted(record.done)) or "no student yet"
        print(f"resuming the interrupted run in {job.out} (finished: {finished})")
        return record
    if args.resume:
        why = "it finished" if previous is not None and not interrupted else "there is none"
        if interrupted and not args.overwrite:
            why = "it has other settings: " + _changes(previous.get("settings", {}), record)
        raise UsageError(
            f"--resume: no interrupted run with these settings in {job.out} ({why}); "
            "run without --resume to start a new one"
        )
    if interrupted and not args.overwrite:
        raise UsageError(
            f"{job.out} holds an interrupted run with other settings "
            f"({_changes(previous.get('settings', {}), record)}): rerun with its options to "
            "resume it, add --overwrite to discard it, or choose another --out"
        )
    if args.overwrite:
        shutil.rmtree(record.backups, ignore_errors=True)
        for stale in job.out.glob("checkpoint_*.keras"):
            stale.unlink()
    elif record.backups.exists():
        raise UsageError(
            f"{record.backups} holds backups of a run without a record ({record.path}): "
            "add --overwrite to discard them, or choose another --out"
        )
    record.save()
    return record


def _changes(old, record):
    changed = [
        f"{key} {old.get(key)!r} -> {value!r}"
        for key, value in record.settings.items()
        if old.get(key) != value
    ]
    return ", ".join(changed) or "format"


def _guarded_fit(model, x, y, backup, **kwargs):
    """`fit` with the run's safety net: a backup of every finished epoch
    (resumed from when it exists) and a stop when the weights go NaN/inf.
    Returns None, or why the model went bad."""
    import keras

    from keras_cskd import callbacks

    backup_callback = callbacks.BackupAndRestore(str(backup))
    stop_on_ctrl_c = keras.callbacks.LambdaCallback(
        on_train_batch_begin=_raise_if_ctrl_c, on_train_batch_end=_raise_if_ctrl_c
    )
    kwargs["callbacks"] = [
        *kwargs.get("callbacks", []),
        callbacks.TerminateOnNaN(),
        stop_on_ctrl_c,
    ]
    kwargs["callbacks"].insert(0, backup_callback)
    try:
        model.fit(x, y, verbose=0, **kwargs)
    except callbacks.CorruptBackupError as error:
        raise UsageError(f"{error} (or rerun with --overwrite)") from None
    return callbacks.unsafe_to_save(model)


def _plan_job(args, methods):
    """The data, the schedule and the student factory of a `distill` run."""
    import keras

    out = _output_folder(args.out)
    name, (x_train, y_train), (x_test, y_test) = _load_data(args)
    num_classes = _check_data(args, methods, x_train, y_train, x_test, y_test)
    input_shape = x_train.shape[1:]
    embedded = args.data is None and (args.dataset in (None, "digits"))
    budget = args.labels or (MAIN_JOB["labels"] if embedded else None)
    if budget is not None and (
        budget == len(y_train) or (args.labels is None and budget > len(y_train))
    ):
        budget = None  # every training label
    if budget is not None:
        _labelled_subset(y_train, budget, num_classes, np.random.default_rng(0))  # checks it
    if budget is not None and "dkd" in methods:
        raise UsageError(
            "dkd needs the label of every training sample; with --labels the "
            "students have labels for only some: drop dkd or --labels"
        )
    template = _load_model(args.student, "student") if args.student else None

    def student_factory(seed=args.seed):
        """The same freshly initialised student for every method (per seed)."""
        keras.utils.set_random_seed(seed + 1)
        if template is None:
            return _default_student(input_shape, num_classes)
        return keras.models.clone_model(template)

    return argparse.Namespace(
        name=name,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=num_classes,
        input_shape=input_shape,
        epochs=args.epochs or (MAIN_JOB["epochs"] if embedded else 10),
        teacher_epochs=args.teacher_epochs or (MAIN_JOB["teacher_epochs"] if embedded else 10),
        seeds=args.seeds or (MAIN_JOB["seeds"] if embedded else 1),
        budget=budget,
        learning_rate=args.learning_rate or 3e-3,
        out=out,
        student_factory=student_factory,
        ce_loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )


def _output_folder(path):
    """`--out` as a folder that exists and can be written to."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder: choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"--out {out}: cannot create the folder ({error.strerror})") from None
    if not os.access(out, os.W_OK):
        raise UsageError(f"--out {out}: the folder is not writable")
    return out


def _check_data(args, methods, x_train, y_train, x_test, y_test):
    """The checks of the loaded data that need the run's settings (the
    loaders check each array: finite inputs, whole non-negative labels, one
    label per input). Returns the number of classes."""
    if x_train.shape[1:] != x_test.shape[1:]:
        raise UsageError(
            f"the training inputs have shape {x_train.shape[1:]} but the test inputs "
            f"{x_test.shape[1:]}: give both splits the same shape"
        )
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    present = np.unique(y_train)
    if len(present) < 2:
        raise UsageError(
            f"the training labels hold one class only ({int(present[0])}"
            + (f", of the first --limit {args.limit} samples" if args.limit else "")
            + "): distillation compares at least 2 classes"
        )
    batchwise = [METHOD_LABELS[m] for m in methods if METHODS[m].loss_class.batchwise]
    samples, batch_size = len(x_train), args.batch_size
    if batchwise and (samples == 1 or samples % batch_size == 1):
        sizes = range(batch_size + 1, samples + 2)
        suggestion = next(size for size in sizes if samples % size != 1)
        raise UsageError(
            f"{samples} training sample(s) in batches of {batch_size} leave a last batch of "
            f"one sample, which {', '.join(batchwise)} cannot use (it compares samples "
            f"across a batch): use --batch-size {suggestion}, or one training sample less"
        )
    return num_classes


def _given_teacher(path, job):
    """`(teacher, path)` for `--teacher path`, checked against the data and
    the student."""
    teacher = _load_model(path, "teacher")
    _check_pair(teacher, job.student_factory, job.input_shape, job.num_classes)
    _check_outputs_logits(teacher, job)
    return teacher, path


def _check_outputs_logits(teacher, job):
    from keras_cskd import validation

    probe = np.asarray(teacher.predict(job.x_test[: min(len(job.x_test), 64)], verbose=0))
    if probe.ndim == 2 and validation.looks_like_probabilities(probe):
        raise UsageError(
            "the teacher outputs probabilities (rows in [0, 1] summing to 1); "
            "distillation needs logits: remove its final softmax"
        )


def _teacher_for(args, job):
    """The default teacher: reused from an earlier run with the same
    settings, or trained now. Returns `(teacher, where it came from)`."""
    import keras

    teacher_path = job.out / "teacher.keras"
    settings, digest = _teacher_settings(
        args, job.name, job.x_train, job.y_train, job.teacher_epochs
    )
    reuse, why = _reusable_teacher(teacher_path, settings, digest)
    print(why)
    if reuse:
        try:
            teacher = keras.saving.load_model(teacher_path, compile=False)
        except Exception as error:
            raise UsageError(
                f"the cached teacher {teacher_path} cannot be loaded "
                f"({type(error).__name__}: {str(error).splitlines()[0][:160]}): delete it "
                "to train a new one"
            ) from error
        source = f"reused {teacher_path}"
    else:
        teacher = _default_teacher(job.input_shape, job.num_classes, args.seed)
        _check_pair(teacher, job.student_factory, job.input_shape, job.num_classes)
        teacher.compile(keras.optimizers.Adam(TEACHER_LEARNING_RATE), job.ce_loss)
        bar = _progress_bar(
            args,
            f"teacher ({teacher.count_params():,} parameters, {job.teacher_epochs} epochs)",
            job.teacher_epochs,
        )
        backup = job.record.backups / "teacher"
        try:
            gone_bad = _guarded_fit(
                teacher,
                job.x_train,
                job.y_train,
                backup,
                batch_size=args.batch_size,
                epochs=job.teacher_epochs,
                shuffle=True,
                callbacks=bar,
            )
        except KeyboardInterrupt:
            kept = (
                f"its last finished epoch is backed up in {backup}"
                if (backup / "latest.weights.h5").exists()
                else "no epoch of it had finished"
            )
            print(
                f"\ninterrupted while training the teacher: {kept}; run the same "
                "command again (or add --resume) to continue",
                file=sys.stderr,
            )
            raise _Interrupted from None
        if gone_bad:
            raise UsageError(
                f"the teacher's training went bad ({gone_bad}); its last good epoch is "
                f"kept in {backup}: lower the learning rate or check the data, then "
                "rerun with --overwrite"
            )
        _save_teacher(teacher, teacher_path, settings, digest)
        source = f"trained, saved to {teacher_path}"
    _check_outputs_logits(teacher, job)
    return teacher, source


def _seed_runs(args, job):
    """Per seed: `(seed, labels, labelled indices)`. The student's
    initialisation, its labelled subset (with --labels) and its label noise
    (with --label-noise) change with the seed."""
    runs = []
    for k in range(job.seeds):
        seed = args.seed + k
        rng = np.random.default_rng(seed)
        labels = job.y_train.copy()
        labelled = np.arange(len(job.y_train))
        if job.budget is not None:
            labelled = _labelled_subset(job.y_train, job.budget, job.num_classes, rng)
        if args.label_noise:
            flip = labelled[rng.random(len(labelled)) < args.label_noise]
            labels[flip] = rng.integers(0, job.num_classes, len(flip))
        runs.append((seed, labels, labelled))
    if job.budget is not None:
        print(
            f"students: {len(job.x_train)} training images, {job.budget} of them labelled"
            + (
                ""
                if args.teacher
                else f" (the teacher was trained on all {len(job.x_train)} labels)"
            )
        )
    if args.label_noise:
        print(f"label noise: {args.label_noise:.0%} of the students' training labels randomised")
    return runs


def _train_method(method, args, job, teacher, runs):
    """Trains one student per seed with `method`; returns its result row."""
    import keras

    import keras_cskd
    from keras_cskd import losses

    accuracies, seconds = [], 0.0
    checkpoint = job.out / f"checkpoint_{method}.keras"
    bar = _progress_bar(
        args,
        f"{METHOD_LABELS[method]} ({job.student_factory().count_params():,} student parameters"
        + (f", {job.seeds} seeds)" if job.seeds > 1 else ")"),
        job.epochs * job.seeds,
    )
    for seed, labels, labelled in runs:
        done = job.record.result(method, seed)
        if done is not None:  # finished before an interruption
            accuracies.append(done["accuracy"])
            seconds += done["seconds"]
            continue
        backup = job.record.backups / f"{method}-seed{seed}"
        try:  # from the student's construction: its first step compiles for a while
            student = job.student_factory(seed)
            optimizer = keras.optimizers.Adam(job.learning_rate)
            if method == "ce":
                # Only the labelled samples, as many steps as the distillers.
                order = np.resize(np.random.default_rng(seed).permutation(labelled), len(labels))
                model, x_fit, y_fit = student, job.x_train[order], labels[order]
                model.compile(optimizer, job.ce_loss)
            else:
                fixed = losses.METHODS[method].fixed_temperature
                loss = losses.get(method, **({"temperature": args.temperature} if fixed else {}))
                model = keras_cskd.Distiller(
                    student=student, teacher=teacher, distillation_loss=loss, seed=seed
                )
                x_fit, y_fit = job.x_train, labels
                if job.budget is not None:  # unlabelled samples: -1, CE over the labelled only
                    y_fit = np.full_like(labels, -1)
                    y_fit[labelled] = labels[labelled]
                    model.compile(optimizer, loss=_labelled_cross_entropy)
                else:
                    model.compile(optimizer)
            tic = time.perf_counter()
            gone_bad = _guarded_fit(
                model,
                x_fit,
                y_fit,
                backup,
                batch_size=args.batch_size,
                epochs=job.epochs,
                callbacks=[*bar, _student_checkpoint(checkpoint, student)],
            )
        except KeyboardInterrupt:
            kept = (
                f"the student after its last finished epoch is {checkpoint}"
                if (backup / "latest.weights.h5").exists()
                else "no epoch of it had finished, so there is no checkpoint of it yet"
            )
            print(
                f"\ninterrupted during {method} (seed {seed}): {kept}; run the same command "
                "again (or add --resume) to continue from there",
                file=sys.stderr,
            )
            raise _Interrupted from None
        if gone_bad:
            raise UsageError(
                f"{method} (seed {seed}): the student's training went bad ({gone_bad}); its "
                f"last good epoch is kept in {checkpoint}: lower --learning-rate or check the "
                "data, then rerun with --overwrite"
            )
        seconds += time.perf_counter() - tic
        accuracies.append(_accuracy(student, job.x_test, job.y_test))
        if seed == args.seed:
            from keras_cskd._files import write_atomically

            write_atomically(job.out / f"student_{method}.keras", student.save)
        job.record.add(method, seed, accuracies[-1], time.perf_counter() - tic)
    checkpoint.unlink(missing_ok=True)
    return {
        "method": method,
        "accuracies": accuracies,
        "accuracy": float(np.mean(accuracies)),
        "std": float(np.std(accuracies, ddof=1)) if len(accuracies) > 1 else None,
        "seconds": seconds,
        "student": str(job.out / f"student_{method}.keras"),
    }


def _write_report(args, job, results, teacher_accuracy, started):
    """Prints the table and verdict; writes results.json/.md/.png and the best student."""
    import keras

    out, budget = job.out, job.budget
    _compare_with_ce(results)
    best = max(results, key=lambda r: r["accuracy"])
    _copy_best(best, out)
    table = _table(results, teacher_accuracy, job.seeds)
    verdict = _verdict(results, job.seeds, len(job.x_test))
    n_train = len(job.x_train)
    setting = (
        f"Students: {n_train} training images, {budget} labelled. CE only learns from the "
        f"{budget} labelled images; the distillation methods also learn from the teacher's "
        f"outputs on the other {n_train - budget}."
        if budget is not None
        else f"Students: all {n_train} labelled training images."
    )
    print("\n" + table + "\n\n" + setting + "\n" + verdict)
    summary = {
        "backend": keras.backend.backend(),
        "data": job.name,
        "teacher_accuracy": teacher_accuracy,
        "results": results,
        "best": best["method"],
        "epochs": job.epochs,
        "seed": args.seed,
        "seeds": job.seeds,
        "labels": budget,
        "temperature": args.temperature,
        "label_noise": args.label_noise,
        "test_samples": len(job.x_test),
        "seconds": time.perf_counter() - started,
    }
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    (out / "results.md").write_text(table + "\n\n" + setting + "\n" + verdict + "\n")
    plot = _plot(results, teacher_accuracy, job.seeds, out / "results.png")
    print(
        f"\nbest (highest mean): {METHOD_LABELS[best['method']]} -> {out / 'student.keras'}"
        f" (seed {args.seed})"
        + (f" | plot: {plot}" if plot else "")
        + f" | total {summary['seconds']:.0f} s"
    )


def _accuracy(model, x, y):
    logits = model.predict(x, batch_size=min(len(x), 2048), verbose=0)  # one compiled shape
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def _compare_with_ce(results):
    """Adds each method's paired difference with CE only (same seeds, same
    labelled subsets): mean, std and whether it exceeds seed noise, i.e.
    |mean| > 2 standard errors of the mean (about a 95% interval)."""
    baseline = np.asarray(results[0]["accuracies"])
    for row in results[1:]:
        differences = np.asarray(row["accuracies"]) - baseline
        row["difference"] = float(differences.mean())
        if len(differences) > 1:
            std = float(differences.std(ddof=1))
            row["difference_std"] = std
            row["beyond_noise"] = bool(
                abs(differences.mean()) > 2 * std / np.sqrt(len(differences))
            )
        else:
            row["difference_std"] = None
            row["beyond_noise"] = None


def _copy_best(best, out):
    import shutil

    shutil.copyfile(best["student"], out / "student.keras")


def _table(results, teacher_accuracy, seeds):
    accuracy_title = f"test accuracy (mean ± std, {seeds} seeds)" if seeds > 1 else "test accuracy"
    lines = [
        f"| method | {accuracy_title} | vs CE only (paired) | beyond seed noise | train time (s) |",
        "|---|---:|---:|:---:|---:|",
        f"| teacher | {100 * teacher_accuracy:.1f} % | | | |",
    ]
    for row in results:
        accuracy = f"{100 * row['accuracy']:.1f}"
        accuracy += f" ± {100 * row['std']:.1f} %" if row["std"] is not None else " %"
        if row["method"] == "ce":
            delta, noise = "", ""
        else:
            delta = f"{100 * row['difference']:+.1f}"
            if row["difference_std"] is not None:
                delta += f" ± {100 * row['difference_std']:.1f}"
            delta += " pt"
            noise = {True: "yes", False: "no", None: "?"}[row["beyond_noise"]]
        lines.append(
            f"| {METHOD_LABELS[row['method']]} | {accuracy} | {delta} | {noise} "
            f"| {row['seconds']:.1f} |"
        )
    return "\n".join(lines)


def _verdict(results, seeds, test_samples):
    """The table's conclusion in words."""
    others = results[1:]
    if not others:
        return "Only CE was run."
    if seeds < 2:
        return (
            f"One seed: the table cannot tell a method from noise (one test sample is "
            f"{100 / test_samples:.2f} pt); run --seeds 3 or more."
        )
    better = [
        METHOD_LABELS[r["method"]] for r in others if r["beyond_noise"] and r["difference"] > 0
    ]
    worse = [
        METHOD_LABELS[r["method"]] for r in others if r["beyond_noise"] and r["difference"] < 0
    ]
    unclear = [METHOD_LABELS[r["method"]] for r in others if not r["beyond_noise"]]
    words = []
    if better:
        words.append(f"Better than CE only beyond seed noise: {', '.join(better)}.")
    else:
        words.append("No method beats CE only beyond seed noise.")
    if worse:
        words.append(f"Worse than CE only beyond seed noise: {', '.join(worse)}.")
    if unclear:
        words.append(f"Within seed noise of CE only: {', '.join(unclear)}.")
    words.append(
        f"(Seed noise: a paired difference counts when its mean exceeds 2 standard errors "
        f"over the {seeds} seeds; one test sample is {100 / test_samples:.2f} pt.)"
    )
    return " ".join(words)


def _plot(results, teacher_accuracy, seeds, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: no plot; pip install 'keras-cskd[plot]')")
        return None
    figure = _figure(results, teacher_accuracy, seeds)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return str(path)


def _figure(results, teacher_accuracy, seeds):
    """Accuracies (mean ± std, dots = seeds, the teacher's line) on a 0-100
    axis, and the paired differences with CE only."""
    import matplotlib.pyplot as plt

    names = [METHOD_LABELS[r["method"]] for r in results]
    positions = np.arange(len(results))
    figure, (bars, deltas) = plt.subplots(
        1, 2, figsize=(11, 0.5 * len(results) + 2.2), constrained_layout=True
    )
    means = [100 * r["accuracy"] for r in results]
    errors = [100 * (r["std"] or 0.0) for r in results]
    bars.barh(
        positions, means, xerr=errors, capsize=4, color=["grey"] + ["tab:blue"] * (len(results) - 1)
    )
    for position, row in zip(positions, results):
        bars.plot(
            [100 * a for a in row["accuracies"]],
            [position] * len(row["accuracies"]),
            "k.",
            markersize=4,
        )
    bars.axvline(
        100 * teacher_accuracy,
        color="black",
        linestyle="--",
        label=f"teacher ({100 * teacher_accuracy:.1f} %)",
    )
    bars.set_xlim(0, 100)
    bars.set_yticks(positions, names)
    bars.invert_yaxis()
    bars.set_xlabel(f"test accuracy (%): mean ± std over {seeds} seed(s), dots = seeds")
    bars.legend(loc="lower left", fontsize=8)
    bars.set_title("students")
    others = results[1:]
    if others:
        deltas.barh(
            positions[1:],
            [100 * r["difference"] for r in others],
            xerr=[100 * (r["difference_std"] or 0.0) for r in others],
            capsize=4,
            color=["tab:green" if r["beyond_noise"] else "lightgrey" for r in others],
        )
        deltas.axvline(0, color="grey", linewidth=1, label="CE only")
        deltas.set_yticks(positions, names)
        deltas.invert_yaxis()
        deltas.set_xlabel("paired difference with CE only (pt), mean ± std")
        deltas.set_title("green: beyond seed noise")
        deltas.legend(loc="lower right", fontsize=8)
    return figure


if __name__ == "__main__":
    raise SystemExit(main())
