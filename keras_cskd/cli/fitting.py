"""Every fit of a run: its progress bar, its per-epoch backup and NaN/inf
stop, Ctrl-C between batches, and the students' checkpoints.
"""

from keras_cskd.cli._common import UsageError, _raise_if_ctrl_c


class _Interrupted(Exception):
    """Ctrl-C during training, after saying what was kept."""


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


def _student_checkpoint(path, student):
    """`AtomicCheckpoint` of the student alone (the model to keep; saving
    the whole Distiller would also write the teacher every epoch)."""
    from keras_cskd.callbacks import AtomicCheckpoint

    class StudentCheckpoint(AtomicCheckpoint):
        def set_model(self, model):
            super().set_model(student)

    return StudentCheckpoint(path)
