"""The job of a run: its data, the teacher and student models, the labelled
subset, and the checks of all of it, made before anything trains.
"""

import argparse
import importlib
import math
import os
import sys
from pathlib import Path

import numpy as np

from keras_cskd.cli._common import (
    DEFAULT_STUDENT,
    DEFAULT_TEACHER,
    MAIN_JOB,
    METHOD_LABELS,
    UsageError,
    _one_line,
)
from keras_cskd.losses import METHODS


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
    from keras_cskd.checks import models as models_checks

    student = student_factory()
    for role, model in (("teacher", teacher), ("student", student)):
        try:
            models_checks.check_no_softmax_head(model, role)
            classes = models_checks.output_classes(model, role)
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
        ("teachers", "--teachers", lambda v: v >= 1, "at least 1"),
        ("generations", "--generations", lambda v: v >= 1, "at least 1"),
    )
    for attribute, flag, valid, wanted in rules:
        value = getattr(args, attribute, None)
        if value is not None and not (math.isfinite(value) and valid(value)):
            raise UsageError(f"{flag} must be {wanted}, got {value:g}")


def _chain_widths(args):
    """`--chain 64,16` as `[64, 16]` (None without --chain)."""
    chain = getattr(args, "chain", None)
    if chain is None:
        return None
    try:
        widths = [int(part) for part in chain.split(",")]
    except ValueError:
        widths = []
    if not widths or any(width < 1 for width in widths):
        raise UsageError(
            f"--chain must be the hidden widths of the students, comma-separated whole "
            f"numbers of at least 1 (e.g. --chain 64,16), got {chain!r}"
        )
    return widths


def _teacher_count(args):
    """How many teachers the run distils: the models in --teacher, else --teachers."""
    spec = getattr(args, "teacher", None)
    if spec:
        return len([part for part in spec.split(",") if part.strip()])
    return getattr(args, "teachers", None) or 1


def _check_combinations(args):
    """Refuses options that make no sense together (exit 2), before any work."""
    teachers = _teacher_count(args)
    chain = _chain_widths(args)
    generations = getattr(args, "generations", None)
    if getattr(args, "teacher", None) is not None and teachers == 0:
        raise UsageError("--teacher names no model: give a .keras file or module:function")
    if getattr(args, "teacher", None) and getattr(args, "teachers", None) is not None:
        raise UsageError(
            "--teacher gives the teachers and --teachers trains them: use one "
            "(several given teachers: --teacher a.keras,b.keras)"
        )
    if getattr(args, "ensemble", None) is not None and teachers < 2:
        raise UsageError(
            "--ensemble combines several teachers, but this run has one: give several "
            "(--teacher a.keras,b.keras or --teachers N) or drop --ensemble"
        )
    if chain is not None and generations is not None:
        raise UsageError(
            "--chain gives the generations' widths and --generations repeats the student: use one"
        )
    if chain is not None and getattr(args, "student", None):
        raise UsageError(
            "--chain builds MLP students of the given widths and --student gives one: use one "
            "(--generations N distils N generations of --student)"
        )
    if (chain is not None or (generations or 1) > 1) and teachers > 1:
        flag = "--chain" if chain is not None else "--generations"
        raise UsageError(
            f"{flag} distils each generation from one model, and this run has {teachers} "
            "teachers: distil the ensemble first (its student.keras), then run the chain "
            "from it with --teacher"
        )


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


def labelled_cross_entropy(y_true, logits):
    """Cross-entropy on the student's logits over the labelled samples of
    the batch (label -1: unlabelled, distilled from the teacher only).
    (Its name becomes a TensorFlow name scope, which cannot start with "_".)"""
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

    widths = _chain_widths(args)
    if widths is None:
        generations = [student_factory] * (getattr(args, "generations", None) or 1)
    else:
        generations = [_mlp_factory(input_shape, num_classes, w, args.seed) for w in widths]
        student_factory = generations[-1]

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
        generations=generations,
        chain=widths,
        teachers=_teacher_count(args),
        ensemble=getattr(args, "ensemble", None) or "mean_probs",
        ce_loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )


def _mlp_factory(input_shape, num_classes, width, default_seed=0):
    """A generation of `--chain`: an MLP student with one hidden layer of
    `width`, freshly initialised per seed (as `student_factory`)."""
    import keras

    from keras_cskd.models import mlp

    def factory(seed=default_seed):
        keras.utils.set_random_seed(seed + 1)
        return mlp(input_shape, num_classes, hidden=(width,), name="student")

    factory.width = width
    return factory


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
