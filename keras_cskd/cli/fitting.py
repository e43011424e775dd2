"""Every fit of a run: its progress bar, its per-epoch backup and NaN/inf
stop, Ctrl-C between batches, and the students' checkpoints.
"""

import sys
import time

from keras_cskd.cli._common import UsageError, _raise_if_ctrl_c


class _Interrupted(Exception):
    """Ctrl-C during training, after saying what was kept."""


def _progress_bar(args, title, total):
    """One progress report per model, over its epochs (x seeds): Keras' own
    progress bar on a terminal; in a log (stdout not a terminal), which a
    bar would fill with carriage returns and colour codes, one plain line
    per finished fit (`_log_lines`)."""
    import keras

    if args.quiet:
        return []
    print(title, flush=True)
    if not _is_terminal(sys.stdout):
        return [_log_lines(total)]
    bar = keras.utils.Progbar(total, unit_name="epoch", stateful_metrics=["loss"])
    done = [0]

    def advance(epoch, logs):
        done[0] += 1
        bar.update(done[0], values=[("loss", float((logs or {}).get("loss", float("nan"))))])

    return [keras.callbacks.LambdaCallback(on_epoch_end=advance)]


def _is_terminal(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False


# In a log, a fit longer than this also reports its epochs in between.
LOG_INTERVAL_SECONDS = 30.0


def _log_lines(total):
    """The progress report in a log: a line when a fit ends (epochs done
    out of the model's total, the last loss, the fit's time), and, for a
    fit longer than LOG_INTERVAL_SECONDS, a line at the first epoch end
    after each interval."""
    import keras

    state = {"done": 0, "started": 0.0, "last": 0.0, "loss": float("nan")}

    def line(final):
        now = time.perf_counter()
        state["last"] = now
        print(
            f"  {state['done']}/{total} epochs - loss: {state['loss']:.4f} - "
            f"{now - state['started']:.1f} s" + ("" if final else " so far"),
            flush=True,
        )

    def begin(logs):
        state["started"] = state["last"] = time.perf_counter()

    def advance(epoch, logs):
        state["done"] += 1
        state["loss"] = float((logs or {}).get("loss", float("nan")))
        if time.perf_counter() - state["last"] >= LOG_INTERVAL_SECONDS:
            line(final=False)

    return keras.callbacks.LambdaCallback(
        on_train_begin=begin, on_epoch_end=advance, on_train_end=lambda logs: line(True)
    )


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


def _save_model(model, path):
    """Saves `model` to `path` atomically, without optimizer or compile
    state, whether or not it was compiled: every model a run writes loads
    the same way (`keras.saving.load_model`, then `compile` to train it
    further). A compiled model is saved as an uncompiled copy with the same
    weights (`keras.models.clone_model` would compile the copy too)."""
    import keras

    from keras_cskd._files import write_atomically

    if getattr(model, "compiled", False) or getattr(model, "optimizer", None) is not None:
        config = keras.saving.serialize_keras_object(model)
        config.pop("compile_config", None)
        try:
            copy = keras.saving.deserialize_keras_object(config)
            copy.set_weights(model.get_weights())
        except Exception:
            # A class Keras cannot rebuild from its config (an unregistered
            # custom layer): saved as it is; plain Keras could not load it
            # without its custom_objects either.
            pass
        else:
            model = copy
    write_atomically(path, model.save)
