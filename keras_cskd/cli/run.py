"""`keras-cskd distill` from start to end: plan and check the job, open the
run record, get the teacher, train the CE-only student and one per method
and seed, write the report.
"""

import sys
import time

import numpy as np

from keras_cskd.cli._common import (
    DEFAULT_METHODS,
    EXIT_INTERRUPTED,
    METHOD_LABELS,
    UsageError,
    _one_line,
)
from keras_cskd.cli.fitting import (
    _guarded_fit,
    _Interrupted,
    _progress_bar,
    _save_model,
    _student_checkpoint,
)
from keras_cskd.cli.job import (
    _check_combinations,
    _check_numbers,
    _labelled_subset,
    _plan_job,
    labelled_cross_entropy,
)
from keras_cskd.cli.record import _open_run_record
from keras_cskd.cli.report import _accuracy, _logits, _write_report
from keras_cskd.cli.teacher import (
    _given_teachers,
    _teacher_path,
    _teacher_specs,
    _trained_teachers,
)


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
    _check_combinations(args)

    from keras_cskd import _backend

    # The run fits a few architectures many times (seeds x methods).
    with _backend.compile_identical_programs_once():
        return _distill(args, methods, started)


def _distill(args, methods, started):
    import keras

    import keras_cskd

    job = _plan_job(args, methods)
    print(
        f"keras-cskd {keras_cskd.__version__} | backend {keras.backend.backend()} | "
        f"data {job.name}: {len(job.x_train)} train / {len(job.x_test)} test, "
        f"{job.input_shape}, {job.num_classes} classes"
    )
    methods = _methods_for_the_ensemble(args, job, methods)
    # Given teachers are checked before the run record is written: a run
    # refused for bad input leaves nothing in --out that would block the
    # corrected command.
    given = _given_teachers(args.teacher, job) if args.teacher else None
    job.record = _open_run_record(args, job, methods)
    try:
        teachers = given or _trained_teachers(args, job)
        scores = _score_teachers(teachers, job, _teacher_names(args, job))
        runs = _seed_runs(args, job)
        models = [model for model, _ in teachers]
        teacher = models[0] if len(models) == 1 else models
        results = [_train_row(row, args, job, teacher, runs) for row in _rows(job, methods)]
    except _Interrupted:  # during a fit: it said what was kept
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:  # between two fits (scoring, building the next student)
        finished = ", ".join(sorted(job.record.done)) or "no student yet"
        print(
            f"\ninterrupted between two trainings: every finished one is kept in {job.out} "
            f"(finished: {finished}); run the same command again (or add --resume) to "
            "continue from there",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    _write_report(args, job, results, scores, started)
    job.record.finish()
    return 0


def _methods_for_the_ensemble(args, job, methods):
    """The methods that can distil the run's teachers as combined by
    --ensemble (Teachers.check: e.g. logit MSE has no logits to compare in
    a mean of distributions). The default methods leave such a method out
    and say so; methods the user named are refused (exit 2)."""
    if job.teachers < 2:
        return methods
    from keras_cskd import losses
    from keras_cskd.distiller.teachers import Teachers

    refused = {}
    for method in methods:
        fixed = losses.METHODS[method].fixed_temperature
        loss = losses.get(method, **({"temperature": args.temperature} if fixed else {}))
        try:
            Teachers([None] * job.teachers, ensemble=job.ensemble).check(None, [(loss, 1.0)])
        except ValueError as error:
            refused[method] = _one_line(error)
    if not refused:
        return methods
    names = ", ".join(refused)
    if args.method != ",".join(DEFAULT_METHODS):
        raise UsageError(
            f"--method {names} with --ensemble {job.ensemble}: {next(iter(refused.values()))} "
            f"(here: --ensemble mean_logits or per_teacher, or leave out {names})"
        )
    labels = ", ".join(METHOD_LABELS[m] for m in refused)
    print(
        f"({labels} left out: --ensemble {job.ensemble} gives it no teacher logits to "
        "compare; --ensemble mean_logits or per_teacher keeps it)"
    )
    return [m for m in methods if m not in refused]


def _teacher_names(args, job):
    """What names each teacher in the results: the file or module:function
    given with --teacher, or the cache and seed of a teacher trained here."""
    if args.teacher:
        return _teacher_specs(args.teacher)
    return [f"{_teacher_path(job.out, k)} (seed {args.seed + k})" for k in range(job.teachers)]


def _score_teachers(teachers, job, names):
    """Prints each teacher's test accuracy (and, for several, their
    ensemble's: the mean of their softmaxes); returns them."""
    logits = [_logits(model, job.x_test) for model, _ in teachers]
    accuracies = [float(np.mean(np.argmax(z, -1) == job.y_test)) for z in logits]
    if len(teachers) == 1:
        print(f"teacher: {accuracies[0]:.2%} test accuracy ({teachers[0][1]})")
        return {
            "accuracies": accuracies,
            "sources": [teachers[0][1]],
            "names": names,
            "ensemble": None,
        }
    for index, ((_, source), accuracy) in enumerate(zip(teachers, accuracies)):
        print(f"teacher {index + 1}: {accuracy:.2%} test accuracy ({source})")
    probabilities = np.mean([_softmax(z) for z in logits], axis=0)
    ensemble = float(np.mean(np.argmax(probabilities, -1) == job.y_test))
    print(
        f"ensemble of the {len(teachers)} teachers (mean of their softmaxes): {ensemble:.2%} "
        f"test accuracy; the students distil it with --ensemble {job.ensemble}"
    )
    return {
        "accuracies": accuracies,
        "sources": [source for _, source in teachers],
        "names": names,
        "ensemble": ensemble,
    }


def _softmax(logits):
    z = logits.astype("float64") - logits.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


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
                else f" (the teacher{' was' if job.teachers == 1 else 's were'} trained on all "
                f"{len(job.x_train)} labels)"
            )
        )
    if args.label_noise:
        print(f"label noise: {args.label_noise:.0%} of the students' training labels randomised")
    return runs


