"""Model zoo: small pairs for quick runs, CIFAR architectures for the benchmark.

`MODELS` maps the CRD/mdistiller benchmark names to builders
`builder(input_shape=(32, 32, 3), num_classes=100, stem_stride=...)` that
return logits models; `get(name, **kwargs)` builds one by name (case and
`-`/`_` insensitive; CRD's aliases `MobileNetV2`, `mobile_half`, `ShuffleV2`
are accepted).

Example:

>>> from keras_cskd import models
>>> model = models.get("resnet8", input_shape=(28, 28, 1), num_classes=10)
>>> model.output_shape
(None, 10)
"""

from keras_cskd.models.cifar import (
    count_parameters,
    mobilenetv2,
    resnet,
    resnet8,
    resnet8x4,
    resnet14,
    resnet20,
    resnet32,
    resnet32x4,
    resnet44,
    resnet56,
    resnet110,
    shufflenetv2,
    vgg,
    vgg8,
    vgg11,
    vgg13,
    vgg16,
    vgg19,
    wide_resnet,
    wrn_16_1,
    wrn_16_2,
    wrn_40_1,
    wrn_40_2,
)
from keras_cskd.models.small import conv_net, mlp, small_cnn

MODELS = {
    "resnet8": resnet8,
    "resnet14": resnet14,
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet44": resnet44,
    "resnet56": resnet56,
    "resnet110": resnet110,
    "resnet8x4": resnet8x4,
    "resnet32x4": resnet32x4,
    "wrn_16_1": wrn_16_1,
    "wrn_16_2": wrn_16_2,
    "wrn_40_1": wrn_40_1,
    "wrn_40_2": wrn_40_2,
    "vgg8": vgg8,
    "vgg11": vgg11,
    "vgg13": vgg13,
    "vgg16": vgg16,
    "vgg19": vgg19,
    "mobilenetv2": mobilenetv2,
    "shufflenetv2": shufflenetv2,
}

_ALIASES = {
    "mobile_half": "mobilenetv2",
    "mobilenet_v2": "mobilenetv2",
    "shufflev2": "shufflenetv2",
    "shufflenet_v2": "shufflenetv2",
}


def _key(name):
    key = str(name).strip().lower().replace("-", "_")
    return _ALIASES.get(key, key)


def get(name, **kwargs):
    """Builds the zoo model `name` (a key of `MODELS` or a CRD alias) with
    `kwargs` (`input_shape`, `num_classes`, `stem_stride`, ...).

    Example:

    >>> from keras_cskd.models import get
    >>> get("ResNet8", num_classes=10).name
    'resnet8'
    """
    key = _key(name)
    if key not in MODELS:
        raise ValueError(f"Unknown model {name!r}; choose one of {sorted(MODELS)}.")
    return MODELS[key](**kwargs)


__all__ = [
    "MODELS",
    "get",
    "count_parameters",
    "conv_net",
    "mlp",
    "small_cnn",
    "resnet",
    "wide_resnet",
    "vgg",
]
__all__ += sorted(MODELS)
