"""The one registry of named methods (`METHODS`), which `losses.get`, the
`Distiller` and the command line use."""

import typing

import keras

from keras_cskd.layers import CosineSimilarityWeightedTemperature
from keras_cskd.losses.base import DistillationLoss
from keras_cskd.losses.cskd import CosineSimilarityDistillation
from keras_cskd.losses.dist import DISTDistillation
from keras_cskd.losses.dkd import DecoupledKDDistillation
from keras_cskd.losses.kd import KLDivergenceDistillation
from keras_cskd.losses.language import (
    JensenShannonDistillation,
    ReverseKLDistillation,
    SkewKLDistillation,
    TotalVariationDistillation,
)
from keras_cskd.losses.mse import LogitMSEDistillation
from keras_cskd.losses.stkd import SimilarityTransferDistillation


class Method(typing.NamedTuple):
    """A named distillation method: what `get(name)` builds.

    Attributes:
        label: the name shown in tables and plots (e.g. by the CLI).
        loss_class: the `DistillationLoss` subclass.
        settings: fixed constructor arguments (a callable, so each loss
            gets fresh layers).
        fixed_temperature: the loss has a fixed `temperature` argument (not
            CSWT's adaptive one).
    """

    label: str
    loss_class: type
    settings: typing.Callable[[], dict] = dict
    fixed_temperature: bool = True

    def build(self, **kwargs):
        return self.loss_class(**self.settings(), **kwargs)


def _cswt(granularity="sample"):
    return lambda: {"cswt": CosineSimilarityWeightedTemperature(granularity=granularity)}


METHODS = {
    "kd": Method("KD (KL, tau^2)", KLDivergenceDistillation),
    "mse": Method("Logit MSE", LogitMSEDistillation, fixed_temperature=False),
    "cskd": Method("CSKD", CosineSimilarityDistillation),
    "cskd_cswt": Method(
        # One CSKD term at CSWT's per-sample temperatures (not the paper's
        # two-term Eq. 9, which is `cskd_paper_objective()`).
        "CSKD at CSWT temps (1 term)",
        CosineSimilarityDistillation,
        _cswt(),
        fixed_temperature=False,
    ),
    "cskd_cswt_class": Method(
        "CSKD at per-class CSWT temps (experimental)",
        CosineSimilarityDistillation,
        _cswt("class"),
        fixed_temperature=False,
    ),
    "stkd": Method("STKD-style", SimilarityTransferDistillation),
    "dist": Method("DIST", DISTDistillation),
    "dkd": Method("DKD", DecoupledKDDistillation),
    # The divergences of language-model distillation (losses.language).
    "reverse_kl": Method("Reverse KL", ReverseKLDistillation),
    "jsd": Method("Generalized JSD", JensenShannonDistillation),
    "skew_kl": Method("Skew KL", SkewKLDistillation),
    "skew_reverse_kl": Method("Skew reverse KL", SkewKLDistillation, lambda: {"reverse": True}),
    "tv": Method("Total variation", TotalVariationDistillation),
}
"""The named methods, in display order; `get` also accepts the aliases of
`ALIASES`, and spellings with `-` or `+` for `_`."""
ALIASES = {"kl": "kd", "forward_kl": "kd", "total_variation": "tv"}


def get(identifier, **kwargs):
    """Returns a keras-cskd loss from a name (`"kd"`, `"mse"`, `"cskd"`,
    `"cskd_cswt"`, `"stkd"`, `"dist"`, `"dkd"`, see `METHODS`), a config
    dict or an instance. With a name, `kwargs` go to the loss's constructor.

    Example:

    >>> from keras_cskd import losses
    >>> type(losses.get("cskd")).__name__
    'CosineSimilarityDistillation'
    >>> losses.get("kd", temperature=2.0).temperature
    2.0
    """
    if isinstance(identifier, (DistillationLoss, dict)):
        if kwargs:
            raise ValueError(f"Settings {sorted(kwargs)} apply to a loss name only.")
        if isinstance(identifier, dict):
            return keras.saving.deserialize_keras_object(identifier)
        return identifier
    key = str(identifier).lower().replace("-", "_").replace("+", "_")
    key = ALIASES.get(key, key)
    if key not in METHODS:
        raise ValueError(
            f"Unknown distillation loss {identifier!r}; choose one of "
            f"{sorted([*METHODS, *ALIASES])} or pass a keras_cskd.losses instance."
        )
    return METHODS[key].build(**kwargs)