def _rows(job, methods):
    """The rows of the results, in training order: CE only, then per method
    its generations (one, unless --chain or --generations)."""
    count = len(job.generations)
    rows = [_row(job, "ce", None)]
    for method in methods:
        rows += [_row(job, method, generation) for generation in range(1, count + 1)]
    return rows


def _row(job, method, generation):
    """One row: a method at a generation (CE only: None), its student, its
    files in --out. `key` names it in the run record, backups and
    checkpoints."""
    count = len(job.generations)
    final = generation in (None, count)
    label = METHOD_LABELS[method]
    if method == "ce":
        key, factory = "ce", job.student_factory
        files = ["student_ce.keras"]
        if job.chain is not None:
            label += f" (MLP {job.chain[-1]})"
    else:
        factory = job.generations[generation - 1]
        key = method if count == 1 else f"{method}_gen{generation}"
        files = (
            [f"student_{method}.keras"] if count == 1 else [f"chain_{generation}_{method}.keras"]
        )
        if count > 1:
            label += f", gen {generation}"
            if final:
                files.append(f"student_{method}.keras")
        if job.chain is not None:
            label += f" (MLP {job.chain[generation - 1]})"
    if method == "ce":
        source = None
    elif generation > 1:
        source = f"{METHOD_LABELS[method]}, gen {generation - 1} (same seed)"
    elif job.teachers > 1:
        source = f"ensemble of {job.teachers} teachers ({job.ensemble})"
    else:
        source = "teacher"
    return {
        "method": method,
        "generation": generation,
        "key": key,
        "label": label,
        "what": method if count == 1 or method == "ce" else f"{method}, generation {generation}",
        "distilled_from": source,
        "factory": factory,
        "files": [job.out / name for name in files],
        # Compared with CE only (and a candidate for student.keras) when it
        # has CE only's architecture: a chain's assistants have not.
        "compared": method == "ce" or job.chain is None or final,
    }


def _saved_student(job, key, seed):
    """Where the student of a finished (row, seed) is kept until the run
    finishes (in the backups): the next generation's teacher, and the
    source of the row's best student."""
    return job.record.backups / "students" / f"{key}-seed{seed}.keras"


