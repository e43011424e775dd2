"""The run record (`--out/run.json`): the settings and the finished
(method, seed) runs, so that the same command run again resumes an
interrupted run, and nothing of one is deleted without `--overwrite`.
"""

import json

from keras_cskd.cli._common import UsageError
from keras_cskd.cli.teacher import _teacher_settings

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
    settings = {
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
    # Only when used: a one-teacher, one-generation run keeps the settings
    # (and so the record) of the versions before them.
    if job.teachers > 1:
        settings.update(teachers=job.teachers, ensemble=job.ensemble)
    if job.chain is not None:
        settings["chain"] = job.chain
    elif len(job.generations) > 1:
        settings["generations"] = len(job.generations)
    return settings


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
