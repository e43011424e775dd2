"""`keras-cskd distill` from start to end: plan and check the job, open the
run record, get the teacher, train the CE-only student and one per method
and seed, write the report.
"""

import sys
import time

import numpy as np

from keras_cskd.cli._common import EXIT_INTERRUPTED, METHOD_LABELS, UsageError
from keras_cskd.cli.fitting import _guarded_fit, _Interrupted, _progress_bar, _student_checkpoint
from keras_cskd.cli.job import _check_numbers, _labelled_cross_entropy, _labelled_subset, _plan_job
from keras_cskd.cli.record import _open_run_record
from keras_cskd.cli.report import _accuracy, _write_report
from keras_cskd.cli.teacher import _given_teacher, _teacher_for


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
    _write_report(args, job, results, teacher_accuracy, started)
    job.record.finish()
    return 0


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
                    student=student,
                    teacher=teacher,
                    distillation_loss=loss,
                    student_loss_weight=1.0,
                    distillation_loss_weight=1.0,
                    seed=seed,
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
