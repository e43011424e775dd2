"""The `Distiller` and its parts, one idea a module:

- `model`: the `Distiller` (`keras.Model`): arguments, `compile`, `fit`'s
  checks, `call` -> `compute_loss` -> `compute_metrics`, saving.
- `step`: the `Step` record of one training step, and which positions count.
- `teachers`: the `Teachers` (inference mode, never trained, cached logits,
  ensembles).
- `objective`: the supervised and distillation terms of a `Step`, and its
  statistics.
- `mixup`: mixup's draw, mixed labels and weights, dominant labels.
- `config`: the constructor's arguments resolved, and the saved config.
"""

from keras_cskd.distiller.model import Distiller

__all__ = ["Distiller"]
