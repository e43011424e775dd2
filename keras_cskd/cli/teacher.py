"""The teachers of a run: given (`--teacher a.keras[,b.keras,...]`, checked
before the run record is written), or trained here (`--teachers N`, seeds
--seed, --seed+1, ...), each reused from an earlier run with the same
settings or trained and cached with a checksum: `teacher.keras`,
`teacher_2.keras`, ... in --out.
"""

import json
import sys

import numpy as np

from keras_cskd.cli._common import DEFAULT_TEACHER, TEACHER_LEARNING_RATE, UsageError
from keras_cskd.cli.fitting import _guarded_fit, _Interrupted, _progress_bar, _save_model
from keras_cskd.cli.job import _check_pair, _default_teacher, _load_model


def _teacher_settings(args, name, x_train, y_train, teacher_epochs, seed=None):
    """Everything that determines a default teacher (the first one's seed
    is --seed), and its hash."""
    import hashlib

    import keras

    data_hash = hashlib.sha256()
    for array in (x_train, y_train):
        data_hash.update(str((array.shape, array.dtype)).encode())
        data_hash.update(np.ascontiguousarray(array).tobytes())
    settings = {
        "data": name,
        "data_sha256": data_hash.hexdigest()[:16],
        "seed": args.seed if seed is None else seed,
        "epochs": teacher_epochs,
        "batch_size": args.batch_size,
        "architecture": DEFAULT_TEACHER,
        "learning_rate": TEACHER_LEARNING_RATE,
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    return settings, digest


def _reusable_teacher(teacher_path, settings, digest, label="teacher"):
    """(True, why) when `teacher_path` was trained with these settings."""
    record_path = teacher_path.with_suffix(".json")
    if not teacher_path.exists():
        return False, f"training {label}"
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        return False, f"training {label} (no settings record next to {teacher_path})"
    if record.get("settings_sha256") == digest:
        if record.get("file_sha256") != _sha256(teacher_path):
            return False, (
                f"training {label} ({teacher_path} does not match the checksum in "
                f"{record_path}: it was cut short or replaced)"
            )
        return True, f"reusing teacher {teacher_path} (settings match, sha256 {digest})"
    old = record.get("settings", {})
    changed = [
        f"{key} {old.get(key)!r} -> {value!r}"
        for key, value in settings.items()
        if old.get(key) != value
    ]
    return False, f"training {label} (settings changed: " + (", ".join(changed) or "format") + ")"


def _save_teacher(teacher, teacher_path, settings, digest):
    """The teacher cache: the model, then its record (settings and the
    file's checksum), each written atomically. A cache cut short or
    replaced no longer matches its record, so it is retrained, not read."""
    from keras_cskd._files import write_text_atomically

    _save_model(teacher, teacher_path)
    record = {"settings": settings, "settings_sha256": digest, "file_sha256": _sha256(teacher_path)}
    write_text_atomically(teacher_path.with_suffix(".json"), json.dumps(record, indent=2))


def _sha256(path):
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _given_teachers(spec, job):
    """`[(teacher, path), ...]` for `--teacher a.keras[,b.keras,...]`, each
    checked against the data and the student."""
    teachers = []
    for path in _teacher_specs(spec):
        teacher = _load_model(path, "teacher")
        _check_pair(teacher, job.student_factory, job.input_shape, job.num_classes)
        _check_outputs_logits(teacher, job)
        teachers.append((teacher, path))
    return teachers


def _teacher_specs(spec):
    """The comma-separated entries of `--teacher`."""
    return [part.strip() for part in spec.split(",") if part.strip()]


def _teacher_path(out, index):
    """The cache of the `index`-th trained teacher (0: `teacher.keras`, the
    one teacher of a single-teacher run; then `teacher_2.keras`, ...)."""
    return out / ("teacher.keras" if index == 0 else f"teacher_{index + 1}.keras")


def _teacher_label(index, count):
    return "teacher" if count == 1 else f"teacher {index + 1}"


def _trained_teachers(args, job):
    """`[(teacher, where it came from), ...]`: the `job.teachers` default
    teachers, seeds --seed, --seed+1, ..."""
    return [_teacher_for(args, job, index) for index in range(job.teachers)]


def _check_outputs_logits(teacher, job):
    from keras_cskd.checks import tensors as tensors_checks

    probe = np.asarray(teacher.predict(job.x_test[: min(len(job.x_test), 64)], verbose=0))
    if probe.ndim == 2 and tensors_checks.looks_like_probabilities(probe):
        raise UsageError(
            "the teacher outputs probabilities (rows in [0, 1] summing to 1); "
            "distillation needs logits: remove its final softmax"
        )


def _teacher_for(args, job, index=0):
    """The `index`-th default teacher (seed --seed + index): reused from an
    earlier run with the same settings, or trained now. Returns `(teacher,
    where it came from)`."""
    import keras

    seed = args.seed + index
    label = _teacher_label(index, job.teachers)
    teacher_path = _teacher_path(job.out, index)
    settings, digest = _teacher_settings(
        args, job.name, job.x_train, job.y_train, job.teacher_epochs, seed=seed
    )
    reuse, why = _reusable_teacher(teacher_path, settings, digest, label)
    print(why)
    if reuse:
        try:
            teacher = keras.saving.load_model(teacher_path, compile=False)
        except Exception as error:
            raise UsageError(
                f"the cached {label} {teacher_path} cannot be loaded "
                f"({type(error).__name__}: {str(error).splitlines()[0][:160]}): delete it "
                "to train a new one"
            ) from error
        source = f"reused {teacher_path}"
    else:
        teacher = _default_teacher(job.input_shape, job.num_classes, seed)
        _check_pair(teacher, job.student_factory, job.input_shape, job.num_classes)
        if index:
            # Teacher k: initialised from --seed + k, its batches shuffled
            # from --seed + k + 1 (for the first, `_check_pair` did that).
            keras.utils.set_random_seed(seed + 1)
        teacher.compile(keras.optimizers.Adam(TEACHER_LEARNING_RATE), job.ce_loss)
        bar = _progress_bar(
            args,
            f"{label} ({teacher.count_params():,} parameters, {job.teacher_epochs} epochs"
            + (f", seed {seed})" if job.teachers > 1 else ")"),
            job.teacher_epochs,
        )
        backup = job.record.backups / ("teacher" if index == 0 else f"teacher_{index + 1}")
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
                f"\ninterrupted while training the {label}: {kept}; run the same "
                "command again (or add --resume) to continue",
                file=sys.stderr,
            )
            raise _Interrupted from None
        if gone_bad:
            raise UsageError(
                f"the {label}'s training went bad ({gone_bad}); its last good epoch is "
                f"kept in {backup}: lower the learning rate or check the data, then "
                "rerun with --overwrite"
            )
        _save_teacher(teacher, teacher_path, settings, digest)
        source = f"trained, saved to {teacher_path}"
    _check_outputs_logits(teacher, job)
    return teacher, source
