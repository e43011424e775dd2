"""keras-cskd: knowledge distillation for Keras 3 with cosine similarity.

Public API:

- `keras_cskd.Distiller`: a `keras.Model` that distils a teacher into a
  student with `fit`, on TensorFlow, JAX and PyTorch.
- `keras_cskd.cache_teacher_logits`: run the teacher once, train from logits.
- `keras_cskd.cache_teacher_top_k`: a language model teacher's top-k outputs
  in sharded files, streamed back (`TopKCache`).
- `keras_cskd.FeatureDistillation`: match intermediate layers by name
  (FitNets, with a learned projection when the widths differ).
- `keras_cskd.losses`: CSKD, CSWT-weighted CSKD, KD, logit MSE, STKD-style,
  DIST and DKD losses.
- `keras_cskd.layers.CosineSimilarityWeightedTemperature`: CSWT.
- `keras_cskd.callbacks`: temperature/cosine recorder, weight warm-up, loss-scaler warning,
  atomic checkpoints.
- `keras_cskd.ops`: the formulas as pure `keras.ops` functions.
- `keras_cskd.statistics`: students compared over seeds (paired 95 % intervals).
- `keras_cskd.data`, `keras_cskd.models`: loaders and model zoo.

Importing the package registers every loss, layer and the `Distiller` with
Keras' serialization (package "keras_cskd"), so `keras.saving.load_model`
needs no `custom_objects`.
"""

__version__ = "0.1.0"  # the one place of the version (pyproject.toml reads it)

from keras_cskd._backend_choice import ensure_installed_backend  # noqa: E402

ensure_installed_backend()

from keras_cskd import callbacks, data, layers, losses, models, ops, statistics  # noqa: E402
from keras_cskd.caching import cache_teacher_logits  # noqa: E402
from keras_cskd.distiller import Distiller  # noqa: E402
from keras_cskd.features import FeatureDistillation  # noqa: E402
from keras_cskd.top_k_cache import TopKCache, cache_teacher_top_k  # noqa: E402

__all__ = [
    "Distiller",
    "FeatureDistillation",
    "TopKCache",
    "cache_teacher_logits",
    "cache_teacher_top_k",
    "callbacks",
    "data",
    "layers",
    "losses",
    "models",
    "ops",
    "statistics",
    "__version__",
]
