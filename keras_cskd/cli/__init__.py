"""The `keras-cskd` command line: a whole distillation run in one command.

    keras-cskd distill                      # embedded digits, no network
    keras-cskd distill --teacher t.keras --student s.keras --data d.npz
    keras-cskd distill --dataset fashion_mnist --method kd,cskd --epochs 20
    keras-cskd distill --teachers 3 --ensemble mean_logits   # an ensemble of teachers
    keras-cskd distill --chain 64,16                        # teacher -> MLP 64 -> MLP 16

Trains (or loads) a teacher, or several, trains the student with
cross-entropy only and with each method from the same seed (and, with
--chain or --generations, each method's later generations from the one
before), prints a results table, writes a PNG plot, `results.json`/
`results.md` and the students as `.keras` files (uncompiled). All
the input (arguments, data, models, `--out`) is checked before anything
trains: bad input ends with a one-line error and exit code 2, never a
traceback (`--debug` shows one, for reporting a bug). Ctrl-C keeps the last
checkpoint and says where it is; the same command run again (or with
`--resume`) continues from the last finished epoch, and nothing of an
interrupted run is deleted without `--overwrite`.
"""

import argparse
import os
import signal
import subprocess
import sys

from keras_cskd.cli._common import (
    _CTRL_C,
    DEFAULT_METHODS,
    DEFAULT_STUDENT,
    EXIT_BAD_INPUT,
    EXIT_BUG,
    EXIT_INTERRUPTED,
    MAIN_JOB,
    METHOD_LABELS,
    UsageError,
    _one_line,
)
from keras_cskd.cli.run import run_distill


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: ...)" except where the default depends on the data
    (None), which the help text then spells out."""

    def _get_help_string(self, action):
        if action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


def _parser():
    import keras_cskd

    parser = argparse.ArgumentParser(
        prog="keras-cskd",
        description="Knowledge distillation for Keras 3 (CSKD, CSWT, KD, MSE, ...).",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"keras-cskd {keras_cskd.__version__}"
    )
    commands = parser.add_subparsers(dest="command")
    main_job = MAIN_JOB
    distill = commands.add_parser(
        "distill",
        help="distil a teacher into a student and compare methods",
        description="Trains/loads a teacher, distils students with each method over "
        "several seeds, prints a table (mean ± std, paired differences with CE only and "
        "their 95 % intervals) and writes a plot and the students. With no arguments: the "
        f"main job on the embedded digits, students with {main_job['labels']} labels, "
        f"{main_job['seeds']} seeds.",
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
        help="teacher: a .keras file or module:function, or several, comma-separated "
        "(an ensemble: see --ensemble) (default: an MLP trained here, reused from --out "
        "when its settings match)",
    )
    distill.add_argument(
        "--teachers",
        type=int,
        default=None,
        help="train this many default teachers, seeds --seed, --seed+1, ... (teacher.keras, "
        "teacher_2.keras, ... in --out, each reused when its settings match), distilled "
        "as an ensemble (default: 1)",
    )
    distill.add_argument(
        "--ensemble",
        choices=("mean_probs", "mean_logits", "per_teacher"),
        default=None,
        help="how several teachers are combined: the mean of their softened "
        "distributions, the mean of their logits, or one loss per teacher, averaged "
        "(default: mean_probs)",
    )
    distill.add_argument(
        "--student",
        help="student: a .keras file or module:function "
        f"(default: an MLP with hidden layers {DEFAULT_STUDENT['hidden']})",
    )
    distill.add_argument(
        "--chain",
        help="a chain of MLP students, comma-separated hidden widths: --chain 64,16 distils "
        "teacher -> MLP 64 -> MLP 16, each generation from the previous one, with each "
        "method (chain_1_kd.keras, ...); CE only trains the last",
    )
    distill.add_argument(
        "--generations",
        type=int,
        default=None,
        help="born-again students: this many generations of the student, each distilled "
        "from the previous one (the first from the teacher), with each method (default: 1)",
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
        raise UsageError(f"no Keras backend is installed: {_backend_choice.install_hint()}")
    if chosen in _backend_choice.BACKEND_MODULES and not _backend_choice.installed(chosen):
        raise UsageError(
            f"the Keras backend {chosen!r} is not installed: "
            f"{_backend_choice.install_hint(chosen)}, or choose another with --backend"
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
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        _quiet_tensorflow_python_logs()
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


def _quiet_tensorflow_python_logs():
    """TensorFlow's Python warnings (e.g. "5 out of the last 5 calls to
    <function ...> triggered tf.function retracing", which the run's many
    small fits can trigger) would land inside the progress bars: only its
    errors are shown. Python's `logging` for the "tensorflow" logger, which
    TensorFlow's `tf.get_logger()` returns; TensorFlow itself is not
    imported for it."""
    import logging

    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def _on_ctrl_c(signum, frame):
    _CTRL_C.set()
    raise KeyboardInterrupt


def _unraisable_hook(unraisable):
    """Python's report of an exception it had to ignore, except a Ctrl-C:
    one that lands in a garbage-collection callback or a `__del__` (JAX's
    `_xla_gc_callback`, seen under load) is printed as "Exception ignored
    in ..." with a traceback, though the run stops cleanly all the same at
    its next batch (`_CTRL_C`)."""
    if not issubclass(unraisable.exc_type, KeyboardInterrupt):
        sys.__unraisablehook__(unraisable)


def console_main():
    """The `keras-cskd` console script: `main()` with Ctrl-C remembered (see
    `_CTRL_C`), then, after Ctrl-C, an immediate exit once the message and
    the checkpoint are written, so that no backend thread left running by an
    interrupted `fit` can hold the interpreter's shutdown (seen
    intermittently under torch and JAX)."""
    signal.signal(signal.SIGINT, _on_ctrl_c)
    sys.unraisablehook = _unraisable_hook
    code = main()
    if code == EXIT_INTERRUPTED:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