def _train_row(row, args, job, teacher, runs):
    """Trains one student per seed for `row`; returns its result row."""
    import keras

    import keras_cskd
    from keras_cskd import losses

    method, key, generation = row["method"], row["key"], row["generation"]
    accuracies, seconds = [], 0.0
    checkpoint = job.out / f"checkpoint_{key}.keras"
    bar = _progress_bar(
        args,
        f"{row['label']} ({row['factory']().count_params():,} student parameters"
        + (f", {job.seeds} seeds)" if job.seeds > 1 else ")"),
        job.epochs * job.seeds,
    )
    for seed, labels, labelled in runs:
        done = job.record.result(key, seed)
        if done is not None and _saved_student(job, key, seed).exists():
            accuracies.append(done["accuracy"])  # finished before an interruption
            seconds += done["seconds"]
            continue
        backup = job.record.backups / f"{key}-seed{seed}"
        try:  # from the student's construction: its first step compiles for a while
            # A later generation's teacher is loaded before the student is
            # built, whose seed then starts the fit's random state.
            row_teacher = (
                teacher if (generation or 1) == 1 else _previous_generation(job, row, seed)
            )
            student = row["factory"](seed)
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
                    student=student,
                    teacher=row_teacher,
                    distillation_loss=loss,
                    student_loss_weight=1.0,
                    distillation_loss_weight=1.0,
                    seed=seed,
                    **({"ensemble": job.ensemble} if isinstance(row_teacher, list) else {}),
                )
                x_fit, y_fit = job.x_train, labels
                if job.budget is not None:  # unlabelled samples: -1, CE over the labelled only
                    y_fit = np.full_like(labels, -1)
                    y_fit[labelled] = labels[labelled]
                    model.compile(optimizer, loss=labelled_cross_entropy)
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
                f"\ninterrupted during {row['what']} (seed {seed}): {kept}; run the same "
                "command again (or add --resume) to continue from there",
                file=sys.stderr,
            )
            raise _Interrupted from None
        if gone_bad:
            raise UsageError(
                f"{row['what']} (seed {seed}): the student's training went bad ({gone_bad}); "
                f"its last good epoch is kept in {checkpoint}: lower --learning-rate or check "
                "the data, then rerun with --overwrite"
            )
        seconds += time.perf_counter() - tic
        accuracies.append(_accuracy(student, job.x_test, job.y_test))
        saved = _saved_student(job, key, seed)
        saved.parent.mkdir(parents=True, exist_ok=True)
        _save_model(student, saved)
        job.record.add(key, seed, accuracies[-1], time.perf_counter() - tic)
    checkpoint.unlink(missing_ok=True)
    best = int(np.argmax(accuracies))  # the first of equals
    best_seed = runs[best][0]
    for path in row["files"]:
        _copy_atomically(_saved_student(job, key, best_seed), path)
    return {
        "method": method,
        "generation": generation,
        "label": row["label"],
        "distilled_from": row["distilled_from"],
        "compared": row["compared"],
        "accuracies": accuracies,
        "accuracy": float(np.mean(accuracies)),
        "std": float(np.std(accuracies, ddof=1)) if len(accuracies) > 1 else None,
        "seconds": seconds,
        "best_seed": best_seed,
        "best_seed_accuracy": accuracies[best],
        "student": str(row["files"][-1]),
    }


def _previous_generation(job, row, seed):
    """The teacher of a generation after the first: the previous
    generation's student of the same method and seed."""
    import keras

    previous = f"{row['method']}_gen{row['generation'] - 1}"
    path = _saved_student(job, previous, seed)
    if not path.exists():
        raise UsageError(
            f"{path} (the teacher of {row['what']}, seed {seed}) is missing: rerun with "
            "--overwrite to start over"
        )
    return keras.saving.load_model(path, compile=False)


def _copy_atomically(source, target):
    import shutil

    from keras_cskd._files import write_atomically

    write_atomically(target, lambda temporary: shutil.copyfile(source, temporary))
