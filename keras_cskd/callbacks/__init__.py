"""Callbacks for distillation runs.

- `recording`: `TemperatureRecorder` (per-class temperatures and cosines),
  `DistillationWeightWarmup`.
- `notices`: `SkippedStepWarning` (a loss scaler that skips steps),
  `UncountedStepWarning` (steps with nothing to distil).
- `checkpoints`: `AtomicCheckpoint`, `BackupAndRestore`, `TerminateOnNaN`,
  `unsafe_to_save`, `CorruptBackupError`: checkpoints that survive kills
  and NaN.
"""

from keras_cskd.callbacks.checkpoints import (
    AtomicCheckpoint,
    BackupAndRestore,
    CorruptBackupError,
    TerminateOnNaN,
    unsafe_to_save,
)
from keras_cskd.callbacks.notices import SkippedStepWarning, UncountedStepWarning
from keras_cskd.callbacks.recording import DistillationWeightWarmup, TemperatureRecorder

__all__ = [
    "AtomicCheckpoint",
    "BackupAndRestore",
    "CorruptBackupError",
    "DistillationWeightWarmup",
    "SkippedStepWarning",
    "TemperatureRecorder",
    "TerminateOnNaN",
    "UncountedStepWarning",
    "unsafe_to_save",
]
