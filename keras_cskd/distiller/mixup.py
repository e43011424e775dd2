"""Mixup for the `Distiller`, in one place: the draw, the mixed inputs, the
mixed labels and sample weights of the supervised loss, and the dominant
label the metrics compare with (STKD trains on mixup's virtual samples)."""

import typing

import keras
from keras import ops

from keras_cskd import ops as kd_ops


class MixupDraw(typing.NamedTuple):
    """One mixup draw: `lam * x + (1 - lam) * x[index]`."""

    lam: typing.Any
    index: typing.Any


class Mixup:
    """Draws mixup's weight from `Beta(alpha, alpha)` and a permutation of
    the batch with `seed_generator` (a tracked `keras.random.SeedGenerator`
    of the `Distiller`, so its state is saved with it)."""

    def __init__(self, alpha, seed_generator):
        self.alpha = float(alpha)
        self.seed_generator = seed_generator

    def draw(self, x):
        """`(mixed x, MixupDraw)`: every input of the batch mixed with the
        same weight and permutation (integer inputs are cast to float32)."""
        flat = keras.tree.flatten(x)
        batch_size = ops.shape(flat[0])[0]
        lam = kd_ops.sample_beta(self.alpha, self.seed_generator)
        index = ops.argsort(keras.random.uniform((batch_size,), seed=self.seed_generator))

        def mix(value):
            if not keras.backend.is_float_dtype(value.dtype):
                value = ops.cast(value, "float32")
            weight = ops.cast(lam, value.dtype)
            return weight * value + (1.0 - weight) * ops.take(value, index, axis=0)

        return keras.tree.map_structure(mix, x), MixupDraw(lam, index)

    @staticmethod
    def permuted(values, draw):
        """`values` (a structure of per-sample tensors) in the draw's
        permuted order; None stays None."""
        if values is None:
            return None
        return keras.tree.map_structure(lambda v: ops.take(v, draw.index, axis=0), values)

    @classmethod
    def supervised_loss(cls, loss_fn, y, logits, sample_weight, draw):
        """`lam * loss(y) + (1 - lam) * loss(y[index])`, each sample's weight
        travelling with its label."""
        return draw.lam * loss_fn(y, logits, sample_weight) + (1.0 - draw.lam) * loss_fn(
            cls.permuted(y, draw), logits, cls.permuted(sample_weight, draw)
        )

    @classmethod
    def mixed_weights(cls, sample_weight, draw):
        """The weight of each mixed sample: `lam * w + (1 - lam) * w[index]`."""
        if sample_weight is None:
            return None
        return draw.lam * sample_weight + (1.0 - draw.lam) * cls.permuted(sample_weight, draw)

    @classmethod
    def dominant_labels(cls, y, draw):
        """The label of the larger share of each mixed sample (what the
        metrics compare with)."""
        keep = draw.lam >= 0.5
        return keras.tree.map_structure(
            lambda v: ops.where(keep, v, ops.take(v, draw.index, axis=0)), y
        )
