"""What the modules of the command line share: the defaults of the main
job, the exit codes, the error reported in one line, and the Ctrl-C flag.
"""

import threading

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


UsageError.__module__ = "keras_cskd.cli"  # where users import it from


def _one_line(error, limit=600):
    """An exception's message on one line (Keras' messages span several)."""
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# Set by the console script's Ctrl-C handler. A KeyboardInterrupt raised
# inside backend code can be swallowed there (seen under load on JAX and
# TensorFlow: training went on to the end), so every fit of a run also checks
# this flag between batches and raises it again from Python code.
_CTRL_C = threading.Event()


def _raise_if_ctrl_c(*_, **__):
    if _CTRL_C.is_set():
        raise KeyboardInterrupt
